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
    let (releases, report) = run.rtos_releases();
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
    let typed = |after, bytes| Feed {
        after,
        bytes,
        burst: false,
    };
    let mut feeds = vec![typed(prompt, b"reboot -f\r"); 5];
    feeds.push(typed(prompt, b"poweroff -f\r"));
    feeds.push(typed("linux: stopped", &[0x1c, b's']));
    // The RTOS runs on, so the run ends at the status.
    let run = boot_scripted(
        &img,
        std::time::Duration::from_secs(300),
        &[],
        &feeds,
        Some("  rtos     running"),
        &[],
    );
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

/// A 125-character command pasted into the Linux shell at once (as a
/// terminal's paste does) arrives whole: the console keeps typed input in
/// a 4 KiB buffer per partition while Linux drains its emulated FIFO.
#[test]
fn a_pasted_125_character_command_reaches_the_linux_shell_whole() {
    let word: String = (0..125)
        .map(|i| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[i * 7 % 36]))
        .collect();
    let command = format!("echo {word}\r");
    let img = root().join("target/images/qemu-virt/linux-rtos.img");
    images();
    let feeds = [Feed {
        after: "Enter 'help' for a list of built-in commands.",
        bytes: command.as_bytes(),
        burst: true,
    }];
    let run = boot_scripted(
        &img,
        LIMIT,
        &[],
        &feeds,
        Some(&format!("[linux] {word}\n")),
        &[],
    );
    run.line("[linux] / # ");
    // The shell ran the whole command: its output is the whole word.
    assert!(
        run.output.lines().any(|l| l == format!("[linux] {word}")),
        "the command did not arrive whole"
    );
    run.expect_absent("console input dropped");
}
