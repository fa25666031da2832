//! Gives libspire.so its SONAME, `libspire.so.<major>`, so programs linked against it load the
//! ABI they were built for (`scripts/install_c.sh` lays out the versioned names).
fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "android" || os.ends_with("bsd") {
        let major = env!("CARGO_PKG_VERSION_MAJOR");
        println!("cargo::rustc-cdylib-link-arg=-Wl,-soname,libspire.so.{major}");
    }
}
