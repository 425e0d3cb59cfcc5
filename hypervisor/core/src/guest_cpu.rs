//! What a partition sees of the CPU beyond its general-purpose state: the
//! EL2 controls that give it the performance monitors, and the answers to
//! the system-register accesses Partita traps (set/way cache maintenance,
//! the auxiliary control register, implementation-defined registers).
//! `docs/ARCHITECTURE.md` ("What a guest sees of the CPU") says why.

use crate::trap::{sysreg, SysRegAccess};

/// MDCR_EL2 for a vCPU, from PMCR_EL0 and ID_AA64DFR0_EL1 as EL2 reads
/// them. Every event counter is the guest's: HPMN = PMCR_EL0.N (0 would be
/// CONSTRAINED UNPREDICTABLE on Armv8.0 and leaves the guest none).
/// Counting at EL2 by those counters is prohibited where the PMU can
/// (HPMD, PMUv3p1), and by the cycle counter where it can (HCCD,
/// PMUv3p5). Nothing else traps: PMU, debug and trace registers are the
/// guest's as on bare metal.
pub fn mdcr_el2(pmcr_el0: u64, id_aa64dfr0: u64) -> u64 {
    let pmuver = (id_aa64dfr0 >> 8) & 0xf;
    // 0: no PMU; 0xf: an IMPLEMENTATION DEFINED one, not PMUv3.
    if pmuver == 0 || pmuver == 0xf {
        return 0;
    }
    let n = (pmcr_el0 >> 11) & 0x1f;
    let hpmd = u64::from(pmuver >= 4) << 17;
    let hccd = u64::from(pmuver >= 6) << 23;
    n | hpmd | hccd
}

/// A set/way data-cache maintenance instruction (DC ISW, CSW, CISW).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetWay {
    /// Cleans (writes dirty lines back); DC ISW does not.
    pub clean: bool,
    /// Invalidates; DC CSW does not.
    pub invalidate: bool,
    /// The cache level it names, 0 for L1.
    pub level: u8,
    /// It names set 0 and way 0 of its level: every walk of a level names
    /// that one once.
    pub first: bool,
}

/// What a trapped system-register access is, and how it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysRegAnswer {
    /// DC ISW/CSW/CISW (HCR_EL2.TSW).
    SetWay(SetWay),
    /// ACTLR_EL1 (HCR_EL2.TACR): reads as zero, writes are ignored.
    ReadZeroWriteIgnore,
    /// An implementation-defined register (HCR_EL2.TIDCP) or anything else
    /// trapped that Partita does not know: UNDEFINED, as natively for a
    /// register the CPU does not offer.
    Undefined,
}

pub const ACTLR_EL1: u32 = sysreg(3, 0, 1, 0, 1);
const DC_ISW: u32 = sysreg(1, 0, 7, 6, 2);
const DC_CSW: u32 = sysreg(1, 0, 7, 10, 2);
const DC_CISW: u32 = sysreg(1, 0, 7, 14, 2);

/// Classifies a trapped access; `rt` is the value of its register (the
/// set/way operand of a DC instruction).
pub fn classify(r: &SysRegAccess, rt: u64) -> SysRegAnswer {
    let set_way = |clean, invalidate| {
        SysRegAnswer::SetWay(SetWay {
            clean,
            invalidate,
            level: ((rt >> 1) & 7) as u8,
            // Set and way lie above bit 4 (lines are at least 16 bytes).
            first: rt as u32 >> 4 == 0,
        })
    };
    match r.id {
        // With HCR_EL2.VM set, DC ISW is performed as DC CISW (Arm ARM,
        // "DC ISW"): an invalidate never discards data the guest wrote.
        DC_ISW | DC_CISW => set_way(true, true),
        DC_CSW => set_way(true, false),
        ACTLR_EL1 => SysRegAnswer::ReadZeroWriteIgnore,
        _ => SysRegAnswer::Undefined,
    }
}

/// ESR_EL1 for an UNDEFINED instruction injected into the guest (EC 0,
/// IL set).
pub const UNDEFINED_ESR: u64 = 1 << 25;

#[cfg(test)]
mod tests {
    use super::*;

    fn access(id: u32, read: bool) -> SysRegAccess {
        SysRegAccess { id, reg: 0, read }
    }

    #[test]
    fn the_guest_gets_every_counter_and_el2_is_excluded_where_the_pmu_can() {
        // Cortex-A53: PMCR_EL0 0x41033000 (N = 6), PMUv3 (PMUVer 1).
        assert_eq!(mdcr_el2(0x4103_3000, 0x1030_5106), 6);
        // PMUv3p1 (4): HPMD too; PMUv3p5 (6): HCCD too.
        assert_eq!(mdcr_el2(0x4103_3000, 0x400), 6 | 1 << 17);
        assert_eq!(mdcr_el2(0x4103_3000, 0x600), 6 | 1 << 17 | 1 << 23);
        // No PMUv3: nothing.
        assert_eq!(mdcr_el2(0x4103_3000, 0xf00), 0);
        assert_eq!(mdcr_el2(0x4103_3000, 0), 0);
    }

    #[test]
    fn set_way_operations_are_decoded_with_their_level() {
        let cisw = classify(&access(DC_CISW, false), (2 << 30) | (5 << 6) | (1 << 1));
        assert_eq!(
            cisw,
            SysRegAnswer::SetWay(SetWay {
                clean: true,
                invalidate: true,
                level: 1,
                first: false
            })
        );
        let csw = classify(&access(DC_CSW, false), 0);
        assert_eq!(
            csw,
            SysRegAnswer::SetWay(SetWay {
                clean: true,
                invalidate: false,
                level: 0,
                first: true
            })
        );
        // DC ISW cleans as well, as the architecture makes it under stage 2.
        assert!(matches!(
            classify(&access(DC_ISW, false), 2 << 1),
            SysRegAnswer::SetWay(SetWay {
                clean: true,
                level: 2,
                first: true,
                ..
            })
        ));
    }

    #[test]
    fn actlr_reads_zero_and_implementation_defined_registers_are_undefined() {
        assert_eq!(
            classify(&access(ACTLR_EL1, true), 0),
            SysRegAnswer::ReadZeroWriteIgnore
        );
        // Cortex-A53 L2CTLR_EL1 (S3_1_C11_C0_2) and CPUACTLR_EL1 (S3_1_C15_C2_0).
        assert_eq!(
            classify(&access(sysreg(3, 1, 11, 0, 2), true), 0),
            SysRegAnswer::Undefined
        );
        assert_eq!(
            classify(&access(sysreg(3, 1, 15, 2, 0), false), 0),
            SysRegAnswer::Undefined
        );
    }
}
