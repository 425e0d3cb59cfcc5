//! A hostile partition beside victims: the test guest's `hostile=` attacks
//! every boundary (memory, PSCI and SMCCC, the virtual GIC, SGIs, EL2
//! registers, its virtio device, its rings, storms of notifications,
//! faults and console lines) and counts what was refused. Each test
//! asserts that every attack was refused, that the hypervisor lives (the
//! machine powers off when every partition has ended), that the victims
//! (the RTOS and its rpmsg client) keep their pace and their exchange, and
//! that the attacker could not make the hypervisor log without bound. On
//! GICv3 and GICv2.

use partita_tests::*;

const ATTACKER: u64 = 0x4800_0000;
const SINK: u64 = 0x4a00_0000;
const RTOS: u64 = 0x4c00_0000;
const CLIENT: u64 = 0x4e00_0000;
const SIZE: u64 = 0x200_0000;

fn labelled(name: &str, d: String) -> String {
    d.replacen(
        &format!("\t\t{name} {{"),
        &format!("\t\t{name}: {name} {{"),
        1,
    )
}

/// `domain` with an rpmsg link to `remote` (host side) appended.
fn with_link(domain: &str, remote: &str, windows: (u32, u32), spis: (u32, u32)) -> String {
    let link = format!(
        "\t\t\tdomain-to-domain {{\n\t\t\t\tcompatible = \"openamp,domain-to-domain-v1\";\n\t\t\t\trpmsg-relation {{\n\t\t\t\t\tcompatible = \"openamp,rpmsg-v1\";\n\t\t\t\t\tlink {{\n\t\t\t\t\t\tremote = <&{remote}>;\n\t\t\t\t\t\tpartita,virtio-mmio = <0x0 {:#x} 0x0 {:#x}>;\n\t\t\t\t\t\tpartita,virtio-interrupts = <{} {}>;\n\t\t\t\t\t}};\n\t\t\t\t}};\n\t\t\t}};\n\t\t}};\n",
        windows.0, windows.1, spis.0, spis.1
    );
    let cut = domain.rfind("\t\t};").expect("a domain node");
    format!("{}{link}", &domain[..cut])
}

/// The victims: the RTOS (id 3, CPU 2) releasing its periodic task every
/// millisecond for 5 s, and its rpmsg client (id 4, CPU 3), which also
/// reports any SGI that reaches it. (Long enough for the client's echoes
/// on a loaded host, where QEMU's vCPUs share few cores.)
fn victims() -> String {
    let rtos = labelled(
        "rtos",
        domain("rtos", 3, 0x4, RTOS, "period-us=1000 run-for=5000"),
    )
    .replace(
        "partita,kernel = \"testguest\"",
        "partita,kernel = \"rtos\"",
    );
    let client = labelled(
        "client",
        domain("client", 4, 0x8, CLIENT, "watch-sgis rpmsg-client=300"),
    );
    with_link(&client, "rtos", (0x0a00_0000, 0x0a00_0200), (16, 17)) + &rtos
}

/// Addresses every attacker probes: the victims' memory (first, middle,
/// last word), the hypervisor's, and devices nobody was given.
/// `ids` are the partitions it has no right to control.
fn targets(mmio_extra: &str, gic: &str, ids: &str) -> String {
    format!(
        "victims={RTOS:#x},{:#x},{:#x},{CLIENT:#x},{:#x} hyp=0x40000000,0x40200000,0x43fff000 mmio=0x0,0x1000,0x4000000,0x9010000,0x9020000,0x9030000,0xa000000,0xa000200,0x4010000000{mmio_extra} gic={gic} ids={ids} self=1",
        RTOS + SIZE / 2,
        RTOS + SIZE - 8,
        CLIENT + SIZE - 8
    )
}

/// What every run must show: all attacks refused, the victims' pace and
/// exchange intact, no SGI leaked, no forged line, the attacker's log
/// lines within its limit, and a clean power-off.
fn check_common(run: &Run, groups: &[&str]) -> u32 {
    let summary = run
        .lines_with("[hostile] hostile: ")
        .into_iter()
        .find(|l| l.contains(" attacks tried, "))
        .unwrap_or_else(|| {
            run.line("hostile: attacks tried");
            unreachable!()
        })
        .to_string();
    let words: Vec<&str> = summary.split_whitespace().collect();
    let tried: u32 = words[2].parse().unwrap();
    let refused: u32 = words[5].parse().unwrap();
    assert!(
        tried == refused && summary.ends_with(", 0 not refused"),
        "not every attack was refused: {summary}\n{}",
        run.lines_with("NOT REFUSED").join("\n")
    );
    for g in groups {
        let l = run.lines_with(&format!("[hostile] hostile: {g}: "))[0].to_string();
        let n: Vec<u32> = l
            .split_whitespace()
            .filter_map(|w| w.trim_end_matches(',').parse().ok())
            .collect();
        assert!(n.len() == 2 && n[0] > 0 && n[0] == n[1], "group {g}: {l}");
    }
    run.expect_absent("NOT REFUSED");
    // The victims: every echo intact, the periodic task at its pace.
    run.line("[client] client: 300 messages echoed, 0 bad");
    run.line("[client] client: jitter: ");
    let (releases, report) = run.rtos_releases();
    assert!(
        (4500..=5000).contains(&releases),
        "{releases} releases in 5 s at 1 kHz: {report}"
    );
    run.expect_absent("watch-sgis: unexpected SGI");
    run.expect_absent("irq: unexpected interrupt");
    // Whatever the attacker did, the hypervisor's warnings about it stayed
    // within its limit: a burst of 10, then 2 a second (each of which may
    // carry a count of the lines cut before it).
    let about: Vec<&str> = run
        .output
        .lines()
        .filter(|l| l.starts_with("[partita") && l.contains("] WARN: hostile: "))
        .collect();
    let limit = 2 * (10 + 2 * (run.elapsed.as_secs() as usize + 1));
    assert!(
        about.len() <= limit,
        "{} warnings about the attacker:\n{}",
        about.len(),
        about.join("\n")
    );
    assert!(
        run.has("more lines about it suppressed (log limit)"),
        "no suppression said"
    );
    run.expect_clean_exit();
    tried
}

#[test]
fn a_hostile_partition_is_refused_memory_calls_interrupts_sgis_and_el2() {
    // Two vCPUs (CPU_ON of its own second one at bad entry points); the
    // redistributor frames of vCPUs 2 and 3 are another's.
    let attacker = domain(
        "hostile",
        1,
        0x3,
        ATTACKER,
        &format!(
            "hostile=memory,psci,gic,sgi,el2 {}",
            targets(
                "",
                "0x8020000,0x8030000,0x8040000,0x8080000,0x80e0000,0x80f0000,0x8100000,0x8120000",
                "3,4"
            )
        ),
    );
    let doms = attacker + &victims();
    on_every_machine("hostile-core", &doms, |run| {
        let tried = check_common(run, &["memory", "psci", "gic", "sgi", "el2"]);
        assert!(tried > 500, "only {tried} attacks");
    });
}

#[test]
fn a_hostile_partition_is_refused_its_virtio_abuse_and_storms_are_absorbed() {
    // One vCPU; an rpmsg link to a sink running an echo server.
    let attacker = labelled(
        "hostile",
        domain(
            "hostile",
            1,
            0x1,
            ATTACKER,
            &format!(
                "hostile=virtio,rings,storms {}",
                targets(
                    ",0xa000600",
                    "0x8020000,0x8030000,0x8040000,0x8080000,0x80c0000,0x80d0000,0x80e0000",
                    "2,3,4"
                )
            ),
        ),
    );
    let sink = labelled("sink", domain("sink", 2, 0x2, SINK, "rpmsg-echo"));
    let doms =
        with_link(&attacker, "sink", (0x0a00_0400, 0x0a00_0600), (18, 19)) + &sink + &victims();
    on_every_machine("hostile-virtio", &doms, |run| {
        check_common(run, &["virtio", "rings", "storms"]);
        // The peer saw its link come back and stopped as asked.
        run.line("[sink] rpmsg: echo server stopped");
        // 2,000 console lines, a quarter of them forging the hypervisor's
        // prefix: every one still starts with the attacker's own.
        let forged: Vec<&str> = run
            .output
            .lines()
            .filter(|l| l.contains("FORGED"))
            .collect();
        assert!(forged.len() >= 1500, "{} forged lines", forged.len());
        for l in &forged {
            assert!(
                l.starts_with("[hostile] ") && !l.contains('\x1b') && !l.contains('\r'),
                "a forged line got through: {l:?}"
            );
        }
        run.line("[hostile] hostile: storms took ");
    });
}
