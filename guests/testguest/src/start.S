// The test guest's exception vectors (boot code: guest-common's boot.S).

.macro unexpected
    .balign 0x80
    mrs     x0, esr_el1
    mrs     x1, far_el1
    mrs     x2, elr_el1
    b       on_unexpected
.endm

// The registers a Rust handler may clobber; `sync_return` restores them.
.macro save_caller_saved
    sub     sp, sp, #(20 * 8)
    stp     x0, x1, [sp, #0]
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x30, [sp, #144]
.endm

// Synchronous exceptions at EL1 go to `on_sync`, which returns where to
// resume, and IRQs to `on_irq`; everything else is unexpected here.
.balign 0x800
.global vectors
vectors:
    unexpected
    unexpected
    unexpected
    unexpected
    .balign 0x80
    save_caller_saved
    mrs     x0, esr_el1
    mrs     x1, far_el1
    mrs     x2, elr_el1
    bl      on_sync
    msr     elr_el1, x0
    b       sync_return
    .balign 0x80
    save_caller_saved
    bl      on_irq
    b       sync_return
    unexpected
    unexpected
    .rept 8
    unexpected
    .endr

sync_return:
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x30, [sp, #144]
    add     sp, sp, #(20 * 8)
    eret
