//! The SDT reader against the shipped configurations and one broken
//! variant per refusal. Trees are compiled from DTS with `dtc`, as the
//! build compiles the real ones.

mod common;

use common::*;
use partita_core::sdt::{GicVersion, Range, SystemConfig};

fn two_guests() -> String {
    shipped("two-guests")
}

fn edit(from: &str, to: &str) -> String {
    let s = two_guests();
    assert!(s.contains(from), "fixture lacks `{from}`");
    s.replacen(from, to, 1)
}

#[test]
fn shipped_two_guests_config() {
    let sys = SystemConfig::from_dtb(&compile(&two_guests())).unwrap();
    assert_eq!(sys.cpus.len(), 4);
    assert_eq!(sys.cpus[3].mpidr, 3);
    assert_eq!(sys.gic.version, GicVersion::V3);
    assert_eq!(sys.hypervisor, Range::new(0x4000_0000, 0x400_0000));
    assert_eq!(sys.devices[sys.console].path, "/pl011@9000000");
    let [a, b] = &sys.domains[..] else { panic!() };
    assert_eq!((a.name.as_str(), a.id, &a.cpus[..]), ("alpha", 1, &[0][..]));
    assert_eq!((b.name.as_str(), b.id, &b.cpus[..]), ("beta", 2, &[1][..]));
    assert_eq!(a.memory, [Range::new(0x4800_0000, 0x200_0000)]);
    assert_eq!(a.bootargs.as_deref(), Some("hello calls"));
    assert_eq!(a.kernel, "testguest");
    assert!(a.console(&sys).is_some() && b.console(&sys).is_some());
    let rtc = &sys.devices[a.devices[1]];
    assert_eq!(
        (rtc.path.as_str(), &rtc.spis[..]),
        ("/pl031@9010000", &[34][..])
    );
    let table = sys.partition_table();
    assert!(
        table.contains("alpha") && table.contains("0x48000000..0x4a000000"),
        "{table}"
    );
}

#[test]
fn refuses_a_cpu_given_twice() {
    let e = refused(&edit("<&cpus_a53 0x2 0x1>", "<&cpus_a53 0x3 0x1>"));
    assert_eq!(
        e,
        "/domains/beta: CPU /cpus/cpu@0 is also given to /domains/alpha"
    );
}

#[test]
fn refuses_overlapping_memory() {
    let e = refused(&edit(
        "<0x0 0x4a000000 0x0 0x2000000>",
        "<0x0 0x49000000 0x0 0x2000000>",
    ));
    assert!(
        e.starts_with("/domains/beta: memory 0x49000000..0x4b000000 overlaps"),
        "{e}"
    );
}

#[test]
fn refuses_memory_outside_ram() {
    let e = refused(&edit(
        "<0x0 0x4a000000 0x0 0x2000000>",
        "<0x1 0x0 0x0 0x2000000>",
    ));
    assert_eq!(
        e,
        "/domains/beta: memory 0x100000000..0x102000000 is not inside the board's RAM"
    );
}

#[test]
fn refuses_memory_over_the_hypervisor() {
    let e = refused(&edit(
        "<0x0 0x4a000000 0x0 0x2000000>",
        "<0x0 0x43000000 0x0 0x2000000>",
    ));
    assert!(
        e.contains("overlaps the hypervisor's 0x40000000..0x44000000"),
        "{e}"
    );
}

#[test]
fn refuses_a_device_given_twice() {
    let e = refused(&edit("<&gpio 0x0>", "<&rtc 0x0>"));
    assert_eq!(
        e,
        "/domains/beta: device /pl031@9010000 is also given to /domains/alpha"
    );
}

#[test]
fn refuses_a_dangling_phandle() {
    let e = refused(&edit("<&gpio 0x0>", "<0x99 0x0>"));
    assert_eq!(
        e,
        "/domains/beta: `access` names phandle 0x99, which no node has"
    );
}

#[test]
fn refuses_a_mask_beyond_the_cluster() {
    let e = refused(&edit("<&cpus_a53 0x2 0x1>", "<&cpus_a53 0x10 0x1>"));
    assert!(
        e.starts_with("/domains/beta: `cpus` mask 0x10 names CPUs that /cpus does not have"),
        "{e}"
    );
}

#[test]
fn refuses_missing_properties() {
    let e = refused(&edit("memory = <0x0 0x4a000000 0x0 0x2000000>;", ""));
    assert_eq!(e, "/domains/beta: missing property `memory`");
    let e = refused(&edit("partita,kernel = \"testguest\";\n\t\t\tchosen {\n\t\t\t\tbootargs = \"hello calls\";\n\t\t\t};\n\t\t};\n\n\t\tbeta", "chosen { };\n\t\t};\n\n\t\tbeta"));
    assert!(
        e.starts_with("/domains/alpha: missing property `partita,kernel`"),
        "{e}"
    );
    let e = refused(&edit("id = <2>;", ""));
    assert_eq!(e, "/domains/beta: missing property `id`");
}

#[test]
fn refuses_duplicate_ids_and_the_hypervisors_own_devices() {
    let e = refused(&edit("id = <2>;", "id = <1>;"));
    assert_eq!(e, "/domains/beta: id 1 is also the id of /domains/alpha");
    let e = refused(&edit("<&gpio 0x0>", "<&gic 0x0>"));
    assert!(e.contains("which the hypervisor keeps"), "{e}");
}

#[test]
fn refuses_trees_without_a_hypervisor_region_or_domains() {
    let s = two_guests() + "&{/reserved-memory/hypervisor@40000000} { compatible = \"other\"; };";
    assert!(refused(&s)
        .starts_with("/reserved-memory: no node with compatible = \"partita,hypervisor\""));
    let s = two_guests().replace("openamp,domain-v1", "something-else");
    assert!(refused(&s).starts_with("/domains: no `openamp,domain-v1` domain"));
}

#[test]
fn refuses_secure_or_el2_domains_and_unknown_os_types() {
    let e = refused(&edit("<&cpus_a53 0x2 0x1>", "<&cpus_a53 0x2 0x80000001>"));
    assert!(e.contains("domains run non-secure at EL1"), "{e}");
    let e = refused(&edit("<&cpus_a53 0x2 0x1>", "<&cpus_a53 0x2 0x2>"));
    assert!(e.contains("execution level 0x2"), "{e}");
    let e = refused(&edit(
        "os,type = \"baremetal\";\n\t\t\tcpus = <&cpus_a53 0x2",
        "os,type = \"vxworks\";\n\t\t\tcpus = <&cpus_a53 0x2",
    ));
    assert!(
        e.starts_with("/domains/beta: `os,type` is \"vxworks\""),
        "{e}"
    );
}

#[test]
fn refuses_an_unshared_console_and_a_cluster_that_is_not_one() {
    let e = refused(&edit(
        "<&uart0 0x1>, <&gpio 0x0>",
        "<&uart0 0x0>, <&gpio 0x0>",
    ));
    assert!(e.contains("must be flagged shared (0x1)"), "{e}");
    let e = refused(&edit("<&cpus_a53 0x2 0x1>", "<&gic 0x2 0x1>"));
    assert!(e.contains("which is not a \"cpus,cluster\""), "{e}");
}

#[test]
fn refuses_what_is_not_a_device_tree() {
    let e = SystemConfig::from_dtb(b"not a tree at all").unwrap_err();
    assert!(e.to_string().starts_with("/: not a device tree"), "{e}");
}

/// The generated device tree holds the domain's own resources and nothing
/// of its neighbour's.
#[test]
fn guest_device_tree_holds_only_its_domain() {
    let blob = compile(&two_guests());
    let sys = SystemConfig::from_dtb(&blob).unwrap();
    let beta = &sys.domains[1];
    let layout = partita_core::layout::GuestLayout {
        kernel: 0x4a00_0000,
        dtb: 0x4be0_0000,
        initrd: None,
    };
    let dtb = partita_core::guest_fdt::build(&blob, &sys, beta, &layout).unwrap();
    let dts = decompile(&dtb);
    for want in [
        "model = \"Partita domain beta on QEMU virt\"",
        "bootargs = \"hello count=5\"",
        "stdout-path = \"/pl011@9000000\"",
        "cpu@0 {",
        "method = \"hvc\"",
        "memory@4a000000 {",
        "reg = <0x00 0x4a000000 0x00 0x2000000>",
        "pl061@9030000 {",
        "pl011@9000000 {",
        "apb-pclk {",
        "reg = <0x00 0x8000000 0x00 0x10000 0x00 0x80a0000 0x00 0x20000>",
    ] {
        assert!(dts.contains(want), "missing `{want}` in:\n{dts}");
    }
    for unwanted in [
        "cpu@1",
        "pl031",
        "memory@48000000",
        "domains",
        "reserved-memory",
        "hypervisor",
    ] {
        assert!(!dts.contains(unwanted), "`{unwanted}` leaked into:\n{dts}");
    }
}

#[test]
fn heap_and_console_are_found_without_the_full_reader() {
    use partita_core::sdt;
    let blob = compile(&two_guests());
    let hypervisor = sdt::hypervisor_memory(&blob).unwrap();
    assert_eq!(hypervisor, Range::new(0x4000_0000, 0x400_0000));
    let console = sdt::console(&sdt::read_tree(&blob).unwrap());
    assert_eq!(console, Ok((0x0900_0000, sdt::UartKind::Pl011)));
}

fn linux_rtos() -> String {
    linux_rtos_over_mmio()
}

/// The shipped demo: Linux controls the RTOS, so its side of their link
/// is the RTOS remoteproc's virtio device: no window in its tree, the
/// partition node says so, and its interrupt is the control interrupt.
#[test]
fn rpmsg_link_reaches_a_controller_through_its_remoteproc() {
    let s = shipped("linux-rtos");
    let blob = compile(&s);
    let sys = SystemConfig::from_dtb(&blob).unwrap();
    let [l] = &sys.links[..] else {
        panic!("{:?}", sys.links)
    };
    assert!(l.remoteproc && !l.mmio(0) && l.mmio(1));
    assert_eq!((l.windows, l.spis), ([0, 0x0a00_0200], [18 + 32, 49]));
    assert_eq!(l.name_service, [true, true]);
    assert_eq!(l.config().version, [1, 2]);
    assert!(
        sys.partition_table().contains(
            "rpmsg    linux <-> rtos  its remoteproc's vdev / virtio-mmio 0xa000200 (irq 49)\n"
        ),
        "{}",
        sys.partition_table()
    );
    let dts = decompile(&guest_tree("linux-rtos", &blob, &sys, &sys.domains[0]));
    assert!(!dts.contains("virtio_mmio@"), "{dts}");
    let hv = &dts[dts.find("hypervisor {").expect("a /hypervisor node")..];
    assert!(hv.contains("dma-coherent;"), "{hv}");
    assert!(hv.contains("partita,rpmsg-vdev;"), "{hv}");
    let dts = decompile(&guest_tree("linux-rtos", &blob, &sys, &sys.domains[1]));
    assert!(dts.contains("virtio_mmio@a000200 {"), "{dts}");

    let vdev = "partita,remoteproc-vdev;";
    for (from, to, why) in [
        (
            "partita,control-interrupt = <18>;",
            "",
            "`partita,remoteproc-vdev` needs a remoteproc relation from linux to rtos with a `partita,control-interrupt`",
        ),
        (
            "<0x0 0x0a000200>",
            "<0x0 0x0a000000 0x0 0x0a000200>",
            "`partita,virtio-mmio` must be <remote>",
        ),
        (
            "partita,virtio-interrupts = <17>;",
            "partita,virtio-interrupts = <16 17>;",
            "`partita,virtio-interrupts` must be <remote>",
        ),
        (
            vdev,
            "partita,remoteproc-vdev;\npartita,buffer-size = <1024>;",
            "larger than the 512 bytes of a remoteproc's rpmsg buffers",
        ),
        (
            vdev,
            "partita,remoteproc-vdev;\npartita,name-service = <0 1>;",
            "`partita,name-service` must keep the host's name service",
        ),
        (
            "\t\t\t\t\trtos-link {",
            "\t\t\t\t\tsecond { remote = <&rtos>; partita,remoteproc-vdev; partita,virtio-mmio = <0x0 0x0a000400>; partita,virtio-interrupts = <19>; };\n\t\t\t\t\trtos-link {",
            "a second `partita,remoteproc-vdev` link from linux to rtos",
        ),
    ] {
        let e = refused(&common::edit(&s, from, to));
        assert!(e.contains(why), "{from} -> {to}: {e}");
    }
}

#[test]
fn rpmsg_link_gives_each_side_a_virtio_device() {
    let blob = compile(&linux_rtos());
    let sys = SystemConfig::from_dtb(&blob).unwrap();
    let [l] = &sys.links[..] else {
        panic!("{:?}", sys.links)
    };
    assert_eq!(
        (l.domains, l.windows, l.spis),
        ([0, 1], [0x0a00_0000, 0x0a00_0200], [48, 49])
    );
    assert_eq!(sys.links_of(1).collect::<Vec<_>>(), [(0, 1)]);
    assert_eq!(l.name_service, [false, true]);
    assert!(sys.partition_table().contains("rpmsg    linux <-> rtos"));
    let rtos = &sys.domains[1];
    let layout = partita_core::layout::GuestLayout {
        kernel: 0x4800_0000,
        dtb: 0x4be0_0000,
        initrd: None,
    };
    let dtb = partita_core::guest_fdt::build(&blob, &sys, rtos, &layout).unwrap();
    let dts = decompile(&dtb);
    assert!(
        dts.contains("virtio_mmio@a000200 {") && dts.contains("compatible = \"virtio,mmio\""),
        "{dts}"
    );
    assert!(
        dts.contains("interrupts = <0x00 0x11 0x01>") && !dts.contains("virtio_mmio@a000000"),
        "{dts}"
    );
}

#[test]
fn refuses_bad_rpmsg_links() {
    let s = linux_rtos();
    let e = refused(&s.replace("remote = <&rtos>;", "remote = <&linux>;"));
    assert!(e.ends_with("`remote` names the domain itself"), "{e}");
    let e = refused(&s.replace(
        "<0x0 0x0a000000 0x0 0x0a000200>",
        "<0x0 0x0a000000 0x0 0x0a000100>",
    ));
    assert!(e.contains("is not 0x200-aligned"), "{e}");
    let e = refused(&s.replace(
        "<0x0 0x0a000000 0x0 0x0a000200>",
        "<0x0 0x50000000 0x0 0x0a000200>",
    ));
    assert!(e.contains("overlaps its memory"), "{e}");
    let e = refused(&s.replace(
        "<0x0 0x0a000000 0x0 0x0a000200>",
        "<0x0 0x09010000 0x0 0x0a000200>",
    ));
    assert!(e.contains("shares a page with /pl031@9010000"), "{e}");
    let e = refused(&s.replace(
        "partita,virtio-interrupts = <16 17>;",
        "partita,virtio-interrupts = <2 17>;",
    ));
    assert!(
        e.contains("interrupt 2 of linux is also /pl031@9010000's"),
        "{e}"
    );
    let e = refused(&s.replace("partita,virtio-interrupts = <16 17>;", ""));
    assert!(e.contains("`partita,virtio-interrupts` must be"), "{e}");
}

/// Per side, a link may ask for the legacy virtio-mmio interface, and for
/// a buffer size other than 512 bytes, a coalescing bound other than
/// 20 microseconds; each shows in the partition table.
#[test]
fn rpmsg_links_choose_virtio_versions_and_buffer_size() {
    let s = linux_rtos();
    let sys = SystemConfig::from_dtb(&compile(&s)).unwrap();
    assert_eq!(
        (
            sys.links[0].versions,
            sys.links[0].buffer_size,
            sys.links[0].coalesce_us
        ),
        ([2, 2], 512, 20)
    );
    let mixed = s.replace(
        "partita,name-service = <0 1>;",
        "partita,name-service = <0 1>;\n\t\t\t\t\t\tpartita,virtio-version = <2 1>;\n\t\t\t\t\t\tpartita,buffer-size = <1024>;\n\t\t\t\t\t\tpartita,coalesce-us = <0>;",
    );
    let sys = SystemConfig::from_dtb(&compile(&mixed)).unwrap();
    let l = &sys.links[0];
    assert_eq!(
        (l.versions, l.buffer_size, l.coalesce_us),
        ([2, 1], 1024, 0)
    );
    assert_eq!(l.config().version, [2, 1]);
    assert!(
        sys.partition_table()
            .contains("(irq 49)  virtio 2/1  buffers 1024 bytes  coalesce 0 us"),
        "{}",
        sys.partition_table()
    );
    for (bad, why) in [
        (
            "partita,virtio-version = <2 3>;",
            "`partita,virtio-version` must be",
        ),
        (
            "partita,virtio-version = <1>;",
            "`partita,virtio-version` must be",
        ),
        (
            "partita,buffer-size = <32>;",
            "`partita,buffer-size` must be",
        ),
        (
            "partita,buffer-size = <0x10010>;",
            "`partita,buffer-size` must be",
        ),
        (
            "partita,buffer-size = <512 512>;",
            "`partita,buffer-size` must be",
        ),
        (
            "partita,coalesce-us = <1001>;",
            "`partita,coalesce-us` must be",
        ),
        (
            "partita,coalesce-us = <1 2>;",
            "`partita,coalesce-us` must be",
        ),
    ] {
        let e = refused(&s.replace(
            "partita,name-service = <0 1>;",
            &format!("partita,name-service = <0 1>;\n{bad}"),
        ));
        assert!(e.contains(why), "{bad}: {e}");
    }
}

/// `Range::holds`, the check on every address a guest hands over, against
/// the same question asked in 128 bits, where nothing overflows: near the
/// range's ends, below it, past it, and at the top of the address space.
#[test]
fn a_range_holds_exactly_the_accesses_inside_it() {
    use proptest::prelude::*;
    fn inside(r: Range, addr: u64, len: u64) -> bool {
        let (a, b, n) = (u128::from(addr), u128::from(r.base), u128::from(len));
        a >= b && a + n <= b + u128::from(r.size)
    }
    // Ranges that do not wrap, as the SDT's check leaves them, and
    // addresses and lengths around their edges or anywhere.
    let range = (any::<u64>(), any::<u64>())
        .prop_map(|(base, size)| Range::new(base, size.min(u64::MAX - base)));
    let near = |r: &Range| {
        let edges = [r.base, r.base.wrapping_add(r.size), 0, u64::MAX];
        (0..edges.len(), -20i64..20, any::<u64>(), prop::bool::ANY).prop_map(
            move |(i, d, far, wild)| {
                if wild {
                    far
                } else {
                    edges[i].wrapping_add_signed(d)
                }
            },
        )
    };
    proptest!(|((r, addr, len) in range.prop_flat_map(move |r| (Just(r), near(&r), prop_oneof![0u64..40, any::<u64>()])))| {
        prop_assert_eq!(r.holds(addr, len), inside(r, addr, len), "{:?} {:#x}+{:#x}", r, addr, len);
        prop_assert_eq!(partita_core::sdt::within(&[r], addr, len), inside(r, addr, len));
    });
    let r = Range::new(0x4800_0000, 0x200_0000);
    assert!(r.holds(0x4800_0000, 0x200_0000));
    assert!(r.holds(0x4a00_0000, 0), "an empty access at the end");
    assert!(!r.holds(0x4a00_0000, 1));
    assert!(!r.holds(0x47ff_ffff, 2));
    assert!(!r.holds(0x49ff_ffff, u64::MAX), "a length that wraps");
    let top = Range::new(u64::MAX - 0xfff, 0x1000);
    assert!(top.holds(u64::MAX, 1));
    assert!(!top.holds(u64::MAX, 2));
}
