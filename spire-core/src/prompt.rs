//! The restoration prompt language (SPIRE.md §3) as a type.
//!
//! A [`RestorationPrompt`] is blind ("Remove all degradation") or any subset of four
//! operations, each with one number:
//!
//! | op | canonical clause | parameter | precision | accepted range |
//! |---|---|---|---|---|
//! | blur | `Deblur with sigma 2.3` | Gaussian blur σ in pixels | 0.1 | 0.1 – 10.0 |
//! | downsample | `Upsample with scale 4.0` | factor the image was shrunk by | 0.1 | 1.0 – 8.0 |
//! | noise | `Denoise with sigma 0.08` | Gaussian noise σ on [0, 1] intensities | 0.01 | 0.01 – 1.00 |
//! | JPEG | `Dejpeg with quality 40` | JPEG quality | 1 | 1 – 100 |
//!
//! Rendering joins the present clauses with `"; "` in that order. Parsing accepts what people
//! type: any case, `;` or `,` between clauses, extra spaces, clauses in any order, `with` and
//! the parameter word optional (`denoise 0.1`), `4x` / `4.0x` / `×4` for a scale, numbers like
//! `2`, `2.`, `.08`, a trailing period. Numbers are rounded to the precision above, so
//! `parse(render(p)) == p` for every prompt and `render(parse(s))` is canonical. Unknown
//! operations, a parameter word that does not belong to the operation, repeated operations,
//! out-of-range or malformed numbers, and "Remove all degradation" mixed with other clauses
//! are errors that quote the clause.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A restoration prompt: blind, or some of deblur / upsample / denoise / dejpeg with strengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RestorationPrompt {
    deblur_tenths: Option<u16>,
    upsample_tenths: Option<u16>,
    denoise_hundredths: Option<u16>,
    dejpeg_quality: Option<u8>,
}

/// The blind prompt's text.
pub const BLIND: &str = "Remove all degradation";

/// Accepted ranges (inclusive), in the units of the canonical text.
pub mod ranges {
    /// Deblur σ in pixels.
    pub const DEBLUR_SIGMA: (f64, f64) = (0.1, 10.0);
    /// Upsample factor.
    pub const UPSAMPLE_SCALE: (f64, f64) = (1.0, 8.0);
    /// Denoise σ on [0, 1] intensities.
    pub const DENOISE_SIGMA: (f64, f64) = (0.01, 1.0);
    /// JPEG quality.
    pub const DEJPEG_QUALITY: (f64, f64) = (1.0, 100.0);
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Deblur,
    Upsample,
    Denoise,
    Dejpeg,
}

impl Op {
    fn from_word(w: &str) -> Option<Self> {
        Some(match w {
            "deblur" => Op::Deblur,
            "upsample" | "upscale" | "super-resolve" => Op::Upsample,
            "denoise" => Op::Denoise,
            "dejpeg" => Op::Dejpeg,
            _ => return None,
        })
    }

    fn param(self) -> &'static str {
        match self {
            Op::Deblur | Op::Denoise => "sigma",
            Op::Upsample => "scale",
            Op::Dejpeg => "quality",
        }
    }

    /// (range, units per step of the stored integer)
    fn spec(self) -> ((f64, f64), f64) {
        match self {
            Op::Deblur => (ranges::DEBLUR_SIGMA, 10.0),
            Op::Upsample => (ranges::UPSAMPLE_SCALE, 10.0),
            Op::Denoise => (ranges::DENOISE_SIGMA, 100.0),
            Op::Dejpeg => (ranges::DEJPEG_QUALITY, 1.0),
        }
    }
}

fn quantize(op: Op, value: f64, clause: &str) -> Result<u16> {
    let ((lo, hi), per) = op.spec();
    let err = |m: String| Error::InvalidPrompt {
        clause: clause.to_string(),
        message: m,
    };
    if !value.is_finite() {
        return Err(err(format!("{} must be a number", op.param())));
    }
    let q = (value * per).round();
    let (qlo, qhi) = ((lo * per).round(), (hi * per).round());
    if q < qlo || q > qhi {
        let fmt = |x: f64| match op {
            Op::Denoise => format!("{x:.2}"),
            Op::Dejpeg => format!("{x:.0}"),
            _ => format!("{x:.1}"),
        };
        return Err(err(format!(
            "{} {value} is outside {} – {}",
            op.param(),
            fmt(lo),
            fmt(hi)
        )));
    }
    Ok(q as u16)
}

impl RestorationPrompt {
    /// The blind prompt ("Remove all degradation").
    pub fn blind() -> Self {
        Self::default()
    }

    /// True when no operation is given.
    pub fn is_blind(&self) -> bool {
        *self == Self::default()
    }

    fn set(mut self, op: Op, value: f64) -> Result<Self> {
        let clause = format!("{:?} with {} {value}", op, op.param());
        let q = quantize(op, value, &clause)?;
        match op {
            Op::Deblur => self.deblur_tenths = Some(q),
            Op::Upsample => self.upsample_tenths = Some(q),
            Op::Denoise => self.denoise_hundredths = Some(q),
            Op::Dejpeg => self.dejpeg_quality = Some(q as u8),
        }
        Ok(self)
    }

    /// Adds "Deblur with sigma σ" (σ rounded to 0.1).
    ///
    /// # Errors
    /// [`Error::InvalidPrompt`] if σ is outside [`ranges::DEBLUR_SIGMA`].
    pub fn with_deblur(self, sigma: f64) -> Result<Self> {
        self.set(Op::Deblur, sigma)
    }

    /// Adds "Upsample with scale s" (rounded to 0.1).
    ///
    /// # Errors
    /// [`Error::InvalidPrompt`] if s is outside [`ranges::UPSAMPLE_SCALE`].
    pub fn with_upsample(self, scale: f64) -> Result<Self> {
        self.set(Op::Upsample, scale)
    }

    /// Adds "Denoise with sigma σ" (rounded to 0.01).
    ///
    /// # Errors
    /// [`Error::InvalidPrompt`] if σ is outside [`ranges::DENOISE_SIGMA`].
    pub fn with_denoise(self, sigma: f64) -> Result<Self> {
        self.set(Op::Denoise, sigma)
    }

    /// Adds "Dejpeg with quality q".
    ///
    /// # Errors
    /// [`Error::InvalidPrompt`] if q is outside [`ranges::DEJPEG_QUALITY`].
    pub fn with_dejpeg(self, quality: u32) -> Result<Self> {
        self.set(Op::Dejpeg, quality as f64)
    }

    /// The deblur σ, if present.
    pub fn deblur_sigma(&self) -> Option<f32> {
        self.deblur_tenths.map(|v| v as f32 / 10.0)
    }

    /// The upsample factor, if present.
    pub fn upsample_scale(&self) -> Option<f32> {
        self.upsample_tenths.map(|v| v as f32 / 10.0)
    }

    /// The denoise σ, if present.
    pub fn denoise_sigma(&self) -> Option<f32> {
        self.denoise_hundredths.map(|v| v as f32 / 100.0)
    }

    /// The deblur σ as the decimal the text states (`2.3`, not the f32's 2.2999999523…): what
    /// the degradation pipeline and measurement consistency compute with.
    pub fn deblur_sigma_f64(&self) -> Option<f64> {
        self.deblur_tenths.map(|v| v as f64 / 10.0)
    }

    /// The upsample factor as the decimal the text states.
    pub fn upsample_scale_f64(&self) -> Option<f64> {
        self.upsample_tenths.map(|v| v as f64 / 10.0)
    }

    /// The denoise σ as the decimal the text states.
    pub fn denoise_sigma_f64(&self) -> Option<f64> {
        self.denoise_hundredths.map(|v| v as f64 / 100.0)
    }

    /// The JPEG quality, if present.
    pub fn dejpeg_quality(&self) -> Option<u8> {
        self.dejpeg_quality
    }

    /// How much the output is larger than the input (1 without an upsample clause).
    pub fn upsample_factor(&self) -> f64 {
        self.upsample_tenths.map_or(1.0, |v| v as f64 / 10.0)
    }

    /// The canonical text.
    pub fn render(&self) -> String {
        self.to_string()
    }

    /// Parses a prompt as people type it (see the module docs).
    ///
    /// # Errors
    /// [`Error::InvalidPrompt`] quoting the offending clause.
    pub fn parse(text: &str) -> Result<Self> {
        let trimmed = text.trim();
        let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed).trim_end();
        if trimmed.is_empty() {
            return Err(Error::InvalidPrompt {
                clause: text.to_string(),
                message: format!("the restoration prompt is empty (use \"{BLIND}\" for blind restoration)"),
            });
        }
        let clauses: Vec<&str> = trimmed.split([';', ',']).map(str::trim).collect();
        let mut p = Self::default();
        let mut blind = false;
        let mut seen: Vec<Op> = Vec::new();
        for clause in &clauses {
            let err = |m: &str| Error::InvalidPrompt {
                clause: clause.to_string(),
                message: m.to_string(),
            };
            if clause.is_empty() {
                return Err(Error::InvalidPrompt {
                    clause: text.to_string(),
                    message: "empty clause between separators".into(),
                });
            }
            let lower = clause.to_lowercase();
            let words: Vec<&str> = lower.split_whitespace().collect();
            if words == ["remove", "all", "degradation"] || words == ["remove", "all", "degradations"] {
                if blind {
                    return Err(err("repeated clause"));
                }
                blind = true;
                continue;
            }
            let op = Op::from_word(words[0]).ok_or_else(|| {
                err("unknown operation (expected Deblur, Upsample, Denoise, Dejpeg or \"Remove all degradation\")")
            })?;
            if seen.contains(&op) {
                return Err(err("this operation is already given"));
            }
            seen.push(op);
            let mut rest = &words[1..];
            if rest.first() == Some(&"with") {
                rest = &rest[1..];
            }
            if let Some(&w) = rest.first() {
                if w.chars()
                    .next()
                    .is_some_and(|c| c.is_alphabetic() && c != 'x' && c != '×')
                {
                    if w != op.param() {
                        return Err(err(&format!(
                            "`{w}` is not the parameter of this operation (expected `{}`)",
                            op.param()
                        )));
                    }
                    rest = &rest[1..];
                }
            }
            // One number: "5 0" or "0 .1" is not 50 or 0.1 (Upsample also takes "x 4" / "4 ×").
            let is_x = |w: &str| w == "x" || w == "×";
            let num_text: String = match rest {
                [] => String::new(),
                [one] => (*one).to_string(),
                [a, b] if op == Op::Upsample && (is_x(a) || is_x(b)) => format!("{a}{b}"),
                _ => {
                    return Err(err(&format!(
                        "`{}` is not one number (no spaces inside a number)",
                        rest.join(" ")
                    )))
                }
            };
            let value = parse_number(&num_text, op).map_err(|m| err(&m))?;
            p = Self::set_clause(p, op, value, clause)?;
        }
        if blind && !p.is_blind() {
            return Err(Error::InvalidPrompt {
                clause: text.to_string(),
                message: format!("\"{BLIND}\" cannot be combined with other operations"),
            });
        }
        Ok(p)
    }

    fn set_clause(mut self, op: Op, value: f64, clause: &str) -> Result<Self> {
        let q = quantize(op, value, clause)?;
        match op {
            Op::Deblur => self.deblur_tenths = Some(q),
            Op::Upsample => self.upsample_tenths = Some(q),
            Op::Denoise => self.denoise_hundredths = Some(q),
            Op::Dejpeg => self.dejpeg_quality = Some(q as u8),
        }
        Ok(self)
    }
}

fn parse_number(s: &str, op: Op) -> std::result::Result<f64, String> {
    let mut t = s.trim();
    if t.is_empty() {
        return Err(format!("missing the {} value", op.param()));
    }
    if op == Op::Upsample {
        for x in ["x", "×"] {
            if let Some(r) = t.strip_suffix(x) {
                t = r;
                break;
            }
            if let Some(r) = t.strip_prefix(x) {
                t = r;
                break;
            }
        }
    }
    let ok = !t.is_empty()
        && t.chars().all(|c| c.is_ascii_digit() || c == '.')
        && t.chars().filter(|&c| c == '.').count() <= 1
        && t.chars().any(|c| c.is_ascii_digit());
    if !ok {
        return Err(format!("`{s}` is not a number"));
    }
    t.parse::<f64>().map_err(|_| format!("`{s}` is not a number"))
}

impl fmt::Display for RestorationPrompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_blind() {
            return f.write_str(BLIND);
        }
        let mut parts = Vec::with_capacity(4);
        if let Some(v) = self.deblur_tenths {
            parts.push(format!("Deblur with sigma {}.{}", v / 10, v % 10));
        }
        if let Some(v) = self.upsample_tenths {
            parts.push(format!("Upsample with scale {}.{}", v / 10, v % 10));
        }
        if let Some(v) = self.denoise_hundredths {
            parts.push(format!("Denoise with sigma {}.{:02}", v / 100, v % 100));
        }
        if let Some(v) = self.dejpeg_quality {
            parts.push(format!("Dejpeg with quality {v}"));
        }
        f.write_str(&parts.join("; "))
    }
}

impl FromStr for RestorationPrompt {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RestorationPrompt {
        RestorationPrompt::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn f64_values_are_the_stated_decimals() {
        let q = p("Deblur with sigma 2.3; Upsample with scale 3.7; Denoise with sigma 0.07");
        assert_eq!(q.deblur_sigma_f64(), Some(2.3));
        assert_eq!(q.upsample_scale_f64(), Some(3.7));
        assert_eq!(q.denoise_sigma_f64(), Some(0.07));
        assert_ne!(q.deblur_sigma().map(f64::from), Some(2.3));
        assert_eq!(p("Remove all degradation").denoise_sigma_f64(), None);
    }

    #[test]
    fn canonical_examples() {
        assert_eq!(p("Remove all degradation").render(), BLIND);
        assert!(p("remove  ALL degradation.").is_blind());
        let q = p(
            "Deblur with sigma 2.3; Upsample with scale 4.0; Denoise with sigma 0.08; Dejpeg with quality 40",
        );
        assert_eq!(q.deblur_sigma(), Some(2.3));
        assert_eq!(q.upsample_scale(), Some(4.0));
        assert_eq!(q.denoise_sigma(), Some(0.08));
        assert_eq!(q.dejpeg_quality(), Some(40));
        assert_eq!(
            q.render(),
            "Deblur with sigma 2.3; Upsample with scale 4.0; Denoise with sigma 0.08; Dejpeg with quality 40"
        );
    }

    #[test]
    fn variations_people_type() {
        let want = p("Deblur with sigma 2.0; Upsample with scale 4.0; Denoise with sigma 0.08");
        for s in [
            "denoise with sigma .08, upsample with scale 4x, deblur with sigma 2",
            "  DEBLUR   WITH SIGMA 2.0 ;UPSAMPLE WITH SCALE 4.0;   denoise with sigma 0.080  ",
            "Upsample with scale x4; Deblur sigma 2.; Denoise 0.08.",
            "upsample 4.0x, deblur 2, denoise with sigma 0.08",
            "Upsample with scale 4×; Deblur with sigma 2; Denoise with sigma 0.08",
        ] {
            assert_eq!(p(s), want, "{s}");
        }
        assert_eq!(p("Denoise with sigma 0.085").denoise_sigma(), Some(0.09));
    }

    #[test]
    fn errors_quote_the_clause() {
        for (s, clause, needle) in [
            (
                "Sharpen with sigma 2",
                "Sharpen with sigma 2",
                "unknown operation",
            ),
            (
                "Deblur with sigma 2; Deblur with sigma 3",
                "Deblur with sigma 3",
                "already",
            ),
            ("Denoise with sigma 2.0", "Denoise with sigma 2.0", "outside"),
            ("Deblur with sigma -1", "Deblur with sigma -1", "not a number"),
            ("Deblur with sigma", "Deblur with sigma", "missing"),
            ("Dejpeg with quality 0", "Dejpeg with quality 0", "outside"),
            (
                "Dejpeg with sigma 30",
                "Dejpeg with sigma 30",
                "not the parameter",
            ),
            ("Upsample with scale 16x", "Upsample with scale 16x", "outside"),
            ("Deblur with sigma 2x", "Deblur with sigma 2x", "not a number"),
            ("Deblur with sigma nan", "Deblur with sigma nan", "not a number"),
            ("Deblur with sigma 1e3", "Deblur with sigma 1e3", "not a number"),
        ] {
            match RestorationPrompt::parse(s) {
                Err(Error::InvalidPrompt { clause: c, message }) => {
                    assert_eq!(c, clause, "{s}");
                    assert!(message.contains(needle), "{s}: {message}");
                }
                other => panic!("{s}: {other:?}"),
            }
        }
        for s in [
            "",
            "   ",
            "Deblur with sigma 2;;",
            "Remove all degradation; Denoise with sigma 0.1",
        ] {
            assert!(RestorationPrompt::parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn builders_round_and_validate() {
        let q = RestorationPrompt::blind()
            .with_deblur(2.34)
            .unwrap()
            .with_dejpeg(40)
            .unwrap();
        assert_eq!(q.render(), "Deblur with sigma 2.3; Dejpeg with quality 40");
        assert!(RestorationPrompt::blind().with_denoise(0.001).is_err());
        assert!(RestorationPrompt::blind().with_upsample(f64::NAN).is_err());
        assert_eq!(
            RestorationPrompt::blind()
                .with_upsample(2.5)
                .unwrap()
                .upsample_factor(),
            2.5
        );
    }
}
