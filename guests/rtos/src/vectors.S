// The RTOS's exception vectors. Tasks run at EL1h on their own stacks; an
// IRQ or an SVC (a task yielding) saves the whole register frame on the
// current task's stack, and the kernel answers with the stack pointer of
// the task to resume, which may be another one. The frame holds the SIMD
// registers too: the compiler uses them (`memset` does, and the rpmsg
// driver's copy), so a task switched away mid-use must find its own again.

// x0-x30, ELR, SPSR and a pad; then q0-q31; then FPCR and FPSR.
.equ GP, 34 * 8
.equ FP, GP + 32 * 16
.equ FRAME, FP + 16

.macro save
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
    mrs     x2, elr_el1
    mrs     x3, spsr_el1
    stp     x30, x2, [sp, #16 * 15]
    str     x3, [sp, #16 * 16]
    stp     q0, q1, [sp, #GP + 32 * 0]
    stp     q2, q3, [sp, #GP + 32 * 1]
    stp     q4, q5, [sp, #GP + 32 * 2]
    stp     q6, q7, [sp, #GP + 32 * 3]
    stp     q8, q9, [sp, #GP + 32 * 4]
    stp     q10, q11, [sp, #GP + 32 * 5]
    stp     q12, q13, [sp, #GP + 32 * 6]
    stp     q14, q15, [sp, #GP + 32 * 7]
    stp     q16, q17, [sp, #GP + 32 * 8]
    stp     q18, q19, [sp, #GP + 32 * 9]
    stp     q20, q21, [sp, #GP + 32 * 10]
    stp     q22, q23, [sp, #GP + 32 * 11]
    stp     q24, q25, [sp, #GP + 32 * 12]
    stp     q26, q27, [sp, #GP + 32 * 13]
    stp     q28, q29, [sp, #GP + 32 * 14]
    stp     q30, q31, [sp, #GP + 32 * 15]
    mrs     x2, fpcr
    mrs     x3, fpsr
    add     x4, sp, #FP
    stp     x2, x3, [x4]
.endm

// Each vector saves x0 and x1 and names its handler; the rest of the
// frame, too large for a vector's 32 instructions, is saved in `call`.
.macro entry handler
    .balign 0x80
    sub     sp, sp, #FRAME
    stp     x0, x1, [sp, #16 * 0]
    adr     x1, \handler
    b       call
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
// A vector that outgrew its 0x80 bytes would move every later one: the
// assembler refuses to move back.
.org vectors + 0x800

// x1: the handler, which gets the frame and returns the frame to resume.
call:
    save
    mov     x0, sp
    blr     x1
    // Falls through to resume.

// x0: the saved frame of the task to run.
.global resume
resume:
    mov     sp, x0
    add     x2, sp, #FP
    ldp     x0, x1, [x2]
    msr     fpcr, x0
    msr     fpsr, x1
    ldp     q0, q1, [sp, #GP + 32 * 0]
    ldp     q2, q3, [sp, #GP + 32 * 1]
    ldp     q4, q5, [sp, #GP + 32 * 2]
    ldp     q6, q7, [sp, #GP + 32 * 3]
    ldp     q8, q9, [sp, #GP + 32 * 4]
    ldp     q10, q11, [sp, #GP + 32 * 5]
    ldp     q12, q13, [sp, #GP + 32 * 6]
    ldp     q14, q15, [sp, #GP + 32 * 7]
    ldp     q16, q17, [sp, #GP + 32 * 8]
    ldp     q18, q19, [sp, #GP + 32 * 9]
    ldp     q20, q21, [sp, #GP + 32 * 10]
    ldp     q22, q23, [sp, #GP + 32 * 11]
    ldp     q24, q25, [sp, #GP + 32 * 12]
    ldp     q26, q27, [sp, #GP + 32 * 13]
    ldp     q28, q29, [sp, #GP + 32 * 14]
    ldp     q30, q31, [sp, #GP + 32 * 15]
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
