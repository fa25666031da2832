//! Compiles the built-in model in when its file is present.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(spire_builtin)");
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/spire-tiny.safetensors");
    println!("cargo::rerun-if-changed={}", p.display());
    if p.is_file() {
        println!("cargo::rustc-cfg=spire_builtin");
    }
}
