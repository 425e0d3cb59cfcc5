//! The SDT checks by address, by ownership and by placement: one broken
//! variant of a shipped configuration per refusal, each naming the node
//! and the reason. (`sdt.rs` has the reader's older refusals.)

mod common;

use common::*;
use partita_core::sdt::{self, EarlyError, Range, SystemConfig, UartKind};

fn two_guests() -> String {
    shipped("two-guests")
}

/// The demo with its link over virtio-mmio on both sides: these checks
/// are about windows and their interrupts.
fn linux_rtos() -> String {
    linux_rtos_over_mmio()
}

/// `two-guests` with one more device node, `extra`, given to beta in
/// place of its GPIO.
fn with_device(reg: &str, interrupts: &str) -> String {
    edit(&two_guests(), "<&gpio 0x0>", "<&extra 0x0>")
        + &format!(
            "/ {{ extra: extra@0 {{ compatible = \"vendor,thing\"; reg = {reg}; interrupts = {interrupts}; }}; }};\n"
        )
}

#[test]
fn every_shipped_configuration_is_accepted() {
    for (name, dts) in all_shipped() {
        let blob = compile(&dts);
        let sys = SystemConfig::from_dtb(&blob).unwrap_or_else(|e| panic!("{name}: {e}"));
        // QEMU virt's GIC has 288 lines.
        sys.check_interrupt_lines(288)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        partita_core::dtb::check(&blob).unwrap();
        let (console, _) = sdt::console(&sdt::read_tree(&blob).unwrap()).unwrap();
        assert_eq!(console, 0x0900_0000, "{name}");
        for d in &sys.domains {
            guest_tree(&name, &blob, &sys, d);
        }
    }
    let gicv2 = two_guests().replace(
        "/include/ \"board.dtsi\"",
        "/include/ \"board.dtsi\"\n/include/ \"gicv2.dtsi\"",
    );
    SystemConfig::from_dtb(&compile(&gicv2)).unwrap();
}

// --- Passed-through registers, by address -------------------------------

#[test]
fn refuses_a_device_over_the_interrupt_controller_whatever_its_name() {
    let e = refused(&with_device("<0x0 0x08000000 0x0 0x1000>", "<0 9 4>"));
    assert_eq!(e, "/extra@0: registers 0x8000000..0x8001000 share a page with 0x8000000..0x8010000 of /interrupt-controller@8000000, which the hypervisor keeps");
    // A redistributor frame, and one wide range over all of it.
    let e = refused(&with_device("<0x0 0x080c0000 0x0 0x20000>", "<0 9 4>"));
    assert!(
        e.contains("share a page with 0x80a0000..0x9000000 of /interrupt-controller@8000000"),
        "{e}"
    );
    let e = refused(&with_device("<0x0 0x0 0x0 0x10000000>", "<0 9 4>"));
    assert!(
        e.starts_with("/extra@0: registers 0x0..0x10000000 share a page with"),
        "{e}"
    );
    // GICv2: the CPU interface and the virtual one.
    for frame in ["0x08010000", "0x08040000"] {
        let s = with_device(&format!("<0x0 {frame} 0x0 0x1000>"), "<0 9 4>").replace(
            "/include/ \"board.dtsi\"",
            "/include/ \"board.dtsi\"\n/include/ \"gicv2.dtsi\"",
        );
        let e = refused(&s);
        assert!(
            e.contains("of /interrupt-controller@8000000, which the hypervisor keeps"),
            "{e}"
        );
    }
}

#[test]
fn refuses_a_device_over_the_console_or_memory() {
    let e = refused(&with_device("<0x0 0x09000800 0x0 0x100>", "<0 9 4>"));
    assert!(
        e.starts_with("/extra@0: registers 0x9000800..0x9000900 share a"),
        "{e}"
    );
    assert!(e.contains("/pl011@9000000"), "{e}");
    // The hypervisor's memory and another domain's.
    let e = refused(&with_device("<0x0 0x40100000 0x0 0x1000>", "<0 9 4>"));
    assert!(
        e.starts_with("/extra@0: registers 0x40100000..0x40101000 overlap RAM"),
        "{e}"
    );
    let e = refused(&with_device("<0x0 0x48000000 0x0 0x1000>", "<0 9 4>"));
    assert!(e.contains("overlap RAM"), "{e}");
}

#[test]
fn refuses_a_device_beyond_the_guest_address_space() {
    let e = refused(&with_device("<0x80 0x0 0x0 0x1000>", "<0 9 4>"));
    assert_eq!(e, "/extra@0: registers 0x8000000000..0x8000001000 are beyond the 39-bit guest address space stage 2 translates");
}

#[test]
fn refuses_a_device_over_a_virtio_window_of_another_domain() {
    // The RTOS gets a device where Linux's side of the link sits.
    let s = edit(&linux_rtos(), "access = <&uart0 0x1>;", "access = <&uart0 0x1>, <&extra 0x0>;")
        + "/ { extra: extra@a000000 { compatible = \"vendor,thing\"; reg = <0x0 0x0a000000 0x0 0x100>; }; };\n";
    let e = refused(&s);
    assert_eq!(e, "/domains/linux/domain-to-domain/rpmsg-relation/rtos-link: virtio window 0xa000000..0xa000200 of linux shares a page with /extra@a000000");
}

// --- Interrupts: one owner per line ---------------------------------------

#[test]
fn refuses_one_spi_for_two_devices_of_two_domains() {
    let e = refused(&(two_guests() + "&gpio { interrupts = <0 2 4>; };"));
    assert_eq!(
        e,
        "/pl061@9030000: SPI 2 is also /pl031@9010000's, given to /domains/alpha"
    );
}

#[test]
fn refuses_a_device_with_the_consoles_spi() {
    let e = refused(&(two_guests() + "&gpio { interrupts = <0 1 4>; };"));
    assert_eq!(
        e,
        "/pl061@9030000: SPI 1 is also the console /pl011@9000000's, which the hypervisor keeps"
    );
}

#[test]
fn refuses_a_virtio_interrupt_owned_elsewhere() {
    let s = linux_rtos();
    // The RTOS's side on the SPI of Linux's RTC.
    let e = refused(&edit(
        &s,
        "partita,virtio-interrupts = <16 17>;",
        "partita,virtio-interrupts = <16 2>;",
    ));
    assert!(
        e.ends_with("interrupt 2 of rtos is also /pl031@9010000's, given to /domains/linux"),
        "{e}"
    );
    let e = refused(&edit(
        &s,
        "partita,virtio-interrupts = <16 17>;",
        "partita,virtio-interrupts = <1 17>;",
    ));
    assert!(
        e.ends_with("interrupt 1 of linux is also /pl011@9000000's"),
        "{e}"
    );
}

#[test]
fn refuses_virtio_interrupts_that_would_wrap_or_lie_beyond_the_gic() {
    let s = linux_rtos();
    for (n, shown) in [
        ("0xffffffe0", "4294967264"),
        ("988", "988"),
        ("0xffffffff", "4294967295"),
    ] {
        let e = refused(&edit(
            &s,
            "partita,virtio-interrupts = <16 17>;",
            &format!("partita,virtio-interrupts = <16 {n}>;"),
        ));
        assert!(
            e.ends_with(&format!(
                "interrupt {shown} of rtos is beyond the GIC's last SPI (987)"
            )),
            "{e}"
        );
    }
    // Within the architecture's 988 SPIs, but beyond what this GIC has.
    let sys = SystemConfig::from_dtb(&compile(&edit(
        &s,
        "partita,virtio-interrupts = <16 17>;",
        "partita,virtio-interrupts = <16 300>;",
    )))
    .unwrap();
    let e = sys.check_interrupt_lines(288).unwrap_err().to_string();
    assert!(
        e.ends_with("interrupt 300 of rtos is beyond this GIC's 288 interrupt lines"),
        "{e}"
    );
    let sys = SystemConfig::from_dtb(&compile(&two_guests())).unwrap();
    let e = sys.check_interrupt_lines(38).unwrap_err().to_string();
    assert_eq!(
        e,
        "/pl061@9030000: SPI 7 (INTID 39) is beyond this GIC's 38 interrupt lines"
    );
}

#[test]
fn refuses_interrupts_that_are_neither_spi_nor_ppi() {
    let e = refused(&(two_guests() + "&gpio { interrupts = <2 7 4>; };"));
    assert_eq!(
        e,
        "/pl061@9030000: interrupt type 2 is neither SPI (0) nor PPI (1)"
    );
}

// --- CPUs -----------------------------------------------------------------

#[test]
fn refuses_a_cpu_named_twice_in_one_domain() {
    let e = refused(&edit(
        &two_guests(),
        "<&cpus_a53 0x2 0x1>",
        "<&cpus_a53 0x2 0x1 &cpus_a53 0x2 0x1>",
    ));
    assert_eq!(e, "/domains/beta: `cpus` names /cpus/cpu@1 twice");
}

#[test]
fn refuses_two_cpus_with_one_mpidr() {
    let s = two_guests() + "&{/cpus/cpu@3} { reg = <1>; };\n";
    let e = refused(&s);
    assert_eq!(e, "/cpus/cpu@3: MPIDR 0x1 is also the MPIDR of /cpus/cpu@1");
    let e = refused(&(two_guests() + "&{/cpus/cpu@3} { reg = <0x1000003>; };\n"));
    assert_eq!(
        e,
        "/cpus/cpu@3: `reg` 0x1000003 is not an MPIDR affinity (bits 39:32 and 23:0 only)"
    );
}

// --- Virtio windows a guest can reach -------------------------------------

#[test]
fn refuses_virtio_windows_a_guest_cannot_reach() {
    let s = linux_rtos();
    let window = |w: &str| {
        refused(&edit(
            &s,
            "<0x0 0x0a000000 0x0 0x0a000200>",
            &format!("<0x0 0x0a000000 {w}>"),
        ))
    };
    let e = window("0x80 0x0");
    assert!(e.ends_with("virtio window 0x8000000000..0x8000000200 of rtos is beyond the 39-bit guest address space stage 2 translates"), "{e}");
    // Linux's memory, seen from the RTOS: RAM all the same.
    let e = window("0x0 0x50000000");
    assert!(
        e.ends_with(
            "virtio window 0x50000000..0x50000200 of rtos overlaps RAM 0x40000000..0xc0000000"
        ),
        "{e}"
    );
    let e = window("0x0 0x08000000");
    assert!(e.ends_with("of rtos shares a page with 0x8000000..0x8010000 of the interrupt controller /interrupt-controller@8000000"), "{e}");
    let e = window("0x0 0x09000200");
    assert!(
        e.ends_with("of rtos shares a page with /pl011@9000000"),
        "{e}"
    );
    // Linux's RTC, which the RTOS does not have.
    let e = window("0x0 0x09010000");
    assert!(
        e.ends_with("of rtos shares a page with /pl031@9010000"),
        "{e}"
    );
}

// --- Domains where lopper looks for them ---------------------------------

const STRAY: &str = "compatible = \"openamp,domain-v1\"; id = <9>; cpus = <&cpus_a53 0x8 0x1>; memory = <0x0 0x60000000 0x0 0x1000000>; partita,kernel = \"testguest\";";

#[test]
fn refuses_a_domain_outside_domains() {
    let e = refused(&(two_guests() + &format!("/ {{ stray {{ {STRAY} }}; }};\n")));
    assert_eq!(
        e,
        "/stray: a domain outside /domains: domains are children of /domains"
    );
    let e = refused(&(two_guests() + &format!("/ {{ soc {{ stray {{ {STRAY} }}; }}; }};\n")));
    assert!(
        e.starts_with("/soc/stray: a domain outside /domains"),
        "{e}"
    );
}

#[test]
fn refuses_a_domain_nested_in_another() {
    let e = refused(&(two_guests() + &format!("&alpha {{ inner {{ {STRAY} }}; }};\n")));
    assert_eq!(
        e,
        "/domains/alpha/inner: a domain nested in another node: domains are children of /domains"
    );
}

// --- What the documentation says about levels and flags -------------------

#[test]
fn refuses_execution_levels_other_than_el1_non_secure() {
    for level in ["0x0", "0x3", "0x5", "0x80000001"] {
        let e = refused(&edit(
            &two_guests(),
            "<&cpus_a53 0x2 0x1>",
            &format!("<&cpus_a53 0x2 {level}>"),
        ));
        assert_eq!(e, format!("/domains/beta: `cpus` execution level {level}: domains run non-secure at EL1 (0x1)"));
    }
}

#[test]
fn refuses_the_shared_flag_on_a_device_other_than_the_console() {
    let e = refused(&edit(&two_guests(), "<&gpio 0x0>", "<&gpio 0x1>"));
    assert_eq!(
        e,
        "/domains/beta: `access` flags /pl061@9030000 shared (0x1); only the console may be shared"
    );
}

// --- Domain memory ----------------------------------------------------------

#[test]
fn refuses_domain_memory_over_the_interrupt_controller_or_beyond_39_bits() {
    // A board whose memory node (wrongly) covers the GIC.
    let s = edit(&two_guests(), "<0x0 0x4a000000 0x0 0x2000000>", "<0x0 0x08000000 0x0 0x10000>")
        + "/ { memory@8000000 { device_type = \"memory\"; reg = <0x0 0x08000000 0x0 0x10000>; }; };\n";
    let e = refused(&s);
    assert_eq!(e, "/domains/beta: memory 0x8000000..0x8010000 overlaps 0x8000000..0x8010000 of /interrupt-controller@8000000, which the hypervisor keeps");
    let s = edit(&two_guests(), "<0x0 0x4a000000 0x0 0x2000000>", "<0x80 0x0 0x0 0x2000000>")
        + "/ { memory@8000000000 { device_type = \"memory\"; reg = <0x80 0x0 0x0 0x10000000>; }; };\n";
    let e = refused(&s);
    assert_eq!(e, "/domains/beta: memory 0x8000000000..0x8002000000 is beyond the 39-bit guest address space stage 2 translates");
}

// --- Blobs --------------------------------------------------------------

#[test]
fn a_corrupt_blob_is_refused_by_the_reader_and_the_early_reader() {
    let mut blob = compile(&two_guests());
    let at = blob.len() - 20;
    blob[..4].copy_from_slice(&0xd00d_feedu32.to_be_bytes());
    // Structure block offset beyond the blob.
    blob[8..12].copy_from_slice(&(at as u32).to_be_bytes());
    let e = SystemConfig::from_dtb(&blob).unwrap_err().to_string();
    assert!(
        e.starts_with("/: not a device tree: structure block at offset"),
        "{e}"
    );
    assert!(matches!(
        sdt::hypervisor_memory(&blob),
        Err(EarlyError::Blob(_))
    ));
    assert!(sdt::stdout_uart(&blob).is_err());
    let e = sdt::hypervisor_memory(&blob).unwrap_err().to_string();
    assert!(
        e.starts_with("/: not a device tree: structure block"),
        "{e}"
    );
}

#[test]
fn the_early_reader_names_what_is_missing() {
    let s = two_guests() + "&{/reserved-memory/hypervisor@40000000} { compatible = \"other\"; };";
    assert_eq!(
        sdt::hypervisor_memory(&compile(&s)),
        Err(EarlyError::NoHypervisorMemory)
    );
    // A subnode's properties are its own.
    let s = two_guests()
        + "&{/reserved-memory/hypervisor@40000000} { sub { compatible = \"x\"; reg = <0 0 0 1>; }; };";
    assert_eq!(
        sdt::hypervisor_memory(&compile(&s)),
        Ok(Range::new(0x4000_0000, 0x400_0000))
    );
    let console = |s: &str| {
        let blob = compile(s);
        sdt::console(&sdt::read_tree(&blob).unwrap())
    };
    let s = two_guests() + "&{/chosen} { stdout-path = \"/pl031@9010000\"; };";
    assert_eq!(console(&s), Err(EarlyError::NoConsole));
    // An alias naming itself resolves to nothing, and does not recurse.
    let s = two_guests() + "&{/aliases} { serial0 = \"serial0\"; };";
    assert_eq!(console(&s), Err(EarlyError::NoConsole));
    let blob = compile(&two_guests());
    assert_eq!(sdt::stdout_uart(&blob), Ok((0x0900_0000, UartKind::Pl011)));
    let s = two_guests() + "/ { chosen { bootargs = \"colour\"; }; };";
    assert_eq!(sdt::bootargs(&compile(&s)), Some("colour"));
    let s = two_guests() + "/ { chosen { bootargs; }; };";
    assert_eq!(sdt::bootargs(&compile(&s)), Some(""));
}

// --- Memory firmware keeps ----------------------------------------------

/// `two-guests` with a firmware node in `/reserved-memory` at `reg`.
fn with_firmware(reg: &str) -> String {
    two_guests() + &format!("&{{/reserved-memory}} {{ firmware@0 {{ reg = {reg}; no-map; }}; }};\n")
}

#[test]
fn memory_firmware_keeps_is_read_and_kept_from_every_domain() {
    let sys =
        SystemConfig::from_dtb(&compile(&with_firmware("<0x0 0x4c000000 0x0 0x100000>"))).unwrap();
    assert_eq!(sys.reserved.len(), 1);
    assert_eq!(sys.reserved[0].path, "/reserved-memory/firmware@0");
    assert_eq!(
        sys.reserved[0].range,
        sdt::Range::new(0x4c00_0000, 0x10_0000)
    );
    // The hypervisor's own node is not firmware's.
    assert!(SystemConfig::from_dtb(&compile(&two_guests()))
        .unwrap()
        .reserved
        .is_empty());
    // A domain over any byte of it is refused.
    let e = refused(&with_firmware("<0x0 0x49fff800 0x0 0x100>"));
    assert_eq!(e, "/domains/alpha: memory 0x48000000..0x4a000000 overlaps 0x49fff800..0x49fff900 of /reserved-memory/firmware@0, which firmware keeps");
    // So is the hypervisor's own region.
    let e = refused(&with_firmware("<0x0 0x43000000 0x0 0x2000000>"));
    assert_eq!(e, "/reserved-memory/firmware@0: 0x43000000..0x45000000 overlaps the hypervisor's memory 0x40000000..0x44000000");
    // A node with only a size (for an OS to allocate) keeps nothing fixed.
    let s = two_guests() + "&{/reserved-memory} { pool { size = <0x0 0x100000>; }; };\n";
    assert!(SystemConfig::from_dtb(&compile(&s))
        .unwrap()
        .reserved
        .is_empty());
}

#[test]
fn memreserve_entries_are_kept_too() {
    let s = edit(
        &two_guests(),
        "/dts-v1/;",
        "/dts-v1/;\n/memreserve/ 0x48100000 0x1000;",
    );
    assert_eq!(refused(&s), "/domains/alpha: memory 0x48000000..0x4a000000 overlaps 0x48100000..0x48101000 of /memreserve/, which firmware keeps");
}

/// `within`, the check on every address a guest hands over: inside one
/// range, never across two, never wrapping, up to a range at the top of
/// the address space.
#[test]
fn within_accepts_only_whole_ranges_inside_one_memory_range() {
    use partita_core::sdt::{within, Range};
    let m = [Range::new(0x1000, 0x1000), Range::new(0x2000, 0x1000)];
    assert!(within(&m, 0x1000, 0x1000));
    assert!(within(&m, 0x1ff0, 0x10));
    assert!(within(&m, 0x2fff, 1));
    assert!(within(&m, 0x1800, 0));
    assert!(
        !within(&m, 0x1ff0, 0x20),
        "across two ranges, even adjacent"
    );
    assert!(!within(&m, 0xfff, 2));
    assert!(!within(&m, 0x2fff, 2));
    assert!(!within(&m, 0x3000, 1));
    assert!(!within(&m, u64::MAX, 2), "wraps");
    let top = [Range::new(u64::MAX - 0xfff, 0x1000)];
    assert!(within(&top, u64::MAX - 0x1f, 0x10));
    assert!(!within(&top, u64::MAX - 0x1f, 0x21));
    // Ending at 2^64 is beyond what an end address can say: refused.
    assert!(!within(&top, u64::MAX - 0xf, 0x10));
    assert!(!within(&[], 0x1000, 1));
}
