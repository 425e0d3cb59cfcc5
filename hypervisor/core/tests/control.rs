//! Control rights in the SDT: lopper's `openamp,remoteproc-v1` relation
//! read into `SystemConfig::controls`, its refusals, and the controller's
//! generated device tree describing the partitions it controls.

mod common;

use common::*;
use partita_core::sdt::SystemConfig;

/// `linux-rtos` (its link over virtio-mmio, which needs no control) with
/// its remoteproc relation's body replaced by `body`.
fn relation(body: &str) -> String {
    let dts = linux_rtos_over_mmio();
    let start = dts
        .find("remoteproc-relation {")
        .expect("the demo has a relation");
    let end = start + dts[start..].find("};").unwrap();
    format!(
        "{}remoteproc-relation {{\n{body}\n{}",
        &dts[..start],
        &dts[end..]
    )
}

const COMPAT: &str = "compatible = \"openamp,remoteproc-v1\";";

#[test]
fn the_demo_lets_linux_control_the_rtos() {
    let sys = SystemConfig::from_dtb(&compile(&shipped("linux-rtos"))).unwrap();
    assert_eq!(sys.controls.len(), 1);
    let c = &sys.controls[0];
    assert_eq!((c.controller, c.target, c.spi), (0, 1, Some(18 + 32)));
    assert!(sys.control(0, 1).is_some());
    assert!(sys.control(1, 0).is_none(), "rights go one way");
    assert!(sys
        .partition_table()
        .contains("control  linux -> rtos  interrupt 18"));
}

#[test]
fn a_domain_controls_nobody_without_a_relation() {
    let sys = SystemConfig::from_dtb(&compile(&shipped("two-guests"))).unwrap();
    assert!(sys.controls.is_empty());
}

#[test]
fn bad_relations_are_refused_with_the_node_and_the_reason() {
    let path = "/domains/linux/domain-to-domain/remoteproc-relation";
    for (body, reason) in [
        (
            COMPAT.to_string(),
            "`remote` must name the domains it controls",
        ),
        (
            format!("{COMPAT} remote = <&linux>;"),
            "`remote` names the domain itself",
        ),
        (
            format!("{COMPAT} remote = <&uart0>;"),
            "`remote` names /pl011@9000000, which is not a domain",
        ),
        (
            format!("{COMPAT} remote = <&rtos>; partita,control-interrupt = <18 19>;"),
            "`partita,control-interrupt` must give one SPI per `remote`",
        ),
        (
            format!("{COMPAT} remote = <&rtos>; partita,control-interrupt = <988>;"),
            "control interrupt 988 is beyond the GIC's last SPI",
        ),
        (
            format!("{COMPAT} remote = <&rtos>; partita,control-interrupt = <16>;"),
            "control interrupt 16 is also linux's side of",
        ),
        (
            format!("{COMPAT} remote = <&rtos>; partita,control-interrupt = <2>;"),
            "control interrupt 2 is also /pl031@9010000's, given to /domains/linux",
        ),
    ] {
        let e = refused(&relation(&body));
        assert!(e.starts_with(path), "{e}");
        assert!(e.contains(reason), "{e}\nwanted: {reason}");
    }
}

#[test]
fn a_domain_has_one_controller() {
    // A second relation in the same controller names the RTOS again.
    let dts = relation(&format!("{COMPAT} remote = <&rtos>;"))
        + "&{/domains/linux/domain-to-domain} { second { compatible = \"openamp,remoteproc-v2\"; remote = <&rtos>; }; };\n";
    let e = refused(&dts);
    assert!(e.contains("/domains/rtos is already controlled by"), "{e}");
}

#[test]
fn the_controllers_device_tree_describes_the_partitions_it_controls() {
    let blob = compile(&shipped("linux-rtos"));
    let sys = SystemConfig::from_dtb(&blob).unwrap();
    for (i, d) in sys.domains.iter().enumerate() {
        let m = d.memory[0];
        let layout = partita_core::layout::GuestLayout {
            kernel: m.base,
            dtb: m.base + 0x10_0000,
            initrd: None,
        };
        let dtb = partita_core::guest_fdt::build(&blob, &sys, d, &layout).unwrap();
        let fdt = fdt::Fdt::new(&dtb).unwrap();
        let node = fdt.find_compatible(&["partita,partition"]);
        if i == 0 {
            let n = node.expect("linux's tree names the RTOS");
            assert_eq!(n.name, "partition@2");
            assert_eq!(n.property("reg").unwrap().as_usize(), Some(2));
            assert_eq!(n.property("label").unwrap().as_str(), Some("rtos"));
            let irq = n.property("interrupts").unwrap().value;
            assert_eq!(irq, [0, 0, 0, 0, 0, 0, 0, 18, 0, 0, 0, 1]);
        } else {
            assert!(node.is_none(), "the RTOS controls nobody");
        }
    }
}
