//! # spire-core
//!
//! SPIRE — Semantic Prompt-Driven Image Restoration — in pure Rust on candle.

pub mod error;
pub mod model;
pub mod rng;
pub mod scheduler;
pub(crate) mod weights;

/// Seeded random weights for benchmarks at real model sizes (never for restoration).
pub use weights::random_weights;

pub use error::{Error, ErrorKind, Result};
