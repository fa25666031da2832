//! The CLIP byte-level BPE tokenizer, built with the `tokenizers` crate the way transformers'
//! `CLIPTokenizer` builds it: NFC, whitespace runs to one space, lowercase; CLIP's split regex;
//! byte-level pre-tokenization; BPE with the `</w>` end-of-word suffix. Sequences are
//! `<|startoftext|> … <|endoftext|>`, truncated and padded to the model length (77) with the
//! checkpoint's pad token (SD 1.x: `<|endoftext|>`; SD 2.x: `!`, id 0).

use std::collections::HashMap;
use std::path::Path;

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormSeq, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, Result};

const SPLIT_REGEX: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";

/// A CLIP tokenizer producing fixed-length id sequences.
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    bos: u32,
    eos: u32,
    pad: u32,
    max_len: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .field("max_len", &self.max_len)
            .finish()
    }
}

fn token_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(m) => m.get("content").and_then(|c| c.as_str()).map(str::to_owned),
        _ => None,
    }
}

impl ClipTokenizer {
    /// Loads a diffusers `tokenizer/` folder: `vocab.json` + `merges.txt` (or `tokenizer.json`),
    /// with the pad token and length from `tokenizer_config.json` / `special_tokens_map.json`.
    ///
    /// # Errors
    /// [`Error::Io`] if the files are missing, [`Error::ModelLoad`] if they cannot be parsed.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut pad_token = EOS.to_string();
        let mut max_len = 77usize;
        for name in ["special_tokens_map.json", "tokenizer_config.json"] {
            let p = dir.join(name);
            // Optional files: absent is fine, anything else at the name must be readable.
            if std::fs::symlink_metadata(&p).is_ok() {
                let text = crate::io::read_text(&p)?;
                let v: serde_json::Value = crate::io::parse_json(&text)
                    .map_err(|e| Error::model_load(&p, format!("invalid JSON: {e}")))?;
                if let Some(t) = v.get("pad_token").and_then(token_string) {
                    pad_token = t;
                }
                if let Some(n) = v.get("model_max_length").and_then(|n| n.as_u64()) {
                    // transformers writes a huge sentinel when there is no limit.
                    if n <= 4096 {
                        max_len = n as usize;
                    }
                }
            }
        }
        let vocab_p = dir.join("vocab.json");
        let merges_p = dir.join("merges.txt");
        let tok = if vocab_p.is_file() && merges_p.is_file() {
            let vocab = crate::io::read_text(&vocab_p)?;
            let merges = crate::io::read_text(&merges_p)?;
            Self::from_vocab_merges(&vocab, &merges, &pad_token, max_len)
                .map_err(|e| Error::model_load(dir, e))?
        } else {
            let tj = dir.join("tokenizer.json");
            if !tj.is_file() {
                return Err(Error::io(
                    &vocab_p,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no vocab.json + merges.txt or tokenizer.json",
                    ),
                ));
            }
            let inner = Tokenizer::from_file(&tj).map_err(|e| Error::model_load(&tj, e.to_string()))?;
            Self::finish(inner, &pad_token, max_len).map_err(|e| Error::model_load(&tj, e))?
        };
        Ok(tok)
    }

    /// Builds the tokenizer from the text of `vocab.json` and `merges.txt`.
    pub fn from_vocab_merges(
        vocab_json: &str,
        merges_txt: &str,
        pad_token: &str,
        max_len: usize,
    ) -> Result<Self, String> {
        let vocab: HashMap<String, u32> =
            serde_json::from_str(vocab_json).map_err(|e| format!("vocab.json: {e}"))?;
        let mut merges = Vec::new();
        for (i, line) in merges_txt.lines().enumerate() {
            if line.starts_with("#version") || line.trim().is_empty() {
                continue;
            }
            let mut parts = line.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => merges.push((a.to_string(), b.to_string())),
                _ => {
                    return Err(format!(
                        "merges.txt line {}: expected two tokens, found `{line}`",
                        i + 1
                    ))
                }
            }
        }
        let bpe = BPE::builder()
            .vocab_and_merges(
                vocab.into_iter().collect::<tokenizers::models::bpe::Vocab>(),
                merges,
            )
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".to_string())
            .unk_token(EOS.to_string())
            .fuse_unk(false)
            .build()
            .map_err(|e| format!("BPE: {e}"))?;
        let mut inner = Tokenizer::new(bpe);
        let replace = Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
            " ",
        )
        .map_err(|e| e.to_string())?;
        inner
            .with_normalizer(Some(NormalizerWrapper::Sequence(NormSeq::new(vec![
                NormalizerWrapper::NFC(NFC),
                NormalizerWrapper::Replace(replace),
                NormalizerWrapper::Lowercase(Lowercase),
            ]))))
            .map_err(|e| e.to_string())?;
        let split = Split::new(
            SplitPattern::Regex(SPLIT_REGEX.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| e.to_string())?;
        inner.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(PreSeq::new(vec![
            PreTokenizerWrapper::Split(split),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, true)),
        ]))));
        Self::finish(inner, pad_token, max_len)
    }

    fn finish(inner: Tokenizer, pad_token: &str, max_len: usize) -> Result<Self, String> {
        if max_len < 2 {
            return Err(format!("model_max_length {max_len} is too small"));
        }
        let mut inner = inner;
        inner
            .add_special_tokens([
                AddedToken::from(BOS, true),
                AddedToken::from(EOS, true),
                // transformers registers the pad token as special too, so with SD 2.x's `!` every
                // `!` in a prompt becomes the pad id.
                AddedToken::from(pad_token, true),
            ])
            .map_err(|e| e.to_string())?;
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| format!("token `{t}` is not in the vocabulary"))
        };
        Ok(Self {
            bos: id(BOS)?,
            eos: id(EOS)?,
            pad: id(pad_token)?,
            max_len,
            inner,
        })
    }

    /// The fixed sequence length (77 for Stable Diffusion).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The padding id.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// The end-of-text id.
    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// Tokens of `text` without special tokens, truncation or padding.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::invalid_arg("prompt", format!("cannot tokenize {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// `[bos] + tokens (truncated) + [eos] + padding`, exactly `max_len` ids, as
    /// `tokenizer(text, padding="max_length", truncation=True)` gives.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(self.max_len);
        ids.push(self.bos);
        let toks = self.tokenize(text)?;
        ids.extend(toks.iter().take(self.max_len - 2));
        ids.push(self.eos);
        ids.resize(self.max_len, self.pad);
        Ok(ids)
    }
}
