//! Fuzzes every config reader with the same text: UNet, VAE, CLIP text encoder, adaptor and
//! scheduler. Whatever a reader accepts must be within the documented ranges (counts up to
//! `MAX_CONFIG_COUNT`, groups dividing the widths, finite positive epsilons); nothing may
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spire_core::model::{config::MAX_CONFIG_COUNT, AdaptorConfig, ClipTextConfig, UNetConfig, VaeConfig};
use spire_core::SchedulerConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(u) = UNetConfig::from_json_str(text) {
        assert!(u.norm_num_groups >= 1 && u.norm_eps > 0.0 && u.norm_eps.is_finite());
        assert!(u.block_out_channels.iter().all(|&c| c <= MAX_CONFIG_COUNT && c % u.norm_num_groups == 0));
    }
    if let Ok(v) = VaeConfig::from_json_str(text) {
        assert!(v.scaling_factor.is_finite() && v.scaling_factor != 0.0);
    }
    if let Ok(c) = ClipTextConfig::from_json_str(text) {
        assert!(c.layer_norm_eps > 0.0 && c.vocab_size <= MAX_CONFIG_COUNT);
    }
    let _ = AdaptorConfig::from_json_str(text);
    if let Ok(s) = SchedulerConfig::from_json_str(text) {
        assert!((2..=100_000).contains(&s.num_train_timesteps));
    }
});
