//! Links the hypervisor at the load address of the board it is built for.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let base = std::env::var("PARTITA_LOAD_ADDR").unwrap_or_else(|_| "0x40000000".into());
    println!("cargo:rerun-if-env-changed=PARTITA_LOAD_ADDR");
    println!("cargo:rerun-if-changed={dir}/../linker/hypervisor.ld");
    println!("cargo:rustc-link-arg=--defsym=LOAD_ADDR={base}");
    println!("cargo:rustc-link-arg=-T{dir}/../linker/hypervisor.ld");
}
