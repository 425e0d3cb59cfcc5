// Entry points and exception vectors of the hypervisor at EL2.
// Only what cannot be written in Rust lives here: the arm64 Image header,
// the first instructions before a stack exists, and the register save and
// restore around every exception.

.equ FRAME_SIZE, 34 * 8   // x0-x30, ELR_EL2, SPSR_EL2, padding: struct TrapFrame

.section .text.head, "ax"
.global _start
_start:
    // arm64 Image header (Documentation/arch/arm64/booting.rst).
    b       primary_entry
    .long   0
    .quad   0                   // text_offset: load at the 2 MiB-aligned base
    .quad   __image_size        // bytes the image occupies, BSS included
    .quad   0xa                 // little-endian, 4 KiB pages, anywhere in RAM
    .quad   0, 0, 0
    .ascii  "ARM\x64"
    .long   0

primary_entry:
    msr     daifset, #0xf
    mov     x19, x0             // device tree from the bootloader, if any
    mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.ne    not_at_el2
    // Linked at 0: add where we run to every R_AARCH64_RELATIVE slot.
    adr     x20, _start
    adrp    x1, __rela_start
    add     x1, x1, :lo12:__rela_start
    adrp    x2, __rela_end
    add     x2, x2, :lo12:__rela_end
7:  cmp     x1, x2
    b.hs    8f
    ldp     x3, x4, [x1], #16   // r_offset, r_info
    ldr     x5, [x1], #8        // r_addend
    cmp     x4, #1027
    b.ne    7b
    add     x5, x5, x20
    str     x5, [x20, x3]
    b       7b
8:  adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:  adrp    x1, __boot_stack_top
    add     x1, x1, :lo12:__boot_stack_top
    mov     sp, x1
    bl      el2_cpu_setup
    mov     x0, x19
    bl      primary_main
3:  wfe
    b       3b

// Entered with the MMU and caches off; nothing to report to without a
// console, so wait where a debugger will find us.
not_at_el2:
    wfe
    b       not_at_el2

.text
// PSCI CPU_ON entry for secondary CPUs; x0 is the CPU's index.
.global secondary_entry
secondary_entry:
    msr     daifset, #0xf
    mov     x19, x0
    bl      el2_cpu_setup
    // The boot CPU cleaned MMU_CONFIG to the point of coherency, so it can
    // be read with the MMU off.
    adrp    x1, MMU_CONFIG
    add     x1, x1, :lo12:MMU_CONFIG
    ldp     x2, x3, [x1]
    ldp     x4, x5, [x1, #16]
    msr     mair_el2, x2
    msr     tcr_el2, x3
    msr     ttbr0_el2, x4
    isb
    tlbi    alle2
    dsb     nsh
    isb
    msr     sctlr_el2, x5
    isb
    adrp    x1, STACK_TOPS
    add     x1, x1, :lo12:STACK_TOPS
    ldr     x1, [x1, x19, lsl #3]
    mov     sp, x1
    mov     x0, x19
    bl      secondary_main
4:  wfe
    b       4b

el2_cpu_setup:
    adrp    x1, el2_vectors
    add     x1, x1, :lo12:el2_vectors
    msr     vbar_el2, x1
    // CPTR_EL2: RES1 bits only, so guests use FP/SIMD untrapped. The
    // hypervisor itself is built soft-float and never touches those registers.
    mov     x1, #0x33ff
    msr     cptr_el2, x1
    isb
    ret

// Runs a vCPU: x0 is the top of this CPU's stack, x1 a TrapFrame to load.
// The frame may lie on this very stack, so it is read straight into the
// registers; the next exception from the guest saves below the empty stack.
.global enter_guest
enter_guest:
    mov     sp, x0
    ldr     x2, [x1, #(31 * 8)]
    msr     elr_el2, x2
    ldr     x2, [x1, #(32 * 8)]
    msr     spsr_el2, x2
    ldr     x30, [x1, #(30 * 8)]
    ldp     x2, x3, [x1, #16 * 1]
    ldp     x4, x5, [x1, #16 * 2]
    ldp     x6, x7, [x1, #16 * 3]
    ldp     x8, x9, [x1, #16 * 4]
    ldp     x10, x11, [x1, #16 * 5]
    ldp     x12, x13, [x1, #16 * 6]
    ldp     x14, x15, [x1, #16 * 7]
    ldp     x16, x17, [x1, #16 * 8]
    ldp     x18, x19, [x1, #16 * 9]
    ldp     x20, x21, [x1, #16 * 10]
    ldp     x22, x23, [x1, #16 * 11]
    ldp     x24, x25, [x1, #16 * 12]
    ldp     x26, x27, [x1, #16 * 13]
    ldp     x28, x29, [x1, #16 * 14]
    ldp     x0, x1, [x1]
    eret

// Abandons the current stack and parks the CPU: x0 is the stack top.
.global park_on
park_on:
    mov     sp, x0
    bl      park_loop
6:  wfe
    b       6b

// Every vector saves the registers a Rust handler may change (AAPCS64's
// caller-saved x0-x18, and x30, which its calls overwrite) and the return
// state: a handler that only reads and writes x0-x7 (a call) or no guest
// register at all (an interrupt) needs no more, since the compiler keeps
// x19-x29 for whoever it returns to. A trap whose handler may name any
// register (an emulated access, a fatal report) saves x20-x29 as well.
// x19 is saved with x18 in every frame, which costs nothing.
.macro save_caller
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #16 * 0]
    stp     x2, x3, [sp, #16 * 1]
    save_caller_from_x4 x0, x1
.endm

// The rest of `save_caller` once x0-x3 are saved, with \t1 and \t2 (two
// of those) as scratch.
.macro save_caller_from_x4 t1, t2
    stp     x4, x5, [sp, #16 * 2]
    stp     x6, x7, [sp, #16 * 3]
    stp     x8, x9, [sp, #16 * 4]
    stp     x10, x11, [sp, #16 * 5]
    stp     x12, x13, [sp, #16 * 6]
    stp     x14, x15, [sp, #16 * 7]
    stp     x16, x17, [sp, #16 * 8]
    stp     x18, x19, [sp, #16 * 9]
    mrs     \t1, elr_el2
    mrs     \t2, spsr_el2
    stp     x30, \t1, [sp, #16 * 15]
    str     \t2, [sp, #16 * 16]
.endm

.macro save_callee
    stp     x20, x21, [sp, #16 * 10]
    stp     x22, x23, [sp, #16 * 11]
    stp     x24, x25, [sp, #16 * 12]
    stp     x26, x27, [sp, #16 * 13]
    stp     x28, x29, [sp, #16 * 14]
.endm

// Calls the handler with x0 = the frame (x1 as the vector left it) and
// returns to where the exception came from, restoring what was saved.
// With the el2-time feature, the counter is read after the save and
// handed to el2_time_account after the handler (x19 is callee-saved, and
// the guest's is in the frame), with the kind of exception: 0 a guest's
// trap, 1 an interrupt taken from a guest, 2 anything else.
.macro call_handler handler, kind, frame
.ifdef PARTITA_EL2_TIME
    mrs     x19, cntpct_el0
.endif
    mov     x0, sp
    bl      \handler
.ifdef PARTITA_EL2_TIME
    mov     x0, x19
    mov     x1, #\kind
    bl      el2_time_account
.endif
.ifc \frame, caller
    b       restore_caller_and_eret
.else
    b       restore_all_and_eret
.endif
.endm

// \reg = this CPU's PerCpu (`cpu.rs`), with \tmp as scratch.
.macro this_cpu reg, tmp
    mrs     \reg, tpidr_el2
    and     \reg, \reg, #(MAX_CPUS - 1)
    adrp    \tmp, PER_CPU
    add     \tmp, \tmp, :lo12:PER_CPU
    add     \reg, \tmp, \reg, lsl #PERCPU_SHIFT
.endm

// After a vector loaded an SGI a vCPU sent itself: the trap and the
// injection counted in this CPU's PerCpu (\cpu), the guest's access
// stepped past, and back to it (x3 is scratch).
.macro sgi_loaded cpu
    ldr     x3, [\cpu, #PERCPU_TRAPS]
    add     x3, x3, #1
    str     x3, [\cpu, #PERCPU_TRAPS]
    ldr     x3, [\cpu, #PERCPU_INJECTED]
    add     x3, x3, #1
    str     x3, [\cpu, #PERCPU_INJECTED]
    ldr     x3, [sp, #(31 * 8)]     // ELR
    add     x3, x3, #4
    str     x3, [sp, #(31 * 8)]
    b       restore_caller_and_eret
.endm

// Branches to \busy unless every list register of this CPU's virtual
// interface is empty, the condition of the vectors' direct paths (GICv3;
// x\t and x\u are scratch, by number).
.macro lrs_empty_v3 t, u, busy
    mrs     x\t, ich_vtr_el2
    and     x\t, x\t, #0x1f         // list registers - 1
    add     x\t, x\t, #1
    mrs     x\u, ich_elrsr_el2
    add     x\u, x\u, #1
    lsr     x\u, x\u, x\t
    cmp     x\u, #1
    b.ne    \busy
.endm

// The same on GICv2, whose GICH is at \gich.
.macro lrs_empty_v2 gich, t, u, busy
    ldr     w\t, [\gich, #4]        // GICH_VTR
    and     w\t, w\t, #0x3f         // list registers - 1
    add     w\t, w\t, #1
    ldr     w\u, [\gich, #0x30]     // GICH_ELRSR0
    add     x\u, x\u, #1
    lsr     x\u, x\u, x\t
    cmp     x\u, #1
    b.ne    \busy
.endm

.macro vector handler, kind=2, frame=all
    .balign 0x80
    save_caller
.ifc \frame, all
    save_callee
.endif
    call_handler \handler, \kind, \frame
.endm

.balign 0x800
el2_vectors:
    // Current EL with SP_EL0: never used by the hypervisor.
    vector  el2_fatal
    vector  el2_fatal
    vector  el2_fatal
    vector  el2_fatal
    // Current EL with SP_EL2.
    vector  el2_fatal
    vector  el2_irq, 2, caller
    vector  el2_fatal
    vector  el2_fatal
    // Lower EL, AArch64: the guests. A call (HVC or SMC, EC 0x16 or 0x17,
    // `trap::is_call`) reads x0-x3 and writes x0-x7: it goes to
    // guest_call, with x1 = ESR, on the caller-saved registers alone; the
    // null call is answered on four (`null_call`). A write of
    // ICC_SGI1R_EL1 from x0-x19 goes to guest_sgi1r on those as well
    // (`sync_not_call`), and so does GICv2's GICD_SGIR to guest_sgir
    // (`sync_data_abort`). A data abort goes to guest_access with the
    // register it names saved. Every other trap may name any register.
    .balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #16 * 0]
    stp     x2, x3, [sp, #16 * 1]
    mrs     x1, esr_el2
    ubfx    x2, x1, #27, #5
    cmp     x2, #(0x16 >> 1)
    b.ne    sync_not_call
    mov     x3, #CONTROL_NULL
    cmp     x0, x3
    b.eq    null_call
call_lower:
    save_caller_from_x4 x2, x3
    call_handler guest_call, 0, caller
    // An interrupt: the vCPU's own timer, as its vGIC configures it, goes
    // straight into a free list register on four saved registers (the
    // "direct path"); anything else, or a timer the vGIC must see
    // (disabled, no list register free), goes to guest_irq with the
    // acknowledge value in x1. The list-register values are published per
    // CPU by `irq::publish_direct` under the vGIC's lock.
    .balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #16 * 0]
    stp     x2, x3, [sp, #16 * 1]
    adrp    x2, GICV2_FRAMES
    add     x2, x2, :lo12:GICV2_FRAMES
    ldr     x3, [x2]
    cbnz    x3, irq_gicv2
    mrs     x0, icc_iar1_el1
.ifdef PARTITA_EL2_TIME
    // Every interrupt is timed, so every one takes the handler.
    b       irq_handler
.endif
    sub     w1, w0, #DIRECT_FIRST_PPI
    cmp     w1, #3
    b.hi    kick_gicv3
    this_cpu x2, x3
    ldr     x1, [x2, x1, lsl #3]
    cbz     x1, irq_handler
    // List register 0 only: a free one elsewhere needs an indexed write.
    mrs     x3, ich_elrsr_el2
    tbz     w3, #0, irq_handler
    msr     ich_lr0_el2, x1
    msr     icc_eoir1_el1, x0
    b       irq_injected
    vector  guest_fatal
    vector  guest_serror
    // Lower EL, AArch32: guests are AArch64 only (HCR_EL2.RW).
    vector  guest_fatal
    vector  guest_fatal
    vector  guest_fatal
    vector  guest_fatal
// A vector that outgrew its 0x80 bytes would move every later one and
// this past the table's end: the assembler refuses to move back.
.org el2_vectors + 0x800

// Partita's null call (HVC, x0 = control::NULL) returns 0 and does
// nothing else, so it is answered here: it measures the trap itself. It
// is counted as `guest_call` counts. No flush can be waiting: a trap's
// handler does its own before returning, and another CPU's request comes
// with a kick. An SMC with that ID, which must also step past itself,
// takes the handler.
null_call:
.ifdef PARTITA_EL2_TIME
    b       call_lower              // timed, as every trap is
.endif
    tbnz    w1, #26, call_lower     // EC 0x17, an SMC
    this_cpu x2, x3
    ldr     x3, [x2, #PERCPU_TRAPS]
    add     x3, x3, #1
    str     x3, [x2, #PERCPU_TRAPS]
    mov     x0, xzr
    ldr     x1, [sp, #8]
    ldp     x2, x3, [sp, #16 * 1]
    add     sp, sp, #FRAME_SIZE
    eret

// ESR_EL2 of `msr ICC_SGI1R_EL1, xN` (EC 0x18, IL, Op0 3, Op2 5, Op1 0,
// CRn 12, CRm 11, a write) with its Rt field (bits 9:5) cleared.
.equ ESR_SGI1R_WRITE, 0x623a3016

// Every trap but a call (x1 its ESR, x2 its EC >> 1; x0-x3 saved).
sync_not_call:
    save_caller_from_x4 x0, x3
    cmp     x2, #(0x24 >> 1)
    b.eq    sync_data_abort
    cmp     x2, #(0x18 >> 1)
    b.ne    guest_sync_all
    and     w0, w1, #0xfffffc1f
    mov     w2, #(ESR_SGI1R_WRITE & 0xffff)
    movk    w2, #(ESR_SGI1R_WRITE >> 16), lsl #16
    cmp     w0, w2
    b.ne    guest_sync_all
    ubfx    x0, x1, #5, #5
    cmp     x0, #19
    b.hi    guest_sync_all
    ldr     x1, [sp, x0, lsl #3]
    this_cpu x2, x3
.ifndef PARTITA_EL2_TIME
    // An SGI to this vCPU alone, enabled, with nothing else waiting for a
    // list register (none holds anything, no underflow interrupt asked
    // for, which `irq::flush` asks whenever one waits) goes into LR0 here,
    // with the value `irq::publish_direct` published for it; anything else
    // goes to guest_sgi1r, with x2 = this CPU's PerCpu. (x0-x19 are
    // saved: x3-x6 are scratch.)
    ldr     x3, [x2, #PERCPU_SGI_SELF]
    and     x4, x1, #~(0xf << 24)   // the SGI number aside
    cmp     x4, x3
    b.ne    1f
    ubfx    x4, x1, #24, #4
    add     x5, x2, #PERCPU_SGI
    ldr     x5, [x5, x4, lsl #3]
    cbz     x5, 1f                  // disabled
    mrs     x6, ich_hcr_el2
    tbnz    x6, #1, 1f              // UIE: an interrupt waits
    lrs_empty_v3 3, 4, 1f
    msr     ich_lr0_el2, x5
    // After the list register, as `irq::load_direct` does.
    msr     ich_hcr_el2, x6
    sgi_loaded x2
1:
.endif
    call_handler guest_sgi1r, 0, caller

// A data abort (x1 its ESR; x0-x19 saved, so x0 and x2-x7 are scratch)
// goes to guest_access, which needs only the register its instruction
// syndrome names (none without one): on the caller-saved frame, unless
// that is one of x20-x29.
// On GICv2, a word store from x0-x19 that the vGIC would emulate
// (`Trap::decode`: a translation, access-flag or permission fault) at the
// GICD_SGIR of the partition running here (its page published by
// `irq::publish_direct` in HPFAR_EL2's form) goes to guest_sgir with the
// value stored, as GICv3's ICC_SGI1R_EL1 does.
sync_data_abort:
    tbz     w1, #24, access_caller  // no syndrome: names no register
    ubfx    x2, x1, #16, #5         // SRT
    cmp     x2, #19
    b.hi    access_high
    tbz     w1, #6, access_caller   // a load
    adrp    x0, GICV2_FRAMES
    ldr     x0, [x0, :lo12:GICV2_FRAMES]
    cbz     x0, access_caller       // GICv3
    // The offset first: it rules out every other store (a virtio notify)
    // in four instructions, where the page takes this CPU's PerCpu.
    mrs     x3, far_el2
    and     x3, x3, #0xfff
    cmp     x3, #GICD_SGIR
    b.ne    access_caller
    mrs     x3, hpfar_el2
    this_cpu x4, x5
    ldr     x5, [x4, #PERCPU_SGIR_HPFAR]
    cmp     x3, x5
    b.ne    access_caller           // not the GICD_SGIR's page
    and     w0, w1, #0x1c00000      // ISV, SAS
    mov     w3, #0x1800000          // ISV, a word
    cmp     w0, w3
    b.ne    access_caller
    ubfx    x0, x1, #2, #4          // DFSC >> 2: 1 to 3
    sub     x0, x0, #1
    cmp     x0, #2
    b.hi    access_caller
    ldr     x1, [sp, x2, lsl #3]
.ifndef PARTITA_EL2_TIME
    // As GICv3's ICC_SGI1R_EL1 above: an SGI to this vCPU alone (by its
    // target list, or filter 2, "itself"), enabled, with no list register
    // holding anything and no underflow interrupt asked for, goes into
    // LR0 here (x0 is the GICH's page: GICV2_FRAMES' second word).
    and     w3, w1, #0xfffffff0     // the SGI number aside
    ldr     x5, [x4, #PERCPU_SGI_SELF]
    cmp     x3, x5
    b.eq    2f
    mov     w5, #0x2000000          // TargetListFilter 2: itself
    cmp     w3, w5
    b.ne    1f
2:  and     x3, x1, #0xf
    add     x5, x4, #PERCPU_SGI
    ldr     x5, [x5, x3, lsl #3]
    cbz     x5, 1f                  // disabled
    adrp    x0, GICV2_FRAMES
    add     x0, x0, :lo12:GICV2_FRAMES
    ldr     x0, [x0, #8]
    ldr     w6, [x0]                // GICH_HCR
    tbnz    w6, #1, 1f              // UIE: an interrupt waits
    lrs_empty_v2 x0, 3, 7, 1f
    str     w5, [x0, #0x100]        // GICH_LR0
    str     w6, [x0]                // GICH_HCR, after it
    sgi_loaded x4
1:
.endif
    mov     x2, x4                  // this CPU's PerCpu
    call_handler guest_sgir, 0, caller

access_caller:
    call_handler guest_access, 0, caller
access_high:                        // x20-x30 or the zero register
    cmp     x2, #29
    b.hi    access_caller
    save_callee
    call_handler guest_access, 0, all

guest_sync_all:
    save_callee
    call_handler guest_sync, 0, all

// The direct path on GICv2 (x2 GICV2_FRAMES, x3 the GICC): the same as
// GICv3's above, with the interfaces in memory and any free list register,
// on two more saved registers.
irq_gicv2:
    ldr     w0, [x3, #0xc]          // GICC_IAR
.ifdef PARTITA_EL2_TIME
    b       irq_handler
.endif
    sub     w1, w0, #DIRECT_FIRST_PPI
    cmp     w1, #3
    b.hi    kick_gicv2
    stp     x4, x5, [sp, #16 * 2]
    ldr     x4, [x2, #8]            // the GICH
    this_cpu x2, x5
    ldr     x1, [x2, x1, lsl #3]
    cbz     x1, irq_handler_x4
    ldr     w5, [x4, #0x30]         // GICH_ELRSR0
    cbz     w5, irq_handler_x4
    rbit    w5, w5
    clz     w5, w5
    add     x4, x4, x5, lsl #2
    str     w1, [x4, #0x100]        // GICH_LRn
    str     w0, [x3, #0x10]         // GICC_EOIR
    ldp     x4, x5, [sp, #16 * 2]
    b       irq_injected

// The kick's direct path once the vCPU's list registers are found
// empty: x1 = the value posted for it, taken, and x2 = this CPU's PerCpu,
// if the kick brought nothing else; otherwise to the handler.
.macro take_posted
    this_cpu x2, x1
    ldr     w1, [x2, #PERCPU_REQUESTS]
    cbnz    w1, irq_handler_x4
    ldrb    w1, [x2, #PERCPU_FLUSH]
    cbnz    w1, irq_handler_x4
    ldr     x1, [x2, #PERCPU_POSTED]
    cbz     x1, irq_handler_x4
    str     xzr, [x2, #PERCPU_POSTED]
.endm

// The kick's direct path: a kick that brings only a list-register value
// another CPU posted for the vCPU running here (`irq::post_to`: no
// request, no flush asked for) while that vCPU has no list register in
// use and no underflow interrupt asked for is loaded into LR0 here, as
// `irq::kicked` would load it, on two more saved registers. Its poster
// held the vGIC's lock from its look at this CPU to the post, and a vCPU
// that leaves takes back what was posted under it (`irq::leave_cpu`): a
// value found here is the running vCPU's. Only this CPU empties its slot,
// so a load and a store take it (`PerCpu::take_posted`). x0 is the
// acknowledge value (GICv3 below; GICv2: x2 GICV2_FRAMES, x3 the GICC).
kick_gicv3:
    cmp     w0, #SGI_KICK
    b.ne    irq_handler
    // The poster's stores before the loads below: the branch on the
    // acknowledge value and an ISB (GICv2: a DMB), as
    // `Gic::after_sgi_acknowledge`.
    isb
    stp     x4, x5, [sp, #16 * 2]
    mrs     x4, ich_hcr_el2
    tbnz    x4, #1, irq_handler_x4  // UIE: an interrupt waits
    lrs_empty_v3 3, 5, irq_handler_x4
    take_posted
    msr     icc_eoir1_el1, x0
    msr     icc_dir_el1, x0
    msr     ich_lr0_el2, x1
    // After the list register, as `irq::load_posted` does.
    orr     x4, x4, #1
    msr     ich_hcr_el2, x4
    ldp     x4, x5, [sp, #16 * 2]
    b       irq_injected
kick_gicv2:
    and     w1, w0, #0x3ff          // the INTID, the source CPU aside
    cmp     w1, #SGI_KICK
    b.ne    irq_handler
    dmb     ishld
    stp     x4, x5, [sp, #16 * 2]
    ldr     x4, [x2, #8]            // the GICH
    ldr     w5, [x4]                // GICH_HCR
    tbnz    w5, #1, irq_handler_x4  // UIE: an interrupt waits
    lrs_empty_v2 x4, 1, 2, irq_handler_x4
    take_posted
    str     w0, [x3, #0x10]         // GICC_EOIR
    str     w0, [x3, #0x1000]       // GICC_DIR
    str     w1, [x4, #0x100]        // GICH_LR0
    orr     w5, w5, #1
    str     w5, [x4]                // GICH_HCR, after it
    ldp     x4, x5, [sp, #16 * 2]
    b       irq_injected
irq_handler_x4:
    ldp     x4, x5, [sp, #16 * 2]
    b       irq_handler

// Counted as `irq::count_injected` counts (x2 this CPU's PerCpu).
irq_injected:
    ldr     x3, [x2, #PERCPU_INJECTED]
    add     x3, x3, #1
    str     x3, [x2, #PERCPU_INJECTED]
    ldp     x2, x3, [sp, #16 * 1]
    ldp     x0, x1, [sp, #16 * 0]
    add     sp, sp, #FRAME_SIZE
    eret

// The rest of an interrupt's frame, x0 its acknowledge value; the kick
// (an SGI from another CPU: a posted SGI, a request) has its own handler.
irq_handler:
    save_caller_from_x4 x2, x3
    mov     x1, x0
    and     w2, w0, #0x3ff
    cmp     w2, #SGI_KICK
    b.eq    irq_kick
    call_handler guest_irq, 1, caller
irq_kick:
    call_handler guest_kick, 1, caller

restore_all_and_eret:
    ldp     x20, x21, [sp, #16 * 10]
    ldp     x22, x23, [sp, #16 * 11]
    ldp     x24, x25, [sp, #16 * 12]
    ldp     x26, x27, [sp, #16 * 13]
    ldp     x28, x29, [sp, #16 * 14]
restore_caller_and_eret:
    ldp     x30, x0, [sp, #16 * 15]
    ldr     x1, [sp, #16 * 16]
    msr     elr_el2, x0
    msr     spsr_el2, x1
    ldp     x0, x1, [sp, #16 * 0]
    ldp     x2, x3, [sp, #16 * 1]
    ldp     x4, x5, [sp, #16 * 2]
    ldp     x6, x7, [sp, #16 * 3]
    ldp     x8, x9, [sp, #16 * 4]
    ldp     x10, x11, [sp, #16 * 5]
    ldp     x12, x13, [sp, #16 * 6]
    ldp     x14, x15, [sp, #16 * 7]
    ldp     x16, x17, [sp, #16 * 8]
    ldp     x18, x19, [sp, #16 * 9]
    add     sp, sp, #FRAME_SIZE
    eret
