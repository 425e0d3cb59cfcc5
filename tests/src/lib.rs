//! The regression-test harness: builds the images once, boots a scenario
//! in QEMU with a time limit, and lets tests assert on the serial output.
//! Every failed assertion prints the tail of the log and the QEMU command.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `scripts/build` once per test process.
pub fn images() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let st = Command::new(root().join("scripts/build"))
                .status()
                .expect("scripts/build runs");
            assert!(st.success(), "scripts/build failed");
            root().join("target/images")
        })
        .clone()
}

fn scratch() -> PathBuf {
    let d = root().join("target/test-scratch");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A System Device Tree for QEMU virt: the board plus `domains`, the body
/// of a `/domains` node. Compiled with dtc and packed with test guests
/// under every kernel name it uses.
pub fn virt_image(name: &str, domains: &str) -> PathBuf {
    let dts = format!("/dts-v1/;\n/include/ \"board.dtsi\"\n/ {{\n\tdomains {{\n\t\t#address-cells = <2>;\n\t\t#size-cells = <2>;\n{domains}\n\t}};\n}};\n");
    image_from_dts(name, &dts, false)
}

/// `dts` (which may include the board's .dtsi) compiled with dtc.
pub fn compile_dts(name: &str, dts: &str) -> Vec<u8> {
    let dir = scratch();
    let (src, dtb) = (
        dir.join(format!("{name}.dts")),
        dir.join(format!("{name}.dtb")),
    );
    std::fs::write(&src, dts).unwrap();
    let st = Command::new("dtc")
        .args(["-q", "-I", "dts", "-O", "dtb", "-i"])
        .arg(root().join("platform/qemu-virt"))
        .arg("-o")
        .arg(&dtb)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "dtc failed on {}", src.display());
    std::fs::read(&dtb).unwrap()
}

/// Packs `dts` (which may include the board's .dtsi) into a boot image.
/// `unchecked` skips the tool's own validation, to test the hypervisor's.
pub fn image_from_dts(name: &str, dts: &str, unchecked: bool) -> PathBuf {
    let dtb = compile_dts(name, dts);
    // Every kernel and initrd the tree names is a test guest here.
    let kernels: Vec<&str> = ["partita,kernel = \"", "partita,initrd = \""]
        .iter()
        .flat_map(|p| dts.split(p).skip(1).filter_map(|s| s.split('"').next()))
        .collect();
    pack(name, &dtb, &kernels, unchecked)
}

/// Packs a device tree blob as it is, however corrupt, into a boot image
/// (with `--unchecked`), with test guests under the names in `kernels`.
pub fn image_from_dtb(name: &str, dtb: &[u8], kernels: &[&str]) -> PathBuf {
    pack(name, dtb, kernels, true)
}

fn pack(name: &str, blob: &[u8], kernels: &[&str], unchecked: bool) -> PathBuf {
    let imgs = images();
    let dir = scratch();
    let (dtb, img) = (
        dir.join(format!("{name}.dtb")),
        dir.join(format!("{name}.img")),
    );
    std::fs::write(&dtb, blob).unwrap();
    let mut kernels = kernels.to_vec();
    kernels.sort();
    kernels.dedup();
    let mut cmd = Command::new(root().join("target/release/partita-tool"));
    cmd.arg("pack")
        .arg("--hypervisor")
        .arg(imgs.join("partita.bin"))
        .arg("--sdt")
        .arg(&dtb);
    // A name with an image of its own (rtos, linux, initramfs) gets it;
    // the rest the test guest.
    for k in kernels {
        let own = imgs.join(format!("{k}.bin"));
        let file = if own.exists() {
            own
        } else {
            imgs.join("testguest.bin")
        };
        cmd.arg("--image").arg(format!("{k}={}", file.display()));
    }
    if unchecked {
        cmd.arg("--unchecked");
    }
    let out = cmd.arg("-o").arg(&img).output().unwrap();
    assert!(
        out.status.success(),
        "pack failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

/// As `virt_image`, on QEMU virt with a GICv2 (`PARTITA_GIC=2`).
pub fn virt_image_gicv2(name: &str, domains: &str) -> PathBuf {
    let dts = format!(
        "/dts-v1/;\n/include/ \"board.dtsi\"\n/include/ \"gicv2.dtsi\"\n/ {{\n\tdomains {{\n\t\t#address-cells = <2>;\n\t\t#size-cells = <2>;\n{domains}\n\t}};\n}};\n"
    );
    image_from_dts(name, &dts, false)
}

/// Boots the same domains on QEMU virt with a GICv3, then with a GICv2, and
/// runs `check` on each run.
pub fn on_both_gics(name: &str, domains: &str, check: impl Fn(&Run)) {
    on_both_gics_with(name, domains, &[], check)
}

/// As `on_both_gics`, with extra environment for qemu/virt (for example
/// `PARTITA_ICOUNT=1`).
///
/// With `PARTITA_SOAK=N` (see `scripts/soak`) each GIC's scenario boots N
/// times: a failed boot is counted, its whole log kept in
/// `target/soak/`, and the test fails at the end, after a summary line
/// `soak: NAME on GICvX: N boots, F failed (T timed out)` per GIC.
pub fn on_both_gics_with(name: &str, domains: &str, env: &[(&str, &str)], check: impl Fn(&Run)) {
    let rounds = soak_rounds();
    let mut failures = Vec::new();
    for gic in [3, 2] {
        let img = if gic == 3 {
            virt_image(name, domains)
        } else {
            virt_image_gicv2(&format!("{name}-v2"), domains)
        };
        let mut env = env.to_vec();
        env.push(("PARTITA_GIC", if gic == 3 { "3" } else { "2" }));
        let one = |run: &Run| {
            run.line(&format!("GICv{gic}"));
            check(run);
        };
        let Some(rounds) = rounds else {
            one(&boot_with(&img, LIMIT, &env, None, &[]));
            continue;
        };
        let (mut failed, mut timed_out) = (0, 0);
        for i in 1..=rounds {
            let run = boot_with(&img, LIMIT, &env, None, &[]);
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| one(&run))).is_ok();
            if !ok {
                failed += 1;
                timed_out += usize::from(run.timed_out);
                let dir = root().join("target/soak");
                std::fs::create_dir_all(&dir).unwrap();
                let log = dir.join(format!("{name}-gicv{gic}-{i}.log"));
                std::fs::write(&log, format!("{}\n{}\n", run.command, run.output)).unwrap();
            }
        }
        let line = format!(
            "soak: {name} on GICv{gic}: {rounds} boots, {failed} failed ({timed_out} timed out)"
        );
        eprintln!("{line}");
        if failed > 0 {
            failures.push(line["soak: ".len()..].to_string());
        }
    }
    // Without the prefix, so that scripts/soak counts each summary once.
    assert!(
        failures.is_empty(),
        "failed boots:\n  {}",
        failures.join("\n  ")
    );
}

/// Boots per GIC in `on_both_gics` when soaking (PARTITA_SOAK).
fn soak_rounds() -> Option<usize> {
    std::env::var("PARTITA_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
}

/// One test-guest domain for `virt_image`.
pub fn domain(name: &str, id: u32, cpu_mask: u32, mem_base: u64, bootargs: &str) -> String {
    domain_with(name, id, cpu_mask, mem_base, bootargs, "<&uart0 0x1>")
}

/// A test-guest domain with the given `access` list.
pub fn domain_with(
    name: &str,
    id: u32,
    cpu_mask: u32,
    mem_base: u64,
    bootargs: &str,
    access: &str,
) -> String {
    format!(
        "\t\t{name} {{\n\t\t\tcompatible = \"openamp,domain-v1\";\n\t\t\tid = <{id}>;\n\t\t\tos,type = \"baremetal\";\n\t\t\tcpus = <&cpus_a53 {cpu_mask:#x} 0x1>;\n\t\t\tmemory = <0x0 {mem_base:#x} 0x0 0x2000000>;\n\t\t\t#access-flags-cells = <1>;\n\t\t\taccess = {access};\n\t\t\tpartita,kernel = \"testguest\";\n\t\t\tchosen {{\n\t\t\t\tbootargs = \"{bootargs}\";\n\t\t\t}};\n\t\t}};\n"
    )
}

/// What one QEMU run printed, and how it ended.
pub struct Run {
    pub output: String,
    pub exit: Option<i32>,
    pub timed_out: bool,
    pub command: String,
    /// How long QEMU ran, by the host's clock.
    pub elapsed: Duration,
}

/// Boots `image` on QEMU virt and collects the serial output until QEMU
/// exits or `limit` passes.
pub fn boot(image: &Path, limit: Duration) -> Run {
    boot_with(image, limit, &[], None, &[])
}

/// As `boot`, with extra environment for qemu/virt, bytes typed into the
/// serial input (20 ms apart) once `after` appears in the output, and
/// extra QEMU arguments.
pub fn boot_with(
    image: &Path,
    limit: Duration,
    env: &[(&str, &str)],
    input: Option<(&str, &[u8])>,
    qemu_args: &[&str],
) -> Run {
    let feeds: Vec<Feed> = input
        .map(|(after, bytes)| Feed {
            after,
            bytes,
            burst: false,
        })
        .into_iter()
        .collect();
    boot_scripted(image, limit, env, &feeds, None, qemu_args)
}

/// Input for the serial line: `bytes`, once `after` appears in the output
/// (after where the previous feed was sent), typed 20 ms apart or, if
/// `burst`, written all at once as a paste does.
#[derive(Clone, Copy)]
pub struct Feed<'a> {
    pub after: &'a str,
    pub bytes: &'a [u8],
    pub burst: bool,
}

/// As `boot_with`, with any number of feeds, and `stop`: once every feed
/// is sent and this text appears after the last one, QEMU is stopped (the
/// run counts as neither a timeout nor an exit).
pub fn boot_scripted(
    image: &Path,
    limit: Duration,
    env: &[(&str, &str)],
    feeds: &[Feed<'_>],
    stop: Option<&str>,
    qemu_args: &[&str],
) -> Run {
    let script = root().join("qemu/virt");
    let mut cmd = Command::new(&script);
    cmd.arg(image).args(["-monitor", "none"]).args(qemu_args);
    // PARTITA_TEST_ICOUNT=1 runs every scenario under -icount (scripts/test
    // --icount); a test's own setting wins.
    let mut env = env.to_vec();
    if std::env::var("PARTITA_TEST_ICOUNT").is_ok_and(|v| v == "1")
        && !env.iter().any(|(k, _)| *k == "PARTITA_ICOUNT")
    {
        env.push(("PARTITA_ICOUNT", "1"));
    }
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let command = format!(
        "{} {} {}",
        env.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        script.display(),
        image.display()
    );
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu/virt starts");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut out = Vec::new();
    let mut feeds = feeds.iter();
    let mut next = feeds.next();
    // Output before this offset was there when the last feed went in.
    let mut seen = 0;
    let mut stdin = child.stdin.take();
    let mut timed_out = false;
    let exit = loop {
        while let Ok(chunk) = rx.try_recv() {
            out.extend_from_slice(&chunk);
        }
        if let Some(f) = next {
            if text_of(&out[seen..]).contains(f.after) {
                use std::io::Write;
                if let Some(s) = stdin.as_mut() {
                    if f.burst {
                        let _ = s.write_all(f.bytes);
                        let _ = s.flush();
                    } else {
                        for b in f.bytes {
                            let _ = s.write_all(&[*b]);
                            let _ = s.flush();
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
                seen = out.len();
                next = feeds.next();
            }
        }
        if let (None, Some(text)) = (next, stop) {
            if text_of(&out[seen..]).contains(text) {
                // Let the line end, then stop.
                std::thread::sleep(Duration::from_millis(300));
                let _ = child.kill();
                break child.wait().ok().and_then(|s| s.code());
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            timed_out = true;
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(50));
    while let Ok(chunk) = rx.try_recv() {
        out.extend_from_slice(&chunk);
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let elapsed = start.elapsed();
    let mut output = String::from_utf8_lossy(&out).replace('\r', "");
    if !err.is_empty() {
        output.push_str(&format!("\n--- qemu stderr ---\n{err}"));
    }
    Run {
        output,
        exit,
        timed_out,
        command,
        elapsed,
    }
}

/// Serial output as text, without the carriage returns.
fn text_of(out: &[u8]) -> String {
    String::from_utf8_lossy(out).replace('\r', "")
}

impl Run {
    fn fail(&self, why: &str) -> ! {
        let lines: Vec<&str> = self.output.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        panic!(
            "{why}\n--- last {} lines of the serial log ---\n{tail}\n--- command: {} (exit {:?}{}) ---",
            lines.len().min(40),
            self.command,
            self.exit,
            if self.timed_out { ", timed out" } else { "" }
        );
    }

    /// The index of the first line containing `text`.
    pub fn line(&self, text: &str) -> usize {
        self.output
            .lines()
            .position(|l| l.contains(text))
            .unwrap_or_else(|| self.fail(&format!("no line contains `{text}`")))
    }

    pub fn has(&self, text: &str) -> bool {
        self.output.contains(text)
    }

    /// Asserts each text appears on a line, in this order.
    pub fn expect_in_order(&self, texts: &[&str]) {
        let mut from = 0;
        let lines: Vec<&str> = self.output.lines().collect();
        for t in texts {
            match lines[from..].iter().position(|l| l.contains(t)) {
                Some(i) => from += i + 1,
                None => self.fail(&format!("no line contains `{t}` after line {from}")),
            }
        }
    }

    pub fn expect_absent(&self, text: &str) {
        if self.output.contains(text) {
            self.fail(&format!("unexpected `{text}`"));
        }
    }

    /// QEMU exited by itself with status 0: every partition powered off.
    pub fn expect_clean_exit(&self) {
        if self.timed_out || self.exit != Some(0) {
            self.fail("QEMU did not power off cleanly");
        }
    }

    pub fn lines_with(&self, text: &str) -> Vec<&str> {
        self.output.lines().filter(|l| l.contains(text)).collect()
    }
}

/// The time limit for a scenario: boots take well under a second of host
/// time, so this only catches hangs.
pub const LIMIT: Duration = Duration::from_secs(60);
