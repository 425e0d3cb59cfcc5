//! What only the ZCU102 (QEMU xlnx-zcu102) has, or what runs there once
//! beside its virt twin: the shipped configurations on the board's SDT, the
//! Cadence console (output and typed input) behind each guest's emulated
//! PL011, the second DDR bank, SMP guests, and the Linux demo. Scenarios
//! that run on every machine (interrupts, rpmsg, lifecycle, the hostile
//! suite) boot here through `on_every_machine` in their own files.

use partita_tests::*;

const M: Machine = Machine::Zcu102;

#[test]
fn shipped_two_guests_boot_on_the_zcu102() {
    let run = M.boot(&images().join("zcu102/two-guests.img"), LIMIT);
    run.expect_in_order(&[
        "[partita cpu0] Partita 0.1.0 starting at EL2",
        "board: Xilinx ZCU102, 4 CPUs, GICv2",
        "alpha    id 1  baremetal cpus [0]  memory 0x48000000..0x4a000000  devices [serial@ff000000, rtc@ffa60000]",
        "beta     id 2  baremetal cpus [1]  memory 0x4a000000..0x4c000000  devices [serial@ff000000, timer@ff110000]",
    ]);
    // The secondaries came up through QEMU's PSCI CPU_ON over SMC.
    for cpu in 1..4 {
        run.line(&format!("[partita cpu{cpu}] online (MPIDR {cpu:#x})"));
    }
    run.line("[alpha] hello: Partita domain alpha on Xilinx ZCU102 with 1 vcpu(s), memory 0x48000000+0x2000000");
    run.line("[alpha] calls: psci version 1.1");
    run.line("[beta] count 5/5");
    run.line("all partitions have ended; powering off");
    run.expect_clean_exit();
}

#[test]
fn a_partition_in_the_second_ddr_bank_and_an_smp_partition() {
    let doms = domain("high", 1, 0x1, 0x8_0000_0000, "hello count=3")
        + &domain("duo", 2, 0x6, 0x4800_0000, "smp");
    let run = M.boot(&M.image("high-smp", &doms), LIMIT);
    run.line("[high] hello: Partita domain high on Xilinx ZCU102 with 1 vcpu(s), memory 0x800000000+0x2000000");
    run.line("[high] count 3/3");
    run.line("[duo] smp: vcpu 1 online, mpidr 0x1");
    run.line("[duo] smp: all 1 secondary vcpus ran and are off again");
    assert!(
        run.has("[partita cpu2] duo: vcpu 1 starts at"),
        "vcpu 1 not on cpu2"
    );
    run.expect_clean_exit();
}

/// Typed input arrives through the Cadence UART's receive interrupt.
#[test]
fn typed_lines_reach_the_focused_partition_through_the_cadence_uart() {
    const ESC: u8 = 0x1c; // Ctrl-\
    let doms = domain("alpha", 1, 0x1, 0x4800_0000, "echo=2")
        + &domain("beta", 2, 0x2, 0x4a00_0000, "echo=1");
    let mut input = b"first\r".to_vec();
    input.extend_from_slice(&[ESC, b'n']);
    input.extend_from_slice(b"second\r");
    input.extend_from_slice(&[ESC, b'n']);
    input.extend_from_slice(b"third\r");
    let feeds = [Feed {
        after: "[beta] echo: ready",
        bytes: &input,
        burst: false,
    }];
    let run = M.boot_scripted(&M.image("echo", &doms), LIMIT, &feeds, None, &[]);
    run.expect_in_order(&[
        "[alpha] echo: first",
        "input now goes to beta",
        "[beta] echo: second",
        "input now goes to alpha",
        "[alpha] echo: third",
    ]);
    run.expect_clean_exit();
}

/// The shipped demo: Linux finds its console as a PL011 at the Cadence
/// UART's address, and the RTOS's rpmsg channels through its remoteproc.
#[test]
fn linux_and_the_rtos_talk_over_rpmsg_on_the_zcu102() {
    let dts = std::fs::read_to_string(root().join("platform/zcu102/linux-rtos.dts")).unwrap()
        + "&{/domains/linux/chosen} { bootargs = \"console=ttyAMA0 earlycon=pl011,0xff000000 partita.test\"; };\n";
    let run = M.boot(
        &image_from_dts_for("zcu102", "linux-rtos-test-zcu102", &dts, false),
        LIMIT,
    );
    run.line("[linux] Machine model: Partita domain linux on Xilinx ZCU102");
    run.line("[linux] ff000000.serial: ttyAMA0 at MMIO 0xff000000");
    run.line("[linux] smp: Brought up 1 node, 2 CPUs");
    run.line("[linux] partita-rpmsg: virtio0 driver virtio_rpmsg_bus");
    run.line("[linux] partita-rpmsg: virtio0.rpmsg-raw.-1.1024 driver rpmsg_chrdev");
    run.line("[linux] partita-rpmsg: 1000 messages (");
    run.line("echoed intact");
    run.line("[linux] partita-rpmsg: RTOS jitter: ");
    run.line("[rtos] rtos: jitter: ");
    run.expect_absent("BUG:");
    run.expect_absent("WARNING:");
    run.expect_absent("Oops");
    run.expect_clean_exit();
}
