// The RTOS's exception vectors. Tasks run at EL1h on their own stacks; an
// IRQ or an SVC (a task yielding) saves the whole register frame on the
// current task's stack, and the kernel answers with the stack pointer of
// the task to resume, which may be another one.

.equ FRAME, 34 * 8

.macro save
    sub     sp, sp, #FRAME
    stp     x0, x1, [sp, #16 * 0]
    stp     x2, x3, [sp, #16 * 1]
    stp     x4, x5, [sp, #16 * 2]
    stp     x6, x7, [sp, #16 * 3]
    stp     x8, x9, [sp, #16 * 4]
    stp     x10, x11, [sp, #16 * 5]
    stp     x12, x13, [sp, #16 * 6]
    stp     x14, x15, [sp, #16 * 7]
    stp     x16, x17, [sp, #16 * 8]
    stp     x18, x19, [sp, #16 * 9]
    stp     x20, x21, [sp, #16 * 10]
    stp     x22, x23, [sp, #16 * 11]
    stp     x24, x25, [sp, #16 * 12]
    stp     x26, x27, [sp, #16 * 13]
    stp     x28, x29, [sp, #16 * 14]
    mrs     x0, elr_el1
    mrs     x1, spsr_el1
    stp     x30, x0, [sp, #16 * 15]
    str     x1, [sp, #16 * 16]
.endm

.macro entry handler
    .balign 0x80
    save
    mov     x0, sp
    bl      \handler
    b       resume
.endm

.macro unexpected
    .balign 0x80
    mrs     x0, esr_el1
    mrs     x1, far_el1
    mrs     x2, elr_el1
    b       rtos_unexpected
.endm

.balign 0x800
.global vectors
vectors:
    unexpected
    unexpected
    unexpected
    unexpected
    entry   rtos_sync
    entry   rtos_irq
    unexpected
    unexpected
    .rept 8
    unexpected
    .endr

// x0: the saved frame of the task to run.
.global resume
resume:
    mov     sp, x0
    ldp     x30, x0, [sp, #16 * 15]
    ldr     x1, [sp, #16 * 16]
    msr     elr_el1, x0
    msr     spsr_el1, x1
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
    ldp     x20, x21, [sp, #16 * 10]
    ldp     x22, x23, [sp, #16 * 11]
    ldp     x24, x25, [sp, #16 * 12]
    ldp     x26, x27, [sp, #16 * 13]
    ldp     x28, x29, [sp, #16 * 14]
    add     sp, sp, #FRAME
    eret
