//! Partitions from the System Device Tree: separate cores and memory,
//! SMP guests, and one partition's power-off or reset leaving the others be.

use partita_tests::*;

#[test]
fn two_partitions_print_at_the_same_time() {
    // Long enough that host scheduling cannot run one entirely before the
    // other starts.
    let doms = domain("left", 1, 0x1, 0x4800_0000, "count=100")
        + &domain("right", 2, 0x4, 0x4a00_0000, "count=100");
    let run = boot(&virt_image("concurrent", &doms), LIMIT);
    let left_done = run.line("[left] count 100/100");
    let right_done = run.line("[right] count 100/100");
    assert!(
        run.line("[left] count 1/100") < right_done && run.line("[right] count 1/100") < left_done,
        "one partition finished before the other started"
    );
    // The serial output only: QEMU's own warnings (under -icount, "icount
    // sleep disabled") follow it.
    let serial = run
        .output
        .split("\n--- qemu stderr ---")
        .next()
        .unwrap_or("");
    for l in serial.lines().filter(|l| l.contains("count ")) {
        assert!(
            l.starts_with("[left] count ") || l.starts_with("[right] count "),
            "mixed line: {l}"
        );
    }
    run.expect_clean_exit();
}

#[test]
fn a_two_vcpu_guest_starts_and_stops_its_second_vcpu() {
    let img = virt_image("smp", &domain("duo", 1, 0x6, 0x4800_0000, "smp"));
    let run = boot(&img, LIMIT);
    run.expect_in_order(&[
        "duo: vcpu 0 starts at 0x48000000",
        "[duo] smp: 2 vcpus in the device tree",
        "[duo] smp: cpu_on(1) = 0",
    ]);
    run.line("duo: vcpu 1 starts at");
    run.line("[duo] smp: vcpu 1 online, mpidr 0x1");
    run.line("duo: vcpu 1 off");
    run.expect_in_order(&[
        "[duo] smp: cpu_on(0) = -4",
        "[duo] smp: cpu_on(9) = -2",
        "[duo] smp: all 1 secondary vcpus ran and are off again",
    ]);
    // vCPU 1 runs on the second CPU of the mask (physical CPU 2).
    assert!(
        run.has("[partita cpu2] duo: vcpu 1 starts at"),
        "vcpu 1 not on cpu2"
    );
    run.expect_clean_exit();
}

#[test]
fn one_partition_powering_off_leaves_the_other_running() {
    // Long enough (tens of milliseconds) to outlast a host preemption of
    // brief's start: the partitions load in parallel.
    let doms = domain("brief", 1, 0x1, 0x4800_0000, "hello")
        + &domain("long", 2, 0x2, 0x4a00_0000, "count=100");
    let run = boot(&virt_image("poweroff", &doms), LIMIT);
    let off = run.line("brief: powered off");
    assert!(
        run.line("[long] count 100/100") > off,
        "long stopped with brief"
    );
    run.expect_in_order(&[
        "[long] testguest: done",
        "long: powered off",
        "all partitions have ended",
    ]);
    run.expect_clean_exit();
}

#[test]
fn one_partition_resetting_restarts_alone() {
    let doms = domain("phoenix", 1, 0x1, 0x4800_0000, "reset")
        + &domain("steady", 2, 0x2, 0x4a00_0000, "count=20");
    let run = boot(&virt_image("reset", &doms), LIMIT);
    run.expect_in_order(&[
        "[phoenix] reset: first boot, resetting",
        "phoenix: reset by vcpu 0",
        "phoenix: restarting",
        "phoenix: vcpu 0 starts at 0x48000000",
        "[phoenix] reset: second boot, after SYSTEM_RESET",
        "phoenix: powered off",
    ]);
    assert_eq!(
        run.lines_with("[steady] testguest: up").len(),
        1,
        "steady restarted too"
    );
    run.line("[steady] count 20/20");
    run.expect_clean_exit();
}

#[test]
fn shipped_linux_rtos_layout_boots_with_stand_in_guests() {
    // The test guest stands in for Linux (a kernel name of its own).
    let dts = std::fs::read_to_string(root().join("platform/qemu-virt/linux-rtos.dts"))
        .unwrap()
        .replace("partita,kernel = \"linux\";", "partita,kernel = \"stand-in\";")
        + "&{/domains/linux/chosen} { bootargs = \"smp hello\"; };\n&{/domains/rtos/chosen} { bootargs = \"run-for=100\"; };\n";
    let run = boot(&image_from_dts("linux-rtos", &dts, false), LIMIT);
    run.line("[linux] smp: 2 vcpus in the device tree");
    run.line("[linux] smp: all 1 secondary vcpus ran and are off again");
    run.line("[rtos] rtos: Partita RTOS on 1 vCPU");
    run.line("[rtos] rtos: endpoint rpmsg-raw at 1024");
    run.line("[rtos] rtos: powering off after 100 ms");
    run.expect_clean_exit();
}
