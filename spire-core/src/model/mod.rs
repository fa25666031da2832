//! The model components, written against candle with diffusers / transformers key names so
//! real checkpoints load unchanged.

pub mod adaptor;
pub mod attention;
pub mod autoencoder;
pub mod blocks;
pub mod clip;
pub mod config;
pub mod embeddings;
pub(crate) mod kernels;
pub mod ldm;
pub mod load;
pub mod nn;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub mod vae_tiled;
pub mod vars;

pub use adaptor::{Adaptor, AdaptorConfig, Fusion, HintMode};
pub use autoencoder::{Autoencoder, PixelShuffle};
pub use clip::{ClipTextModel, ClipTextOutput, ClipVisionModel};
pub use config::{ClipTextConfig, ClipVisionConfig, UNetConfig, VaeConfig};
#[doc(hidden)]
pub use kernels::fused_dispatches_on_this_thread;
pub use kernels::{fused_default, keep_weights_in, winograd4_default, winograd_default};
pub use ldm::Generation;
pub use load::{LoadOptions, SingleFile};
pub use tokenizer::ClipTokenizer;
pub use unet::{Control, Injection, UNet2DConditionModel};
pub use vae::{AutoencoderKL, LatentDistribution};
pub use vae_tiled::{VaePass, VaeTiling};
