//! FID as pytorch-fid computes it: 2048-d pool features of the FID Inception-v3 (the
//! TensorFlow FID network, `FIDInceptionA/C/E` blocks) on images bilinearly resized to
//! 299×299 (`F.interpolate`, `align_corners=False`) and scaled to [-1, 1]; the Fréchet distance
//! between the Gaussians fitted to two feature sets.
//!
//! The distance is computed stably: `Tr √(Σ₁Σ₂)` is the sum of the square roots of the
//! eigenvalues of the symmetric positive semi-definite `√Σ₁ Σ₂ √Σ₁`, so no non-symmetric
//! matrix square root (and no imaginary parts) are involved.
//!
//! Weights: pytorch-fid's `pt_inception-2015-12-05-*.pth` under torchvision's names, made by
//! `scripts/convert_metric_weights.py inception`. BatchNorm is folded into the convolutions.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::degrade::ops::{resize_torch, Interp, Rgb};
use crate::error::{Error, Result};
use crate::image::ImageView;
use crate::weights::{var_builder, TensorStore};

/// Conv (no bias) + BatchNorm (ε = 0.001, folded) + ReLU.
struct BasicConv {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    pad: (usize, usize),
}

impl BasicConv {
    fn new(
        vb: &VarBuilder,
        name: &str,
        c_in: usize,
        c_out: usize,
        k: (usize, usize),
        stride: usize,
        pad: (usize, usize),
    ) -> candle_core::Result<Self> {
        let vb = vb.pp(name);
        let w = vb.get((c_out, c_in, k.0, k.1), "conv.weight")?;
        let bn = vb.pp("bn");
        let gamma = bn.get(c_out, "weight")?;
        let beta = bn.get(c_out, "bias")?;
        let mean = bn.get(c_out, "running_mean")?;
        let var = bn.get(c_out, "running_var")?;
        let scale = (gamma / (var + 1e-3)?.sqrt()?)?;
        let weight = w.broadcast_mul(&scale.reshape((c_out, 1, 1, 1))?)?;
        let bias = (beta - (mean * &scale)?)?;
        Ok(Self {
            weight,
            bias,
            stride,
            pad,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (ph, pw) = self.pad;
        let y = if ph == pw {
            crate::model::nn::conv2d_raw(
                crate::model::kernels::fused_default(),
                x,
                &self.weight,
                &self.bias,
                self.stride,
                ph,
            )?
        } else {
            let x = x.pad_with_zeros(2, ph, ph)?.pad_with_zeros(3, pw, pw)?;
            crate::model::nn::conv2d_raw(
                crate::model::kernels::fused_default(),
                &x,
                &self.weight,
                &self.bias,
                self.stride,
                0,
            )?
        };
        y.relu()
    }
}

/// 3×3, stride 1, padding 1 average pooling that ignores the padding (`count_include_pad=False`).
fn avg_pool_3x3(x: &Tensor) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let sum = (x
        .pad_with_zeros(2, 1, 1)?
        .pad_with_zeros(3, 1, 1)?
        .avg_pool2d_with_stride((3, 3), (1, 1))?
        * 9.0)?;
    let count = |i: usize, n: usize| (1 + usize::from(i > 0) + usize::from(i + 1 < n)) as f32;
    let counts: Vec<f32> = (0..h)
        .flat_map(|y| (0..w).map(move |xx| 1.0 / (count(y, h) * count(xx, w))))
        .collect();
    sum.broadcast_mul(&Tensor::from_vec(counts, (1, 1, h, w), x.device())?.to_dtype(x.dtype())?)
}

/// 3×3, stride 1, padding 1 max pooling (padding never wins).
fn max_pool_3x3_same(x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let neg =
        |shape: (usize, usize, usize, usize)| Tensor::full(f32::MIN, shape, x.device())?.to_dtype(x.dtype());
    let x = Tensor::cat(&[&neg((n, c, h, 1))?, x, &neg((n, c, h, 1))?], 3)?;
    let x = Tensor::cat(&[&neg((n, c, 1, w + 2))?, &x, &neg((n, c, 1, w + 2))?], 2)?;
    x.max_pool2d_with_stride((3, 3), (1, 1))
}

enum Block {
    A {
        b1: BasicConv,
        b5: [BasicConv; 2],
        b3: [BasicConv; 3],
        pool: BasicConv,
    },
    B {
        b3: BasicConv,
        b3d: [BasicConv; 3],
    },
    C {
        b1: BasicConv,
        b7: [BasicConv; 3],
        b7d: [BasicConv; 5],
        pool: BasicConv,
    },
    D {
        b3: [BasicConv; 2],
        b7: [BasicConv; 4],
    },
    E {
        b1: BasicConv,
        b3_1: BasicConv,
        b3_2: [BasicConv; 2],
        b3d_1: [BasicConv; 2],
        b3d_2: [BasicConv; 2],
        pool: BasicConv,
        max_pool: bool,
    },
}

impl Block {
    fn a(vb: &VarBuilder, name: &str, c: usize, pool: usize) -> candle_core::Result<Self> {
        let vb = vb.pp(name);
        Ok(Block::A {
            b1: BasicConv::new(&vb, "branch1x1", c, 64, (1, 1), 1, (0, 0))?,
            b5: [
                BasicConv::new(&vb, "branch5x5_1", c, 48, (1, 1), 1, (0, 0))?,
                BasicConv::new(&vb, "branch5x5_2", 48, 64, (5, 5), 1, (2, 2))?,
            ],
            b3: [
                BasicConv::new(&vb, "branch3x3dbl_1", c, 64, (1, 1), 1, (0, 0))?,
                BasicConv::new(&vb, "branch3x3dbl_2", 64, 96, (3, 3), 1, (1, 1))?,
                BasicConv::new(&vb, "branch3x3dbl_3", 96, 96, (3, 3), 1, (1, 1))?,
            ],
            pool: BasicConv::new(&vb, "branch_pool", c, pool, (1, 1), 1, (0, 0))?,
        })
    }

    fn b(vb: &VarBuilder, name: &str, c: usize) -> candle_core::Result<Self> {
        let vb = vb.pp(name);
        Ok(Block::B {
            b3: BasicConv::new(&vb, "branch3x3", c, 384, (3, 3), 2, (0, 0))?,
            b3d: [
                BasicConv::new(&vb, "branch3x3dbl_1", c, 64, (1, 1), 1, (0, 0))?,
                BasicConv::new(&vb, "branch3x3dbl_2", 64, 96, (3, 3), 1, (1, 1))?,
                BasicConv::new(&vb, "branch3x3dbl_3", 96, 96, (3, 3), 2, (0, 0))?,
            ],
        })
    }

    fn c(vb: &VarBuilder, name: &str, c7: usize) -> candle_core::Result<Self> {
        let vb = vb.pp(name);
        let c = 768;
        Ok(Block::C {
            b1: BasicConv::new(&vb, "branch1x1", c, 192, (1, 1), 1, (0, 0))?,
            b7: [
                BasicConv::new(&vb, "branch7x7_1", c, c7, (1, 1), 1, (0, 0))?,
                BasicConv::new(&vb, "branch7x7_2", c7, c7, (1, 7), 1, (0, 3))?,
                BasicConv::new(&vb, "branch7x7_3", c7, 192, (7, 1), 1, (3, 0))?,
            ],
            b7d: [
                BasicConv::new(&vb, "branch7x7dbl_1", c, c7, (1, 1), 1, (0, 0))?,
                BasicConv::new(&vb, "branch7x7dbl_2", c7, c7, (7, 1), 1, (3, 0))?,
                BasicConv::new(&vb, "branch7x7dbl_3", c7, c7, (1, 7), 1, (0, 3))?,
                BasicConv::new(&vb, "branch7x7dbl_4", c7, c7, (7, 1), 1, (3, 0))?,
                BasicConv::new(&vb, "branch7x7dbl_5", c7, 192, (1, 7), 1, (0, 3))?,
            ],
            pool: BasicConv::new(&vb, "branch_pool", c, 192, (1, 1), 1, (0, 0))?,
        })
    }

    fn d(vb: &VarBuilder, name: &str) -> candle_core::Result<Self> {
        let vb = vb.pp(name);
        let c = 768;
        Ok(Block::D {
            b3: [
                BasicConv::new(&vb, "branch3x3_1", c, 192, (1, 1), 1, (0, 0))?,
                BasicConv::new(&vb, "branch3x3_2", 192, 320, (3, 3), 2, (0, 0))?,
            ],
            b7: [
                BasicConv::new(&vb, "branch7x7x3_1", c, 192, (1, 1), 1, (0, 0))?,
                BasicConv::new(&vb, "branch7x7x3_2", 192, 192, (1, 7), 1, (0, 3))?,
                BasicConv::new(&vb, "branch7x7x3_3", 192, 192, (7, 1), 1, (3, 0))?,
                BasicConv::new(&vb, "branch7x7x3_4", 192, 192, (3, 3), 2, (0, 0))?,
            ],
        })
    }

    fn e(vb: &VarBuilder, name: &str, c: usize, max_pool: bool) -> candle_core::Result<Self> {
        let vb = vb.pp(name);
        Ok(Block::E {
            b1: BasicConv::new(&vb, "branch1x1", c, 320, (1, 1), 1, (0, 0))?,
            b3_1: BasicConv::new(&vb, "branch3x3_1", c, 384, (1, 1), 1, (0, 0))?,
            b3_2: [
                BasicConv::new(&vb, "branch3x3_2a", 384, 384, (1, 3), 1, (0, 1))?,
                BasicConv::new(&vb, "branch3x3_2b", 384, 384, (3, 1), 1, (1, 0))?,
            ],
            b3d_1: [
                BasicConv::new(&vb, "branch3x3dbl_1", c, 448, (1, 1), 1, (0, 0))?,
                BasicConv::new(&vb, "branch3x3dbl_2", 448, 384, (3, 3), 1, (1, 1))?,
            ],
            b3d_2: [
                BasicConv::new(&vb, "branch3x3dbl_3a", 384, 384, (1, 3), 1, (0, 1))?,
                BasicConv::new(&vb, "branch3x3dbl_3b", 384, 384, (3, 1), 1, (1, 0))?,
            ],
            pool: BasicConv::new(&vb, "branch_pool", c, 192, (1, 1), 1, (0, 0))?,
            max_pool,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let chain = |convs: &[BasicConv], x: &Tensor| -> candle_core::Result<Tensor> {
            let mut h = x.clone();
            for c in convs {
                h = c.forward(&h)?;
            }
            Ok(h)
        };
        match self {
            Block::A { b1, b5, b3, pool } => Tensor::cat(
                &[
                    b1.forward(x)?,
                    chain(b5, x)?,
                    chain(b3, x)?,
                    pool.forward(&avg_pool_3x3(x)?)?,
                ],
                1,
            ),
            Block::B { b3, b3d } => Tensor::cat(
                &[
                    b3.forward(x)?,
                    chain(b3d, x)?,
                    x.max_pool2d_with_stride((3, 3), (2, 2))?,
                ],
                1,
            ),
            Block::C { b1, b7, b7d, pool } => Tensor::cat(
                &[
                    b1.forward(x)?,
                    chain(b7, x)?,
                    chain(b7d, x)?,
                    pool.forward(&avg_pool_3x3(x)?)?,
                ],
                1,
            ),
            Block::D { b3, b7 } => Tensor::cat(
                &[
                    chain(b3, x)?,
                    chain(b7, x)?,
                    x.max_pool2d_with_stride((3, 3), (2, 2))?,
                ],
                1,
            ),
            Block::E {
                b1,
                b3_1,
                b3_2,
                b3d_1,
                b3d_2,
                pool,
                max_pool,
            } => {
                let t = b3_1.forward(x)?;
                let b3 = Tensor::cat(&[b3_2[0].forward(&t)?, b3_2[1].forward(&t)?], 1)?;
                let t = chain(b3d_1, x)?;
                let b3d = Tensor::cat(&[b3d_2[0].forward(&t)?, b3d_2[1].forward(&t)?], 1)?;
                let p = if *max_pool {
                    max_pool_3x3_same(x)?
                } else {
                    avg_pool_3x3(x)?
                };
                Tensor::cat(&[b1.forward(x)?, b3, b3d, pool.forward(&p)?], 1)
            }
        }
    }
}

/// pytorch-fid's FID Inception-v3 feature extractor. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct FidInception {
    inner: Arc<Inner>,
}

struct Inner {
    stem: Vec<BasicConv>,
    stem2: Vec<BasicConv>,
    blocks: Vec<Block>,
    device: Device,
}

impl std::fmt::Debug for FidInception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FidInception").finish_non_exhaustive()
    }
}

impl FidInception {
    /// Loads the converted FID Inception weights.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::ModelLoad`] naming the file and the
    /// missing or misshapen tensor.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let store = Arc::new(TensorStore::open(&[path.to_path_buf()])?);
        if !store.contains("Mixed_7c.branch_pool.conv.weight") {
            return Err(Error::model_load(
                path,
                "not an FID Inception weights file (no `Mixed_7c.branch_pool.conv.weight`); \
                 convert pytorch-fid's weights with scripts/convert_metric_weights.py inception",
            ));
        }
        let vb = var_builder(store, DType::F32, device);
        let build = || -> candle_core::Result<Inner> {
            Ok(Inner {
                stem: vec![
                    BasicConv::new(&vb, "Conv2d_1a_3x3", 3, 32, (3, 3), 2, (0, 0))?,
                    BasicConv::new(&vb, "Conv2d_2a_3x3", 32, 32, (3, 3), 1, (0, 0))?,
                    BasicConv::new(&vb, "Conv2d_2b_3x3", 32, 64, (3, 3), 1, (1, 1))?,
                ],
                stem2: vec![
                    BasicConv::new(&vb, "Conv2d_3b_1x1", 64, 80, (1, 1), 1, (0, 0))?,
                    BasicConv::new(&vb, "Conv2d_4a_3x3", 80, 192, (3, 3), 1, (0, 0))?,
                ],
                blocks: vec![
                    Block::a(&vb, "Mixed_5b", 192, 32)?,
                    Block::a(&vb, "Mixed_5c", 256, 64)?,
                    Block::a(&vb, "Mixed_5d", 288, 64)?,
                    Block::b(&vb, "Mixed_6a", 288)?,
                    Block::c(&vb, "Mixed_6b", 128)?,
                    Block::c(&vb, "Mixed_6c", 160)?,
                    Block::c(&vb, "Mixed_6d", 160)?,
                    Block::c(&vb, "Mixed_6e", 192)?,
                    Block::d(&vb, "Mixed_7a")?,
                    Block::e(&vb, "Mixed_7b", 1280, false)?,
                    Block::e(&vb, "Mixed_7c", 2048, true)?,
                ],
                device: device.clone(),
            })
        };
        let inner = build().map_err(|e| Error::model_load(path, e.to_string()))?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Pool features of `[n, 3, 299, 299]` inputs already resized and in [0, 1]: `[n, 2048]`.
    ///
    /// # Errors
    /// [`Error::InvalidImage`] for another shape.
    pub fn features_299(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() != 4 || x.dims()[1..] != [3, 299, 299] {
            return Err(Error::InvalidImage(format!(
                "the FID Inception takes [n, 3, 299, 299], got {:?}",
                x.dims()
            )));
        }
        let run = || -> candle_core::Result<Tensor> {
            let mut h = ((x.to_device(&self.inner.device)?.to_dtype(DType::F32)? * 2.0)? - 1.0)?;
            for c in &self.inner.stem {
                h = c.forward(&h)?;
            }
            h = h.max_pool2d_with_stride((3, 3), (2, 2))?;
            for c in &self.inner.stem2 {
                h = c.forward(&h)?;
            }
            h = h.max_pool2d_with_stride((3, 3), (2, 2))?;
            for b in &self.inner.blocks {
                h = b.forward(&h)?;
            }
            h.mean(3)?.mean(2)
        };
        Ok(run()?)
    }

    /// Pool features of one image (resized to 299×299 as pytorch-fid does): 2048 values.
    ///
    /// # Errors
    /// [`Error::InvalidImage`] for non-finite samples.
    pub fn features(&self, img: &ImageView<'_>) -> Result<Vec<f32>> {
        let p = img.to_planar()?;
        let rgb = Rgb::new(p.width, p.height, p.rgb)?;
        let r = resize_torch(&rgb, 299, 299, Interp::Bilinear);
        let t = Tensor::from_vec(r.data, (1, 3, 299, 299), &Device::Cpu)?;
        Ok(self.features_299(&t)?.flatten_all()?.to_vec1()?)
    }
}

/// The mean and covariance (`np.cov(rowvar=False)`, divided by n − 1) of feature rows.
///
/// # Errors
/// [`Error::InvalidArgument`] for fewer than 2 rows or rows of different lengths.
pub fn feature_statistics(rows: &[Vec<f32>]) -> Result<(Vec<f64>, Vec<f64>)> {
    let n = rows.len();
    if n < 2 {
        return Err(Error::invalid_arg(
            "features",
            format!("FID needs at least 2 images, got {n}"),
        ));
    }
    let d = rows[0].len();
    if rows.iter().any(|r| r.len() != d) {
        return Err(Error::invalid_arg("features", "feature rows differ in length"));
    }
    let mut mean = vec![0f64; d];
    for r in rows {
        for (m, &v) in mean.iter_mut().zip(r) {
            *m += v as f64;
        }
    }
    for m in &mut mean {
        *m /= n as f64;
    }
    // Centred rows as an n × d matrix, then Xᵀ X / (n − 1).
    let centred: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.iter().zip(&mean).map(|(&v, m)| v as f64 - m))
        .collect();
    let x = faer::MatRef::from_row_major_slice(&centred, n, d);
    let cov = x.transpose() * x;
    let s = 1.0 / (n as f64 - 1.0);
    let mut out = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..d {
            out[i * d + j] = cov[(i, j)] * s;
        }
    }
    Ok((mean, out))
}

/// The Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂) (`d × d` row-major covariances):
/// `‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr √(Σ₁Σ₂)`, with the trace term from the eigenvalues of
/// `√Σ₁ Σ₂ √Σ₁` (negative round-off eigenvalues count as 0).
///
/// # Errors
/// [`Error::InvalidArgument`] for mismatched sizes or non-finite values.
pub fn frechet_distance(mu1: &[f64], sigma1: &[f64], mu2: &[f64], sigma2: &[f64]) -> Result<f64> {
    let d = mu1.len();
    if mu2.len() != d || sigma1.len() != d * d || sigma2.len() != d * d {
        return Err(Error::invalid_arg(
            "statistics",
            "means and covariances differ in size",
        ));
    }
    if [mu1, mu2, sigma1, sigma2]
        .iter()
        .any(|v| v.iter().any(|x| !x.is_finite()))
    {
        return Err(Error::invalid_arg(
            "statistics",
            "non-finite value in the feature statistics",
        ));
    }
    let s1 = faer::MatRef::from_row_major_slice(sigma1, d, d);
    let s2 = faer::MatRef::from_row_major_slice(sigma2, d, d);
    let eig = s1
        .self_adjoint_eigen(faer::Side::Lower)
        .map_err(|e| Error::Internal(format!("eigendecomposition of Σ₁ failed: {e:?}")))?;
    let u = eig.U();
    let lam = eig.S();
    let mut root = faer::Mat::<f64>::zeros(d, d);
    for j in 0..d {
        let s = lam[j].max(0.0).sqrt();
        for i in 0..d {
            root[(i, j)] = u[(i, j)] * s;
        }
    }
    let sqrt1 = &root * u.transpose();
    let m = &sqrt1 * s2 * &sqrt1;
    let mu = m
        .self_adjoint_eigenvalues(faer::Side::Lower)
        .map_err(|e| Error::Internal(format!("eigenvalues of √Σ₁Σ₂√Σ₁ failed: {e:?}")))?;
    let tr_covmean: f64 = mu.iter().map(|&v| v.max(0.0).sqrt()).sum();
    let diff: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b) * (a - b)).sum();
    let tr1: f64 = (0..d).map(|i| sigma1[i * d + i]).sum();
    let tr2: f64 = (0..d).map(|i| sigma2[i * d + i]).sum();
    Ok(diff + tr1 + tr2 - 2.0 * tr_covmean)
}
