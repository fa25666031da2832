//! The plan of one restore call, made from the sizes alone before any pixel is converted:
//! the latent tiles, the autoencoder's tiles, the call's peak memory and the work per step.
//!
//! [`Restorer::plan`](crate::Restorer::plan) returns it; every `restore` makes it first, so a
//! call that cannot fit its `memory_limit` is refused before it allocates anything sized from
//! the image, and the CLI makes it from an image file's header before decoding the file.
//!
//! **Memory.** The estimate covers the whole call beyond the loaded weights: the caller's
//! image, its planar float copy, the padded input, the autoencoder's working memory, one
//! denoising step, the decoded output, the crops, the colour fix or measurement consistency
//! and the converted results. The call runs in phases; the peak is the largest phase
//! ([`PhaseBytes`]).
//!
//! **Time.** Convolutions and linear layers cost work in proportion to the pixels, but
//! self-attention costs work in proportion to the *square* of the pixels at its level, so on a
//! large image one piece can be slower than overlapping tiles that repeat some pixels. The plan
//! counts the work of a step ([`unet_flops`]) for one piece and for every tile size that fits,
//! and tiles where tiles are at least [`SPEED_MARGIN`]× cheaper.

use crate::model::{UNetConfig, VaeTiling};
use crate::tiling::TilePlan;

/// Tiles are picked for speed only when they are at least this much cheaper than one piece (a
/// whole-image step is exact; blended tiles approximate it).
pub const SPEED_MARGIN: f64 = 1.25;

/// The smallest latent tile the plan picks for speed (memory may force smaller ones): the
/// models are trained on 64×64 latents (512 px for Stable Diffusion), and much smaller tiles
/// give each prediction too little context.
pub const SPEED_MIN_TILE: usize = 64;

/// Work of one softmax element relative to a multiply-add pair (the exponential and the two
/// passes over the row), for the attention cost.
const SOFTMAX_FLOPS: f64 = 16.0;

/// Why the latent is (or is not) cut into tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TileReason {
    /// One piece: it fits the memory limit and tiles would not be faster.
    Whole,
    /// `tile_size` was given.
    Asked,
    /// One piece would not fit the memory limit.
    Memory,
    /// Tiles are estimated at least [`SPEED_MARGIN`]× faster than one piece.
    Speed,
}

/// Bytes held in each phase of a call (beyond the weights and the caller's image).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PhaseBytes {
    /// Converting the input to planar floats (and enlarging it).
    pub convert: u64,
    /// Encoding the input with the autoencoder.
    pub encode: u64,
    /// One denoising step.
    pub denoise: u64,
    /// Decoding the latents.
    pub decode: u64,
    /// Cropping, measurement consistency, colour fix and conversion back.
    pub finish: u64,
}

impl PhaseBytes {
    /// The largest phase and its name.
    pub fn peak(&self) -> (u64, &'static str) {
        [
            (self.convert, "converting the input"),
            (self.encode, "encoding"),
            (self.denoise, "denoising"),
            (self.decode, "decoding"),
            (self.finish, "colour fix and output"),
        ]
        .into_iter()
        .fold((0, "converting the input"), |a, b| if b.0 > a.0 { b } else { a })
    }
}

/// How one restore call runs.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The input's width and height.
    pub input: (usize, usize),
    /// The output's width and height (the input enlarged by the prompt's factor).
    pub output: (usize, usize),
    /// Images restored together.
    pub batch: usize,
    /// The latent's height and width.
    pub latent: (usize, usize),
    /// The latent tiles of every denoising step.
    pub tiles: TilePlan,
    /// Why the latent is tiled (or not).
    pub reason: TileReason,
    /// The encoder's tiles (`None`: whole, or no encoding).
    pub encode: Option<VaeTiling>,
    /// The decoder's tiles (`None`: whole).
    pub decode: Option<VaeTiling>,
    /// Pixels per latent pixel.
    pub vae_factor: usize,
    /// Estimated bytes of each phase, the caller's image included.
    pub phases: PhaseBytes,
    /// The caller's image(s), bytes (part of every phase).
    pub input_bytes: u64,
    /// The memory limit the plan was made for, bytes (`None`: unlimited).
    pub budget: Option<u64>,
    /// Estimated work of one denoising step as planned (floating-point operations).
    pub step_flops: f64,
    /// Estimated work of one denoising step in one piece.
    pub whole_step_flops: f64,
}

impl RunPlan {
    /// The estimated peak memory of the call beyond the loaded weights, bytes, with the phase
    /// where it peaks.
    pub fn peak(&self) -> (u64, &'static str) {
        self.phases.peak()
    }

    /// One line for progress reports and logs.
    pub fn describe(&self) -> String {
        let (lh, lw) = self.latent;
        let vae = match (self.encode, self.decode) {
            (None, None) => "autoencoder whole".to_string(),
            (e, d) => {
                let t = |t: Option<VaeTiling>, scale: usize| match t {
                    None => "whole".to_string(),
                    Some(t) => format!(
                        "tiles of {0}×{0} px{1}",
                        t.tile * scale,
                        if t.spill {
                            " spilled to a temporary file"
                        } else {
                            ""
                        }
                    ),
                };
                format!("encoder {}, decoder {}", t(e, 1), t(d, self.vae_factor))
            }
        };
        let why = match self.reason {
            TileReason::Whole | TileReason::Asked => String::new(),
            TileReason::Memory => " (for the memory limit)".to_string(),
            TileReason::Speed => format!(
                " (~{:.1}× less work per step than one piece)",
                self.whole_step_flops / self.step_flops.max(1.0)
            ),
        };
        let (peak, _) = self.peak();
        format!(
            "{}{why}; {vae}; peak ~{} MiB beyond the weights",
            self.tiles.describe(lh, lw),
            peak >> 20
        )
    }
}

/// Estimated work (floating-point operations: 2 per multiply-add) of one pass of `u` over an
/// `h × w` latent with a text context of `ctx` tokens: `(linear, quadratic)`, where the
/// quadratic part is self-attention's scores, softmax and weighted sum, which grow with the
/// square of the tokens at each attention level. `encoder_only` counts the down blocks and
/// the middle (an adaptor).
pub fn unet_flops(u: &UNetConfig, h: usize, w: usize, ctx: usize, encoder_only: bool) -> (f64, f64) {
    let levels = u.block_out_channels.len();
    let px = |l: usize| ((h >> l).max(1) * (w >> l).max(1)) as f64;
    let conv = |cin: f64, cout: f64, p: f64| 2.0 * 9.0 * cin * cout * p;
    let resnet = |cin: f64, c: f64, p: f64| {
        conv(cin, c, p) + conv(c, c, p) + if cin != c { 2.0 * cin * c * p } else { 0.0 }
    };
    let ctx = ctx as f64;
    let (mut lin, mut quad) = (0.0, 0.0);
    let mut attn = |l: usize, c: f64, n: f64, layers: usize| {
        let layers = layers.max(1) as f64;
        let heads = u.num_attention_heads.get(l).copied().unwrap_or(1).max(1) as f64;
        // Projections in and out, self q/k/v/out, cross q/out (k/v see only the context),
        // GEGLU (c → 8c, 4c → c), the cross-attention scores and sum.
        lin += layers * n * (2.0 * c * c * (2.0 + 4.0 + 2.0 + 8.0 + 4.0) + 4.0 * ctx * c);
        quad += layers * n * n * (4.0 * c + SOFTMAX_FLOPS * heads);
    };
    let bo = |l: usize| u.block_out_channels[l] as f64;
    let tl = |l: usize| u.transformer_layers_per_block.get(l).copied().unwrap_or(1);
    let mut lin_convs = conv(u.in_channels as f64, bo(0), px(0));
    let mut cin = bo(0);
    let mut skips = vec![cin];
    for l in 0..levels {
        let c = bo(l);
        for _ in 0..u.layers_per_block[l] {
            lin_convs += resnet(cin, c, px(l));
            if u.down_cross_attention[l] {
                attn(l, c, px(l), tl(l));
            }
            cin = c;
            skips.push(c);
        }
        if l + 1 < levels {
            lin_convs += conv(c, c, px(l + 1));
            skips.push(c);
        }
    }
    let last = levels - 1;
    if u.mid_block {
        lin_convs += 2.0 * resnet(bo(last), bo(last), px(last));
        attn(last, bo(last), px(last), tl(last));
    }
    if encoder_only {
        // The adaptor's zero convolutions: one 1×1 per skip.
        lin_convs += skips.iter().map(|&c| 2.0 * c * c * px(0) / 4.0).sum::<f64>();
        return (lin + lin_convs, quad);
    }
    for i in 0..levels {
        let l = levels - 1 - i;
        let c = bo(l);
        for _ in 0..=u.layers_per_block[l] {
            let skip = skips.pop().unwrap_or(c);
            lin_convs += resnet(cin + skip, c, px(l));
            if u.up_cross_attention.get(i).copied().unwrap_or(false) {
                attn(l, c, px(l), tl(l));
            }
            cin = c;
        }
        if l > 0 {
            lin_convs += conv(c, c, px(l - 1));
        }
    }
    lin_convs += conv(bo(0), u.out_channels as f64, px(0));
    (lin + lin_convs, quad)
}

/// Bytes of `n` planar f32 images of `px` pixels with `channels` channels.
pub(crate) fn planes(n: usize, px: usize, channels: usize) -> u64 {
    (n as u64) * (px as u64) * (channels as u64) * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_work_grows_with_the_square_of_the_pixels() {
        let u = UNetConfig::sd21_base();
        let (l1, q1) = unet_flops(&u, 64, 64, 77, false);
        let (l2, q2) = unet_flops(&u, 128, 128, 77, false);
        assert!((l2 / l1 - 4.0).abs() < 0.05, "linear part ×{}", l2 / l1);
        assert!((q2 / q1 - 16.0).abs() < 0.05, "quadratic part ×{}", q2 / q1);
        // SD 2.1's UNet at 64×64: this count gives 0.81 TFLOP per pass (about 400 G
        // multiply-adds); pinned, so a change of the count is seen.
        let t = (l1 + q1) / 1e12;
        assert!((0.6..1.1).contains(&t), "{t} TFLOP");
        // The adaptor is the encoder half: less than half the work.
        let (la, qa) = unet_flops(&u, 64, 64, 77, true);
        assert!(la + qa < 0.5 * (l1 + q1));
    }

    #[test]
    fn the_peak_is_the_largest_phase() {
        let p = PhaseBytes {
            convert: 1,
            encode: 5,
            denoise: 3,
            decode: 7,
            finish: 2,
        };
        assert_eq!(p.peak(), (7, "decoding"));
    }
}
