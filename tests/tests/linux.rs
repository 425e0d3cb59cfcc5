//! Linux beside the RTOS: a real, unmodified kernel on two vCPUs, its own
//! virtio_rpmsg_bus and rpmsg_char drivers over Partita's transport, 1,000
//! messages round-tripping through the RTOS, which keeps its period.

use partita_tests::*;

#[test]
fn linux_and_the_rtos_talk_over_rpmsg() {
    let dts = std::fs::read_to_string(root().join("platform/qemu-virt/linux-rtos.dts")).unwrap()
        + "&{/domains/linux/chosen} { bootargs = \"console=ttyAMA0 earlycon=pl011,0x9000000 partita.test\"; };\n";
    let run = boot(&image_from_dts("linux-rtos-test", &dts, false), LIMIT);
    run.line("[linux] Booting Linux on physical CPU 0x0000000000");
    run.line("[linux] smp: Brought up 1 node, 2 CPUs");
    run.line("[linux] init: Linux 6.12");
    run.line("2 CPUs online");
    // Linux's own drivers, unmodified, are the ones in use.
    run.line("[linux] partita-rpmsg: virtio0 driver virtio_rpmsg_bus");
    run.line("[linux] partita-rpmsg: /sys/bus/rpmsg/drivers/rpmsg_chrdev present");
    run.line("[linux] partita-rpmsg: 1000 messages (");
    run.line("echoed intact");
    run.line("[linux] partita-rpmsg: RTOS jitter: ");
    // The RTOS kept releasing its periodic task all along.
    let report = run.lines_with("[rtos] rtos: jitter: ")[0].to_string();
    let releases: u64 = report
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(releases > 100, "the RTOS's periodic task stalled: {report}");
    run.expect_absent("BUG:");
    run.expect_absent("WARNING:");
    run.expect_absent("Oops");
    run.expect_clean_exit();
}

/// From the demo's shell: `reboot -f` five times, each time Linux comes
/// back with both CPUs and its rpmsg echo; `poweroff -f` then ends Linux
/// alone while the RTOS runs on.
#[test]
fn linux_reboots_five_times_and_powers_off_alone() {
    let img = images().join("qemu-virt/linux-rtos.img");
    let prompt = "Ctrl-A X leaves QEMU.";
    let mut steps: Vec<Step> = (1..=5)
        .map(|nth| Step {
            after: prompt,
            nth,
            send: b"reboot -f\r",
        })
        .collect();
    steps.push(Step {
        after: prompt,
        nth: 6,
        send: b"poweroff -f\r",
    });
    // The status once Linux has stopped; the RTOS runs on, so the run ends
    // there.
    steps.push(Step {
        after: "linux: stopped",
        nth: 1,
        send: &[0x1c, b's'],
    });
    steps.push(Step {
        after: "  rtos     running",
        nth: 1,
        send: b"",
    });
    let run = boot_steps(&img, std::time::Duration::from_secs(300), &[], &steps, &[]);
    assert_eq!(
        run.lines_with("linux: reset by vcpu").len(),
        5,
        "five resets"
    );
    assert_eq!(
        run.lines_with("2 CPUs online").len(),
        6,
        "both CPUs after every boot"
    );
    assert_eq!(
        run.lines_with("echoed intact").len(),
        6,
        "rpmsg after every boot"
    );
    run.line("linux: powered off by vcpu");
    run.line("  linux    stopped");
    run.line("  rtos     running");
    run.expect_absent("failed to come online");
    run.expect_absent("all partitions have ended");
    run.expect_absent("BUG:");
    run.expect_absent("WARNING:");
    assert!(!run.timed_out, "the run did not reach the status");
}
