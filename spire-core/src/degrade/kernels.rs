//! Blur kernels of the Real-ESRGAN degradation model (basicsr `data/degradations.py`):
//! isotropic and anisotropic Gaussians, generalised Gaussians, plateau kernels and the
//! circular low-pass (sinc) kernel, plus basicsr's random kernel sampler.
//!
//! Kernels are `k × k` row-major, `k` odd, normalised to sum 1, on the grid
//! `x, y ∈ {−⌊k/2⌋, …, ⌊k/2⌋}` (x along columns).

use crate::rng::Rng;

/// The 2×2 covariance `R · diag(σx², σy²) · Rᵀ` rotated by `theta` (basicsr `sigma_matrix2`).
fn sigma_matrix(sig_x: f64, sig_y: f64, theta: f64, isotropic: bool) -> [[f64; 2]; 2] {
    if isotropic {
        return [[sig_x * sig_x, 0.0], [0.0, sig_x * sig_x]];
    }
    let (c, s) = (theta.cos(), theta.sin());
    let (a, b) = (sig_x * sig_x, sig_y * sig_y);
    // U · D · Uᵀ with U = [[c, −s], [s, c]]
    [
        [c * c * a + s * s * b, c * s * a - s * c * b],
        [s * c * a - c * s * b, s * s * a + c * c * b],
    ]
}

fn inverse(m: [[f64; 2]; 2]) -> [[f64; 2]; 2] {
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    [[m[1][1] / det, -m[0][1] / det], [-m[1][0] / det, m[0][0] / det]]
}

/// `[x, y]·Σ⁻¹·[x, y]ᵀ` over the grid, in basicsr's evaluation order.
fn quadratic_form(k: usize, inv: [[f64; 2]; 2]) -> Vec<f64> {
    let half = (k / 2) as f64;
    let mut out = Vec::with_capacity(k * k);
    for row in 0..k {
        let y = row as f64 - half;
        for col in 0..k {
            let x = col as f64 - half;
            let a = x * inv[0][0] + y * inv[1][0];
            let b = x * inv[0][1] + y * inv[1][1];
            out.push(a * x + b * y);
        }
    }
    out
}

fn normalise(mut k: Vec<f64>) -> Vec<f64> {
    let s: f64 = k.iter().sum();
    for v in &mut k {
        *v /= s;
    }
    k
}

/// basicsr `bivariate_Gaussian`.
pub fn bivariate_gaussian(k: usize, sig_x: f64, sig_y: f64, theta: f64, isotropic: bool) -> Vec<f64> {
    let q = quadratic_form(k, inverse(sigma_matrix(sig_x, sig_y, theta, isotropic)));
    normalise(q.into_iter().map(|v| (-0.5 * v).exp()).collect())
}

/// basicsr `bivariate_generalized_Gaussian`: `exp(−½ (xᵀΣ⁻¹x)^β)`.
pub fn bivariate_generalized_gaussian(
    k: usize,
    sig_x: f64,
    sig_y: f64,
    theta: f64,
    beta: f64,
    isotropic: bool,
) -> Vec<f64> {
    let q = quadratic_form(k, inverse(sigma_matrix(sig_x, sig_y, theta, isotropic)));
    normalise(q.into_iter().map(|v| (-0.5 * v.powf(beta)).exp()).collect())
}

/// basicsr `bivariate_plateau`: `1 / ((xᵀΣ⁻¹x)^β + 1)`.
pub fn bivariate_plateau(
    k: usize,
    sig_x: f64,
    sig_y: f64,
    theta: f64,
    beta: f64,
    isotropic: bool,
) -> Vec<f64> {
    let q = quadratic_form(k, inverse(sigma_matrix(sig_x, sig_y, theta, isotropic)));
    normalise(q.into_iter().map(|v| 1.0 / (v.powf(beta) + 1.0)).collect())
}

/// Bessel function of the first kind, order one (rational approximations after Hart,
/// absolute error below 1e-8).
pub fn bessel_j1(x: f64) -> f64 {
    let ax = x.abs();
    if ax < 8.0 {
        let y = x * x;
        let n = x
            * (72_362_614_232.0
                + y * (-7_895_059_235.0
                    + y * (242_396_853.1 + y * (-2_972_611.439 + y * (15_704.482_60 + y * -30.160_366_06)))));
        let d = 144_725_228_442.0
            + y * (2_300_535_178.0 + y * (18_583_304.74 + y * (99_447.433_94 + y * (376.999_139_7 + y))));
        n / d
    } else {
        let z = 8.0 / ax;
        let y = z * z;
        let xx = ax - 2.356_194_491;
        let p = 1.0
            + y * (0.183_105e-2
                + y * (-0.351_639_649_6e-4 + y * (0.245_752_017_4e-5 + y * -0.240_337_019e-6)));
        let q = 0.046_874_999_95
            + y * (-0.200_269_087_3e-3
                + y * (0.844_919_909_6e-5 + y * (-0.882_289_87e-6 + y * 0.105_787_412e-6)));
        // 2/π as the reference's rational approximation writes it (kept for parity).
        #[allow(clippy::approx_constant)]
        let two_over_pi = 0.636_619_772;
        let v = (two_over_pi / ax).sqrt() * (xx.cos() * p - z * xx.sin() * q);
        if x < 0.0 {
            -v
        } else {
            v
        }
    }
}

/// basicsr `circular_lowpass_kernel`: the 2-D sinc `ω·J1(ω r) / (2π r)`, padded to `pad_to`.
pub fn circular_lowpass(cutoff: f64, k: usize, pad_to: usize) -> Vec<f64> {
    let c = (k as f64 - 1.0) / 2.0;
    let mut out = Vec::with_capacity(k * k);
    for row in 0..k {
        for col in 0..k {
            let r = ((row as f64 - c).powi(2) + (col as f64 - c).powi(2)).sqrt();
            out.push(if r == 0.0 {
                cutoff * cutoff / (4.0 * std::f64::consts::PI)
            } else {
                cutoff * bessel_j1(cutoff * r) / (2.0 * std::f64::consts::PI * r)
            });
        }
    }
    let kern = normalise(out);
    pad(&kern, k, pad_to)
}

/// Zero-pads a `k × k` kernel to `to × to` (centred); no-op when `to ≤ k`.
pub fn pad(kern: &[f64], k: usize, to: usize) -> Vec<f64> {
    if to <= k {
        return kern.to_vec();
    }
    let p = (to - k) / 2;
    let mut out = vec![0.0; to * to];
    for r in 0..k {
        out[(r + p) * to + p..(r + p) * to + p + k].copy_from_slice(&kern[r * k..(r + 1) * k]);
    }
    out
}

/// The kernel families of basicsr's `random_mixed_kernels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// Isotropic Gaussian.
    Iso,
    /// Anisotropic (rotated) Gaussian.
    Aniso,
    /// Isotropic generalised Gaussian.
    GeneralizedIso,
    /// Anisotropic generalised Gaussian.
    GeneralizedAniso,
    /// Isotropic plateau.
    PlateauIso,
    /// Anisotropic plateau.
    PlateauAniso,
}

/// Ranges of basicsr's random kernel sampler.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelRanges {
    /// Families and their probabilities.
    pub kinds: Vec<(KernelKind, f64)>,
    /// σ range (both axes).
    pub sigma: (f64, f64),
    /// β range of generalised Gaussians.
    pub betag: (f64, f64),
    /// β range of plateau kernels.
    pub betap: (f64, f64),
}

/// basicsr `random_mixed_kernels` (kernel size `k`, rotation in [−π, π]); β is drawn below or
/// above 1 with equal probability, as basicsr does.
pub fn random_mixed(rng: &mut Rng, r: &KernelRanges, k: usize) -> Vec<f64> {
    let kinds: Vec<f64> = r.kinds.iter().map(|x| x.1).collect();
    let kind = r.kinds[rng.choose(&kinds)].0;
    let iso = matches!(
        kind,
        KernelKind::Iso | KernelKind::GeneralizedIso | KernelKind::PlateauIso
    );
    let sx = rng.range(r.sigma.0, r.sigma.1);
    let (sy, th) = if iso {
        (sx, 0.0)
    } else {
        (
            rng.range(r.sigma.0, r.sigma.1),
            rng.range(-std::f64::consts::PI, std::f64::consts::PI),
        )
    };
    let mut beta = |range: (f64, f64)| {
        if rng.chance(0.5) {
            rng.range(range.0, 1.0)
        } else {
            rng.range(1.0, range.1)
        }
    };
    match kind {
        KernelKind::Iso | KernelKind::Aniso => bivariate_gaussian(k, sx, sy, th, iso),
        KernelKind::GeneralizedIso | KernelKind::GeneralizedAniso => {
            let b = beta(r.betag);
            bivariate_generalized_gaussian(k, sx, sy, th, b, iso)
        }
        KernelKind::PlateauIso | KernelKind::PlateauAniso => {
            let b = beta(r.betap);
            bivariate_plateau(k, sx, sy, th, b, iso)
        }
    }
}

/// A normalised 1-D Gaussian of width `2⌈3σ⌉ + 1` (the isotropic blur of the parameterised
/// pipeline is its outer product with itself).
pub fn gaussian_1d(sigma: f64) -> Vec<f64> {
    let r = (3.0 * sigma).ceil() as isize;
    normalise(
        (-r..=r)
            .map(|x| (-(x * x) as f64 / (2.0 * sigma * sigma)).exp())
            .collect(),
    )
}
