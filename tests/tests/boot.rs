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
    // Its own map, as its MMU reads it: RAM Normal write-back, the console
    // Device-nGnRE, so its rings are coherent with the hypervisor's copies.
    run.line("[alpha] hello: MMU and caches on; memory attributes 0xff, console 0x4");
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
        "[solo] calls: psci version 1.1",
        "[solo] calls: features(CPU_ON) = 0",
        "[solo] calls: features(CPU_SUSPEND) = 0",
        "[solo] calls: unknown hvc returned -1",
        "[solo] calls: unknown smc returned -1",
        "[solo] calls: smc psci version 0x10001",
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
fn a_fetch_outside_its_memory_gets_an_instruction_abort_and_the_guest_goes_on() {
    on_both_gics(
        "iabort",
        &domain("solo", 1, 0x1, 0x4800_0000, "iabort abort"),
        |run| {
            run.expect_in_order(&[
                "solo: vcpu 0 fetch at IPA 0x1000 (fault status 0x",
                "[solo] iabort: caught instruction abort, ESR 0x86000010 FAR 0x1000 ELR 0x1000",
                "[solo] iabort: resumed after 1 instruction abort(s)",
                "[solo] abort: caught data abort, ESR 0x96000010 FAR 0x1000",
                "aborts taken: 2",
                "[solo] testguest: done, powering off",
            ]);
            assert!(run.lines_with("fetch at IPA")[0]
                .ends_with("outside its memory; instruction abort injected"));
            run.expect_absent("crash");
            run.expect_clean_exit();
        },
    );
}

/// The abort reaches the guest, whose handler does not expect it and
/// reports a crash: the partition reads crashed, the other runs on.
#[test]
fn a_guest_that_jumps_out_of_its_memory_crashes_and_the_other_runs_on() {
    let doms = domain("wild", 1, 0x1, 0x4800_0000, "jump-away")
        + &domain("calm", 2, 0x2, 0x4a00_0000, "count=100");
    let run = boot(&virt_image("jump", &doms), LIMIT);
    run.expect_in_order(&[
        "wild: vcpu 0 fetch at IPA 0x0 (fault status 0x",
        "[wild] testguest: unexpected exception ESR 0x86000010 FAR 0x0 ELR 0x0",
    ]);
    assert!(run.lines_with("fetch at IPA")[0]
        .ends_with("outside its memory; instruction abort injected"));
    let stop = run.line(
        "wild: vcpu 0 reports a crash: instruction abort from the same EL (ESR 0x86000010, FAR 0x0, ELR 0x0)",
    );
    assert!(run.line("wild: crashed") > stop);
    assert!(run.line("[calm] count 100/100") > stop);
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

/// `two-guests.dtb` with one property's length running past the end of
/// the structure block: the `fdt` crate would slice out of bounds.
fn corrupt_two_guests() -> (Vec<u8>, usize) {
    let dts = std::fs::read_to_string(root().join("platform/qemu-virt/two-guests.dts")).unwrap();
    let mut blob = compile_dts("corrupt-base", &dts);
    let off_struct = u32::from_be_bytes(blob[8..12].try_into().unwrap()) as usize;
    let prop = (off_struct..)
        .step_by(4)
        .find(|&i| blob[i..i + 4] == [0, 0, 0, 3])
        .unwrap();
    blob[prop + 4..prop + 8].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
    (blob, prop)
}

#[test]
fn a_corrupt_sdt_blob_is_refused_at_boot_with_its_offset() {
    let (blob, prop) = corrupt_two_guests();
    let img = image_from_dtb("corrupt-sdt", &blob, &["testguest"]);
    let run = boot(&img, LIMIT);
    // The SDT cannot name the console; the bootloader's tree (QEMU's) does.
    run.expect_in_order(&[
        &format!("ERROR: bad System Device Tree: /: not a device tree: at offset {prop:#x}: property value of 2147483647 bytes runs past the structure block"),
        "nothing was started; powering off",
    ]);
    run.expect_absent("starts at");
    run.expect_clean_exit();
}

#[test]
fn a_device_over_the_gic_is_refused_at_boot_whatever_its_name() {
    let dts = std::fs::read_to_string(root().join("platform/qemu-virt/two-guests.dts"))
        .unwrap()
        .replace("<&gpio 0x0>", "<&extra 0x0>")
        + "/ { extra: extra@0 { compatible = \"vendor,thing\"; reg = <0x0 0x08000000 0x0 0x1000>; }; };\n";
    let img = image_from_dts("device-over-gic", &dts, true);
    let run = boot(&img, LIMIT);
    run.expect_in_order(&[
        "ERROR: bad System Device Tree: /extra@0: registers 0x8000000..0x8001000 share a page with 0x8000000..0x8010000 of /interrupt-controller@8000000, which the hypervisor keeps",
        "nothing was started; powering off",
    ]);
    run.expect_absent("starts at");
    run.expect_clean_exit();
}

#[test]
fn a_cpu_firmware_will_not_start_stops_the_boot_with_its_name() {
    // QEMU has four CPUs; the SDT names a fifth, and a domain runs on it.
    let dts = format!(
        "/dts-v1/;\n/include/ \"board.dtsi\"\n/ {{\n\tcpus {{ cpu@4 {{ device_type = \"cpu\"; compatible = \"arm,cortex-a53\"; reg = <4>; enable-method = \"psci\"; }}; }};\n\tdomains {{\n\t\t#address-cells = <2>;\n\t\t#size-cells = <2>;\n{}{}\t}};\n}};\n",
        domain("calm", 1, 0x1, 0x4800_0000, "hello"),
        domain("ghost", 2, 0x10, 0x4a00_0000, "hello"),
    );
    let img = image_from_dts("missing-cpu", &dts, false);
    let run = boot(&img, LIMIT);
    run.expect_in_order(&[
        "firmware refused CPU_ON for /cpus/cpu@4 (MPIDR 0x4): error -2; /domains/ghost cannot run without it",
        "nothing was started; powering off",
    ]);
    run.expect_absent("starts at");
    run.expect_clean_exit();
}

/// The EL2 map is write-xor-execute, checked by the MMU itself at boot,
/// and leaves out what the SDT reserves for firmware; a domain over that
/// memory is refused with the node's name.
#[test]
fn the_el2_map_is_write_xor_execute_and_keeps_clear_of_firmware() {
    let two = std::fs::read_to_string(root().join("platform/qemu-virt/two-guests.dts")).unwrap();
    let firmware = |reg: &str| {
        format!("{two}&{{/reserved-memory}} {{ firmware@0 {{ reg = {reg}; no-map; }}; }};\n")
    };
    let img = image_from_dts(
        "firmware-kept",
        &firmware("<0x0 0x4c000000 0x0 0x100000>"),
        false,
    );
    let run = boot(&img, LIMIT);
    run.line("EL2 map: text 0x40200000..");
    run.line("  firmware 0x4c000000..0x4c100000  /reserved-memory/firmware@0, never mapped");
    run.expect_in_order(&[
        "(checked by the MMU), the rest never executed (WXN); 1 ranges firmware keeps left out",
        "[alpha] hello: Partita domain alpha",
        "all partitions have ended; powering off",
    ]);
    run.expect_clean_exit();

    let img = image_from_dts(
        "firmware-overlap",
        &firmware("<0x0 0x4a100000 0x0 0x1000>"),
        true,
    );
    let run = boot(&img, LIMIT);
    run.expect_in_order(&[
        "ERROR: bad System Device Tree: /domains/beta: memory 0x4a000000..0x4c000000 overlaps 0x4a100000..0x4a101000 of /reserved-memory/firmware@0, which firmware keeps",
        "nothing was started; powering off",
    ]);
    run.expect_absent("starts at");
    run.expect_clean_exit();
}

/// The bare-metal guests' own map holds for memory that is neither 2 MiB
/// nor 1 GiB aligned: a first range ending mid-block and a second one
/// across the 2 GiB line (two level-2 tables, level-3 tables at the ends).
#[test]
fn a_guest_maps_memory_split_across_blocks_cacheable() {
    let d = domain("odd", 1, 0x1, 0x4800_0000, "hello").replace(
        "memory = <0x0 0x48000000 0x0 0x2000000>;",
        "memory = <0x0 0x48000000 0x0 0x1fff000>, <0x0 0x7fe03000 0x0 0x3fd000>;",
    );
    let run = boot(&virt_image("odd-memory", &d), LIMIT);
    run.expect_in_order(&[
        "[odd] hello: Partita domain odd on QEMU virt with 1 vcpu(s), memory 0x48000000+0x1fff000",
        "[odd] hello: MMU and caches on; memory attributes 0xff, console 0x4",
        "[odd] hello: memory 0x7fe03000+0x3fd000 attributes 0xff to 0xff",
        "[odd] testguest: done, powering off",
    ]);
    run.expect_clean_exit();
}
