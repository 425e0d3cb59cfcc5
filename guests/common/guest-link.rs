// The build script of every bare-metal guest (included by their build.rs):
// linker/guest.ld, as a position-independent executable that relocates
// itself at boot.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rerun-if-changed={dir}/../../linker/guest.ld");
    println!("cargo:rustc-link-arg=-T{dir}/../../linker/guest.ld");
    for arg in ["-pie", "--no-dynamic-linker", "-znotext", "-znorelro"] {
        println!("cargo:rustc-link-arg={arg}");
    }
}
