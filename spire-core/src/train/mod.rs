//! Training: the adaptor of a model on degraded pairs made on the fly (SPIRE.md §5), and a
//! small backbone (UNet + text encoder) from scratch for small models such as the built-in one.

pub mod data;
mod optim;
pub mod step;
mod trainer;

pub use crate::model::vars::VarStore;
pub use optim::{AdamW, AdamWConfig, Ema};
pub use trainer::{train, MixedPrecision, TrainConfig, TrainEvent, TrainMode, TrainSummary};
