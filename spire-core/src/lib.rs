#![doc = include_str!("../README.md")]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![deny(missing_docs)]

/// `with_<field>(value)` builders, one per listed field, for the options structs of any layer
/// (`RestoreOptions`, `LoadOptions`); defined here, before the modules, so none imports another
/// for it.
macro_rules! builders {
    ($ty:ty { $($method:ident => $field:ident: $t:ty),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("Sets `", stringify!($field), "` (builder).")]
                #[must_use]
                pub fn $method(mut self, value: $t) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

mod json;
#[macro_use]
pub mod simd;

pub mod batch;
pub mod builtin;
pub mod colorfix;
pub mod consistency;
pub mod degrade;
pub mod device;
pub mod error;
pub mod estimate;
pub mod eval;
pub mod image;
pub mod imageops;
pub mod io;
pub mod metrics;
pub mod model;
pub mod options;
pub mod plan;
pub mod profile;
pub mod prompt;
pub mod restorer;
pub mod rng;
pub mod scheduler;
pub mod tiling;
pub mod train;
pub(crate) mod weights;

/// Seeded random weights for benchmarks at real model sizes (never for restoration).
pub use weights::random_weights;

/// The candle types of the public API (`Device`, `DType`, `Tensor`), so users need not depend on
/// the same candle version themselves; and candle itself, for what else they need.
pub use candle_core::{self as candle, DType, Device, Tensor};
pub use colorfix::ColorFix;
pub use error::{Error, ErrorKind, Result};
pub use image::{ColorType, Image, ImageData, ImageView, Sample, SampleType, Samples};
pub use model::LoadOptions;
/// `ndarray`, whose `ArrayView3` / `Array3` images convert to and from
/// ([`ImageView::from_ndarray`], [`Image::into_ndarray`]).
pub use ndarray;
pub use options::{
    MemoryLimit, ModelDefaults, Progress, ProgressCallback, RestorationInput, RestoreOptions, Stage,
};
pub use plan::{RunPlan, TileReason};
pub use prompt::RestorationPrompt;
pub use restorer::{Restorer, RestorerParts};
pub use scheduler::{SchedulerConfig, SchedulerKind};
pub use tiling::TilePlan;
