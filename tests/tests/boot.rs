//! Booting at EL2 on QEMU virt: the hypervisor comes up on every CPU,
//! starts its partitions, serves PSCI, survives misbehaving guests, and
//! powers the machine off when every partition has.

use partita_tests::*;

#[test]
fn shipped_two_guests_boot_side_by_side_and_power_off() {
    let run = boot(&images().join("qemu-virt/two-guests.img"), LIMIT);
    run.expect_in_order(&[
        "[partita cpu0] Partita 0.1.0 starting at EL2",
        "board: QEMU virt, 4 CPUs, GICv3",
        "partitions:",
    ]);
    for cpu in 1..4 {
        run.line(&format!("[partita cpu{cpu}] online (MPIDR {cpu:#x})"));
    }
    run.expect_in_order(&["alpha: vcpu 0 starts at 0x48000000", "[alpha] testguest: up on vcpu 0", "[alpha] hello: Partita domain alpha on QEMU virt with 1 vcpu(s), memory 0x48000000+0x2000000"]);
    run.expect_in_order(&[
        "beta: vcpu 0 starts at 0x4a000000",
        "[beta] testguest: up on vcpu 0",
        "[beta] hello: Partita domain beta",
    ]);
    run.expect_in_order(&["all partitions have ended; powering off"]);
    run.expect_clean_exit();
}

#[test]
fn psci_answers_and_unknown_calls_fail_without_harm() {
    let img = virt_image("calls", &domain("solo", 1, 0x1, 0x4800_0000, "calls"));
    let run = boot(&img, LIMIT);
    run.expect_in_order(&[
        "[solo] calls: psci version 1.0",
        "[solo] calls: features(CPU_ON) = 0",
        "[solo] calls: features(CPU_SUSPEND) = -1",
        "[solo] calls: unknown hvc returned -1",
        "[solo] calls: unknown smc returned -1",
        "[solo] calls: smc psci version 0x10000",
        "[solo] calls: still running",
        "[solo] testguest: done, powering off",
    ]);
    run.expect_clean_exit();
}

#[test]
fn access_outside_its_memory_gets_a_data_abort_and_the_guest_goes_on() {
    let img = virt_image("abort", &domain("solo", 1, 0x1, 0x4800_0000, "abort"));
    let run = boot(&img, LIMIT);
    run.expect_in_order(&[
        "solo: read of 4 bytes at IPA 0x1000 outside its memory and devices; data abort injected",
        "[solo] abort: caught data abort, ESR 0x96000010 FAR 0x1000",
        "aborts taken: 1",
        "[solo] testguest: done, powering off",
    ]);
    run.expect_clean_exit();
}

#[test]
fn a_guest_that_jumps_out_of_its_memory_is_stopped_and_the_other_runs_on() {
    let doms = domain("wild", 1, 0x1, 0x4800_0000, "jump-away")
        + &domain("calm", 2, 0x2, 0x4a00_0000, "count=15");
    let run = boot(&virt_image("jump", &doms), LIMIT);
    let stop = run.line(
        "unhandled guest exception in partition wild vcpu 0: instruction abort from a lower EL",
    );
    run.line("wild: crashed");
    assert!(run.line("[calm] count 15/15") > stop);
    run.expect_clean_exit();
}

#[test]
fn an_unmodified_binary_from_a_bad_sdt_is_refused_at_boot() {
    // The tool would refuse this tree; --unchecked leaves it to the hypervisor.
    let dts = std::fs::read_to_string(root().join("platform/qemu-virt/two-guests.dts"))
        .unwrap()
        .replace(
            "<0x0 0x4a000000 0x0 0x2000000>",
            "<0x0 0x49000000 0x0 0x2000000>",
        );
    let img = image_from_dts("bad-sdt", &dts, true);
    let run = boot(&img, LIMIT);
    run.expect_in_order(&[
        "ERROR: bad System Device Tree: /domains/beta: memory 0x49000000..0x4b000000 overlaps 0x48000000..0x4a000000 of /domains/alpha",
        "nothing was started; powering off",
    ]);
    run.expect_absent("starts at");
    run.expect_clean_exit();
}
