//! Helpers shared by the integration tests: fixture paths, reference tensors, comparisons.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

/// `tests/fixtures` at the workspace root.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("fixtures")
}

/// The reference tensors of `tests/fixtures/ref/<name>.safetensors`.
pub fn reference(name: &str) -> HashMap<String, Tensor> {
    let p = fixtures().join("ref").join(format!("{name}.safetensors"));
    candle_core::safetensors::load(&p, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Asserts `a` and `b` agree within `tol` and that the reference is not trivially zero.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) {
    let d = max_abs_diff(a, b);
    let scale = b
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        scale > 1e-3,
        "{what}: reference is (nearly) all zeros; the test would prove nothing"
    );
    assert!(
        d <= tol,
        "{what}: max abs diff {d:e} > {tol:e} (reference max {scale})"
    );
    eprintln!("{what}: max abs diff {d:e} (reference max {scale:.3})");
}

/// Timesteps stored as a float tensor.
pub fn timesteps(t: &Tensor) -> Vec<f32> {
    t.to_vec1::<f32>().unwrap()
}
