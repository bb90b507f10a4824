//! The way in: boot-loader headers, the 32-bit entry points and the switch to long mode.
//!
//! keel is booted the way Xen is. Three entry points, all reached in 32-bit protected mode
//! with paging off:
//!
//! * **multiboot2** (GRUB `multiboot2 /boot/keel`): EAX = 0x36d76289, EBX = info.
//! * **multiboot1** (QEMU `-kernel keel -initrd "mod args,mod2"`): EAX = 0x2badb002,
//!   EBX = info. QEMU's loader only takes 32-bit ELF files, so the header uses the "a.out
//!   kludge" address fields and QEMU loads the file flat (linker.ld keeps the file congruent).
//! * **PVH** (the Xen ELF note `XEN_ELFNOTE_PHYS32_ENTRY`): EBX = `hvm_start_info`.
//!
//! The common path checks for long mode, zeroes .bss, builds boot page tables (the first
//! 4 GiB identity-mapped and the first GiB again at `IMAGE_VIRT_OFFSET`, all with 2 MiB pages),
//! enables paging and jumps to `keel_main` on the boot stack. `paging` replaces these tables
//! early; the AP trampoline (`smp`) reuses them for the instant between real mode and long mode.

use super::layout::{pt_index, IMAGE_VIRT_OFFSET};

/// Marker the PVH entry passes as "magic", so `keel_main` can tell the protocols apart.
pub const PVH_MAGIC: u32 = 0x336e_c578;
/// EAX value of a multiboot1 loader.
pub const MULTIBOOT1_MAGIC: u32 = 0x2bad_b002;
/// EAX value of a multiboot2 loader.
pub const MULTIBOOT2_MAGIC: u32 = 0x36d7_6289;

/// Size of the boot CPU's first stack (in .bss, below the boot page tables).
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

core::arch::global_asm!(
    r#"
/* ---------------------------------------------------------------------------------------- */
/* Boot-loader headers. Both must sit early in the file: multiboot1 within 8 KiB,           */
/* multiboot2 within 32 KiB. The .boot section is linked at its physical address.           */
/* ---------------------------------------------------------------------------------------- */
    .section .boot.headers, "a"
    .balign 8
mb2_header:
    .long 0xe85250d6                                /* magic */
    .long 0                                         /* architecture: i386 protected mode */
    .long mb2_header_end - mb2_header               /* header length */
    .long 0x100000000 - 0xe85250d6 - (mb2_header_end - mb2_header)
    /* information request (optional): cmdline, loader name, modules, memory map, ACPI */
    .balign 8
    .word 1, 1
    .long 8 + 6 * 4
    .long 1, 2, 3, 6, 14, 15
    /* entry address tag */
    .balign 8
    .word 3, 0
    .long 12
    .long keel_mb2_entry
    /* end tag */
    .balign 8
    .word 0, 0
    .long 8
mb2_header_end:

    .balign 4
mb1_header:
    .long 0x1badb002                                /* magic */
    .long 0x00010003                                /* page-align modules, memory info, address fields */
    .long 0x100000000 - 0x1badb002 - 0x00010003     /* checksum */
    .long mb1_header                                /* header_addr */
    .long __image_phys_start                        /* load_addr */
    .long __load_end - {virt_offset}                /* load_end_addr */
    .long __image_end - {virt_offset}               /* bss_end_addr */
    .long keel_mb1_entry                            /* entry_addr */

/* ---------------------------------------------------------------------------------------- */
/* PVH: the Xen ELF note XEN_ELFNOTE_PHYS32_ENTRY (18) with the 32-bit physical entry.       */
/* ---------------------------------------------------------------------------------------- */
    .section .note.Xen, "a"
    .balign 4
    .long 4                                         /* namesz: "Xen\0" */
    .long 4                                         /* descsz */
    .long 18                                        /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long keel_pvh_entry
    .balign 4

/* ---------------------------------------------------------------------------------------- */
/* 32-bit entry points (physical addresses, paging off, interrupts off).                    */
/* ---------------------------------------------------------------------------------------- */
    .section .boot.text, "ax"
    .code32
    .global keel_mb1_entry
    .global keel_mb2_entry
    .global keel_pvh_entry
keel_mb1_entry:
keel_mb2_entry:
    cli
    cld
    movl %eax, boot_magic
    movl %ebx, boot_info
    jmp boot_common32

keel_pvh_entry:
    cli
    cld
    movl ${pvh_magic}, boot_magic
    movl %ebx, boot_info

boot_common32:
    /* Is there a 64-bit mode at all? */
    movl $0x80000000, %eax
    cpuid
    cmpl $0x80000001, %eax
    jb boot_no_long_mode
    movl $0x80000001, %eax
    cpuid
    testl $(1 << 29), %edx
    jz boot_no_long_mode
    movl %edx, boot_ext_edx

    /* Zero .bss (not every loader does, and the boot page tables live there). */
    movl $(__bss_start - {virt_offset}), %edi
    movl $(__bss_end - {virt_offset}), %ecx
    subl %edi, %ecx
    shrl $2, %ecx
    xorl %eax, %eax
    rep stosl

    /* boot_pd: 4 pages of 2 MiB mappings covering 0..4 GiB (present, writable, large). */
    movl $(boot_pd - {virt_offset}), %edi
    movl $0x83, %eax
    xorl %edx, %edx
    movl $2048, %ecx
1:  movl %eax, (%edi)
    movl %edx, 4(%edi)
    addl $0x200000, %eax
    adcl $0, %edx
    addl $8, %edi
    loop 1b

    /* Identity map: PML4[0] -> boot_pdpt_low, whose first 4 entries are the 4 PD pages. */
    movl $(boot_pdpt_low - {virt_offset}), %edi
    movl $(boot_pd - {virt_offset} + 3), %eax
    movl %eax, 0(%edi)
    addl $4096, %eax
    movl %eax, 8(%edi)
    addl $4096, %eax
    movl %eax, 16(%edi)
    addl $4096, %eax
    movl %eax, 24(%edi)
    movl $(boot_pdpt_low - {virt_offset} + 3), %eax
    movl %eax, (boot_pml4 - {virt_offset})

    /* Image map: the first GiB again at IMAGE_VIRT_OFFSET. */
    movl $(boot_pd - {virt_offset} + 3), %eax
    movl %eax, (boot_pdpt_high - {virt_offset} + {pdpt_index} * 8)
    movl $(boot_pdpt_high - {virt_offset} + 3), %eax
    movl %eax, (boot_pml4 - {virt_offset} + {pml4_index} * 8)

    /* PAE, then EFER.LME (+NXE when the CPU has NX), then paging with write protection. */
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl $(boot_pml4 - {virt_offset}), %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax
    testl $(1 << 20), boot_ext_edx
    jz 2f
    orl $0x800, %eax
2:  wrmsr
    movl %cr0, %eax
    orl $0x80010001, %eax
    movl %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $boot_long_mode

boot_no_long_mode:
    /* Say why on COM1 (polled, whatever its speed), then stop. */
    movl $boot_msg_no_long_mode, %esi
3:  lodsb
    testb %al, %al
    jz 5f
    movb %al, %bl
    movw $0x3fd, %dx
4:  inb %dx, %al
    testb $0x20, %al
    jz 4b
    movw $0x3f8, %dx
    movb %bl, %al
    outb %al, %dx
    jmp 3b
5:  cli
    hlt
    jmp 5b

    .code64
boot_long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    movabsq $keel_start64, %rax
    jmpq *%rax

/* ---------------------------------------------------------------------------------------- */
/* Data the 32-bit code uses (loaded, physical addresses).                                  */
/* ---------------------------------------------------------------------------------------- */
    .section .boot.data, "aw"
    .balign 16
    .global boot_gdt
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff                        /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff                        /* 0x10: data */
    .quad 0x00cf9a000000ffff                        /* 0x18: 32-bit code (AP trampoline) */
boot_gdt_end:
    .balign 8
    .global boot_gdt_ptr
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
    .long 0
boot_magic:
    .long 0
boot_info:
    .long 0
boot_ext_edx:
    .long 0
boot_msg_no_long_mode:
    .asciz "keel: this CPU has no 64-bit long mode; keel needs an x86-64 CPU. Stopped.\r\n"

/* ---------------------------------------------------------------------------------------- */
/* Boot page tables and the boot stack (zeroed by the code above).                          */
/* ---------------------------------------------------------------------------------------- */
    .section .bss.boot, "aw", @nobits
    .balign 4096
    .global boot_pml4
boot_pml4:
    .skip 4096
boot_pdpt_low:
    .skip 4096
boot_pdpt_high:
    .skip 4096
boot_pd:
    .skip 4 * 4096
    .global boot_stack_bottom
boot_stack_bottom:
    .skip {stack_size}
boot_stack_top:

/* ---------------------------------------------------------------------------------------- */
/* 64-bit, running from the image mapping.                                                  */
/* ---------------------------------------------------------------------------------------- */
    .section .text.entry, "ax"
    .code64
keel_start64:
    leaq boot_stack_top(%rip), %rsp
    xorl %ebp, %ebp
    movl boot_magic, %edi
    movl boot_info, %esi
    call keel_main
    ud2
"#,
    virt_offset = const IMAGE_VIRT_OFFSET,
    pvh_magic = const PVH_MAGIC,
    pml4_index = const pt_index(IMAGE_VIRT_OFFSET, 4),
    pdpt_index = const pt_index(IMAGE_VIRT_OFFSET, 3),
    stack_size = const BOOT_STACK_SIZE,
    options(att_syntax)
);

unsafe extern "C" {
    /// The boot page-table root (physical address = symbol - IMAGE_VIRT_OFFSET).
    pub static boot_pml4: u8;
    /// The boot GDT descriptor used by the AP trampoline.
    pub static boot_gdt_ptr: u8;
    /// Lowest address of the boot CPU's first stack.
    pub static boot_stack_bottom: u8;
}

/// Physical address of the boot page tables' root (for the AP trampoline).
pub fn boot_pml4_phys() -> u64 {
    // Only the address of the linker symbol is taken; it is never dereferenced.
    let va = core::ptr::addr_of!(boot_pml4) as u64;
    va - IMAGE_VIRT_OFFSET
}

/// The boot CPU's first stack (in .bss), for call traces taken while it is in use.
pub fn boot_stack_range() -> super::percpu::StackRange {
    // Only the address of the linker symbol is taken.
    let bottom = core::ptr::addr_of!(boot_stack_bottom) as u64;
    super::percpu::StackRange { bottom, top: bottom + BOOT_STACK_SIZE as u64 }
}

/// Physical address of the boot GDT's descriptor-table pointer (in the .boot section).
pub fn boot_gdt_ptr_phys() -> u64 {
    // Only the address of the linker symbol is taken; .boot is linked at physical addresses.
    core::ptr::addr_of!(boot_gdt_ptr) as u64
}
