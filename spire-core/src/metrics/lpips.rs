//! LPIPS (Zhang et al. 2018) as the `lpips` package computes it (version 0.1): the input in
//! [-1, 1] is shifted and scaled per channel (`ScalingLayer`), run through the first five
//! ReLU stages of AlexNet or VGG16 (torchvision's `features`), each stage's features are
//! normalised to unit length over channels (`x / (‖x‖ + 1e-10)`), the squared differences
//! are weighted by the stage's linear head (a 1×1 convolution without bias), averaged over
//! the picture, and the five averages are summed.
//!
//! Weights: one safetensors file with torchvision's names for the backbone
//! (`features.{i}.weight`, `features.{i}.bias`) and `lin{k}.weight` (`[1, C, 1, 1]`) for the
//! heads, made by `scripts/convert_metric_weights.py lpips` from the published `.pth` files.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor, D};

use crate::error::{Error, Result};
use crate::image::ImageView;
use crate::model::nn::{conv2d, Conv2d};
use crate::weights::{var_builder, TensorStore};

/// The backbone of an LPIPS model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LpipsNet {
    /// AlexNet (the `lpips` package's default).
    Alex,
    /// VGG16.
    Vgg,
}

impl LpipsNet {
    /// `"alex"` or `"vgg"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LpipsNet::Alex => "alex",
            LpipsNet::Vgg => "vgg",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Layer {
    /// `features.{index}` convolution: kernel, stride, padding.
    Conv(usize, usize, usize, usize),
    Relu,
    /// Max pooling: kernel, stride.
    Pool(usize, usize),
}

/// torchvision `features` up to each LPIPS stage.
fn layout(net: LpipsNet) -> Vec<Vec<Layer>> {
    use Layer::*;
    match net {
        LpipsNet::Alex => vec![
            vec![Conv(0, 11, 4, 2), Relu],
            vec![Pool(3, 2), Conv(3, 5, 1, 2), Relu],
            vec![Pool(3, 2), Conv(6, 3, 1, 1), Relu],
            vec![Conv(8, 3, 1, 1), Relu],
            vec![Conv(10, 3, 1, 1), Relu],
        ],
        LpipsNet::Vgg => {
            let convs = |idx: &[usize]| {
                idx.iter()
                    .flat_map(|&i| [Conv(i, 3, 1, 1), Relu])
                    .collect::<Vec<_>>()
            };
            let pooled = |idx: &[usize]| std::iter::once(Pool(2, 2)).chain(convs(idx)).collect::<Vec<_>>();
            vec![
                convs(&[0, 2]),
                pooled(&[5, 7]),
                pooled(&[10, 12, 14]),
                pooled(&[17, 19, 21]),
                pooled(&[24, 26, 28]),
            ]
        }
    }
}

/// Channel counts of the five stages.
fn channels(net: LpipsNet) -> [usize; 5] {
    match net {
        LpipsNet::Alex => [64, 192, 384, 256, 256],
        LpipsNet::Vgg => [64, 128, 256, 512, 512],
    }
}

enum Op {
    Conv(Conv2d),
    Relu,
    Pool(usize, usize),
}

/// A loaded LPIPS model. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Lpips {
    inner: Arc<Inner>,
}

struct Inner {
    net: LpipsNet,
    stages: Vec<Vec<Op>>,
    /// Head weights, `[C]` each.
    lins: Vec<Tensor>,
    device: Device,
}

impl std::fmt::Debug for Lpips {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lpips").field("net", &self.inner.net).finish()
    }
}

impl Lpips {
    /// Loads an LPIPS weights file; the backbone (AlexNet or VGG16) is recognised from its
    /// tensors.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::ModelLoad`] naming the file and the
    /// tensor if one is missing, has the wrong shape, or the file is not safetensors.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let store = Arc::new(TensorStore::open(&[path.to_path_buf()])?);
        let net = if store.contains("features.28.weight") {
            LpipsNet::Vgg
        } else if store.contains("features.10.weight") {
            LpipsNet::Alex
        } else {
            return Err(Error::model_load(
                path,
                "not an LPIPS weights file: no `features.10.weight` (AlexNet) or `features.28.weight` (VGG16); \
                 convert one with scripts/convert_metric_weights.py lpips",
            ));
        };
        let vb = var_builder(store, DType::F32, device);
        let build = || -> candle_core::Result<Inner> {
            let mut c_in = 3;
            let mut stages = Vec::new();
            for stage in layout(net) {
                let mut ops = Vec::new();
                for l in stage {
                    ops.push(match l {
                        Layer::Conv(i, k, s, p) => {
                            let c_out = vb.pp("features").pp(i).get_unchecked("bias")?.dim(0)?;
                            let conv = conv2d(c_in, c_out, k, s, p, vb.pp("features").pp(i))?;
                            c_in = c_out;
                            Op::Conv(conv)
                        }
                        Layer::Relu => Op::Relu,
                        Layer::Pool(k, s) => Op::Pool(k, s),
                    });
                }
                stages.push(ops);
            }
            let lins = channels(net)
                .iter()
                .enumerate()
                .map(|(k, &c)| vb.get((1, c, 1, 1), &format!("lin{k}.weight"))?.flatten_all())
                .collect::<candle_core::Result<Vec<_>>>()?;
            Ok(Inner {
                net,
                stages,
                lins,
                device: device.clone(),
            })
        };
        let inner = build().map_err(|e| Error::model_load(path, e.to_string()))?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The backbone.
    pub fn net(&self) -> LpipsNet {
        self.inner.net
    }

    fn features(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        // ScalingLayer on 2x − 1.
        let shift = Tensor::new(&[-0.030f32, -0.088, -0.188], x.device())?.reshape((1, 3, 1, 1))?;
        let scale = Tensor::new(&[0.458f32, 0.448, 0.450], x.device())?.reshape((1, 3, 1, 1))?;
        let mut h = ((x * 2.0)? - 1.0)?.broadcast_sub(&shift)?.broadcast_div(&scale)?;
        let mut outs = Vec::with_capacity(5);
        for stage in &self.inner.stages {
            for op in stage {
                h = match op {
                    Op::Conv(c) => c.forward(&h)?,
                    Op::Relu => h.relu()?,
                    Op::Pool(k, s) => h.max_pool2d_with_stride((*k, *k), (*s, *s))?,
                };
            }
            outs.push(h.clone());
        }
        Ok(outs)
    }

    /// Per-stage distances of `[n, 3, h, w]` images in [0, 1]: `[n, 5]`.
    ///
    /// # Errors
    /// [`Error::InvalidImage`] if the shapes differ or the images are smaller than the
    /// backbone's receptive field allows.
    pub fn stage_distances(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        if a.dims() != b.dims() || a.rank() != 4 || a.dim(1)? != 3 {
            return Err(Error::InvalidImage(format!(
                "LPIPS compares two [n, 3, h, w] batches of one shape, got {:?} and {:?}",
                a.dims(),
                b.dims()
            )));
        }
        let (_, _, h, w) = a.dims4()?;
        let min = match self.inner.net {
            LpipsNet::Alex => 31,
            LpipsNet::Vgg => 16,
        };
        if h < min || w < min {
            return Err(Error::InvalidImage(format!(
                "LPIPS ({}) needs images of at least {min}×{min} pixels, got {w}×{h}",
                self.inner.net.as_str()
            )));
        }
        let dev = &self.inner.device;
        let run = || -> candle_core::Result<Tensor> {
            let (fa, fb) = (
                self.features(&a.to_device(dev)?.to_dtype(DType::F32)?)?,
                self.features(&b.to_device(dev)?.to_dtype(DType::F32)?)?,
            );
            let norm = |t: &Tensor| -> candle_core::Result<Tensor> {
                let n = t.sqr()?.sum_keepdim(1)?.sqrt()?;
                t.broadcast_div(&(n + 1e-10)?)
            };
            let mut per = Vec::with_capacity(5);
            for ((x, y), lin) in fa.iter().zip(&fb).zip(&self.inner.lins) {
                let d = (norm(x)? - norm(y)?)?.sqr()?;
                let c = lin.dim(0)?;
                let weighted = d.broadcast_mul(&lin.reshape((1, c, 1, 1))?)?.sum(1)?;
                per.push(weighted.flatten_from(1)?.mean(D::Minus1)?);
            }
            Tensor::stack(&per, 1)
        };
        Ok(run()?)
    }

    /// LPIPS distances of `[n, 3, h, w]` images in [0, 1]: `[n]`.
    ///
    /// # Errors
    /// As [`Lpips::stage_distances`].
    pub fn distances(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok(self.stage_distances(a, b)?.sum(1)?)
    }

    /// The LPIPS distance between two images of the same size (gray is replicated to RGB,
    /// alpha ignored).
    ///
    /// # Errors
    /// [`Error::InvalidImage`] for different sizes, non-finite samples, or images too small.
    pub fn distance(&self, a: &ImageView<'_>, b: &ImageView<'_>) -> Result<f64> {
        if (a.width(), a.height()) != (b.width(), b.height()) {
            return Err(Error::InvalidImage(format!(
                "images differ in size: {}×{} vs {}×{}",
                a.width(),
                a.height(),
                b.width(),
                b.height()
            )));
        }
        let d = self.distances(&super::rgb_tensor(a)?, &super::rgb_tensor(b)?)?;
        Ok(d.to_vec1::<f32>()?[0] as f64)
    }
}
