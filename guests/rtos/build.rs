fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rerun-if-changed={dir}/../../linker/guest.ld");
    println!("cargo:rustc-link-arg=-T{dir}/../../linker/guest.ld");
    println!("cargo:rustc-link-arg=-pie");
    println!("cargo:rustc-link-arg=--no-dynamic-linker");
    println!("cargo:rustc-link-arg=-znotext");
    println!("cargo:rustc-link-arg=-znorelro");
}
