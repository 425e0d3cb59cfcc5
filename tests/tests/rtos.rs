//! The RTOS in its partition next to a test guest: priorities and
//! round-robin as its tasks print them, its periodic task keeping its
//! period, and its rpmsg endpoints answering the other partition.

use partita_tests::*;

fn rtos_pair(rtos_args: &str, client_args: &str) -> String {
    let client = domain("client", 1, 0x1, 0x4800_0000, client_args).replacen(
        "\t\tclient {",
        "\t\tclient: client {",
        1,
    );
    let rtos = domain("rtos", 2, 0x2, 0x4a00_0000, rtos_args)
        .replacen("\t\trtos {", "\t\trtos: rtos {", 1)
        .replace(
            "partita,kernel = \"testguest\"",
            "partita,kernel = \"rtos\"",
        );
    let link = "\t\t\tdomain-to-domain {\n\t\t\t\tcompatible = \"openamp,domain-to-domain-v1\";\n\t\t\t\trpmsg-relation {\n\t\t\t\t\tcompatible = \"openamp,rpmsg-v1\";\n\t\t\t\t\tlink {\n\t\t\t\t\t\tremote = <&rtos>;\n\t\t\t\t\t\tpartita,virtio-mmio = <0x0 0x0a000000 0x0 0x0a000200>;\n\t\t\t\t\t\tpartita,virtio-interrupts = <16 17>;\n\t\t\t\t\t};\n\t\t\t\t};\n\t\t\t};\n\t\t};\n";
    let cut = client.rfind("\t\t};").unwrap();
    format!("{}{link}{rtos}", &client[..cut])
}

#[test]
fn rtos_schedules_by_priority_keeps_its_period_and_echoes_over_rpmsg() {
    // 3 s: the client's 1,000 echoes take well under one even on a host
    // busy with several QEMUs, which 1.5 s was not always.
    let img = virt_image("rtos", &rtos_pair("demo run-for=3000", "rpmsg-client=1000"));
    // Without icount even under scripts/test --icount: the demo's work is
    // sized for real time, and under icount QEMU runs every vCPU in turn
    // on one thread, the RTOS's CPU getting a quarter of the instructions
    // per tick of the counter: its workers do not finish within its run.
    let run = boot_with(&img, LIMIT, &[("PARTITA_ICOUNT", "0")], None, &[]);
    run.expect_in_order(&[
        "[rtos] rtos: Partita RTOS on 1 vCPU",
        "[rtos] rtos: endpoint rpmsg-raw at 1024 (echo), rpmsg-jitter at 1025",
        "[rtos] rtos: task periodic priority 6",
    ]);
    // Equal priorities share the CPU by time slices (each worker is given
    // it again and again); the higher one preempts them both.
    for w in ["a", "b"] {
        let line = run.lines_with(&format!("rr: worker {w} done after "))[0].to_string();
        let turns: u32 = line
            .split_whitespace()
            .rev()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(turns >= 3, "worker {w} did not share the CPU: {line}");
    }
    let urgent = run.line("prio: urgent preempts the workers");
    assert!(urgent < run.line("rr: worker a done") && urgent < run.line("rr: worker b done"));
    // rpmsg: the other partition finds both endpoints and every echo.
    run.line("[client] client: found rpmsg-raw at 1024");
    run.line("[client] client: found rpmsg-jitter at 1025");
    run.line("[client] client: 1000 messages echoed, 0 bad");
    run.line("[client] client: jitter: ");
    // The periodic task ran at its period for the whole run.
    let (releases, report) = run.rtos_releases();
    assert!(
        (2600..=3000).contains(&releases),
        "{releases} releases in 3 s at 1 kHz: {report}"
    );
    run.line("[rtos] rtos: powering off after 3000 ms");
    run.expect_clean_exit();
}
