// Entry of Partita's bare-metal guests under the arm64 Linux boot protocol:
// x0 = device tree, MMU off, at EL1. vCPU 0 turns its MMU and caches on
// (mmu.rs) before the guest's code runs; the others load its settings
// before their first store. The image is a PIE linked at 0
// (linker/guest.ld) that applies its own relocations. Each guest binary
// provides `vectors` (its exception table), `guest_main` and, if it starts
// other vCPUs, `guest_secondary`.

.section .text.head, "ax"
.global _start
_start:
    b       primary
    .long   0
    .quad   0                   // text_offset
    .quad   __image_size        // footprint, stacks included
    .quad   0xa                 // little-endian, 4 KiB pages, anywhere in RAM
    .quad   0, 0, 0
    .ascii  "ARM\x64"
    .long   0

primary:
    mov     x19, x0
    adr     x20, _start         // where we run; we are linked at 0
    adrp    x1, __rela_start
    add     x1, x1, :lo12:__rela_start
    adrp    x2, __rela_end
    add     x2, x2, :lo12:__rela_end
1:  cmp     x1, x2
    b.hs    2f
    ldp     x3, x4, [x1], #16   // r_offset, r_info
    ldr     x5, [x1], #8        // r_addend
    cmp     x4, #1027           // R_AARCH64_RELATIVE
    b.ne    1b
    add     x5, x5, x20
    str     x5, [x20, x3]
    b       1b
2:  adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
3:  cmp     x1, x2
    b.hs    4f
    str     xzr, [x1], #8
    b       3b
4:  mov     x0, #0
    bl      cpu_setup
    mov     x0, x19
    bl      mmu_init
    mov     x0, x19
    bl      guest_main
5:  wfi
    b       5b

// PSCI CPU_ON entry; x0 = the context we passed (vCPU index and job).
.global secondary_start
secondary_start:
    mov     x19, x0
    bl      mmu_secondary
    and     x0, x19, #0xff      // the vCPU index; higher bits name a job
    bl      cpu_setup
    mov     x0, x19
    bl      guest_secondary
6:  wfi
    b       6b

// x0 = vCPU index: FP on, vectors, a stack of 16 KiB per vCPU.
cpu_setup:
    mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    adrp    x1, vectors
    add     x1, x1, :lo12:vectors
    msr     vbar_el1, x1
    isb
    adrp    x1, __stacks_top
    add     x1, x1, :lo12:__stacks_top
    lsl     x2, x0, #14
    sub     sp, x1, x2
    ret


// vCPU 0's MMU settings (mmu.rs's MMU_CONFIG, written before its caches
// were on, so readable here with ours off), loaded without a store.
mmu_secondary:
    adrp    x1, MMU_CONFIG
    add     x1, x1, :lo12:MMU_CONFIG
    ldp     x2, x3, [x1]        // MAIR, TCR
    ldp     x4, x5, [x1, #16]   // TTBR0, SCTLR
    cbz     x5, 1f              // vCPU 0 left its MMU off
    msr     mair_el1, x2
    msr     tcr_el1, x3
    msr     ttbr0_el1, x4
    isb
    tlbi    vmalle1
    ic      iallu
    dsb     nsh
    isb
    msr     sctlr_el1, x5
    isb
1:  ret
