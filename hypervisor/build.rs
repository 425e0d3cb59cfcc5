//! The hypervisor is a position-independent arm64 Image: bootloaders place
//! it at a 2 MiB boundary of their choosing and it relocates itself.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rerun-if-changed={dir}/../linker/hypervisor.ld");
    for arg in [
        format!("-T{dir}/../linker/hypervisor.ld"),
        "-pie".into(),
        "--no-dynamic-linker".into(),
        "-znotext".into(),
        "-znorelro".into(),
    ] {
        println!("cargo:rustc-link-arg={arg}");
    }
}
