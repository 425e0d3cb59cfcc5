//! The CPU a partition sees, as its own tests would check it, on GICv3 and
//! GICv2: the PMU's event counters, set/way cache maintenance trapped,
//! implementation-defined registers, PSCI CPU_SUSPEND, registers kept
//! across traps.

use partita_tests::*;

/// The number in `line` after `label` (`... label 123, ...`).
fn number_after(line: &str, label: &str) -> u64 {
    let rest = &line[line
        .find(label)
        .unwrap_or_else(|| panic!("`{label}` in `{line}`"))
        + label.len()..];
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a number after `{label}` in `{line}`"))
}

/// Under -icount QEMU counts instructions as the A53 does: every counter
/// is the guest's, a known loop counts exactly, and the hypervisor's own
/// instructions (over a hundred per null call) are not counted.
#[test]
fn pmu_event_counters_count_instructions_and_cycles_without_the_hypervisor() {
    on_both_gics_with(
        "pmu",
        &domain("perf", 1, 0x1, 0x4800_0000, "pmu"),
        &[("PARTITA_ICOUNT", "1")],
        |run| {
            run.line("[perf] pmu: PMCR_EL0.N = 6");
            run.line("[perf] pmu: PMCEID0 says instructions true, cycles true");
            let l = run.lines_with("pmu: 10000 iterations")[0];
            let (i, c) = (number_after(l, "instructions "), number_after(l, "cycles "));
            assert!(
                (20_000..20_100).contains(&i),
                "loop counted {i} instructions"
            );
            assert!((20_000..20_100).contains(&c), "loop counted {c} cycles");
            let l = run.lines_with("(EL2 not counted)")[0];
            let (i, c) = (number_after(l, "instructions "), number_after(l, "cycles "));
            assert!(i < 10_000 && c < 10_000, "EL2 counted: {l}");
            run.expect_clean_exit();
        },
    );
}

/// Without -icount QEMU counts no instructions, and says so in PMCEID0,
/// as it does natively; cycles are counted.
#[test]
fn pmu_without_icount_counts_cycles_and_says_what_it_cannot_count() {
    // Without icount even under scripts/test --icount.
    on_both_gics_with(
        "pmu-noicount",
        &domain("perf", 1, 0x1, 0x4800_0000, "pmu"),
        &[("PARTITA_ICOUNT", "0")],
        |run| {
            run.line("[perf] pmu: PMCR_EL0.N = 6");
            run.line("[perf] pmu: PMCEID0 says instructions false, cycles true");
            let l = run.lines_with("pmu: 10000 iterations")[0];
            assert!(number_after(l, "cycles ") > 0, "no cycles: {l}");
            run.expect_clean_exit();
        },
    );
}

#[test]
fn a_set_way_walk_is_trapped_and_the_partition_runs_on() {
    let doms = domain("walker", 1, 0x1, 0x4800_0000, "setway=1 hello");
    on_both_gics("setway", &doms, |run| {
        let l = run.lines_with("[walker] setway:")[0];
        assert!(number_after(l, "setway:") > 1000, "a short walk: {l}");
        assert!(
            l.ends_with("all trapped; memory intact: true"),
            "walk not trapped or memory damaged: {l}"
        );
        run.line("[walker] hello:");
        run.expect_absent("UNDEFINED");
        run.expect_clean_exit();
    });
}

#[test]
fn actlr_reads_zero_and_implementation_defined_registers_are_undefined() {
    on_both_gics(
        "impdef",
        &domain("tuner", 1, 0x1, 0x4800_0000, "impdef"),
        |run| {
            run.expect_in_order(&[
                "[tuner] impdef: ACTLR_EL1 reads 0x0, 0x0 after a write",
                "tuner: vcpu 0 read system register S3_1_C11_C0_2; UNDEFINED injected",
                "[tuner] impdef: L2CTLR_EL1 read: ESR 0x2000000, register 0x5a",
                "tuner: vcpu 0 wrote system register S3_1_C15_C2_0; UNDEFINED injected",
                "[tuner] impdef: CPUACTLR_EL1 write: ESR 0x2000000",
            ]);
            run.expect_clean_exit();
        },
    );
}

#[test]
fn cpu_suspend_waits_for_an_interrupt_and_refuses_bad_states() {
    on_both_gics(
        "suspend",
        &domain("sleepy", 1, 0x1, 0x4800_0000, "suspend"),
        |run| {
            run.line("[sleepy] suspend: standby returned 0 after the deadline: true, interrupt taken 1; reserved bits -2, power-down entry outside memory -9");
            run.expect_clean_exit();
        },
    );
}

/// The hypervisor saves only the caller-saved registers for calls and
/// interrupts, all of them for emulated accesses: whichever it saves,
/// every register a trap does not answer in keeps its value.
#[test]
fn registers_survive_every_kind_of_trap() {
    on_both_gics(
        "registers",
        &domain("regs", 1, 0x1, 0x4800_0000, "registers"),
        |run| {
            run.expect_in_order(&[
                "[regs] registers: null hvc: x1-x30 kept",
                "[regs] registers: psci hvc: x1-x30 kept",
                "[regs] registers: null hvc returned 0",
                "[regs] registers: null smc returned 0",
                "[regs] registers: null smc: x1-x30 kept",
                "[regs] registers: psci smc: x1-x30 kept",
                "[regs] registers: sgi from x5: x1-x30 kept",
                "[regs] registers: sgi from x25: x1-x30 kept",
                "[regs] registers: mmio load into w5: x1-x30 kept",
                "[regs] registers: mmio load into w19: x1-x30 kept",
                "[regs] registers: mmio load into w20: x1-x30 kept",
                "[regs] registers: mmio load into w25: x1-x30 kept",
                "[regs] registers: mmio load into w29: x1-x30 kept",
                "[regs] registers: mmio load into w30: x1-x30 kept",
                "[regs] registers: mmio load into wzr: x1-x30 kept",
                "[regs] registers: mmio store of wzr: x1-x30 kept",
                "[regs] registers: timer interrupt: x1-x30 kept",
                "[regs] registers: cpu suspend returned 0",
                "[regs] registers: cpu suspend: x1-x30 kept",
            ]);
            run.expect_clean_exit();
        },
    );
}
