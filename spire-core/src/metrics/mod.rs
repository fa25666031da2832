//! The paper's metrics: PSNR and SSIM (as scikit-image computes them), LPIPS, CLIP-I / CLIP-T
//! and FID. Learned metrics load their networks from safetensors files (see
//! `scripts/convert_metric_weights.py`); a metric whose weights are not given is reported as
//! unavailable, never estimated.

pub mod classic;

pub use classic::{psnr, ssim};
