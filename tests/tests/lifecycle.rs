//! The partition lifecycle: a controller stops, starts, loads and recovers
//! another partition through the control interface while their rpmsg link
//! follows; racing resets, CPU_OFF with a firing timer, and a stream that
//! loses nothing across restarts. Every scenario boots without icount.

use partita_tests::*;

/// The `domain-to-domain` node of a host domain: an rpmsg link to
/// `remote` (virtio windows 0xa000000/0xa000200, SPIs 16/17) and, if
/// `control`, the right to control it with control interrupt SPI 20. It
/// closes the host's node.
fn link_to(remote: &str, control: bool) -> String {
    let rproc = if control {
        format!("\t\t\t\tremoteproc-relation {{\n\t\t\t\t\tcompatible = \"openamp,remoteproc-v1\";\n\t\t\t\t\tremote = <&{remote}>;\n\t\t\t\t\tpartita,control-interrupt = <20>;\n\t\t\t\t}};\n")
    } else {
        String::new()
    };
    format!("\t\t\tdomain-to-domain {{\n\t\t\t\tcompatible = \"openamp,domain-to-domain-v1\";\n\t\t\t\trpmsg-relation {{\n\t\t\t\t\tcompatible = \"openamp,rpmsg-v1\";\n\t\t\t\t\tlink {{\n\t\t\t\t\t\tremote = <&{remote}>;\n\t\t\t\t\t\tpartita,virtio-mmio = <0x0 0x0a000000 0x0 0x0a000200>;\n\t\t\t\t\t\tpartita,virtio-interrupts = <16 17>;\n\t\t\t\t\t}};\n\t\t\t\t}};\n{rproc}\t\t\t}};\n\t\t}};\n")
}

/// A controller test guest `ctl` (id 1, CPU 0) with the right to control
/// `target` (id 2, CPU 1, kernel `kernel`), an rpmsg link to it and a
/// control interrupt; plus `extra` domains.
fn controlled(
    ctl_args: &str,
    ctl_initrd: Option<&str>,
    kernel: &str,
    target_args: &str,
    extra: &str,
) -> String {
    let mut ctl =
        domain("ctl", 1, 0x1, 0x4800_0000, ctl_args).replacen("\t\tctl {", "\t\tctl: ctl {", 1);
    if let Some(i) = ctl_initrd {
        ctl = ctl.replace(
            "partita,kernel = \"testguest\";",
            &format!("partita,kernel = \"testguest\";\n\t\t\tpartita,initrd = \"{i}\";"),
        );
    }
    let target = domain("rtos", 2, 0x2, 0x4c00_0000, target_args)
        .replacen("\t\trtos {", "\t\trtos: rtos {", 1)
        .replace(
            "partita,kernel = \"testguest\"",
            &format!("partita,kernel = \"{kernel}\""),
        );
    let relations = link_to("rtos", true);
    let cut = ctl.rfind("\t\t};").unwrap();
    format!("{}{relations}{target}{extra}", &ctl[..cut])
}

#[test]
fn a_controller_restarts_the_rtos_20_times_and_its_echo_answers_each_time() {
    let doms = controlled("control=20", None, "rtos", "", "");
    on_every_machine("life-cycles", &doms, |run| {
        run.line("control  ctl -> rtos  interrupt 20");
        run.line("[ctl] control: controls rtos (id 2)");
        run.line("[ctl] control: first instance echoed 100/100 intact");
        for i in 1..=20 {
            run.line(&format!(
                "[ctl] control: restart {i}: echoed 100/100 intact"
            ));
        }
        run.line("rtos: stop requested by ctl");
        run.line("[ctl] control: status state 2 restarts 20");
        run.line("control interrupts yes");
        // The 20th restart leaves the heap as the first did.
        let heap = |n: u32| {
            let l = run.lines_with(&format!("rtos: started (restart {n}); heap "))[0];
            l.rsplit("heap ").next().unwrap().to_string()
        };
        assert_eq!(heap(1), heap(20), "heap use grew over 20 restarts");
        run.expect_clean_exit();
    });
}

#[test]
fn a_controller_loads_another_image_and_bad_images_are_refused() {
    let doms = controlled("control-load", Some("testguest-elf"), "rtos", "hello", "");
    on_every_machine("life-load", &doms, |run| {
        run.expect_in_order(&[
            "[ctl] control: load while running = -4",
            "rtos: ELF from ctl refused: not an ELF, or shorter than its headers",
            "[ctl] control: truncated ELF = -6",
            "[ctl] control: ELF outside my memory = -5",
            "rtos: loaded an ELF of",
            "[rtos] testguest: up on vcpu 0, bootargs \"hello\"",
            "[rtos] hello: Partita domain rtos",
            "[ctl] control: the loaded image ran and stopped",
        ]);
        run.line("[ctl] control: start = 0");
        run.line("ctl: control call 0xc6000013 for partition id 2 refused: the image is not inside the caller's memory");
        run.expect_clean_exit();
    });
}

#[test]
fn a_crashed_rtos_reads_crashed_interrupts_its_controller_and_restarts() {
    let doms = controlled("control-crash", None, "rtos", "", "");
    on_every_machine("life-crash", &doms, |run| {
        run.expect_in_order(&[
            "[rtos] rtos: crashing as asked over rpmsg",
            "rtos: vcpu 0 fetch at IPA 0x0 (fault status 0x",
            "[rtos] rtos: task rpmsg faulted: ESR 0x86000010 FAR 0x0 ELR 0x0; reporting a crash",
            "rtos: vcpu 0 reports a crash: instruction abort from the same EL (ESR 0x86000010, FAR 0x0, ELR 0x0)",
            "rtos: crashed; its controller may restart it",
            "[ctl] control: partition 2 crashed (faults 1); interrupts ",
            "rtos: started (restart 1)",
            "[ctl] control: after the crash, echoed 100/100 intact",
        ]);
        assert!(run.lines_with("fetch at IPA")[0]
            .ends_with("outside its memory; instruction abort injected"));
        assert!(
            !run.lines_with("control: partition 2 crashed")[0].ends_with("interrupts 0"),
            "no control interrupt"
        );
        run.expect_clean_exit();
    });
}

#[test]
fn bad_control_requests_are_refused_and_change_nothing() {
    let outsider = domain("outsider", 3, 0x4, 0x4e00_0000, "control-denied=2");
    let doms = controlled("control-refusals", None, "testguest", "stay", &outsider);
    on_every_machine("life-refusals", &doms, |run| {
        run.line("[ctl] control: start while running = -4");
        run.line("[ctl] control: stop of id 999 = -2");
        run.line("[ctl] control: stop of id 2^32+id = -2");
        run.line("[ctl] control: unknown call = -1");
        run.line("[ctl] control: vdev ready without a remoteproc link = -7");
        run.line("[ctl] control: kick without a remoteproc link = -7");
        run.line("[ctl] control: stop while stopped = -4");
        run.line("[outsider] control: stop of id 2 = -3");
        run.line("[outsider] control: status of id 2 = -3");
        run.line("outsider: control call 0xc6000012 for partition id 2 refused: the SDT gives the caller no control of that partition");
        run.line("rtos: stopped");
        run.expect_clean_exit();
    });
}

#[test]
fn both_vcpus_resetting_at_once_100_times_come_back_each_time() {
    let doms = domain("duo", 1, 0x3, 0x4800_0000, "reset-race=100")
        + &domain("steady", 2, 0x4, 0x4c00_0000, "count=30");
    on_every_machine("reset-race", &doms, |run| {
        run.line("[duo] reset-race: came back after all 100 double resets");
        // Each reset is a few lines about duo: past its log limit they
        // are cut, and the next line that passes says how many.
        let restarts = run.lines_with("duo: started (restart ").len();
        assert!(
            restarts == 100 || run.has("more lines about it suppressed (log limit)"),
            "{restarts} restarts logged and no suppression said"
        );
        run.expect_absent("SYSTEM_RESET returned");
        assert_eq!(run.lines_with("[steady] testguest: up").len(), 1);
        run.line("[steady] count 30/30");
        run.expect_clean_exit();
    });
}

#[test]
fn a_vcpu_that_goes_off_with_its_timer_firing_starts_again() {
    let doms = domain("duo", 1, 0x3, 0x4800_0000, "timer-off=20");
    on_every_machine("timer-off", &doms, |run| {
        run.line(
            "[duo] timer-off: vcpu 1 went off with its timer firing and started again 20 times",
        );
        run.expect_clean_exit();
    });
}

#[test]
fn a_partition_powering_off_while_another_resets_does_not_end_the_machine() {
    let doms = domain("phoenix", 1, 0x3, 0x4800_0000, "reset-race=40")
        + &domain("brief", 2, 0x4, 0x4c00_0000, "hello");
    on_every_machine("off-during-reset", &doms, |run| {
        let off = run.line("brief: stopped");
        assert!(
            run.line("[phoenix] reset-race: came back after all 40 double resets") > off,
            "brief ended before phoenix's resets"
        );
        assert_eq!(run.lines_with("all partitions have ended").len(), 1);
        run.expect_clean_exit();
    });
}

#[test]
fn a_stream_arrives_once_and_in_order_while_its_receiver_restarts_10_times() {
    let ping = domain("ping", 1, 0x1, 0x4800_0000, "rpmsg-restarts=10,send").replacen(
        "\t\tping {",
        "\t\tping: ping {",
        1,
    );
    let pong = domain("pong", 2, 0x2, 0x4c00_0000, "rpmsg-restarts=10").replacen(
        "\t\tpong {",
        "\t\tpong: pong {",
        1,
    );
    let cut = ping.rfind("\t\t};").unwrap();
    let doms = format!("{}{}{pong}", &ping[..cut], link_to("pong", false));
    on_every_machine("stream-restarts", &doms, |run| {
        assert_eq!(run.lines_with("pong: started (restart ").len(), 10);
        run.line(
            "[pong] stream: received 3600 across 10 restarts, 0 duplicated, 0 missing or damaged",
        );
        run.line("[ping] stream: sent 3600");
        run.expect_clean_exit();
    });
}
