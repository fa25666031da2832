//! # spire-core
//!
//! SPIRE — Semantic Prompt-Driven Image Restoration — in pure Rust on candle.

pub mod error;
pub mod model;
pub(crate) mod weights;

pub use error::{Error, ErrorKind, Result};
