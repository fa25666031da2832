//! Property tests of the restoration prompt language: render∘parse is the identity, the
//! variations people type parse to the same prompt, and nothing panics on arbitrary input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use spire_core::RestorationPrompt;

fn prompt() -> impl Strategy<Value = RestorationPrompt> {
    (
        proptest::option::of(1u32..=100),
        proptest::option::of(10u32..=80),
        proptest::option::of(1u32..=100),
        proptest::option::of(1u32..=100),
    )
        .prop_map(|(b, u, n, q)| {
            let mut p = RestorationPrompt::blind();
            if let Some(b) = b {
                p = p.with_deblur(b as f64 / 10.0).unwrap();
            }
            if let Some(u) = u {
                p = p.with_upsample(u as f64 / 10.0).unwrap();
            }
            if let Some(n) = n {
                p = p.with_denoise(n as f64 / 100.0).unwrap();
            }
            if let Some(q) = q {
                p = p.with_dejpeg(q).unwrap();
            }
            p
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_of_render_is_identity(p in prompt()) {
        let text = p.render();
        prop_assert_eq!(RestorationPrompt::parse(&text).unwrap(), p);
        prop_assert_eq!(RestorationPrompt::parse(&text).unwrap().render(), text);
    }

    #[test]
    fn typed_variations_parse_to_the_same_prompt(
        p in prompt(),
        upper in any::<bool>(),
        comma in any::<bool>(),
        spaces in 0usize..3,
        shuffle in any::<u64>(),
        drop_with in any::<bool>(),
    ) {
        let mut clauses: Vec<String> = p.render().split("; ").map(str::to_string).collect();
        // Reorder clauses.
        let n = clauses.len();
        if n > 1 {
            clauses.rotate_left((shuffle as usize) % n);
        }
        let clauses: Vec<String> = clauses
            .into_iter()
            .map(|c| {
                let c = if drop_with { c.replacen(" with ", " ", 1) } else { c };
                let c = if c.starts_with("Upsample") && shuffle % 2 == 0 { format!("{c}x") } else { c };
                if upper { c.to_uppercase() } else { c.to_lowercase() }
            })
            .collect();
        let sep = format!("{}{}{}", " ".repeat(spaces), if comma { "," } else { ";" }, " ".repeat(spaces + 1));
        let text = format!("{}{}", " ".repeat(spaces), clauses.join(&sep));
        prop_assert_eq!(RestorationPrompt::parse(&text).unwrap(), p);
    }

    #[test]
    fn arbitrary_text_never_panics(s in ".{0,200}") {
        let _ = RestorationPrompt::parse(&s);
    }

    #[test]
    fn clause_shaped_text_never_panics(
        op in "(deblur|upsample|denoise|dejpeg|remove all degradation|sharpen|)",
        param in "(with )?(sigma|scale|quality|x|)",
        num in "[-+0-9.exX×nainf]{0,12}",
        sep in "[;,. ]{0,3}",
        rest in ".{0,30}",
    ) {
        let _ = RestorationPrompt::parse(&format!("{op} {param} {num}{sep}{rest}"));
    }
}
