//! Parsing device and dtype names, shared by the Python and C bindings so both accept the same
//! spellings.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// `"cpu"`, `"cuda"`, `"cuda:N"`, `"metal"`, `"metal:N"` → a candle device.
///
/// # Errors
/// [`Error::Device`] naming the device for an unknown name, a bad index, a back end this build
/// was made without (with the feature to build it with), or a device that cannot be opened
/// (no driver, no such GPU).
pub fn parse_device(name: &str) -> Result<Device> {
    match check_device(name)? {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda(i) => {
            Device::new_cuda(i).map_err(|e| Error::Device(format!("cannot open `{name}`: {e}")))
        }
        DeviceKind::Metal(i) => {
            Device::new_metal(i).map_err(|e| Error::Device(format!("cannot open `{name}`: {e}")))
        }
    }
}

/// A device named by [`check_device`], not yet opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// The CPU.
    Cpu,
    /// CUDA GPU `N`.
    Cuda(usize),
    /// Metal GPU `N`.
    Metal(usize),
}

/// Checks a device name as [`parse_device`] reads it — the syntax and whether this build has
/// the back end — without opening the device (for validating a recipe or an argument before
/// the work; [`parse_device`] opens it once when the work starts).
///
/// # Errors
/// [`Error::Device`] as [`parse_device`], except for devices that cannot be opened.
pub fn check_device(name: &str) -> Result<DeviceKind> {
    let n = name.trim().to_ascii_lowercase();
    let (kind, index) = match n.split_once(':') {
        Some((k, i)) => {
            let i = i.parse::<usize>().map_err(|_| {
                Error::Device(format!(
                    "bad device index in `{name}` (cpu, cuda, cuda:N, metal, metal:N)"
                ))
            })?;
            (k.to_string(), i)
        }
        None => (n.clone(), 0),
    };
    let compiled = |feature: &str, compiled: bool| {
        if compiled {
            Ok(())
        } else {
            Err(Error::Device(format!(
                "device `{name}`: this build of spire has no `{feature}` support; rebuild it with \
                 the `{feature}` feature (cargo build --features {feature}; docs/gpu.md)"
            )))
        }
    };
    match kind.as_str() {
        "cpu" if index == 0 => Ok(DeviceKind::Cpu),
        "cuda" | "gpu" => compiled("cuda", cfg!(feature = "cuda")).map(|()| DeviceKind::Cuda(index)),
        "metal" | "mps" => compiled("metal", cfg!(feature = "metal")).map(|()| DeviceKind::Metal(index)),
        _ => Err(Error::Device(format!(
            "unknown device `{name}` (cpu, cuda, cuda:N, metal, metal:N)"
        ))),
    }
}

/// The name [`parse_device`] reads back for `device` (`"cpu"`, `"cuda:0"`, `"metal:0"`).
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
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

/// The dtype weights are kept in ([`crate::LoadOptions::weight_dtype`]), by the same names as
/// [`parse_dtype`]; errors name `weight_dtype`.
///
/// # Errors
/// [`Error::InvalidArgument`] for an unknown name.
pub fn parse_weight_dtype(name: &str) -> Result<DType> {
    parse_dtype(name).map_err(|_| {
        Error::invalid_arg(
            "weight_dtype",
            format!("unknown dtype `{name}` (float16, bfloat16, float32)"),
        )
    })
}

/// Bytes the automatic memory budget may plan with on `device`: the free memory of a CUDA
/// GPU (`cuMemGetInfo`, what other processes and this one already hold is taken out), and the
/// host's available memory on the CPU and on Metal (Apple silicon's GPU shares the system
/// memory). `None` when unknown.
pub fn available_memory(device: &Device) -> Option<u64> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => d
            .cuda_stream()
            .context()
            .mem_get_info()
            .ok()
            .map(|(free, _total)| free as u64),
        _ => crate::tiling::available_memory(),
    }
}

/// Sets how many CPU threads the library computes with (candle's kernels, ours and the GEMMs),
/// for the whole process. Call it before the first load or restore: the thread pool starts
/// then and keeps its size. Setting the count it already has is a no-op. Not needed otherwise:
/// by default every core is used.
///
/// It also sets `RAYON_NUM_THREADS` (candle reads it on each call), so call it before other
/// threads of the process read or write the environment.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `threads` for 0, or when the pool already runs with
/// another count.
pub fn set_num_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid_arg("threads", "must be at least 1"));
    }
    match rayon::ThreadPoolBuilder::new().num_threads(n).build_global() {
        Ok(()) => {
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
            Ok(())
        }
        Err(_) if rayon::current_num_threads() == n => Ok(()),
        Err(_) => Err(Error::invalid_arg(
            "threads",
            format!(
                "the CPU threads already run ({} of them): set the count before the first load or \
                 restore (or with RAYON_NUM_THREADS in the environment)",
                rayon::current_num_threads()
            ),
        )),
    }
}

/// How many CPU threads the library computes with.
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}
