//! Turning an exception taken from a guest into one typed event.
//!
//! The arch layer reads ESR_EL2, FAR_EL2 and HPFAR_EL2 once into a
//! [`Syndrome`]; everything here is plain decoding, tested against values
//! from the Arm ARM (D24.2.41, "ESR_EL2").

use aarch64_cpu::registers::ESR_EL2;
use tock_registers::{register_bitfields, LocalRegisterCopy};

register_bitfields! {u64,
    /// ISS encoding for a Data Abort (Arm ARM D24.2.41, "ISS encoding for an
    /// exception from a Data Abort").
    pub ISS_DABT [
        ISV OFFSET(24) NUMBITS(1) [],
        SAS OFFSET(22) NUMBITS(2) [Byte = 0, Halfword = 1, Word = 2, Doubleword = 3],
        SSE OFFSET(21) NUMBITS(1) [],
        SRT OFFSET(16) NUMBITS(5) [],
        SF OFFSET(15) NUMBITS(1) [],
        WNR OFFSET(6) NUMBITS(1) [],
        DFSC OFFSET(0) NUMBITS(6) []
    ],
    /// ISS encoding for a trapped MSR, MRS or system instruction (EC 0x18).
    pub ISS_SYSREG [
        OP0 OFFSET(20) NUMBITS(2) [],
        OP2 OFFSET(17) NUMBITS(3) [],
        OP1 OFFSET(14) NUMBITS(3) [],
        CRN OFFSET(10) NUMBITS(4) [],
        RT OFFSET(5) NUMBITS(5) [],
        CRM OFFSET(1) NUMBITS(4) [],
        DIRECTION OFFSET(0) NUMBITS(1) [Write = 0, Read = 1]
    ]
}

/// What the arch layer read from the hardware when the trap was taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Syndrome {
    pub esr: u64,
    pub far: u64,
    pub hpfar: u64,
}

impl Syndrome {
    /// The faulting IPA of a stage-2 abort: HPFAR_EL2.FIPA holds IPA[47:12]
    /// in bits [43:4]; FAR gives the page offset.
    #[inline]
    pub fn ipa(&self) -> u64 {
        ((self.hpfar >> 4) << 12) | (self.far & 0xfff)
    }
}

/// An access to emulated memory, decoded from a Data Abort with a valid
/// instruction syndrome. Its fields are read from the syndrome when asked
/// for: a trap's handler reads the two or three it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    /// The intermediate physical address the guest accessed.
    pub ipa: u64,
    /// The syndrome's ISS, with ISV set.
    iss: u32,
}

impl MmioAccess {
    /// The access a data abort from a lower EL (`s`, EC 0x24) describes,
    /// if the hypervisor may emulate it: its instruction syndrome is valid
    /// and the fault is a translation, access-flag or permission fault.
    /// What [`Trap::decode`] makes of such an abort, without the rest of
    /// its work, for the vectors' data-abort path.
    #[inline]
    pub fn decode(s: &Syndrome) -> Option<MmioAccess> {
        let d = LocalRegisterCopy::<u64, ISS_DABT::Register>::new(s.esr);
        if !d.is_set(ISS_DABT::ISV) || !is_translation_like(d.read(ISS_DABT::DFSC) as u8) {
            return None;
        }
        Some(MmioAccess {
            ipa: s.ipa(),
            iss: (s.esr & 0x1ff_ffff) as u32,
        })
    }

    /// The access as its fields describe it (tests, fuzzing): `width` in
    /// bytes (1, 2, 4 or 8; any other is taken as 8).
    pub fn new(ipa: u64, width: u8, write: bool, reg: u8, sign_extend: bool, reg64: bool) -> Self {
        let sas = match width {
            1 => 0,
            2 => 1,
            4 => 2,
            _ => 3,
        };
        let iss = (1 << 24)
            | (sas << 22)
            | (u32::from(sign_extend) << 21)
            | (u32::from(reg & 0x1f) << 16)
            | (u32::from(reg64) << 15)
            | (u32::from(write) << 6)
            | 0b000111;
        MmioAccess { ipa, iss }
    }

    fn iss(&self) -> LocalRegisterCopy<u64, ISS_DABT::Register> {
        LocalRegisterCopy::new(u64::from(self.iss))
    }

    /// Access size in bytes: 1, 2, 4 or 8.
    #[inline]
    pub fn width(&self) -> u8 {
        1 << self.iss().read(ISS_DABT::SAS)
    }

    #[inline]
    pub fn write(&self) -> bool {
        self.iss().is_set(ISS_DABT::WNR)
    }

    /// General-purpose register transferred; 31 means XZR/WZR.
    #[inline]
    pub fn reg(&self) -> u8 {
        self.iss().read(ISS_DABT::SRT) as u8
    }

    /// A load of fewer than 64 bits is sign-extended into the register.
    #[inline]
    pub fn sign_extend(&self) -> bool {
        self.iss().is_set(ISS_DABT::SSE)
    }

    /// The register is 64 bits wide (X), not 32 (W).
    #[inline]
    pub fn reg64(&self) -> bool {
        self.iss().is_set(ISS_DABT::SF)
    }

    /// The value a load places in the register, with sign extension and the
    /// W-register truncation the architecture performs.
    pub fn load_result(&self, raw: u64) -> u64 {
        // The access's bytes moved to the top and back: the arithmetic
        // shift right extends the sign, the logical one clears.
        let shift = 64 - 8 * u32::from(self.width());
        let v = if self.sign_extend() {
            (((raw << shift) as i64) >> shift) as u64
        } else {
            (raw << shift) >> shift
        };
        if self.reg64() {
            v
        } else {
            v & 0xffff_ffff
        }
    }

    /// The bytes a store writes, from the register's value.
    pub fn store_value(&self, reg: u64) -> u64 {
        if self.width() == 8 {
            reg
        } else {
            reg & ((1u64 << (u32::from(self.width()) * 8)) - 1)
        }
    }
}

/// A trapped MSR/MRS to a system register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    /// op0, op1, CRn, CRm, op2 packed as [`sysreg`] builds them.
    pub id: u32,
    pub reg: u8,
    pub read: bool,
}

/// A packed system-register encoding as the assembler spells an unnamed
/// one (`S3_1_C11_C0_2`), for log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegName(pub u32);

impl core::fmt::Display for SysRegName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let id = self.0;
        write!(
            f,
            "S{}_{}_C{}_C{}_{}",
            id >> 14,
            (id >> 11) & 7,
            (id >> 7) & 0xf,
            (id >> 3) & 0xf,
            id & 7
        )
    }
}

/// Packs a system-register encoding into one comparable number.
pub const fn sysreg(op0: u32, op1: u32, crn: u32, crm: u32, op2: u32) -> u32 {
    (op0 << 14) | (op1 << 11) | (crn << 7) | (crm << 3) | op2
}

/// One exception from a lower exception level, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    Hvc {
        imm: u16,
    },
    Smc {
        imm: u16,
    },
    /// A stage-2 fault the hypervisor can emulate: the instruction syndrome
    /// tells the register and size.
    Mmio(MmioAccess),
    /// A stage-2 data fault without a usable syndrome (ISV = 0, for example
    /// a load pair or a post-indexed access), or on a translation-table walk.
    DataAbort {
        ipa: u64,
        write: bool,
        fsc: u8,
    },
    InstructionAbort {
        ipa: u64,
        fsc: u8,
    },
    SysReg(SysRegAccess),
    Wfx,
    /// An exception class the hypervisor does not handle for guests.
    Other {
        ec: u8,
    },
}

/// Fault status codes that mean "no translation" or "no permission" at some
/// level (Arm ARM DFSC 0b0001LL, 0b0011LL, 0b0010LL).
fn is_translation_like(fsc: u8) -> bool {
    matches!(fsc >> 2, 0b0001..=0b0011)
}

impl Trap {
    pub fn decode(s: &Syndrome) -> Trap {
        let esr = LocalRegisterCopy::<u64, ESR_EL2::Register>::new(s.esr);
        let ec = esr.read(ESR_EL2::EC) as u8;
        let iss = esr.read(ESR_EL2::ISS);
        let ipa = s.ipa();
        match esr.read_as_enum(ESR_EL2::EC) {
            Some(ESR_EL2::EC::Value::HVC64) => Trap::Hvc { imm: iss as u16 },
            Some(ESR_EL2::EC::Value::SMC64) => Trap::Smc { imm: iss as u16 },
            Some(ESR_EL2::EC::Value::TrappedWFIorWFE) => Trap::Wfx,
            Some(ESR_EL2::EC::Value::InstrAbortLowerEL) => Trap::InstructionAbort {
                ipa,
                fsc: (iss & 0x3f) as u8,
            },
            Some(ESR_EL2::EC::Value::TrappedMsrMrs) => {
                let r = LocalRegisterCopy::<u64, ISS_SYSREG::Register>::new(iss);
                Trap::SysReg(SysRegAccess {
                    id: sysreg(
                        r.read(ISS_SYSREG::OP0) as u32,
                        r.read(ISS_SYSREG::OP1) as u32,
                        r.read(ISS_SYSREG::CRN) as u32,
                        r.read(ISS_SYSREG::CRM) as u32,
                        r.read(ISS_SYSREG::OP2) as u32,
                    ),
                    reg: r.read(ISS_SYSREG::RT) as u8,
                    read: r.is_set(ISS_SYSREG::DIRECTION),
                })
            }
            Some(ESR_EL2::EC::Value::DataAbortLowerEL) => match MmioAccess::decode(s) {
                Some(a) => Trap::Mmio(a),
                None => Trap::DataAbort {
                    ipa,
                    write: iss & (1 << 6) != 0,
                    fsc: (iss & 0x3f) as u8,
                },
            },
            _ => Trap::Other { ec },
        }
    }
}

/// The exception class's name, for fatal-trap reports.
pub fn ec_name(ec: u8) -> &'static str {
    match ec {
        0x00 => "unknown reason",
        0x01 => "trapped WFI/WFE",
        0x07 => "SIMD/FP access trapped",
        0x0e => "illegal execution state",
        0x15 => "SVC (AArch64)",
        0x16 => "HVC (AArch64)",
        0x17 => "SMC (AArch64)",
        0x18 => "trapped MSR/MRS/system instruction",
        0x20 => "instruction abort from a lower EL",
        0x21 => "instruction abort from the same EL",
        0x22 => "PC alignment fault",
        0x24 => "data abort from a lower EL",
        0x25 => "data abort from the same EL",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x30 | 0x31 => "breakpoint",
        0x32 | 0x33 => "software step",
        0x34 | 0x35 => "watchpoint",
        0x3c => "BRK instruction",
        _ => "unlisted exception class",
    }
}

/// The exception class field of an ESR value.
pub fn ec_of(esr: u64) -> u8 {
    ((esr >> 26) & 0x3f) as u8
}

pub const EC_HVC64: u8 = 0x16;
pub const EC_SMC64: u8 = 0x17;

/// Whether `esr` is an HVC or an SMC: the two exception classes differ
/// only in bit 0, which is how the exception vectors (`entry.S`) pick
/// the traps that need no more than the caller-saved registers.
pub fn is_call(esr: u64) -> bool {
    ec_of(esr) >> 1 == EC_HVC64 >> 1
}

/// Where a synchronous exception injected into the guest's EL1 lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortEntry {
    /// The vector the guest resumes at.
    pub vector: u64,
    /// PSTATE on entry: EL1h with D, A, I and F masked.
    pub spsr: u64,
    /// The exception came from EL0 (lower EL), not EL1.
    pub from_lower_el: bool,
}

/// The guest's exception entry for a synchronous exception taken
/// with PSTATE `spsr`, given its VBAR_EL1 (Arm ARM D1.3.1, vector offsets).
pub fn abort_entry(spsr: u64, vbar: u64) -> AbortEntry {
    let offset = match spsr & 0x1f {
        0b00100 => 0x000,            // EL1t: current EL with SP_EL0
        0b00101 => 0x200,            // EL1h: current EL with SP_EL1
        m if m & 0x10 != 0 => 0x600, // EL0 in AArch32: lower EL, AArch32
        _ => 0x400,                  // EL0: lower EL, AArch64
    };
    AbortEntry {
        vector: vbar + offset,
        spsr: 0x3c5,
        from_lower_el: offset >= 0x400,
    }
}

/// Where an instruction abort on a fetch from `far` enters the guest, or
/// `None` when its vector lies in the same page: the guest would take the
/// same abort again at once, for ever, and so has to be stopped (the only
/// stage-2 instruction abort it cannot be given).
pub fn instruction_abort_entry(spsr: u64, vbar: u64, far: u64) -> Option<AbortEntry> {
    let e = abort_entry(spsr, vbar);
    (e.vector >> 12 != far >> 12).then_some(e)
}

/// ESR_EL1 for an injected synchronous external data abort.
pub fn injected_data_abort_esr(from_lower_el: bool, write: bool) -> u64 {
    let ec: u64 = if from_lower_el { 0x24 } else { 0x25 };
    (ec << 26) | (1 << 25) | (u64::from(write) << 6) | 0x10
}

/// ESR_EL1 for an injected synchronous external instruction abort (IFSC
/// 0x10, as for data aborts: natively, a fetch from an address nothing
/// answers is an external abort).
pub fn injected_instruction_abort_esr(from_lower_el: bool) -> u64 {
    let ec: u64 = if from_lower_el { 0x20 } else { 0x21 };
    (ec << 26) | (1 << 25) | 0x10
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esr(ec: u64, iss: u64) -> u64 {
        (ec << 26) | (1 << 25) | iss
    }

    #[test]
    fn hvc_and_smc_carry_their_immediate() {
        let s = Syndrome {
            esr: esr(0x16, 0x1234),
            ..Default::default()
        };
        assert_eq!(Trap::decode(&s), Trap::Hvc { imm: 0x1234 });
        let s = Syndrome {
            esr: esr(0x17, 0),
            ..Default::default()
        };
        assert_eq!(Trap::decode(&s), Trap::Smc { imm: 0 });
    }

    #[test]
    fn calls_are_the_two_classes_the_vectors_test() {
        for ec in 0..64u64 {
            let s = Syndrome {
                esr: esr(ec, 0),
                ..Default::default()
            };
            let call = matches!(Trap::decode(&s), Trap::Hvc { .. } | Trap::Smc { .. });
            assert_eq!(is_call(s.esr), call, "EC {ec:#x}");
            assert_eq!(is_call(s.esr | 0xff << 32), call, "EC {ec:#x} with ISS2");
        }
    }

    #[test]
    fn word_store_from_w3() {
        // ISV=1, SAS=word, SRT=3, WnR=1, DFSC=translation fault level 3.
        let iss = (1 << 24) | (2 << 22) | (3 << 16) | (1 << 6) | 0b000111;
        let s = Syndrome {
            esr: esr(0x24, iss),
            far: 0x0900_0018,
            hpfar: 0x0900_0000 >> 8,
        };
        assert_eq!(
            Trap::decode(&s),
            Trap::Mmio(MmioAccess::new(0x0900_0018, 4, true, 3, false, false))
        );
    }

    #[test]
    fn ipa_comes_from_hpfar_not_far() {
        // The guest's virtual address (FAR) differs from the IPA once its MMU is on.
        let iss = (1 << 24) | (3 << 22) | (1 << 15) | (5 << 16) | 0b000101;
        let s = Syndrome {
            esr: esr(0x24, iss),
            far: 0xffff_8000_1234_5678,
            hpfar: 0x8_0a00_0000 >> 8,
        };
        match Trap::decode(&s) {
            Trap::Mmio(a) => {
                assert_eq!(a.ipa, 0x8_0a00_0678);
                assert_eq!(a.width(), 8);
                assert!(!a.write() && a.reg64());
            }
            t => panic!("decoded {t:?}"),
        }
    }

    #[test]
    fn missing_syndrome_is_not_emulated() {
        let iss = (1 << 6) | 0b000111; // ISV=0
        let s = Syndrome {
            esr: esr(0x24, iss),
            far: 0x10,
            hpfar: 0x1000 >> 8,
        };
        assert_eq!(
            Trap::decode(&s),
            Trap::DataAbort {
                ipa: 0x1010,
                write: true,
                fsc: 7
            }
        );
    }

    #[test]
    fn external_abort_is_not_emulated_even_with_syndrome() {
        let iss = (1 << 24) | (2 << 22) | 0b010000; // synchronous external abort
        let s = Syndrome {
            esr: esr(0x24, iss),
            far: 0,
            hpfar: 0,
        };
        assert!(matches!(
            Trap::decode(&s),
            Trap::DataAbort { fsc: 0x10, .. }
        ));
    }

    #[test]
    fn sign_extension_and_w_registers() {
        let a = MmioAccess::new(0, 1, false, 0, true, true);
        assert_eq!(a.load_result(0x80), 0xffff_ffff_ffff_ff80);
        let a = MmioAccess::new(0, 1, false, 0, true, false);
        assert_eq!(a.load_result(0x80), 0xffff_ff80);
        let a = MmioAccess::new(0, 2, false, 0, false, false);
        assert_eq!(a.load_result(0x1234_8765), 0x8765);
        assert_eq!(a.store_value(0xdead_beef), 0xbeef);
    }

    #[test]
    fn new_and_decode_agree() {
        for (width, write, reg, sse, sf) in [
            (1, false, 0, true, true),
            (2, true, 17, false, false),
            (4, false, 31, false, true),
            (8, true, 30, false, true),
        ] {
            let a = MmioAccess::new(0x1000, width, write, reg, sse, sf);
            assert_eq!(
                (a.width(), a.write(), a.reg(), a.sign_extend(), a.reg64()),
                (width, write, reg, sse, sf)
            );
        }
    }

    #[test]
    fn load_result_matches_the_architecture_at_every_width() {
        // The architecture's rule, spelled out: the low `width` bytes,
        // sign-extended if SSE, then truncated to 32 bits for a W register.
        fn reference(raw: u64, width: u8, sse: bool, sf: bool) -> u64 {
            let bits = u32::from(width) * 8;
            let mut v = if bits == 64 {
                raw
            } else {
                raw & ((1 << bits) - 1)
            };
            if sse && bits < 64 && v & (1 << (bits - 1)) != 0 {
                v |= !((1u64 << bits) - 1);
            }
            if sf {
                v
            } else {
                v & 0xffff_ffff
            }
        }
        let raws = [
            0,
            1,
            0x7f,
            0x80,
            0xff,
            0x8000,
            0x7fff_ffff,
            0x8000_0000,
            u64::MAX,
            0x8123_4567_89ab_cdef,
        ];
        for width in [1, 2, 4, 8] {
            for sign_extend in [false, true] {
                for reg64 in [false, true] {
                    let a = MmioAccess::new(0, width, false, 0, sign_extend, reg64);
                    for raw in raws {
                        assert_eq!(
                            a.load_result(raw),
                            reference(raw, width, sign_extend, reg64),
                            "{a:?} {raw:#x}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn sysreg_access_fields() {
        // MRS x2, ICC_IAR1_EL1: op0=3 op1=0 CRn=12 CRm=12 op2=0, read.
        let iss = (3 << 20) | (12 << 10) | (12 << 1) | (2 << 5) | 1;
        let s = Syndrome {
            esr: esr(0x18, iss),
            ..Default::default()
        };
        assert_eq!(
            Trap::decode(&s),
            Trap::SysReg(SysRegAccess {
                id: sysreg(3, 0, 12, 12, 0),
                reg: 2,
                read: true
            })
        );
        let name = alloc::format!("{}", SysRegName(sysreg(3, 1, 11, 0, 2)));
        assert_eq!(name, "S3_1_C11_C0_2");
    }

    #[test]
    fn injected_aborts_land_on_the_right_vector() {
        let e = abort_entry(0x3c5, 0x4010_0000);
        assert_eq!(
            e,
            AbortEntry {
                vector: 0x4010_0200,
                spsr: 0x3c5,
                from_lower_el: false
            }
        );
        assert_eq!(abort_entry(0x0, 0x1000).vector, 0x1400);
        assert_eq!(abort_entry(0x3c4, 0x1000).vector, 0x1000);
        assert_eq!(injected_data_abort_esr(false, true), 0x9600_0050);
        assert_eq!(injected_data_abort_esr(true, false), 0x9200_0010);
        assert_eq!(injected_instruction_abort_esr(false), 0x8600_0010);
        assert_eq!(injected_instruction_abort_esr(true), 0x8200_0010);
        // EL0 in AArch32 (M[4] set) enters at the AArch32 lower-EL vector.
        let e = abort_entry(0x10, 0x1000);
        assert_eq!((e.vector, e.from_lower_el), (0x1600, true));
    }

    #[test]
    fn an_instruction_abort_at_its_own_vector_cannot_be_injected() {
        let vbar = 0x4800_0800;
        // A branch to an unmapped page: the guest's handler runs.
        let e = instruction_abort_entry(0x3c5, vbar, 0x0).unwrap();
        assert_eq!((e.vector, e.from_lower_el), (vbar + 0x200, false));
        // The vector itself cannot be fetched: it would abort for ever.
        assert_eq!(instruction_abort_entry(0x3c5, vbar, vbar + 0x200), None);
        assert_eq!(instruction_abort_entry(0x0, vbar, vbar + 0x7fc), None);
        assert!(instruction_abort_entry(0x0, vbar, vbar + 0x1000).is_some());
    }

    #[test]
    fn unknown_classes_are_reported_by_name() {
        let s = Syndrome {
            esr: esr(0x3c, 0),
            ..Default::default()
        };
        assert_eq!(Trap::decode(&s), Trap::Other { ec: 0x3c });
        assert_eq!(ec_name(0x3c), "BRK instruction");
        assert_eq!(ec_of(esr(0x25, 0)), 0x25);
    }
}
