//! Linux beside the RTOS: a real, unmodified kernel on two vCPUs, its own
//! remoteproc, virtio_rpmsg_bus, rpmsg_ns and rpmsg_char drivers over
//! Partita's transport, 1,000 messages round-tripping through the RTOS,
//! which keeps its period.

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
    // Linux's own drivers, unmodified, are the ones in use: the RTOS's
    // remoteproc carries the virtio device, the RTOS's announcements make
    // its channels, and rpmsg_char binds the echo channel by itself.
    run.line("remoteproc remoteproc0: remote processor rtos is now attached");
    run.line("virtio_rpmsg_bus virtio0: creating channel rpmsg-raw addr 0x400");
    run.line("[linux] partita-rpmsg: virtio0 driver virtio_rpmsg_bus");
    run.line("[linux] partita-rpmsg: virtio0.rpmsg-raw.-1.1024 driver rpmsg_chrdev");
    run.line("[linux] partita-rpmsg: virtio0.rpmsg_ns.53.53 driver rpmsg_ns");
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

/// Linux's remoteproc over the RTOS partition (guests/linux/partita_rproc.c,
/// built into the kernel), from the demo's shell with busybox only: the
/// RTOS, running before Linux, is attached; sysfs stops and starts it 20
/// times: its announced `rpmsg-raw` channel goes with each stop and comes
/// back with each start, bound to rpmsg_chrdev, and a message written to
/// its /dev/rpmsgN comes back (then 100 more). It refuses bad firmware
/// with remoteproc's errno and a log line, loads the test guest through
/// `firmware`, and recovers the RTOS after a crash over rpmsg (or, with
/// `recovery` disabled, leaves it crashed until `recover`).
#[test]
fn linux_remoteproc_stops_starts_loads_and_recovers_the_rtos() {
    let img = images().join("qemu-virt/linux-rtos.img");
    let paste = |after, bytes| Feed {
        after,
        bytes,
        burst: true,
    };
    // Markers are printed as `done-$((n))`, so the echoed command line
    // never matches them.
    let feeds = [
        paste(
            "Enter 'help' for a list of built-in commands.",
            b"r=/sys/class/remoteproc/remoteproc0; b=/sys/bus/rpmsg/devices; echo \"rproc: $(cat $r/name) $(cat $r/state) $(cat $r/firmware) $(cat $r/recovery)\"; \
ch() { for t in $(seq 100); do d=$(ls $b/*.rpmsg-raw.-1.1024/rpmsg 2>/dev/null) && break; sleep 0.1; done; }; \
for i in $(seq 20); do echo stop > $r/state; echo \"cycle $i: $(cat $r/state), $(ls $b | grep -c rpmsg-raw) channels\"; echo start > $r/state; ch; \
echo \"cycle $i: $(cat $r/state), $(ls $b | grep rpmsg-raw) bound to $(basename $(readlink $b/*.rpmsg-raw.-1.1024/driver))\"; \
exec 3<>/dev/$d; echo \"hello-$i over /dev/$d\" >&3; head -n 1 <&3; exec 3<&-; partita-rpmsg 100; done; echo done-$((0+1))\r",
        ),
        // Bad firmware: truncated, another machine's, a segment far
        // outside the RTOS's memory.
        paste(
            "done-1",
            b"cd /lib/firmware; head -c 200 rtos.elf > cut.elf; cp rtos.elf x86.elf; printf '\\076' | dd of=x86.elf bs=1 seek=18 conv=notrunc 2>/dev/null; \
cp rtos.elf far.elf; for o in 87 95; do printf '\\177' | dd of=far.elf bs=1 seek=$o conv=notrunc 2>/dev/null; done; cd /; echo done-$((1+1))\r",
        ),
        paste(
            "done-2",
            b"echo start > $r/state; echo stop > $r/state; echo \"bad: start while running counted, $(cat $r/state)\"; echo stop > $r/state; \
for f in nosuch.elf cut.elf x86.elf far.elf; do echo $f > $r/firmware; echo start > $r/state || echo \"bad: $f refused, $(cat $r/state)\"; done; \
echo testguest.elf > $r/firmware; echo start > $r/state; echo done-$((2+1))\r",
        ),
        paste(
            "done-3",
            b"sleep 1; echo stop > $r/state; echo rtos.elf > $r/firmware; echo start > $r/state; partita-rpmsg 100; \
partita-rpmsg crash; sleep 3; echo \"after crash: $(cat $r/state)\"; partita-rpmsg 100; echo done-$((3+1))\r",
        ),
        // With recovery disabled a crash stays; `recover` brings it back.
        paste(
            "done-4",
            b"echo disabled > $r/recovery; partita-rpmsg crash; sleep 2; echo \"no recovery: $(cat $r/state)\"; \
echo recover > $r/recovery; sleep 2; echo \"recovered: $(cat $r/state)\"; echo enabled > $r/recovery; partita-rpmsg 100; \
partita-rpmsg rtos-off; sleep 3; echo \"after its own power-off: $(cat $r/state), $(ls $b | grep -c rpmsg-raw) channels\"; \
echo start > $r/state; partita-rpmsg 100; echo done-$((4+1))\r",
        ),
    ];
    let run = boot_scripted(
        &img,
        std::time::Duration::from_secs(600),
        &[],
        &feeds,
        Some("done-5"),
        &[],
    );
    // Attached at boot: the RTOS ran before Linux.
    run.line("[linux] init: remoteproc0 is rtos, attached");
    // remoteproc names no firmware for what it attached to.
    run.line("[linux] rproc: rtos attached unknown enabled");
    for i in 1..=20 {
        run.line(&format!("[linux] cycle {i}: offline, 0 channels"));
        run.line(&format!(
            "[linux] cycle {i}: running, virtio0.rpmsg-raw.-1.1024 bound to rpmsg_chrdev"
        ));
        run.line(&format!("[linux] hello-{i} over /dev/rpmsg"));
    }
    assert!(
        run.lines_with("rtos: stopped").len() >= 21,
        "the RTOS stopped 20 times (and for the test guest)"
    );
    assert!(
        run.lines_with("rtos: started").len() >= 22,
        "the RTOS started 20 times, the test guest and a recovery"
    );
    // The boot's 1000, 20 after a start, one before and one after each
    // crash, one after the power-off.
    assert_eq!(
        run.lines_with("echoed intact").len(),
        25,
        "rpmsg after every start"
    );
    // Bad input: remoteproc's errno and a kernel log line; nothing else changes.
    // A start while running is remoteproc's reference count (6.12): no
    // START reaches the hypervisor and one stop only drops it again.
    run.line("[linux] bad: start while running counted, running");
    assert_eq!(
        run.lines_with("rtos: start requested by linux").len(),
        25,
        "20 cycles, the test guest, the RTOS twice more and two recoveries"
    );
    run.line("Direct firmware load for nosuch.elf failed with error -2");
    run.line("[linux] bad: nosuch.elf refused, offline");
    run.line("cut.elf is truncated");
    run.line("[linux] bad: cut.elf refused, offline");
    run.line("x86.elf is not a 64-bit AArch64 ELF");
    run.line("[linux] bad: x86.elf refused, offline");
    run.line("LOAD of rtos refused: -6 (image refused)");
    run.line("[linux] bad: far.elf refused, offline");
    // Another image through `firmware`.
    run.line("loaded testguest.elf");
    run.line("[rtos] testguest: up on vcpu 0");
    // A crash over rpmsg: reported, recovered by remoteproc.
    run.line("[rtos] rtos: crashing as asked over rpmsg");
    run.line("crash detected in rtos");
    run.line("recovering rtos");
    run.line("[linux] after crash: running");
    run.expect_in_order(&[
        "crash detected in rtos",
        "remote processor rtos is now up",
        "[linux] after crash: running",
        "echoed intact",
    ]);
    run.expect_in_order(&[
        "[linux] no recovery: crashed",
        "recovering rtos",
        "remote processor rtos is now up",
        "[linux] recovered: running",
        "echoed intact",
    ]);
    // Its own power-off: remoteproc shuts it down as after a stop (no
    // crash, no recovery), and it starts again.
    run.expect_in_order(&[
        "rtos: powering off as asked over rpmsg",
        "rtos powered itself off",
        "[linux] after its own power-off: offline, 0 channels",
        "remote processor rtos is now up",
        "echoed intact",
    ]);
    run.expect_absent("BUG:");
    run.expect_absent("WARNING:");
    run.expect_absent("Oops");
    assert!(!run.timed_out, "the run did not reach its end");
}
