//! Tiled `AutoencoderKL` encoding and decoding that equals the untiled computation.
//!
//! The high-resolution part of the network (the encoder's down blocks, the decoder's up blocks
//! and output layers) runs on tiles; the low-resolution middle (mid block with its global
//! self-attention) runs on the whole latent, which is 64× smaller than the image.
//!
//! Two things make the tiles exact rather than approximately blended:
//! - **Halos.** Each tile owns a rectangle of the image and carries a margin around it wide
//!   enough that the zero padding at the tile's cut edges never reaches the owned pixels
//!   (every 3×3 convolution corrupts one more pixel inward; the margin needed is computed from
//!   the layer list). At the image border the tile is not cut, so the padding is the untiled
//!   network's own.
//! - **Global GroupNorm statistics.** The network runs layer-synchronously: every tile is taken
//!   up to the next GroupNorm, the per-group sums of the owned pixels of all tiles are added
//!   up, and then every tile is normalised with the statistics of the whole image.
//!
//! Between GroupNorms the tiles' activations are kept in memory or, when that would exceed
//! the memory budget, in an unlinked temporary file, so the working set is a few tiles.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Module, Result, Tensor};
use rayon::prelude::*;

use super::blocks::{Downsample, ResnetBlock2D, Upsample};
use super::nn::{Activation, Conv2d, GroupNorm};
use super::vae::{AutoencoderKL, Decoder, Encoder};

/// Per-group (mean, variance) statistics of a whole image.
type GroupStats = Vec<(f64, f64)>;

/// How the autoencoder's high-resolution layers are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaeTiling {
    /// Side of the square each tile owns, in pixels of the tiled network's input (latent
    /// pixels when decoding, image pixels when encoding).
    pub tile: usize,
    /// Keep the tiles' activations in a temporary file between layers instead of in memory.
    pub spill: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rect {
    y: usize,
    x: usize,
    h: usize,
    w: usize,
}

impl Rect {
    fn scaled_up(self, f: usize) -> Self {
        Rect {
            y: self.y * f,
            x: self.x * f,
            h: self.h * f,
            w: self.w * f,
        }
    }

    fn scaled_down(self, f: usize) -> Self {
        Rect {
            y: self.y / f,
            x: self.x / f,
            h: self.h.div_ceil(f),
            w: self.w.div_ceil(f),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Tile {
    /// The pixels this tile is responsible for.
    own: Rect,
    /// The pixels its tensor covers: `own` plus the halo, clipped to the image.
    ext: Rect,
}

impl Tile {
    /// `own` in the coordinates of the tile's tensor.
    fn own_local(&self) -> Rect {
        Rect {
            y: self.own.y - self.ext.y,
            x: self.own.x - self.ext.x,
            h: self.own.h,
            w: self.own.w,
        }
    }
}

/// One layer group of the tiled part, in execution order.
enum Stage<'a> {
    Conv(&'a Conv2d),
    NormActConv(&'a GroupNorm, Activation, &'a Conv2d),
    Resnet(&'a ResnetBlock2D),
    Up(&'a Upsample),
    Down(&'a Downsample),
}

impl Stage<'_> {
    /// The GroupNorm that opens the stage, whose statistics the previous stage must gather.
    fn norm(&self) -> Option<&GroupNorm> {
        match self {
            Stage::NormActConv(g, _, _) => Some(g),
            Stage::Resnet(r) => Some(&r.norm1),
            _ => None,
        }
    }

    /// Widest channel count the stage holds.
    fn channels(&self) -> usize {
        let c = |conv: &Conv2d| conv.weight().dims().first().copied().unwrap_or(0);
        let ci = |conv: &Conv2d| conv.weight().dims().get(1).copied().unwrap_or(0);
        match self {
            Stage::Conv(k) | Stage::NormActConv(_, _, k) => c(k).max(ci(k)),
            Stage::Resnet(r) => c(&r.conv1).max(ci(&r.conv1)),
            Stage::Up(u) => c(&u.conv),
            Stage::Down(d) => c(&d.conv),
        }
    }
}

fn half_kernel(conv: &Conv2d) -> usize {
    conv.weight().dims().get(2).map_or(0, |k| k / 2)
}

/// Pixels at a cut tile edge corrupted by zero padding after the stages (at the output's
/// scale) for a halo of `halo` input pixels, or `None` if the corruption reaches the owned
/// pixels anywhere along the way.
fn corrupted_margin(stages: &[Stage], halo: usize) -> Option<usize> {
    // The corrupted margin `e` and the halo `h` at the current scale.
    let (mut e, mut h) = (0usize, halo);
    for s in stages {
        match s {
            Stage::Conv(k) => e += half_kernel(k),
            Stage::NormActConv(_, _, k) => e += half_kernel(k),
            Stage::Resnet(r) => e += half_kernel(&r.conv1) + half_kernel(&r.conv2),
            Stage::Up(u) => {
                e = 2 * e + half_kernel(&u.conv);
                h *= 2;
            }
            Stage::Down(_) => {
                if h % 2 != 0 {
                    return None;
                }
                e = e.div_ceil(2) + 1;
                h /= 2;
            }
        }
        if e > h {
            return None;
        }
    }
    Some(e)
}

/// The smallest halo (a multiple of `align`) that keeps every owned pixel exact.
fn required_halo(stages: &[Stage], align: usize) -> usize {
    let mut h = align;
    while corrupted_margin(stages, h).is_none() {
        h += align;
    }
    h
}

/// Product of the downsampling factors (tiles and halos must be multiples of it).
fn alignment(stages: &[Stage]) -> usize {
    1 << stages.iter().filter(|s| matches!(s, Stage::Down(_))).count()
}

struct Grid {
    tiles: Vec<Tile>,
    /// Tiles per row.
    cols: usize,
}

impl Grid {
    fn new(h: usize, w: usize, tile: usize, halo: usize) -> Self {
        let starts = |n: usize| (0..n.div_ceil(tile)).map(|i| i * tile).collect::<Vec<_>>();
        let (ys, xs) = (starts(h), starts(w));
        let mut tiles = Vec::with_capacity(ys.len() * xs.len());
        for &y in &ys {
            for &x in &xs {
                let own = Rect {
                    y,
                    x,
                    h: tile.min(h - y),
                    w: tile.min(w - x),
                };
                let (y0, x0) = (y.saturating_sub(halo), x.saturating_sub(halo));
                let (y1, x1) = ((y + own.h + halo).min(h), (x + own.w + halo).min(w));
                tiles.push(Tile {
                    own,
                    ext: Rect {
                        y: y0,
                        x: x0,
                        h: y1 - y0,
                        w: x1 - x0,
                    },
                });
            }
        }
        Grid {
            tiles,
            cols: xs.len(),
        }
    }

    fn scale_up(&mut self, f: usize) {
        for t in &mut self.tiles {
            t.own = t.own.scaled_up(f);
            t.ext = t.ext.scaled_up(f);
        }
    }

    fn scale_down(&mut self, f: usize) {
        for t in &mut self.tiles {
            t.own = t.own.scaled_down(f);
            t.ext = t.ext.scaled_down(f);
        }
    }

    /// Area the tiles' tensors cover over the area they own (the halo's recomputation).
    fn coverage(&self) -> f64 {
        let ext: usize = self.tiles.iter().map(|t| t.ext.h * t.ext.w).sum();
        let own: usize = self.tiles.iter().map(|t| t.own.h * t.own.w).sum();
        ext as f64 / own.max(1) as f64
    }

    fn largest_ext(&self) -> usize {
        self.tiles.iter().map(|t| t.ext.h * t.ext.w).max().unwrap_or(0)
    }
}

// ------------------------------------------------------------------------------------------
// Where the tiles live between passes
// ------------------------------------------------------------------------------------------

static SPILL_FILES: AtomicUsize = AtomicUsize::new(0);

/// Raw f32 tiles in a temporary file, removed on drop.
struct SpillFile {
    file: File,
    path: PathBuf,
    end: u64,
}

impl SpillFile {
    fn new() -> Result<Self> {
        let n = SPILL_FILES.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("spire-vae-tiles-{}-{n}.bin", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| candle_core::Error::Msg(format!("tile spill file {}: {e}", path.display())))?;
        Ok(Self { file, path, end: 0 })
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

enum Slot {
    Memory(Tensor),
    Disk { offset: u64, shape: Vec<usize> },
}

/// The tiles of one activation.
struct Store {
    slots: Vec<Option<Slot>>,
    file: Option<SpillFile>,
    dtype: DType,
    device: Device,
}

impl Store {
    fn new(n: usize, spill: bool, dtype: DType, device: &Device) -> Result<Self> {
        Ok(Self {
            slots: (0..n).map(|_| None).collect(),
            file: if spill { Some(SpillFile::new()?) } else { None },
            dtype,
            device: device.clone(),
        })
    }

    fn io_err(e: std::io::Error) -> candle_core::Error {
        candle_core::Error::Msg(format!("tile spill file: {e}"))
    }

    fn put(&mut self, i: usize, t: Tensor) -> Result<()> {
        self.dtype = t.dtype();
        let slot = match &mut self.file {
            None => Slot::Memory(t),
            Some(f) => {
                let shape = t.dims().to_vec();
                let v: Vec<f32> = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                f.file.seek(SeekFrom::Start(f.end)).map_err(Self::io_err)?;
                f.file.write_all(&bytes).map_err(Self::io_err)?;
                let offset = f.end;
                f.end += bytes.len() as u64;
                Slot::Disk { offset, shape }
            }
        };
        self.slots[i] = Some(slot);
        Ok(())
    }

    /// Takes tile `i` out (the store no longer holds it).
    fn take(&mut self, i: usize) -> Result<Tensor> {
        match self.slots[i].take() {
            Some(Slot::Memory(t)) => Ok(t),
            Some(Slot::Disk { offset, shape }) => {
                let f = self
                    .file
                    .as_mut()
                    .ok_or_else(|| candle_core::Error::Msg("tile spill file missing".into()))?;
                let n: usize = shape.iter().product();
                let mut bytes = vec![0u8; n * 4];
                f.file.seek(SeekFrom::Start(offset)).map_err(Self::io_err)?;
                f.file.read_exact(&mut bytes).map_err(Self::io_err)?;
                let v: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                Tensor::from_vec(v, shape, &self.device)?.to_dtype(self.dtype)
            }
            None => candle_core::bail!("tile {i} was already consumed"),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Whole-image GroupNorm statistics
// ------------------------------------------------------------------------------------------

/// Per (batch item, group) sums of the owned pixels of all tiles.
struct Stats {
    groups: usize,
    sum: Vec<f64>,
    sq: Vec<f64>,
    count: f64,
}

impl Stats {
    fn new(batch: usize, groups: usize) -> Self {
        Self {
            groups,
            sum: vec![0.0; batch * groups],
            sq: vec![0.0; batch * groups],
            count: 0.0,
        }
    }

    fn add(&mut self, t: &Tensor, own: Rect) -> Result<()> {
        let (n, c, _, _) = t.dims4()?;
        let g = self.groups;
        if c % g != 0 || n * g != self.sum.len() {
            candle_core::bail!("tiled GroupNorm: {c} channels, {g} groups, batch {n}");
        }
        let crop = t.narrow(2, own.y, own.h)?.narrow(3, own.x, own.w)?;
        let v: Vec<f32> = crop.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let len = (c / g) * own.h * own.w;
        let sums: Vec<(f64, f64)> = v
            .par_chunks(len.max(1))
            .map(|ch| {
                ch.iter().fold((0.0, 0.0), |(s, q), &x| {
                    (s + x as f64, q + (x as f64) * (x as f64))
                })
            })
            .collect();
        for (i, (s, q)) in sums.into_iter().enumerate() {
            self.sum[i] += s;
            self.sq[i] += q;
        }
        self.count += len as f64;
        Ok(())
    }

    /// `(mean, 1/std)` per (batch item, group).
    fn finish(&self, eps: f64) -> Vec<(f64, f64)> {
        let k = self.count.max(1.0);
        self.sum
            .iter()
            .zip(&self.sq)
            .map(|(&s, &q)| {
                let m = s / k;
                (m, 1.0 / ((q / k - m * m).max(0.0) + eps).sqrt())
            })
            .collect()
    }
}

// ------------------------------------------------------------------------------------------
// The executor
// ------------------------------------------------------------------------------------------

struct Run<'a> {
    grid: Grid,
    spill: bool,
    batch: usize,
    device: Device,
    dtype: DType,
    stages: &'a [Stage<'a>],
}

impl Run<'_> {
    /// Applies `f` to every tile of `inputs` (taken out of them unless `keep`), gathering the
    /// statistics of the outputs for `norm` if given; `rescale` maps a tile's owned rectangle
    /// to the output's scale.
    fn map(
        &self,
        inputs: &mut [&mut Store],
        keep: bool,
        rescale: fn(Rect) -> Rect,
        norm: Option<&GroupNorm>,
        f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    ) -> Result<(Store, Option<GroupStats>)> {
        let mut out = Store::new(self.grid.tiles.len(), self.spill, self.dtype, &self.device)?;
        let mut stats = norm.map(|g| Stats::new(self.batch, g.groups()));
        for i in 0..self.grid.tiles.len() {
            let xs = inputs.iter_mut().map(|s| s.take(i)).collect::<Result<Vec<_>>>()?;
            let y = f(&xs)?;
            if keep {
                for (s, x) in inputs.iter_mut().zip(xs) {
                    s.put(i, x)?;
                }
            } else {
                drop(xs);
            }
            if let Some(st) = &mut stats {
                st.add(&y, rescale(self.grid.tiles[i].own_local()))?;
            }
            out.put(i, y)?;
        }
        let stats = match (stats, norm) {
            (Some(s), Some(g)) => Some(s.finish(g.eps())),
            _ => None,
        };
        Ok((out, stats))
    }

    fn execute(mut self, x: &Tensor) -> Result<Tensor> {
        let stages = self.stages;
        let n = self.grid.tiles.len();
        // Split.
        let mut cur = Store::new(n, self.spill, self.dtype, &self.device)?;
        let first_norm = stages.first().and_then(Stage::norm);
        let mut stats = first_norm.map(|g| Stats::new(self.batch, g.groups()));
        for (i, t) in self.grid.tiles.iter().enumerate() {
            let e = t.ext;
            let tile = x.narrow(2, e.y, e.h)?.narrow(3, e.x, e.w)?.contiguous()?;
            if let Some(st) = &mut stats {
                st.add(&tile, t.own_local())?;
            }
            cur.put(i, tile)?;
        }
        let mut cur_stats = match (stats, first_norm) {
            (Some(s), Some(g)) => Some(s.finish(g.eps())),
            _ => None,
        };
        let missing = || candle_core::Error::Msg("tiled autoencoder: missing statistics".into());
        for (k, stage) in stages.iter().enumerate() {
            let next = stages.get(k + 1).and_then(Stage::norm);
            let same: fn(Rect) -> Rect = |r| r;
            let (store, st) = match stage {
                Stage::Conv(c) => self.map(&mut [&mut cur], false, same, next, &|x| c.forward(&x[0]))?,
                Stage::NormActConv(g, act, c) => {
                    let s = cur_stats.take().ok_or_else(missing)?;
                    self.map(&mut [&mut cur], false, same, next, &|x| {
                        c.forward(&g.forward_act_with_stats(&x[0], &s, *act)?)
                    })?
                }
                Stage::Up(u) => {
                    let r = self.map(&mut [&mut cur], false, |r| r.scaled_up(2), next, &|x| {
                        u.forward(&x[0], None)
                    })?;
                    self.grid.scale_up(2);
                    r
                }
                Stage::Down(d) => {
                    let r = self.map(&mut [&mut cur], false, |r| r.scaled_down(2), next, &|x| {
                        d.forward(&x[0])
                    })?;
                    self.grid.scale_down(2);
                    r
                }
                Stage::Resnet(r) => {
                    let s1 = cur_stats.take().ok_or_else(missing)?;
                    let (mut h1, s2) = self.map(&mut [&mut cur], true, same, Some(&r.norm2), &|x| {
                        r.conv1
                            .forward(&r.norm1.forward_act_with_stats(&x[0], &s1, r.act)?)
                    })?;
                    let s2 = s2.ok_or_else(missing)?;
                    self.map(&mut [&mut cur, &mut h1], false, same, next, &|t| {
                        let h = r
                            .conv2
                            .forward(&r.norm2.forward_act_with_stats(&t[1], &s2, r.act)?)?;
                        let sc = match &r.conv_shortcut {
                            Some(c) => c.forward(&t[0])?,
                            None => t[0].clone(),
                        };
                        let out = (sc + h)?;
                        if r.output_scale_factor == 1.0 {
                            Ok(out)
                        } else {
                            out / r.output_scale_factor
                        }
                    })?
                }
            };
            cur = store;
            cur_stats = st;
        }
        // Assemble the owned rectangles, row by row.
        let mut rows = Vec::new();
        let tiles = self.grid.tiles.clone();
        for (r, row) in tiles.chunks(self.grid.cols).enumerate() {
            let mut parts = Vec::with_capacity(row.len());
            for (c, t) in row.iter().enumerate() {
                let o = t.own_local();
                let full = cur.take(r * self.grid.cols + c)?;
                parts.push(full.narrow(2, o.y, o.h)?.narrow(3, o.x, o.w)?);
            }
            rows.push(Tensor::cat(&parts, 3)?);
        }
        Tensor::cat(&rows, 2)
    }
}

/// The stage list of the encoder's high-resolution part (everything before the mid block).
fn encoder_stages(e: &Encoder) -> Vec<Stage<'_>> {
    let mut s = vec![Stage::Conv(&e.conv_in)];
    for b in &e.down_blocks {
        s.extend(b.resnets.iter().map(Stage::Resnet));
        if let Some(d) = &b.downsampler {
            s.push(Stage::Down(d));
        }
    }
    s
}

/// The stage list of the decoder's high-resolution part (everything after the mid block).
fn decoder_stages(d: &Decoder) -> Vec<Stage<'_>> {
    let mut s = Vec::new();
    for b in &d.up_blocks {
        s.extend(b.resnets.iter().map(Stage::Resnet));
        if let Some(u) = &b.upsampler {
            s.push(Stage::Up(u));
        }
    }
    s.push(Stage::NormActConv(&d.conv_norm_out, d.cfg.act_fn, &d.conv_out));
    s
}

fn run_tiled(stages: &[Stage], x: &Tensor, tiling: VaeTiling) -> Result<Tensor> {
    let (n, _, h, w) = x.dims4()?;
    let align = alignment(stages);
    if h % align != 0 || w % align != 0 {
        candle_core::bail!("tiled autoencoder: {w}×{h} is not a multiple of {align}");
    }
    let tile = (tiling.tile / align).max(1) * align;
    let halo = required_halo(stages, align);
    Run {
        grid: Grid::new(h, w, tile, halo),
        spill: tiling.spill,
        batch: n,
        device: x.device().clone(),
        dtype: x.dtype(),
        stages,
    }
    .execute(x)
}

/// Working-memory estimate of a tiled run, bytes: the stored activations (in memory, or
/// none when spilled) plus a few tiles' worth of temporaries at the widest stage.
fn tiled_bytes(stages: &[Stage], n: usize, h: usize, w: usize, tiling: VaeTiling, elem: usize) -> u64 {
    let align = alignment(stages);
    let tile = (tiling.tile / align).max(1) * align;
    let halo = required_halo(stages, align);
    let mut grid = Grid::new(h, w, tile, halo);
    let (mut stored, mut working) = (0f64, 0f64);
    for s in stages {
        match s {
            Stage::Up(_) => grid.scale_up(2),
            Stage::Down(_) => grid.scale_down(2),
            _ => {}
        }
        let c = s.channels() as f64;
        let all: f64 = grid.tiles.iter().map(|t| (t.ext.h * t.ext.w) as f64).sum();
        stored = stored.max(2.2 * all * c);
        let ext = grid.largest_ext() as f64;
        // Six maps of the tile, and the convolution's column buffer (at most 8 Mi floats).
        working = working.max(6.0 * ext * c + (9.0 * ext * c).min((8 << 20) as f64) / n.max(1) as f64);
    }
    let stored = if tiling.spill { 0.0 } else { stored };
    ((stored + working) * (n * elem) as f64) as u64
}

/// Untiled working-memory estimate, bytes: `maps` maps of the widest stage alive at once.
fn untiled_bytes(stages: &[Stage], n: usize, h: usize, w: usize, elem: usize, maps: f64) -> u64 {
    let mut scale = 1f64;
    let mut most = 0f64;
    for s in stages {
        match s {
            Stage::Up(_) => scale *= 2.0,
            Stage::Down(_) => scale /= 2.0,
            _ => {}
        }
        most = most.max(s.channels() as f64 * scale * scale);
    }
    (maps * most * (h * w * n * elem) as f64) as u64
}

/// Which part of the autoencoder a plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaePass {
    /// Image → latent.
    Encode,
    /// Latent → image.
    Decode,
}

impl AutoencoderKL {
    fn stages(&self, pass: VaePass) -> Vec<Stage<'_>> {
        match pass {
            VaePass::Encode => encoder_stages(&self.encoder),
            VaePass::Decode => decoder_stages(&self.decoder),
        }
    }

    /// Working-memory estimate of `pass` over `n` inputs of `h × w` (pixels when encoding,
    /// latent pixels when decoding), untiled (`None`) or with `tiling`.
    pub fn working_bytes(
        &self,
        pass: VaePass,
        n: usize,
        h: usize,
        w: usize,
        tiling: Option<VaeTiling>,
    ) -> u64 {
        let stages = self.stages(pass);
        let elem = 4;
        match tiling {
            // Measured with the SD VAE at 1024² (bench_large's stage marks): the encoder peaks
            // at 7.2 maps of its widest stage (3666 MiB), the decoder at 4.6 (4697 MiB); the
            // estimate keeps a margin above both.
            None => untiled_bytes(
                &stages,
                n,
                h,
                w,
                elem,
                match pass {
                    VaePass::Encode => 8.0,
                    VaePass::Decode => 5.5,
                },
            ),
            Some(t) => tiled_bytes(&stages, n, h, w, t, elem),
        }
    }

    /// The largest tiling of `pass` whose working memory fits `budget` (in memory if
    /// possible, else spilled), or `None` if the untiled run fits.
    pub fn plan_tiling(&self, pass: VaePass, n: usize, h: usize, w: usize, budget: u64) -> Option<VaeTiling> {
        if self.working_bytes(pass, n, h, w, None) <= budget {
            return None;
        }
        let stages = self.stages(pass);
        let align = alignment(&stages);
        let halo = required_halo(&stages, align);
        let largest = h.max(w).div_ceil(align) * align;
        // Among the tilings that fit, the one with the least recomputed halo; spilling costs
        // about a tenth more (writing and reading every activation once per layer group).
        let mut best: Option<(f64, VaeTiling)> = None;
        for k in 1..=largest / align {
            let tile = k * align;
            let overhead = Grid::new(h, w, tile, halo).coverage();
            for spill in [false, true] {
                let t = VaeTiling { tile, spill };
                let cost = overhead * if spill { 1.1 } else { 1.0 };
                if best.is_none_or(|(c, _)| cost < c) && self.working_bytes(pass, n, h, w, Some(t)) <= budget
                {
                    best = Some((cost, t));
                }
            }
        }
        Some(best.map_or(
            VaeTiling {
                tile: align,
                spill: true,
            },
            |b| b.1,
        ))
    }

    /// [`AutoencoderKL::encode`]'s moments with the high-resolution layers in tiles.
    pub fn encode_tiled(&self, xs: &Tensor, tiling: VaeTiling) -> Result<super::vae::LatentDistribution> {
        let e = &self.encoder;
        let stages = encoder_stages(e);
        let h = run_tiled(&stages, xs, tiling)?;
        let h = e.mid_block.forward(&h, None, None)?;
        let h = e.conv_norm_out.forward_act(&h, e.cfg.act_fn)?;
        let h = e.conv_out.forward(&h)?;
        self.moments(h)
    }

    /// [`AutoencoderKL::decode`] with the high-resolution layers in tiles.
    pub fn decode_tiled(&self, z: &Tensor, tiling: VaeTiling) -> Result<Tensor> {
        let z = match &self.post_quant_conv {
            Some(p) => p.forward(z)?,
            None => z.clone(),
        };
        let d = &self.decoder;
        let h = d.conv_in.forward(&z)?;
        let h = d.mid_block.forward(&h, None, None)?;
        run_tiled(&decoder_stages(d), &h, tiling)
    }

    /// The halo, in input pixels, that `pass` needs around each tile.
    pub fn tile_halo(&self, pass: VaePass) -> usize {
        let stages = self.stages(pass);
        required_halo(&stages, alignment(&stages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd_vae_halos() {
        let vae = AutoencoderKL::new(
            &crate::model::VaeConfig::sd(),
            crate::weights::random_weights(0, DType::F32, &Device::Cpu),
        )
        .unwrap();
        assert_eq!(vae.tile_halo(VaePass::Decode), 13);
        assert_eq!(vae.tile_halo(VaePass::Encode), 80);
    }

    #[test]
    fn grid_tiles_partition_the_image() {
        let g = Grid::new(37, 50, 16, 5);
        assert_eq!(g.tiles.len(), 3 * 4);
        let mut seen = vec![0u8; 37 * 50];
        for t in &g.tiles {
            assert!(t.ext.y <= t.own.y && t.ext.y + t.ext.h >= t.own.y + t.own.h);
            assert!(t.ext.y + t.ext.h <= 37 && t.ext.x + t.ext.w <= 50);
            for y in t.own.y..t.own.y + t.own.h {
                for x in t.own.x..t.own.x + t.own.w {
                    seen[y * 50 + x] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&s| s == 1));
    }
}
