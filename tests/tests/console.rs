//! One console for every partition: whole prefixed lines, typed input to
//! the partition in focus, and the escape keys that move it.

use partita_tests::*;

const ESC: u8 = 0x1c; // Ctrl-\

#[test]
fn typed_lines_reach_the_focused_partition_only_and_the_escape_moves_focus() {
    let doms = domain("alpha", 1, 0x1, 0x4800_0000, "echo=3")
        + &domain("beta", 2, 0x2, 0x4a00_0000, "echo=1");
    let img = virt_image("echo", &doms);
    let mut input = b"first\r".to_vec();
    input.extend_from_slice(&[ESC, b's']);
    input.extend_from_slice(b"second\r");
    input.extend_from_slice(&[ESC, b'n']);
    input.extend_from_slice(b"third\r");
    input.extend_from_slice(&[ESC, b'n']);
    input.extend_from_slice(b"fourth\r");
    let run = boot_with(&img, LIMIT, &[], Some(("[beta] echo: ready", &input)), &[]);
    run.line("input goes to alpha; Ctrl-\\ n moves it to the next partition");
    run.expect_in_order(&[
        "[alpha] echo: first",
        "status: 2 partitions",
        "alpha    running  vcpus on 1/1  up 0 s  restarts 0",
        "[alpha] echo: second",
        "input now goes to beta",
        "[beta] echo: third",
        "input now goes to alpha",
        "[alpha] echo: fourth",
    ]);
    assert!(
        run.lines_with("alpha    running  vcpus on 1/1")[0].ends_with("(input)"),
        "the status does not say who has the input"
    );
    run.expect_absent("[beta] echo: first");
    run.expect_absent("[beta] echo: second");
    run.expect_absent("[alpha] echo: third");
    run.expect_clean_exit();
}

#[test]
fn a_partition_flooding_its_console_neither_stalls_nor_mixes_with_another() {
    let doms = domain("flood", 1, 0x1, 0x4800_0000, "spam=3000")
        + &domain("calm", 2, 0x2, 0x4a00_0000, "count=30");
    let run = boot(&virt_image("flood", &doms), LIMIT);
    // The calm partition finishes while the flood is still going.
    assert!(
        run.line("[calm] count 30/30") < run.line("[flood] spam 03000"),
        "calm waited for the flood"
    );
    for l in run
        .output
        .lines()
        .filter(|l| l.contains("spam ") || l.contains("count "))
    {
        let whole_spam = l.starts_with("[flood] spam ") && l.ends_with(&l[13..18]);
        let whole_count = l.starts_with("[calm] count ");
        assert!(whole_spam || whole_count, "torn or mixed line: {l}");
    }
    run.expect_clean_exit();
}

#[test]
fn colour_on_the_command_line_colours_each_source() {
    let img = images().join("qemu-virt/two-guests.img");
    let run = boot_with(&img, LIMIT, &[], None, &["-append", "colour"]);
    run.line("\x1b[1m[partita cpu0] \x1b[0mPartita");
    run.line("\x1b[32m[alpha] \x1b[0mtestguest: up");
    run.line("\x1b[36m[beta] \x1b[0mtestguest: up");
    run.expect_clean_exit();
}

/// A 125-character line pasted at once (a terminal's paste, not typing)
/// reaches the focused test guest whole, on GICv3 and GICv2: the
/// partition's 4 KiB receive buffer holds it while the guest drains the
/// emulated FIFO.
#[test]
fn a_pasted_line_reaches_the_test_guest_whole() {
    let line: String = (0..125)
        .map(|i| char::from(b"0123456789abcdefghijklmnopqrstuvwxyz"[i * 11 % 36]))
        .collect();
    let paste = format!("{line}\rsecond line\r");
    let doms = domain("alpha", 1, 0x1, 0x4800_0000, "echo=2");
    for gic in [3, 2] {
        let img = if gic == 3 {
            virt_image("paste", &doms)
        } else {
            virt_image_gicv2("paste-v2", &doms)
        };
        let feeds = [Feed {
            after: "[alpha] echo: ready",
            bytes: paste.as_bytes(),
            burst: true,
        }];
        let env = [("PARTITA_GIC", if gic == 3 { "3" } else { "2" })];
        let run = boot_scripted(&img, LIMIT, &env, &feeds, None, &[]);
        run.line(&format!("GICv{gic}"));
        run.expect_in_order(&[
            &format!("[alpha] echo: {line}"),
            "[alpha] echo: second line",
        ]);
        run.expect_absent("console input dropped");
        run.expect_clean_exit();
    }
}

/// Input for a partition that does not read it fills its 4 KiB buffer;
/// past that, bytes are dropped and the console says so once, and the
/// partition runs on.
#[test]
fn input_past_a_full_buffer_is_dropped_and_said_once() {
    let doms = domain("deaf", 1, 0x1, 0x4800_0000, "busy=3000");
    let flood = vec![b'x'; 6000];
    let feeds = [Feed {
        after: "[deaf] testguest: up",
        bytes: &flood,
        burst: true,
    }];
    let run = boot_scripted(&virt_image("deaf", &doms), LIMIT, &[], &feeds, None, &[]);
    let drop = "deaf: console input dropped: its 4096-byte buffer is full";
    // Said (a failing look keeps the whole log in target/test-logs/)...
    run.line(drop);
    // ...and said once.
    let said = run.lines_with(drop);
    assert_eq!(said.len(), 1, "{said:?}");
    run.line("[deaf] busy: done after 3000 ms");
    run.expect_clean_exit();
}
