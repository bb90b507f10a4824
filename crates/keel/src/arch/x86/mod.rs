//! x86-64: entry code, descriptor tables, paging, interrupts, the local APIC, timekeeping,
//! multiprocessor start-up, ACPI power control and the serial port.
pub mod apic;
pub mod boot;
pub mod cpu;
pub mod gdt;
pub mod layout;
pub mod paging;
pub mod percpu;
pub mod platform;
pub mod power;
pub mod rtc;
pub mod serial;
pub mod smp;
pub mod svm;
pub mod time;
pub mod traps;
pub mod virt;

core::arch::global_asm!(
    r#"
    .section .text, "ax"
    .code64
    .global switch_stack
/* switch_stack(top: u64, f: extern "C" fn() -> !): continue on a new stack. */
switch_stack:
    movq %rdi, %rsp
    xorl %ebp, %ebp
    call *%rsi
    ud2
"#,
    options(att_syntax)
);

unsafe extern "C" {
    /// Continue execution in `f` on the stack whose top is `top`; the old stack is abandoned.
    pub fn switch_stack(top: u64, f: extern "C" fn() -> !) -> !;
}
