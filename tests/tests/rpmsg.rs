//! rpmsg between partitions over the hypervisor's virtio-mmio devices:
//! every message delivered in order and intact, slow receivers, the name
//! service, a malformed queue that harms only its own device; legacy
//! (version 1) and mixed links; a receiver that comes up late; faults
//! charged to whoever made them and recovered from; chains; bursts beyond
//! what one trap moves; coalescing for receivers that are busy.

use partita_tests::*;

/// `domain` with an rpmsg relation to `remote` appended (host side).
fn with_link(domain: &str, remote: &str, windows: (u32, u32), spis: (u32, u32)) -> String {
    with_link_props(domain, remote, windows, spis, "")
}

/// As `with_link`, with more properties (`extra`, whole lines) on the link.
fn with_link_props(
    domain: &str,
    remote: &str,
    windows: (u32, u32),
    spis: (u32, u32),
    extra: &str,
) -> String {
    let link = format!(
        "\t\t\tdomain-to-domain {{\n\t\t\t\tcompatible = \"openamp,domain-to-domain-v1\";\n\t\t\t\trpmsg-relation {{\n\t\t\t\t\tcompatible = \"openamp,rpmsg-v1\";\n\t\t\t\t\tlink {{\n\t\t\t\t\t\tremote = <&{remote}>;\n\t\t\t\t\t\tpartita,virtio-mmio = <0x0 {:#x} 0x0 {:#x}>;\n\t\t\t\t\t\tpartita,virtio-interrupts = <{} {}>;\n{extra}\t\t\t\t\t}};\n\t\t\t\t}};\n\t\t\t}};\n\t\t}};\n",
        windows.0, windows.1, spis.0, spis.1
    );
    let cut = domain.rfind("\t\t};").expect("a domain node");
    format!("{}{link}", &domain[..cut])
}

/// Two links on the four CPUs: `a` (CPU 0) to `b` (CPU 1) with `extra_ab`
/// on the link, and `c` (CPU 2) to `d` (CPU 3) with `extra_cd`; each name
/// is given with its bootargs.
fn two_links(
    (a, args_a): (&str, &str),
    (b, args_b): (&str, &str),
    extra_ab: &str,
    (c, args_c): (&str, &str),
    (d, args_d): (&str, &str),
    extra_cd: &str,
) -> String {
    let dom = |n: &str, id, cpu, mem, args: &str| labelled(n, domain(n, id, cpu, mem, args));
    with_link_props(
        &dom(a, 1, 0x1, 0x4800_0000, args_a),
        b,
        (0x0a00_0000, 0x0a00_0200),
        (16, 17),
        extra_ab,
    ) + &dom(b, 2, 0x2, 0x4a00_0000, args_b)
        + &with_link_props(
            &dom(c, 3, 0x4, 0x4c00_0000, args_c),
            d,
            (0x0a00_0400, 0x0a00_0600),
            (18, 19),
            extra_cd,
        )
        + &dom(d, 4, 0x8, 0x4e00_0000, args_d)
}

/// The link property that gives its sides virtio-mmio versions `h` and `r`.
fn versions(h: u32, r: u32) -> String {
    format!("\t\t\t\t\t\tpartita,virtio-version = <{h} {r}>;\n")
}

fn labelled(name: &str, d: String) -> String {
    d.replacen(
        &format!("\t\t{name} {{"),
        &format!("\t\t{name}: {name} {{"),
        1,
    )
}

/// How many of its `n` messages `name` sent without a notify (the device
/// asked for none: its CPU held them), from its closing line.
fn unnotified(run: &Run, name: &str, n: u32) -> u64 {
    let l = run.lines_with(&format!("[{name}] rpmsg: sent {n}, received {n}, 0 bad"));
    let l = l
        .first()
        .unwrap_or_else(|| panic!("{name} did not finish:\n{}", run.output));
    let count = l.rsplit(", ").next().and_then(|t| t.split(' ').next());
    count
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no count in `{l}`"))
}

fn pair(args_a: &str, args_b: &str) -> String {
    let a = labelled("ping", domain("ping", 1, 0x1, 0x4800_0000, args_a));
    let b = labelled("pong", domain("pong", 2, 0x2, 0x4a00_0000, args_b));
    with_link(&a, "pong", (0x0a00_0000, 0x0a00_0200), (16, 17)) + &b
}

#[test]
fn ten_thousand_messages_each_way_arrive_in_order_and_intact() {
    let run = boot(
        &virt_image("rpmsg", &pair("rpmsg=10000", "rpmsg=10000")),
        LIMIT,
    );
    run.line("rpmsg    ping <-> pong  virtio-mmio 0xa000000 (irq 48) / 0xa000200 (irq 49)");
    run.line("[ping] rpmsg: device at 0xa000000, irq 16, features 0x1");
    run.line("[ping] rpmsg: peer announced rpmsg-raw at 1024");
    run.line("[pong] rpmsg: peer announced rpmsg-raw at 1024");
    run.line("[ping] rpmsg: sent 10000, received 10000, 0 bad, interrupts yes");
    run.line("[pong] rpmsg: sent 10000, received 10000, 0 bad, interrupts yes");
    run.expect_clean_exit();
}

#[test]
fn a_slow_receiver_loses_nothing() {
    let run = boot(
        &virt_image("rpmsg-slow", &pair("rpmsg=3000", "rpmsg=3000,slow")),
        LIMIT,
    );
    run.line("[ping] rpmsg: sent 3000, received 3000, 0 bad");
    run.line("[pong] rpmsg: sent 3000, received 3000, 0 bad");
    // Its busy receiver had ping's messages held, and ping never sleeps:
    // they moved at the link's bound (EL2's timer) or when pong posted
    // buffers one waited for.
    assert!(unnotified(&run, "ping", 3000) > 0, "{}", run.output);
    run.expect_clean_exit();
}

#[test]
fn a_malformed_queue_resets_only_its_device_and_other_links_work_on() {
    let bad = labelled("bad", domain("bad", 1, 0x1, 0x4800_0000, "rpmsg-bad"));
    let victim = labelled("victim", domain("victim", 2, 0x2, 0x4a00_0000, "hello"));
    let good1 = labelled("good1", domain("good1", 3, 0x4, 0x4c00_0000, "rpmsg=1000"));
    let good2 = labelled("good2", domain("good2", 4, 0x8, 0x4e00_0000, "rpmsg=1000"));
    let doms = with_link(&bad, "victim", (0x0a00_0000, 0x0a00_0200), (16, 17))
        + &victim
        + &with_link(&good1, "good2", (0x0a00_0400, 0x0a00_0600), (18, 19))
        + &good2;
    let run = boot(&virt_image("rpmsg-bad", &doms), LIMIT);
    run.line("bad: rpmsg device of /domains/bad/domain-to-domain/rpmsg-relation/link: buffer 0x1000+0x40 is outside its memory; it needs a reset");
    run.line("[bad] rpmsg: after a bad descriptor the device status is 0x4f");
    run.line("[good1] rpmsg: sent 1000, received 1000, 0 bad");
    run.line("[good2] rpmsg: sent 1000, received 1000, 0 bad");
    run.line("[victim] hello:");
    run.expect_clean_exit();
}

/// A link with one legacy (version 1) side and one version 2 side: each
/// guest's driver speaks what its device reports, and 10,000 messages go
/// each way.
#[test]
fn a_mixed_link_carries_ten_thousand_messages_each_way() {
    let a = labelled("ping", domain("ping", 1, 0x1, 0x4800_0000, "rpmsg=10000"));
    let b = labelled("pong", domain("pong", 2, 0x2, 0x4a00_0000, "rpmsg=10000"));
    let doms = with_link_props(
        &a,
        "pong",
        (0x0a00_0000, 0x0a00_0200),
        (16, 17),
        &versions(1, 2),
    ) + &b;
    let run = boot(&virt_image("rpmsg-mixed", &doms), LIMIT);
    run.line("(irq 49)  virtio 1/2");
    run.line("[ping] rpmsg: device at 0xa000000, irq 16, features 0x1, virtio-mmio version 1");
    run.line("[pong] rpmsg: device at 0xa000200, irq 17, features 0x1, virtio-mmio version 2");
    run.line("[ping] rpmsg: peer announced rpmsg-raw at 1024");
    run.line("[pong] rpmsg: peer announced rpmsg-raw at 1024");
    run.line("[ping] rpmsg: sent 10000, received 10000, 0 bad, interrupts yes");
    run.line("[pong] rpmsg: sent 10000, received 10000, 0 bad, interrupts yes");
    run.expect_clean_exit();
}

/// A link legacy on both sides; and a receiver that comes up late, as
/// OpenAMP's driver does (legacy, ACKNOWLEDGE then DRIVER_OK alone, no
/// notify), finds the announcement sent before it was ready already in
/// its receive buffers.
#[test]
fn legacy_sides_and_a_late_receiver() {
    let doms = two_links(
        ("ping", "rpmsg=1000"),
        ("pong", "rpmsg=1000"),
        &versions(1, 1),
        ("early", "rpmsg=300"),
        ("late", "rpmsg-late=300,300"),
        &versions(2, 1),
    );
    on_every_machine("rpmsg-legacy", &doms, |run| {
        run.line("[ping] rpmsg: device at 0xa000000, irq 16, features 0x1, virtio-mmio version 1");
        run.line("[pong] rpmsg: device at 0xa000200, irq 17, features 0x1, virtio-mmio version 1");
        run.line("[ping] rpmsg: sent 1000, received 1000, 0 bad, interrupts yes");
        run.line("[pong] rpmsg: sent 1000, received 1000, 0 bad, interrupts yes");
        run.expect_in_order(&[
            "[late] rpmsg: device at 0xa000600, irq 19, features 0x1, virtio-mmio version 1",
            "[late] rpmsg: late receiver found rpmsg-raw at 1024 first of",
            "[late] rpmsg: peer announced rpmsg-raw at 1024",
            "[late] rpmsg: sent 300, received 300, 0 bad",
        ]);
        run.line("[early] rpmsg: sent 300, received 300, 0 bad");
        run.expect_clean_exit();
    });
}

/// A message longer than the link's buffer size is its sender's fault and
/// a receive buffer shorter than it its receiver's: only the faulty side's
/// device needs a reset, its driver recovers, and the exchange completes
/// on both sides with nothing lost (the peer's device never needs one).
/// The over-long sender's peer starts late: what a device had delivered
/// before its own reset is lost with it.
#[test]
fn rpmsg_faults_are_charged_to_whoever_made_them_and_recovered_from() {
    let doms = two_links(
        ("long", "rpmsg-fault=overlong,300"),
        ("fine", "rpmsg-late=300,300"),
        "",
        ("small", "rpmsg-fault=small-rx,300"),
        ("sender", "rpmsg=300"),
        "",
    );
    on_every_machine("rpmsg-faults", &doms, |run| {
        run.line("long: rpmsg device of /domains/long/domain-to-domain/rpmsg-relation/link: message of 616 bytes, longer than the link's 512; it needs a reset");
        run.line("small: rpmsg device of /domains/small/domain-to-domain/rpmsg-relation/link: receive buffer of 256 bytes, smaller than the link's 512; it needs a reset");
        run.expect_absent("fine: rpmsg device");
        run.expect_absent("sender: rpmsg device");
        run.expect_in_order(&[
            "[long] rpmsg: overlong: my device needs a reset (status 0x4f)",
            "[long] rpmsg: sent 300, received 300, 0 bad",
            "[long] rpmsg: overlong: recovered 1 time(s)",
        ]);
        run.expect_in_order(&[
            "[small] rpmsg: small-rx: my device needs a reset (status 0x4f)",
            "[small] rpmsg: sent 300, received 300, 0 bad",
            "[small] rpmsg: small-rx: recovered 1 time(s)",
        ]);
        run.line("[fine] rpmsg: sent 300, received 300, 0 bad");
        run.line("[sender] rpmsg: sent 300, received 300, 0 bad");
        run.expect_clean_exit();
    });
}

/// Chains of five descriptors (refused as "a loop" once) arrive intact;
/// bursts of a whole queue with one notify each, more than one trap
/// moves, arrive without another notify (the hypervisor resumes on the
/// sender's CPU), in order.
#[test]
fn chains_and_bursts_beyond_a_traps_budget_arrive_intact() {
    let doms = two_links(
        ("chain", "rpmsg=300,chain"),
        ("plain", "rpmsg=300"),
        "",
        ("burst1", "rpmsg=2000,burst"),
        ("burst2", "rpmsg=2000,burst"),
        "",
    );
    on_every_machine("rpmsg-chains", &doms, |run| {
        run.line("[chain] rpmsg: sent 300, received 300, 0 bad");
        run.line("[plain] rpmsg: sent 300, received 300, 0 bad");
        run.line("[burst1] rpmsg: sent 2000, received 2000, 0 bad");
        run.line("[burst2] rpmsg: sent 2000, received 2000, 0 bad");
        run.expect_absent("needs a reset");
        run.expect_clean_exit();
    });
}

/// Coalescing: receivers that poll while busy (interrupts off) and sleep
/// when idle get what their peers send in batches: a sender whose
/// messages reach a receiver still busy with earlier ones is asked for no
/// notify, and its CPU moves what it queued at its WFI or when the link's
/// bound (20 microseconds unless set) runs out. Every message arrives, in
/// order and intact; with `partita,coalesce-us = <0>` every one is
/// notified.
#[test]
fn busy_receivers_take_messages_in_batches_and_lose_none() {
    let doms = two_links(
        ("busy1", "rpmsg=3000,poll"),
        ("busy2", "rpmsg=3000,poll"),
        "",
        ("each1", "rpmsg=3000,poll"),
        ("each2", "rpmsg=3000,poll"),
        "\t\t\t\t\t\tpartita,coalesce-us = <0>;\n",
    );
    on_every_machine("rpmsg-coalesce", &doms, |run| {
        run.line(
            "each1 <-> each2  virtio-mmio 0xa000400 (irq 50) / 0xa000600 (irq 51)  coalesce 0 us",
        );
        let unnotified = |name: &str| unnotified(run, name, 3000);
        assert!(
            unnotified("busy1") + unnotified("busy2") > 0,
            "no message was held:\n{}",
            run.output
        );
        assert_eq!((unnotified("each1"), unnotified("each2")), (0, 0));
        run.expect_absent("needs a reset");
        run.expect_clean_exit();
    });
}

/// A vCPU that goes off (CPU_OFF) while its CPU holds its partition's
/// link leaves nothing behind: vCPU 1's second message finds the
/// receiver busy, vCPU 0 then queues ten more without a notify (the
/// device asked for none), and vCPU 1's CPU moves them all before it
/// parks (more than one trap's budget: a parked CPU resumes no pump).
#[test]
fn a_vcpu_that_goes_off_holding_messages_leaves_none_behind() {
    let ping = labelled(
        "ping",
        domain("ping", 1, 0x3, 0x4800_0000, "rpmsg-hand-off"),
    );
    let pong = labelled(
        "pong",
        domain("pong", 2, 0x4, 0x4a00_0000, "rpmsg-gather=12"),
    );
    let doms = with_link_props(
        &ping,
        "pong",
        (0x0a00_0000, 0x0a00_0200),
        (16, 17),
        "\t\t\t\t\t\tpartita,coalesce-us = <1000>;\n",
    ) + &pong;
    // Under icount the bound (1 ms, a million instructions) cannot run
    // out before vCPU 0 has queued its ten: vCPU 1's CPU holds them all
    // when it goes off.
    on_both_gics_with("rpmsg-hand-off", &doms, &[("PARTITA_ICOUNT", "1")], |run| {
        run.line("[ping] hand-off: vcpu 1 went off holding the link; 10 of 10 queued here without a notify; all 12 moved");
        run.line("[pong] gather: 12 of 12, 0 out of order");
        run.expect_clean_exit();
    });
    // Without it a loaded host may let the bound run out first (the hold
    // then ends, and vCPU 0's CPU holds the rest): nothing is lost.
    on_every_machine("rpmsg-hand-off", &doms, |run| {
        run.line("[ping] hand-off: vcpu 1 went off holding the link; ");
        run.line("all 12 moved");
        run.line("[pong] gather: 12 of 12, 0 out of order");
        run.expect_clean_exit();
    });
}
