//! Parsing device and dtype names, shared by the Python and C bindings so both accept the same
//! spellings.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// `"cpu"`, `"cuda"`, `"cuda:N"`, `"metal"`, `"metal:N"` → a candle device.
///
/// # Errors
/// [`Error::InvalidArgument`] for an unknown name; [`Error::Device`] if the device cannot be
/// opened (not compiled in, or no such GPU).
pub fn parse_device(name: &str) -> Result<Device> {
    let n = name.trim().to_ascii_lowercase();
    let (kind, index) = match n.split_once(':') {
        Some((k, i)) => {
            let i = i
                .parse::<usize>()
                .map_err(|_| Error::invalid_arg("device", format!("bad device index in `{name}`")))?;
            (k.to_string(), i)
        }
        None => (n.clone(), 0),
    };
    match kind.as_str() {
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => {
            Device::new_cuda(index).map_err(|e| Error::Device(format!("cannot open `{name}`: {e}")))
        }
        "metal" | "mps" => {
            Device::new_metal(index).map_err(|e| Error::Device(format!("cannot open `{name}`: {e}")))
        }
        _ => Err(Error::invalid_arg(
            "device",
            format!("unknown device `{name}` (cpu, cuda, cuda:N, metal)"),
        )),
    }
}

/// `"float32"`/`"f32"`, `"float16"`/`"f16"`/`"half"`, `"bfloat16"`/`"bf16"` → a dtype.
///
/// # Errors
/// [`Error::InvalidArgument`] for another name.
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name.trim().to_ascii_lowercase().as_str() {
        "float32" | "f32" | "fp32" => Ok(DType::F32),
        "float16" | "f16" | "fp16" | "half" => Ok(DType::F16),
        "bfloat16" | "bf16" => Ok(DType::BF16),
        _ => Err(Error::invalid_arg(
            "dtype",
            format!("unknown dtype `{name}` (float32, float16, bfloat16)"),
        )),
    }
}
