//! Seeded noise that is the same on every device and for every thread count.
//!
//! The algorithm, so that other implementations can reproduce our noise bit for bit:
//!
//! 1. **Philox4x32-10** (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11),
//!    key `(seed & 0xffffffff, seed >> 32)`, counter `(i & 0xffffffff, i >> 32, 0, 0)` for block
//!    `i = 0, 1, 2, …`; each block yields four 32-bit words `w0..w3`.
//! 2. **Uniforms** in the open interval (0, 1): `u = ((w >> 8) + 0.5) / 2^24`, in f64.
//! 3. **Normals** by Box–Muller on each pair `(u_a, u_b) = (w0, w1)` and `(w2, w3)`:
//!    `r = sqrt(-2 ln u_a)`, `z_a = r cos(2π u_b)`, `z_b = r sin(2π u_b)`, computed in f64 and
//!    rounded to f32. Block `i` gives normals `4i .. 4i+3` in the order `z(w0,w1)_a,
//!    z(w0,w1)_b, z(w2,w3)_a, z(w2,w3)_b`.
//! 4. A tensor of shape `[d0, …, dn]` takes normals `0 .. prod(d)` in row-major order.
//!
//! Blocks are independent, so generation is split across threads without changing the result.
//! Noise is always generated on the CPU and then moved to the model's device.

use candle_core::{Device, Shape, Tensor};

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// One Philox4x32-10 block.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for _ in 0..10 {
        let p0 = u64::from(M0) * u64::from(c[0]);
        let p1 = u64::from(M1) * u64::from(c[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

fn uniform(w: u32) -> f64 {
    ((w >> 8) as f64 + 0.5) * (1.0 / 16_777_216.0)
}

fn block_normals(seed: u64, block: u64) -> [f32; 4] {
    let w = philox4x32_10(
        [block as u32, (block >> 32) as u32, 0, 0],
        [seed as u32, (seed >> 32) as u32],
    );
    let pair = |a: u32, b: u32| {
        let r = (-2.0 * uniform(a).ln()).sqrt();
        let t = std::f64::consts::TAU * uniform(b);
        ((r * t.cos()) as f32, (r * t.sin()) as f32)
    };
    let (z0, z1) = pair(w[0], w[1]);
    let (z2, z3) = pair(w[2], w[3]);
    [z0, z1, z2, z3]
}

/// The first `n` standard normals of the stream `seed`.
pub fn normals(seed: u64, n: usize) -> Vec<f32> {
    normals_from(seed, 0, n)
}

/// Standard normals `offset .. offset + n` of the stream `seed`.
pub fn normals_from(seed: u64, offset: u64, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    // Each Philox block gives four normals; compute each block once.
    let fill = |chunk_start: usize, chunk: &mut [f32]| {
        let mut j = 0;
        while j < chunk.len() {
            let idx = offset + (chunk_start + j) as u64;
            let (block, lane) = (idx / 4, (idx % 4) as usize);
            let z = block_normals(seed, block);
            let take = (4 - lane).min(chunk.len() - j);
            chunk[j..j + take].copy_from_slice(&z[lane..lane + take]);
            j += take;
        }
    };
    const CHUNK: usize = 1 << 16;
    if n <= CHUNK {
        fill(0, &mut out);
    } else {
        std::thread::scope(|s| {
            let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
            let per = n.div_ceil(threads).div_ceil(4) * 4;
            for (t, chunk) in out.chunks_mut(per).enumerate() {
                s.spawn(move || fill(t * per, chunk));
            }
        });
    }
    out
}

/// A tensor of standard normals from stream `seed` (f32, then moved to `device`).
pub fn randn(seed: u64, shape: impl Into<Shape>, device: &Device) -> candle_core::Result<Tensor> {
    let shape = shape.into();
    let v = normals(seed, shape.elem_count());
    Tensor::from_vec(v, shape, &Device::Cpu)?.to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_known_answer() {
        // Known-answer vectors from the Random123 distribution (kat_vectors, philox4x32_10).
        assert_eq!(
            philox4x32_10([0, 0, 0, 0], [0, 0]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([0xffffffff; 4], [0xffffffff, 0xffffffff]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn same_seed_same_noise_any_split() {
        let a = normals(42, 300_001);
        let b: Vec<f32> = (0..300_001u64)
            .map(|i| block_normals(42, i / 4)[(i % 4) as usize])
            .collect();
        assert_eq!(a, b);
        assert_eq!(&normals_from(42, 1000, 10)[..], &a[1000..1010]);
        assert_ne!(normals(43, 10), a[..10].to_vec());
    }

    #[test]
    fn normals_have_unit_variance() {
        let v = normals(7, 1 << 20);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 5e-3, "mean {mean}");
        assert!((var - 1.0).abs() < 5e-3, "var {var}");
    }
}

/// A sequential generator over one Philox stream, for drawing parameters (which degradation,
/// how strong). Draw `k` uses block `k / 4`, word `k % 4` of stream `seed`, domain-separated
/// from [`normals`] by a third counter word of 1.
#[derive(Debug, Clone)]
pub struct Rng {
    seed: u64,
    next: u64,
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed, next: 0 }
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        let k = self.next;
        self.next += 1;
        let block = k / 4;
        let w = philox4x32_10(
            [block as u32, (block >> 32) as u32, 1, 0],
            [self.seed as u32, (self.seed >> 32) as u32],
        );
        w[(k % 4) as usize]
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        let hi = (self.next_u32() >> 5) as u64; // 27 bits
        let lo = (self.next_u32() >> 6) as u64; // 26 bits
        ((hi << 26) | lo) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in [lo, hi] (inclusive).
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        let n = (hi - lo + 1) as f64;
        (lo + (self.uniform() * n) as i64).min(hi)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// An index drawn with the given (unnormalised) weights.
    pub fn choose(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut u = self.uniform() * total;
        for (i, &w) in weights.iter().enumerate() {
            if u < w {
                return i;
            }
            u -= w;
        }
        weights.len().saturating_sub(1)
    }

    /// A seed for an independent sub-stream.
    pub fn fork(&mut self) -> u64 {
        ((self.next_u32() as u64) << 32) | self.next_u32() as u64
    }
}

/// Uniform draws in (0, 1) for element `index` of stream `seed`: draw `j` is word `j % 4` of
/// Philox block `(j / 4, 2, index)`. Used where one element needs a variable number of draws
/// (Poisson sampling), independent of how elements are split across threads.
pub(crate) fn element_uniform(seed: u64, index: u64, j: u64) -> f64 {
    let b = j / 4;
    let w = philox4x32_10(
        [b as u32, 2, index as u32, (index >> 32) as u32],
        [seed as u32, (seed >> 32) as u32],
    );
    ((w[(j % 4) as usize] >> 8) as f64 + 0.5) / 16_777_216.0
}

/// The splitmix64 finaliser: a well-mixed 64-bit value from `z`.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The noise one restore draws for one image, each from its own stream so that adding or
/// removing one draw (a scheduler without step noise, an input-free start) leaves the others
/// unchanged. The keys are part of our reproducibility contract: a given `(seed, options,
/// model)` restores to the same pixels on every device, thread count and release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreNoise {
    /// The start latents (pure noise, or the noise added to the input at `strength` < 1):
    /// the image's seed itself, as diffusers' `generator` with that seed.
    Start,
    /// The VAE's posterior sample when the input is encoded for a `strength` < 1 start.
    VaeSample,
    /// The noise a stochastic scheduler step `i` (0-based, over the whole schedule) adds.
    Step(usize),
}

/// The seed of the stream that feeds `which` for an image restored with seed `image_seed`
/// (image `i` of a batch has `seed + i`): `Start` is `image_seed`; the others are the
/// splitmix64 finaliser of `image_seed ^ key·φ64` with key 1 (`VaeSample`) and `2 + (i << 8)`
/// (`Step(i)`), φ64 = 0x9E3779B97F4A7C15.
pub fn restore_stream(image_seed: u64, which: RestoreNoise) -> u64 {
    let key = match which {
        RestoreNoise::Start => return image_seed,
        RestoreNoise::VaeSample => 1,
        RestoreNoise::Step(i) => 2 + ((i as u64) << 8),
    };
    mix64(image_seed ^ key.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// What a training stream feeds (the `what` of [`train_stream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainNoise {
    /// The crops, degradations and prompts of a micro-batch.
    Data = 1,
    /// The diffusion noise of a micro-batch.
    Diffusion = 2,
    /// The fixed noise of the validation previews.
    Preview = 3,
    /// The probe images that set the latent scaling factor.
    Probe = 7,
}

/// The seed of training's stream `what` at micro-batch `step`: the splitmix64 finaliser of
/// `seed ^ step·φ64 ^ what·0xD1B54A32D192ED03`.
pub fn train_stream(seed: u64, step: u64, what: TrainNoise) -> u64 {
    mix64(seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (what as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    /// The keys are a reproducibility contract: these values may never change.
    #[test]
    fn stream_keys_are_stable() {
        assert_eq!(restore_stream(42, RestoreNoise::Start), 42);
        let a = restore_stream(42, RestoreNoise::VaeSample);
        let b = restore_stream(42, RestoreNoise::Step(0));
        let c = restore_stream(42, RestoreNoise::Step(1));
        assert!(a != b && b != c && a != c);
        // The formula, spelled out once more.
        let mix = |seed: u64, key: u64| mix64(seed ^ key.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        assert_eq!(a, mix(42, 1));
        assert_eq!(c, mix(42, 2 + (1 << 8)));
        assert_eq!(
            train_stream(5, 3, TrainNoise::Diffusion),
            mix64(5 ^ 3u64.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 2u64.wrapping_mul(0xD1B5_4A32_D192_ED03))
        );
    }
}
