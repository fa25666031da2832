//! The C ABI of SPIRE (`libspire`): a thin layer that converts C structs into `spire-core`
//! types and core errors into status codes. The header `include/spire.h` is generated from
//! this file by cbindgen.

use std::os::raw::c_char;

/// The library version as a NUL-terminated string, e.g. `"0.1.0"`.
///
/// Ownership: the string is static; do not free it. Thread-safe.
#[no_mangle]
pub extern "C" fn spire_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
