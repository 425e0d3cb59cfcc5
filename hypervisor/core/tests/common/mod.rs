//! What the SDT tests share: the shipped trees, compiled with `dtc` as the
//! build compiles them.
#![allow(dead_code)]

use partita_core::sdt::SystemConfig;
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub fn platform() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../platform/qemu-virt")
}

pub fn compile(dts: &str) -> Vec<u8> {
    let out = Command::new("dtc")
        .args(["-q", "-I", "dts", "-O", "dtb", "-i"])
        .arg(platform())
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(dts.as_bytes())?;
            c.wait_with_output()
        })
        .expect("dtc runs (scripts/setup installs device-tree-compiler)");
    assert!(out.status.success(), "dtc failed on:\n{dts}");
    out.stdout
}

/// A device tree blob as DTS text, for assertions on what it holds.
pub fn decompile(blob: &[u8]) -> String {
    let out = Command::new("dtc")
        .args(["-q", "-I", "dtb", "-O", "dts", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(blob)?;
            c.wait_with_output()
        })
        .expect("dtc runs (scripts/setup installs device-tree-compiler)");
    assert!(out.status.success(), "dtc could not decompile a blob");
    String::from_utf8(out.stdout).unwrap()
}

/// A shipped configuration's source, by file name without `.dts`.
pub fn shipped(name: &str) -> String {
    std::fs::read_to_string(platform().join(format!("{name}.dts"))).unwrap()
}

/// Every shipped configuration: (name, source).
pub fn all_shipped() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(platform())
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "dts").then(|| {
                (
                    p.file_stem().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
        })
        .collect();
    v.sort();
    v
}

pub fn refused(dts: &str) -> String {
    match SystemConfig::from_dtb(&compile(dts)) {
        Ok(_) => panic!("accepted:\n{dts}"),
        Err(e) => e.to_string(),
    }
}

/// `src` with the first `from` replaced by `to`.
pub fn edit(src: &str, from: &str, to: &str) -> String {
    assert!(src.contains(from), "fixture lacks `{from}`");
    src.replacen(from, to, 1)
}

/// Domain `d`'s generated device tree (its kernel at the base of its first
/// memory range, the tree at its end), checked by the blob check; a
/// failure names the configuration and the domain.
pub fn guest_tree(
    name: &str,
    blob: &[u8],
    sys: &SystemConfig,
    d: &partita_core::sdt::Domain,
) -> Vec<u8> {
    let m = d.memory[0];
    let layout = partita_core::layout::GuestLayout {
        kernel: m.base,
        dtb: m.end() - partita_core::guest_fdt::DTB_MAX,
        initrd: None,
    };
    let g = partita_core::guest_fdt::build(blob, sys, d, &layout)
        .unwrap_or_else(|e| panic!("{name} {}: {e}", d.name));
    partita_core::dtb::check(&g).unwrap_or_else(|e| panic!("{name} {}: {e}", d.name));
    g
}

/// The shipped `linux-rtos` (virt) with its link as two virtio-mmio devices,
/// as before Linux reached the RTOS through its remoteproc: for the tests
/// of links and controls on their own.
pub fn linux_rtos_over_mmio() -> String {
    edit(
        &shipped("linux-rtos"),
        "partita,remoteproc-vdev;\n\t\t\t\t\t\tpartita,virtio-mmio = <0x0 0x0a000200>;\n\t\t\t\t\t\tpartita,virtio-interrupts = <17>;",
        "partita,virtio-mmio = <0x0 0x0a000000 0x0 0x0a000200>;\n\t\t\t\t\t\tpartita,virtio-interrupts = <16 17>;\n\t\t\t\t\t\tpartita,name-service = <0 1>;",
    )
}
