//! rpmsg between partitions over the hypervisor's virtio-mmio devices:
//! every message delivered in order and intact, slow receivers, the name
//! service, and a malformed queue that harms only its own device.

use partita_tests::*;

/// `domain` with an rpmsg relation to `remote` appended (host side).
fn with_link(domain: &str, remote: &str, windows: (u32, u32), spis: (u32, u32)) -> String {
    let link = format!(
        "\t\t\tdomain-to-domain {{\n\t\t\t\tcompatible = \"openamp,domain-to-domain-v1\";\n\t\t\t\trpmsg-relation {{\n\t\t\t\t\tcompatible = \"openamp,rpmsg-v1\";\n\t\t\t\t\tlink {{\n\t\t\t\t\t\tremote = <&{remote}>;\n\t\t\t\t\t\tpartita,virtio-mmio = <0x0 {:#x} 0x0 {:#x}>;\n\t\t\t\t\t\tpartita,virtio-interrupts = <{} {}>;\n\t\t\t\t\t}};\n\t\t\t\t}};\n\t\t\t}};\n\t\t}};\n",
        windows.0, windows.1, spis.0, spis.1
    );
    let cut = domain.rfind("\t\t};").expect("a domain node");
    format!("{}{link}", &domain[..cut])
}

fn labelled(name: &str, d: String) -> String {
    d.replacen(
        &format!("\t\t{name} {{"),
        &format!("\t\t{name}: {name} {{"),
        1,
    )
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
