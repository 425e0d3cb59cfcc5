//! The command line as scripts and people use it: help for every
//! subcommand, usage errors that say what is wrong, and `check` exiting 1
//! with the reason for a tree it refuses, corrupt blobs included.

use std::path::PathBuf;
use std::process::{Command, Output};

fn tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_partita-tool"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// `two-guests.dts` compiled into a scratch file, and that file's path.
fn two_guests_dtb(name: &str) -> (Vec<u8>, PathBuf) {
    let platform = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../platform/qemu-virt");
    let out = Command::new("dtc")
        .args(["-q", "-I", "dts", "-O", "dtb", "-i"])
        .arg(&platform)
        .arg(platform.join("two-guests.dts"))
        .output()
        .expect("dtc runs");
    assert!(out.status.success());
    let path = std::env::temp_dir().join(format!("partita-cli-{}-{name}.dtb", std::process::id()));
    std::fs::write(&path, &out.stdout).unwrap();
    (out.stdout, path)
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["check", "pack", "guest-dtb"] {
        let o = tool(&[sub, "--help"]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("Usage: partita-tool"), "{}", text(&o));
    }
    let o = tool(&["pack", "--help"]);
    for flag in [
        "--hypervisor",
        "--sdt",
        "--image <NAME=FILE>",
        "--unchecked",
        "-o <OUT.img>",
    ] {
        assert!(text(&o).contains(flag), "{flag} in {}", text(&o));
    }
}

#[test]
fn usage_errors_say_what_is_wrong() {
    let o = tool(&["pack", "--sdt", "x.dtb"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--hypervisor <FILE>"), "{}", text(&o));
    let o = tool(&[
        "pack",
        "--hypervisor",
        "a",
        "--sdt",
        "b",
        "--image",
        "linux",
        "-o",
        "c",
    ]);
    assert!(
        text(&o).contains("wants NAME=FILE, not `linux`"),
        "{}",
        text(&o)
    );
    let o = tool(&["chek", "x"]);
    assert!(
        text(&o).contains("unrecognized subcommand 'chek'"),
        "{}",
        text(&o)
    );
    assert!(!tool(&[]).status.success());
}

#[test]
fn check_accepts_a_shipped_tree_and_refuses_a_corrupt_one() {
    let (blob, good) = two_guests_dtb("good");
    let o = tool(&["check", good.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("alpha"), "{}", text(&o));

    // A property whose length runs past the structure block.
    let mut bad = blob.clone();
    let off_struct = u32::from_be_bytes(bad[8..12].try_into().unwrap()) as usize;
    let prop = (off_struct..)
        .step_by(4)
        .find(|&i| bad[i..i + 4] == [0, 0, 0, 3])
        .unwrap();
    bad[prop + 4..prop + 8].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
    let path = good.with_extension("bad.dtb");
    std::fs::write(&path, &bad).unwrap();
    let o = tool(&["check", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "/: not a device tree: at offset {prop:#x}: property value of 2147483647 bytes runs past the structure block"
        )),
        "{}",
        text(&o)
    );
    let o = tool(&["guest-dtb", path.to_str().unwrap(), "alpha", "/dev/null"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    std::fs::remove_file(&good).ok();
    std::fs::remove_file(&path).ok();
}
