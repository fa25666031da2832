//! A per-layer CPU profile of the fused kernels: with `SPIRE_PROFILE=1` in the environment
//! (read once), every fused convolution, linear layer, attention, GroupNorm and GEGLU call
//! adds its wall time, the part of it spent inside GEMMs, and its floating-point operations
//! to a table keyed by kind and shape; [`take`] returns the table and empties it. Off, the cost
//! is one load of a cached flag per call.
//!
//! `cargo run --release -p spire-core --example bench_models -- unet --profile` prints it for
//! the SD-sized UNet and VAE decoder; `docs/performance.md` has the measured tables. What the
//! table does not cover of a forward pass is candle's own operations (element-wise adds,
//! concatenation, upsampling, reshapes and copies between the fused kernels).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

/// One row of the profile: all calls of one kernel kind at one shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The kernel: `conv3x3`, `conv1x1`, `conv` (other kernels or strides), `linear`,
    /// `attention`, `group_norm`, `geglu`.
    pub kind: &'static str,
    /// The shape, as the kernel reads it (e.g. `320→320 64×64` for a convolution,
    /// `4096×320→1280` for a linear layer, `b·h 5, 4096×4096, d 64` for attention).
    pub shape: String,
    /// Calls.
    pub calls: u64,
    /// Wall time of all calls, seconds.
    pub secs: f64,
    /// Of which inside GEMMs called from the kernel's own thread (the convolution's and the
    /// linear layer's; attention runs its GEMMs on worker threads and reports 0 here).
    pub gemm_secs: f64,
    /// Floating-point operations of all calls (a multiply-add counts 2).
    pub flops: f64,
}

/// Whether profiling is on: `SPIRE_PROFILE` set to anything but empty, `0`, `off`, `false`, `no`.
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let v = std::env::var("SPIRE_PROFILE").unwrap_or_default();
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "off" | "false" | "no"
        )
    })
}

static TABLE: Mutex<BTreeMap<(&'static str, String), Entry>> = Mutex::new(BTreeMap::new());

thread_local! {
    static GEMM_SECS: Cell<f64> = const { Cell::new(0.0) };
}

/// The profile so far, sorted by time (largest first), and emptied.
pub fn take() -> Vec<Entry> {
    let table = std::mem::take(&mut *TABLE.lock().unwrap_or_else(|e| e.into_inner()));
    let mut rows: Vec<Entry> = table.into_values().collect();
    rows.sort_by(|a, b| b.secs.total_cmp(&a.secs));
    rows
}

/// A timed kernel call; records itself when dropped. `None` when profiling is off.
pub(crate) struct Span {
    kind: &'static str,
    shape: String,
    flops: f64,
    start: Instant,
    gemm_start: f64,
}

impl Span {
    /// Starts timing a call; `shape` is only formatted when profiling is on.
    pub(crate) fn start(kind: &'static str, shape: impl FnOnce() -> String, flops: f64) -> Option<Span> {
        enabled().then(|| Span {
            kind,
            shape: shape(),
            flops,
            start: Instant::now(),
            gemm_start: GEMM_SECS.with(Cell::get),
        })
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let secs = self.start.elapsed().as_secs_f64();
        let gemm = GEMM_SECS.with(Cell::get) - self.gemm_start;
        let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
        let e = table
            .entry((self.kind, std::mem::take(&mut self.shape)))
            .or_insert_with_key(|(kind, shape)| Entry {
                kind,
                shape: shape.clone(),
                calls: 0,
                secs: 0.0,
                gemm_secs: 0.0,
                flops: 0.0,
            });
        e.calls += 1;
        e.secs += secs;
        e.gemm_secs += gemm;
        e.flops += self.flops;
    }
}

/// Times one GEMM on this thread (for [`Entry::gemm_secs`]) when profiling is on.
pub(crate) fn gemm_timed<T>(f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    let t = Instant::now();
    let out = f();
    let dt = t.elapsed().as_secs_f64();
    GEMM_SECS.with(|g| g.set(g.get() + dt));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_accumulate_by_kind_and_shape() {
        // The flag is process-wide and read once, so exercise the table directly.
        let record = |kind, shape: &str, flops| {
            let mut s = Span {
                kind,
                shape: shape.to_string(),
                flops,
                start: Instant::now(),
                gemm_start: GEMM_SECS.with(Cell::get),
            };
            GEMM_SECS.with(|g| g.set(g.get() + 0.5));
            s.start -= std::time::Duration::from_secs(1);
            drop(s);
        };
        let _ = take();
        record("conv3x3", "a", 10.0);
        record("conv3x3", "a", 10.0);
        record("linear", "b", 1.0);
        let rows = take();
        assert_eq!(rows.len(), 2);
        let conv = rows.iter().find(|e| e.kind == "conv3x3").unwrap();
        assert_eq!((conv.calls, conv.flops), (2, 20.0));
        assert!(conv.secs >= 2.0 && (conv.gemm_secs - 1.0).abs() < 1e-9);
        assert!(take().is_empty());
    }
}
