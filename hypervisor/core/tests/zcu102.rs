//! The ZCU102's shipped configurations (platform/zcu102): the board as
//! the SDT reader sees it, and the device tree a guest gets there, whose
//! console is an emulated PL011 at the Cadence UART's address.

mod common;

use common::guest_tree;
use partita_core::sdt::{self, GicVersion, Range, SystemConfig, UartKind};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn platform() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../platform/zcu102")
}

fn run_dtc(args: &[&str], input: &[u8]) -> Vec<u8> {
    let out = Command::new("dtc")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(input)?;
            c.wait_with_output()
        })
        .expect("dtc runs (scripts/setup installs device-tree-compiler)");
    assert!(out.status.success(), "dtc {args:?} failed");
    out.stdout
}

fn compile(name: &str) -> Vec<u8> {
    let dts = std::fs::read(platform().join(format!("{name}.dts"))).unwrap();
    let dir = platform();
    run_dtc(
        &[
            "-q",
            "-I",
            "dts",
            "-O",
            "dtb",
            "-i",
            dir.to_str().unwrap(),
            "-",
        ],
        &dts,
    )
}

fn decompile(dtb: &[u8]) -> String {
    String::from_utf8(run_dtc(&["-q", "-I", "dtb", "-O", "dts", "-"], dtb)).unwrap()
}

const CONFIGS: [&str; 5] = [
    "bench",
    "linux-rtos",
    "restart-bench",
    "rtos-bench",
    "two-guests",
];

#[test]
fn every_zcu102_configuration_is_accepted() {
    let mut found: Vec<String> = std::fs::read_dir(platform())
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "dts").then(|| p.file_stem().unwrap().to_string_lossy().into())
        })
        .collect();
    found.sort();
    assert_eq!(found, CONFIGS, "a new configuration belongs in CONFIGS");
    for name in CONFIGS {
        let blob = compile(name);
        let sys = SystemConfig::from_dtb(&blob).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The GIC-400 of the ZynqMP: 160 SPIs.
        sys.check_interrupt_lines(192)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for d in &sys.domains {
            guest_tree(name, &blob, &sys, d);
        }
    }
}

#[test]
fn the_board_as_read() {
    let blob = compile("two-guests");
    let sys = SystemConfig::from_dtb(&blob).unwrap();
    assert_eq!(sys.cpus.len(), 4);
    assert_eq!(sys.gic.version, GicVersion::V2);
    // The aliased CPU interfaces: two contiguous 4 KiB pages each.
    let regs: Vec<(u64, u64)> = sys.gic.regs.iter().map(|r| (r.base, r.size)).collect();
    assert_eq!(
        regs,
        [
            (0xf901_0000, 0x10000),
            (0xf902_f000, 0x2000),
            (0xf904_0000, 0x2000),
            (0xf906_f000, 0x2000)
        ]
    );
    // Both DDR banks.
    assert_eq!(
        sys.ram,
        [
            Range::new(0, 0x8000_0000),
            Range::new(0x8_0000_0000, 0x8000_0000)
        ]
    );
    assert_eq!(sys.hypervisor, Range::new(0, 0x400_0000));
    assert_eq!(sys.devices[sys.console].path, "/serial@ff000000");
    let console = sdt::console(&sdt::read_tree(&blob).unwrap());
    assert_eq!(console, Ok((0xff00_0000, UartKind::Cadence)));
    // TTC0's three interrupts pass through to beta.
    let ttc = sys
        .devices
        .iter()
        .find(|d| d.path == "/timer@ff110000")
        .unwrap();
    assert_eq!(ttc.spis, [68, 69, 70]);
}

/// A guest on the ZCU102 sees a PL011 at the Cadence UART's address, with
/// the board's fixed clock and nothing of the Cadence or of a firmware
/// clock controller; passed-through devices keep their own nodes.
#[test]
fn guest_console_is_an_emulated_pl011() {
    let blob = compile("two-guests");
    let sys = SystemConfig::from_dtb(&blob).unwrap();
    let beta = &sys.domains[1];
    let layout = partita_core::layout::GuestLayout {
        kernel: 0x4a00_0000,
        dtb: 0x4be0_0000,
        initrd: None,
    };
    let dts = decompile(&partita_core::guest_fdt::build(&blob, &sys, beta, &layout).unwrap());
    let console = dts
        .split("serial@ff000000 {")
        .nth(1)
        .and_then(|s| s.split("};").next())
        .unwrap_or_else(|| panic!("no console node in:\n{dts}"));
    for want in [
        "compatible = \"arm,pl011\\0arm,primecell\"",
        "reg = <0x00 0xff000000 0x00 0x1000>",
        "interrupts = <0x00 0x15 0x04>",
        "clock-names = \"uartclk\\0apb_pclk\"",
    ] {
        assert!(console.contains(want), "console lacks `{want}`:\n{dts}");
    }
    for want in [
        "stdout-path = \"/serial@ff000000\"",
        "uart-clk {",
        "compatible = \"fixed-clock\"",
        "timer@ff110000 {",
        "compatible = \"cdns,ttc\"",
        "compatible = \"arm,gic-400\"",
        "reg = <0x00 0xf9010000 0x00 0x10000 0x00 0xf902f000 0x00 0x2000>",
    ] {
        assert!(dts.contains(want), "missing `{want}` in:\n{dts}");
    }
    for unwanted in [
        "cdns,uart",
        "xlnx,xuartps",
        "firmware",
        "rtc@",
        "0x800000000",
    ] {
        assert!(!dts.contains(unwanted), "`{unwanted}` in:\n{dts}");
    }
}
