//! The paper's metrics: PSNR and SSIM (as scikit-image computes them), LPIPS, CLIP-I / CLIP-T
//! and FID. Learned metrics load their networks from safetensors files (see
//! `scripts/convert_metric_weights.py`); a metric whose weights are not given is reported as
//! unavailable, never estimated.

pub mod classic;
pub mod clip;
pub mod fid;
pub mod lpips;

use candle_core::{Device, Tensor};

pub use classic::{psnr, ssim};
pub use clip::{Clip, ClipPreprocess};
pub use fid::{feature_statistics, frechet_distance, FidInception};
pub use lpips::{Lpips, LpipsNet};

use crate::error::Result;
use crate::image::ImageView;

/// `[1, 3, h, w]` f32 in [0, 1] on the CPU (gray replicated, alpha dropped).
pub(crate) fn rgb_tensor(v: &ImageView<'_>) -> Result<Tensor> {
    let p = v.to_planar()?;
    Ok(Tensor::from_vec(p.rgb, (1, 3, p.height, p.width), &Device::Cpu)?)
}
