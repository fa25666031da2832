//! The error type of `spire-core`.
//!
//! Every fallible function returns [`Result`]. Errors carry a message that names the offending
//! thing (the file, the tensor key with its expected and actual shape, the option, the prompt
//! clause), and a small [`ErrorKind`] that the Python and C bindings map onto exception classes
//! and status codes.

use std::path::{Path, PathBuf};

/// `Result` with [`Error`] as its error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `spire-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An option or argument has a value the function does not accept.
    #[error("invalid argument `{name}`: {message}")]
    InvalidArgument {
        /// The name of the option or argument, as the public API spells it.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// An input image cannot be used (empty, too small, NaN, wrong buffer size, …).
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// A restoration prompt could not be parsed.
    #[error("invalid restoration prompt: {message} (in clause `{clause}`)")]
    InvalidPrompt {
        /// The clause as the user wrote it.
        clause: String,
        /// What is wrong with it.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A model file exists but cannot be used: a corrupt or truncated safetensors file, a missing
    /// tensor, a tensor of the wrong shape, or a malformed config.
    #[error("cannot load model from {}: {message}", path.display())]
    ModelLoad {
        /// The file or folder being loaded.
        path: PathBuf,
        /// What is wrong, naming the key and shapes where there are any.
        message: String,
    },
    /// The model or option asks for something this version does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The compute device failed (out of memory, driver error, device not compiled in).
    #[error("device error: {0}")]
    Device(String),
    /// A computation produced NaN or infinity: the message names the stage ("the latents
    /// after denoising step 3", "the decoded image") and the likely cause. Returned instead of
    /// an image that would be silently black or noise.
    #[error("numerical error: {0}")]
    Numerical(String),
    /// The progress callback asked to stop.
    #[error("cancelled by the progress callback")]
    Cancelled,
    /// A bug in spire: an invariant did not hold. Please report it.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The category of an [`Error`], what the bindings map on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::InvalidArgument`] and [`Error::InvalidPrompt`].
    InvalidArgument,
    /// [`Error::InvalidImage`].
    InvalidImage,
    /// [`Error::Io`].
    Io,
    /// [`Error::ModelLoad`].
    ModelLoad,
    /// [`Error::Unsupported`].
    Unsupported,
    /// [`Error::Device`].
    Device,
    /// [`Error::Numerical`].
    Numerical,
    /// [`Error::Cancelled`].
    Cancelled,
    /// [`Error::Internal`].
    Internal,
}

impl Error {
    /// The category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument { .. } | Error::InvalidPrompt { .. } => ErrorKind::InvalidArgument,
            Error::InvalidImage(_) => ErrorKind::InvalidImage,
            Error::Io { .. } => ErrorKind::Io,
            Error::ModelLoad { .. } => ErrorKind::ModelLoad,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::Device(_) => ErrorKind::Device,
            Error::Numerical(_) => ErrorKind::Numerical,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    pub(crate) fn invalid_arg(name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            name: name.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub(crate) fn model_load(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::ModelLoad {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
}

impl From<candle_core::Error> for Error {
    /// Tensor errors that reach the public API after validation are device failures or bugs.
    fn from(e: candle_core::Error) -> Self {
        let msg = e.to_string();
        let lower = msg.to_lowercase();
        if lower.contains("out of memory") || lower.contains("cuda") || lower.contains("metal") {
            Error::Device(msg)
        } else {
            Error::Internal(msg)
        }
    }
}
