//! The runtime of keel's freestanding test kernels (the probe guest, the test boot loader).
//!
//! A kernel built on it is a PVH kernel: it carries the Xen note `XEN_ELFNOTE_PHYS32_ENTRY`,
//! is entered in 32-bit protected mode with paging off and EBX = `hvm_start_info`, and is
//! linked at 16 MiB (`pvh.ld`). The entry code identity-maps the first 4 GiB with 2 MiB pages,
//! switches to long mode on a 64 KiB stack and calls the kernel's
//! `extern "C" fn pvh_main(start_info: u64) -> !`.
//!
//! Also here: a polled COM1 console and `exit_to_pvh32`, which leaves long mode again to
//! enter another PVH kernel (the test boot loader uses it to start keel).
#![no_std]

pub mod idt;
pub mod serial;
pub mod xen;

/// Size of the kernel's stack.
pub const STACK_SIZE: usize = 64 * 1024;

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a"
    .balign 4
    .long 4, 4, 18                      /* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_rt_entry32
    .balign 4

    .section .text.pvh_entry, "ax"
    .code32
    .global pvh_rt_entry32
pvh_rt_entry32:
    cli
    cld
    movl %ebx, pvh_rt_start_info

    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    shrl $2, %ecx
    xorl %eax, %eax
    rep stosl

    /* 4 PD pages: 2048 x 2 MiB identity mappings of 0..4 GiB. */
    movl $pvh_rt_pd, %edi
    movl $0x83, %eax
    xorl %edx, %edx
    movl $2048, %ecx
1:  movl %eax, (%edi)
    movl %edx, 4(%edi)
    addl $0x200000, %eax
    adcl $0, %edx
    addl $8, %edi
    loop 1b
    movl $pvh_rt_pdpt, %edi
    movl $(pvh_rt_pd + 3), %eax
    movl %eax, 0(%edi)
    addl $4096, %eax
    movl %eax, 8(%edi)
    addl $4096, %eax
    movl %eax, 16(%edi)
    addl $4096, %eax
    movl %eax, 24(%edi)
    movl $(pvh_rt_pdpt + 3), %eax
    movl %eax, pvh_rt_pml4

    movl %cr4, %eax
    orl $0x20, %eax                     /* PAE */
    movl %eax, %cr4
    movl $pvh_rt_pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax                    /* LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax               /* PG | PE */
    movl %eax, %cr0
    lgdt pvh_rt_gdt_ptr
    ljmp $0x08, $2f

    .code64
2:  movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    leaq pvh_rt_stack_top(%rip), %rsp
    xorl %ebp, %ebp
    movl pvh_rt_start_info(%rip), %edi
    call pvh_main
    ud2

/* exit_to_pvh32(entry: u32 in edi, start_info: u32 in esi): leave long mode and enter a PVH
   kernel: 32-bit protected mode, paging off, flat segments, EBX = start_info. Runs from the
   identity map, so turning paging off does not move the instruction stream. */
    .global pvh_rt_exit_to_pvh32
pvh_rt_exit_to_pvh32:
    cli
    movl %esi, %ebx
    lgdt pvh_rt_gdt_ptr(%rip)
    leaq 3f(%rip), %rax
    pushq $0x18
    pushq %rax
    lretq
    .code32
3:  movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr0, %eax
    andl $0x7fffffff, %eax              /* paging off (allowed in compatibility mode) */
    movl %eax, %cr0
    movl $0xc0000080, %ecx
    rdmsr
    andl $0xfffffeff, %eax              /* LME off */
    wrmsr
    movl %cr4, %eax
    andl $0xffffffdf, %eax              /* PAE off */
    movl %eax, %cr4
    xorl %eax, %eax
    movl %eax, %cr3
    jmp *%edi

    .section .data, "aw"
    .balign 16
pvh_rt_gdt:
    .quad 0
    .quad 0x00af9a000000ffff            /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff            /* 0x10: data */
    .quad 0x00cf9a000000ffff            /* 0x18: 32-bit code */
pvh_rt_gdt_end:
    .balign 8
pvh_rt_gdt_ptr:
    .word pvh_rt_gdt_end - pvh_rt_gdt - 1
    .quad pvh_rt_gdt
    .balign 4
pvh_rt_start_info:
    .long 0

    .section .bss, "aw", @nobits
    .balign 4096
pvh_rt_pml4:
    .skip 4096
pvh_rt_pdpt:
    .skip 4096
pvh_rt_pd:
    .skip 4 * 4096
pvh_rt_stack:
    .skip {stack_size}
pvh_rt_stack_top:
"#,
    stack_size = const STACK_SIZE,
    options(att_syntax)
);

unsafe extern "C" {
    fn pvh_rt_exit_to_pvh32(entry: u32, start_info: u32) -> !;
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// Leave long mode and enter the PVH kernel at `entry` with `start_info` in EBX.
///
/// # Safety
/// `entry` must be the 32-bit PVH entry point of a kernel already loaded in memory and
/// `start_info` a valid `hvm_start_info` for it; nothing of this kernel runs afterwards.
pub unsafe fn exit_to_pvh32(entry: u32, start_info: u32) -> ! {
    // SAFETY: forwarded to the caller; the routine runs from the identity map.
    unsafe { pvh_rt_exit_to_pvh32(entry, start_info) }
}

/// Physical [start, end) of this kernel's image (including .bss and the stack).
pub fn image_range() -> (u64, u64) {
    // Only addresses of linker symbols are taken.
    (core::ptr::addr_of!(__kernel_start) as u64, core::ptr::addr_of!(__kernel_end) as u64)
}
