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
    compile_dts_for("qemu-virt", name, dts)
}

/// As `compile_dts`, with `platform/<board>` as the include path.
pub fn compile_dts_for(board: &str, name: &str, dts: &str) -> Vec<u8> {
    let dir = scratch();
    let (src, dtb) = (
        dir.join(format!("{name}.dts")),
        dir.join(format!("{name}.dtb")),
    );
    std::fs::write(&src, dts).unwrap();
    let st = Command::new("dtc")
        .args(["-q", "-I", "dts", "-O", "dtb", "-i"])
        .arg(root().join("platform").join(board))
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
    image_from_dts_for("qemu-virt", name, dts, unchecked)
}

/// As `image_from_dts`, with `platform/<board>` as the include path.
pub fn image_from_dts_for(board: &str, name: &str, dts: &str, unchecked: bool) -> PathBuf {
    let dtb = compile_dts_for(board, name, dts);
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

/// A machine the suite boots scenarios on: QEMU virt with either GIC, and
/// QEMU xlnx-zcu102 (ZynqMP, a GIC-400). Scenarios are written in virt's
/// terms; on the ZCU102 `Machine::adapt` moves what cannot be the same
/// there (virt's virtio-mmio windows at 0x0a000000 lie in the ZCU102's
/// DDR), in the SDT and in the output the test expects alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    VirtGicv3,
    VirtGicv2,
    Zcu102,
}

/// Every machine, in the order the suite boots them.
pub const MACHINES: [Machine; 3] = [Machine::VirtGicv3, Machine::VirtGicv2, Machine::Zcu102];

/// Where virt's virtio-mmio windows (0x0a000000..) go on the ZCU102: the
/// programmable logic's first window, empty on QEMU.
const ZCU102_VIRTIO: u64 = 0xa000_0000;
const VIRT_VIRTIO: std::ops::Range<u64> = 0x0a00_0000..0x0a00_4000;

impl Machine {
    /// The board folder under `platform/`.
    pub fn board(self) -> &'static str {
        match self {
            Machine::VirtGicv3 | Machine::VirtGicv2 => "qemu-virt",
            Machine::Zcu102 => "zcu102",
        }
    }

    /// What `qemu/<script>` and PARTITA_GIC boot it.
    pub fn env(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Machine::VirtGicv3 => &[("PARTITA_MACHINE", "virt"), ("PARTITA_GIC", "3")],
            Machine::VirtGicv2 => &[("PARTITA_MACHINE", "virt"), ("PARTITA_GIC", "2")],
            Machine::Zcu102 => &[("PARTITA_MACHINE", "zcu102")],
        }
    }

    /// The GIC the hypervisor's board line names.
    pub fn gic(self) -> &'static str {
        match self {
            Machine::VirtGicv3 => "GICv3",
            _ => "GICv2",
        }
    }

    /// The name the board's SDT gives itself (`model`).
    pub fn model(self) -> &'static str {
        match self {
            Machine::Zcu102 => "Xilinx ZCU102",
            _ => "QEMU virt",
        }
    }

    /// How soak summaries name it.
    fn label(self) -> &'static str {
        match self {
            Machine::VirtGicv3 => "GICv3",
            Machine::VirtGicv2 => "GICv2",
            Machine::Zcu102 => "ZCU102",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Machine::VirtGicv3 => "",
            Machine::VirtGicv2 => "-v2",
            Machine::Zcu102 => "-zcu102",
        }
    }

    /// `text` (domains or expected output) as it reads on this machine:
    /// on the ZCU102, every hexadecimal literal in virt's virtio window
    /// range moved to the ZCU102's.
    pub fn adapt(self, text: &str) -> String {
        if self != Machine::Zcu102 {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find("0x") {
            out.push_str(&rest[..i]);
            let lit = &rest[i + 2..];
            let digits = lit
                .find(|c: char| !c.is_ascii_hexdigit() && c != '_')
                .unwrap_or(lit.len());
            let value = u64::from_str_radix(&lit[..digits].replace('_', ""), 16).ok();
            match value {
                Some(v) if VIRT_VIRTIO.contains(&v) => {
                    out.push_str(&format!("{:#x}", v - VIRT_VIRTIO.start + ZCU102_VIRTIO));
                }
                _ => {
                    out.push_str("0x");
                    out.push_str(&lit[..digits]);
                }
            }
            rest = &lit[digits..];
        }
        out.push_str(rest);
        out
    }

    /// A boot image of the board plus `domains` (the body of `/domains`,
    /// adapted to this machine).
    pub fn image(self, name: &str, domains: &str) -> PathBuf {
        let gicv2 = if self == Machine::VirtGicv2 {
            "/include/ \"gicv2.dtsi\"\n"
        } else {
            ""
        };
        let domains = self.adapt(domains);
        let dts = format!(
            "/dts-v1/;\n/include/ \"board.dtsi\"\n{gicv2}/ {{\n\tdomains {{\n\t\t#address-cells = <2>;\n\t\t#size-cells = <2>;\n{domains}\n\t}};\n}};\n"
        );
        image_from_dts_for(
            self.board(),
            &format!("{name}{}", self.suffix()),
            &dts,
            false,
        )
    }

    /// Boots `image` on this machine; as `boot_scripted` otherwise.
    pub fn boot_scripted(
        self,
        image: &Path,
        limit: Duration,
        feeds: &[Feed<'_>],
        stop: Option<&str>,
        qemu_args: &[&str],
    ) -> Run {
        let mut run = boot_scripted(image, limit, self.env(), feeds, stop, qemu_args);
        run.machine = self;
        run
    }

    /// Boots `image` on this machine until it powers off or `limit` passes.
    pub fn boot(self, image: &Path, limit: Duration) -> Run {
        self.boot_scripted(image, limit, &[], None, &[])
    }
}

/// Boots the same domains on every machine (QEMU virt with a GICv3 and
/// with a GICv2, the ZCU102) and runs `check` on each run.
pub fn on_every_machine(name: &str, domains: &str, check: impl Fn(&Run)) {
    on_machines(&MACHINES, name, domains, &[], check)
}

/// Boots the same domains on QEMU virt with a GICv3, then with a GICv2, and
/// runs `check` on each run: for what only virt has, or whose timing is
/// sized for it.
pub fn on_both_gics(name: &str, domains: &str, check: impl Fn(&Run)) {
    on_both_gics_with(name, domains, &[], check)
}

/// As `on_both_gics`, with extra environment for the QEMU script (for
/// example `PARTITA_ICOUNT=1`).
pub fn on_both_gics_with(name: &str, domains: &str, env: &[(&str, &str)], check: impl Fn(&Run)) {
    on_machines(
        &[Machine::VirtGicv3, Machine::VirtGicv2],
        name,
        domains,
        env,
        check,
    )
}

/// Boots the same domains on each of `machines`, with extra environment
/// `env`, and runs `check` on each run.
///
/// With `PARTITA_SOAK=N` (see `scripts/soak`) each machine's scenario
/// boots N times: a failed boot is counted, its whole log kept in
/// `target/soak/`, and the test fails at the end, after a summary line
/// `soak: NAME on GICvX: N boots, F failed (T timed out)` per machine.
pub fn on_machines(
    machines: &[Machine],
    name: &str,
    domains: &str,
    env: &[(&str, &str)],
    check: impl Fn(&Run),
) {
    let rounds = soak_rounds();
    let mut failures = Vec::new();
    for &m in machines {
        let img = m.image(name, domains);
        let env: Vec<(&str, &str)> = m.env().iter().chain(env).copied().collect();

        let one = |run: &Run| {
            run.line(&format!("{}, 4 CPUs, {}", m.model(), m.gic()));
            check(run);
        };
        let boot = || {
            let mut run = boot_scripted(&img, LIMIT, &env, &[], None, &[]);
            run.machine = m;
            run
        };
        let Some(rounds) = rounds else {
            one(&boot());
            continue;
        };
        let (mut failed, mut timed_out) = (0, 0);
        for i in 1..=rounds {
            let run = boot();
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| one(&run))).is_ok();
            if !ok {
                failed += 1;
                timed_out += usize::from(run.timed_out);
                let dir = root().join("target/soak");
                std::fs::create_dir_all(&dir).unwrap();
                let log = dir.join(format!("{name}{}-{i}.log", m.suffix()));
                let how = format!("exit {:?}, timed out {}", run.exit, run.timed_out);
                std::fs::write(&log, format!("{} ({how})\n{}\n", run.command, run.output)).unwrap();
            }
        }
        let line = format!(
            "soak: {name} on {}: {rounds} boots, {failed} failed ({timed_out} timed out)",
            m.label()
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

/// Boots per machine in `on_machines` when soaking (PARTITA_SOAK).
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
        "\t\t{name} {{\n\t\t\tcompatible = \"openamp,domain-v1\";\n\t\t\tid = <{id}>;\n\t\t\tos,type = \"baremetal\";\n\t\t\tcpus = <&cpus_a53 {cpu_mask:#x} 0x1>;\n\t\t\tmemory = <{:#x} {:#x} 0x0 0x2000000>;\n\t\t\t#access-flags-cells = <1>;\n\t\t\taccess = {access};\n\t\t\tpartita,kernel = \"testguest\";\n\t\t\tchosen {{\n\t\t\t\tbootargs = \"{bootargs}\";\n\t\t\t}};\n\t\t}};\n",
        mem_base >> 32,
        mem_base & 0xffff_ffff
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
    /// The machine it ran on: what the assertions expect is adapted to it.
    pub machine: Machine,
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
    // PARTITA_MACHINE picks the machine's script (virt unless said).
    let machine = env
        .iter()
        .find(|(k, _)| *k == "PARTITA_MACHINE")
        .map_or("virt", |(_, v)| *v);
    let script = root().join("qemu").join(machine);
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
    // QEMU has exited or been killed, so its stdout reaches EOF and the
    // reader ends: take everything up to then. A fixed wait lost the
    // whole output of a run when the host was busy (last 0 lines, exit 0).
    let drain_until = Instant::now() + Duration::from_secs(10);
    while let Some(left) = drain_until.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(_) => break,
        }
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
        machine: if machine == "zcu102" {
            Machine::Zcu102
        } else if env.contains(&("PARTITA_GIC", "2")) {
            Machine::VirtGicv2
        } else {
            Machine::VirtGicv3
        },
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
        // The whole log, under the test's name (libtest names its thread).
        let dir = root().join("target/test-logs");
        let name = std::thread::current()
            .name()
            .unwrap_or("test")
            .replace("::", "-");
        let log = dir.join(format!("{name}.log"));
        let saved = std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(&log, &self.output))
            .map(|_| format!(", whole log in {}", log.display()))
            .unwrap_or_default();
        panic!(
            "{why}\n--- last {} lines of the serial log{saved} ---\n{tail}\n--- command: {} (exit {:?}{}) ---",
            lines.len().min(40),
            self.command,
            self.exit,
            if self.timed_out { ", timed out" } else { "" }
        );
    }

    /// The index of the first line containing `text`.
    pub fn line(&self, text: &str) -> usize {
        let text = &self.machine.adapt(text);
        self.output
            .lines()
            .position(|l| l.contains(text))
            .unwrap_or_else(|| self.fail(&format!("no line contains `{text}`")))
    }

    pub fn has(&self, text: &str) -> bool {
        self.output.contains(&self.machine.adapt(text))
    }

    /// Asserts each text appears on a line, in this order.
    pub fn expect_in_order(&self, texts: &[&str]) {
        let mut from = 0;
        let lines: Vec<&str> = self.output.lines().collect();
        for t in texts {
            let t = &self.machine.adapt(t);
            match lines[from..].iter().position(|l| l.contains(t.as_str())) {
                Some(i) => from += i + 1,
                None => self.fail(&format!("no line contains `{t}` after line {from}")),
            }
        }
    }

    pub fn expect_absent(&self, text: &str) {
        let text = &self.machine.adapt(text);
        if self.output.contains(text.as_str()) {
            self.fail(&format!("unexpected `{text}`"));
        }
    }

    /// QEMU exited by itself with status 0: every partition powered off.
    pub fn expect_clean_exit(&self) {
        if self.timed_out || self.exit != Some(0) {
            self.fail("QEMU did not power off cleanly");
        }
    }

    /// The RTOS's jitter report (`rtos: jitter: N releases ...`): its
    /// release count and the line; fails with the log if it never came.
    pub fn rtos_releases(&self) -> (u64, String) {
        let report = self.output.lines().nth(self.line("[rtos] rtos: jitter: "));
        let report = report.unwrap_or_default().to_string();
        let releases = report
            .split_whitespace()
            .nth(3)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        (releases, report)
    }

    pub fn lines_with(&self, text: &str) -> Vec<&str> {
        let text = self.machine.adapt(text);
        self.output
            .lines()
            .filter(|l| l.contains(text.as_str()))
            .collect()
    }
}

/// The time limit for a scenario: boots take well under a second of host
/// time, so this only catches hangs.
pub const LIMIT: Duration = Duration::from_secs(60);
