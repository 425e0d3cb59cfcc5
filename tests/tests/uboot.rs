//! The boot chain users have: U-Boot (Debian's `u-boot-qemu`, QEMU's
//! firmware, at EL2) starts Partita's image with `booti`, as on a board.
//! The image is placed in RAM by QEMU's loader device, not by `-kernel`.

use partita_tests::*;

#[test]
fn u_boot_starts_partita_with_booti() {
    let img = images().join("qemu-virt/two-guests.img");
    let feeds = [
        Feed {
            after: "Hit any key to stop autoboot",
            bytes: b"\r",
            burst: false,
        },
        Feed {
            after: "=> ",
            bytes: b"booti 0x40200000 - ${fdtcontroladdr}\r",
            burst: false,
        },
    ];
    let run = boot_scripted(&img, LIMIT, &[("PARTITA_UBOOT", "1")], &feeds, None, &[]);
    run.expect_in_order(&[
        "U-Boot",
        "## Flattened Device Tree blob at",
        "Starting kernel ...",
        "[partita cpu0] Partita 0.1.0 starting at EL2",
    ]);
    // The two partitions run side by side: either may finish first.
    let start = run.line("[partita cpu0] Partita 0.1.0 starting at EL2");
    let off = run.line("all partitions have ended; powering off");
    for done in ["[alpha] calls: still running", "[beta] count 5/5"] {
        let at = run.line(done);
        assert!(start < at && at < off, "`{done}` at line {at}");
    }
    run.expect_clean_exit();
}
