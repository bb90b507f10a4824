//! Calling a Xen-compatible hypervisor from a PVH test kernel.
//!
//! Two ways, both of which the probe exercises: the hypercall page (the guest names a page
//! with the MSR from CPUID leaf base+2 and calls `page + 32 * nr`), and the instruction
//! directly (VMMCALL on AMD, VMCALL on Intel), as Linux 6.1.123+ does.

use core::sync::atomic::{AtomicU64, Ordering};

/// Where the hypercall page is (0 until `install_hypercall_page`).
static PAGE: AtomicU64 = AtomicU64::new(0);

#[repr(C, align(4096))]
struct Page([u8; 4096]);

static mut HYPERCALL_PAGE: Page = Page([0; 4096]);

/// The Xen CPUID base (0x40000000 + 0x100 * n) and its max leaf, if a Xen signature is found.
pub fn cpuid_base() -> Option<(u32, u32)> {
    (0x4000_0000..0x4001_0000).step_by(0x100).find_map(|base| {
        let r = cpuid(base, 0);
        (r[1] == 0x566e_6558 && r[2] == 0x6558_4d4d && r[3] == 0x4d4d_566e && r[0].wrapping_sub(base) >= 2)
            .then_some((base, r[0]))
    })
}

/// CPUID leaf/subleaf -> [eax, ebx, ecx, edx].
pub fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Write an MSR.
///
/// # Safety
/// The MSR must exist and the value be valid for it.
pub unsafe fn wrmsr(msr: u32, v: u64) {
    // SAFETY: forwarded to the caller.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack))
    };
}

/// Read an MSR.
///
/// # Safety
/// The MSR must exist.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: forwarded to the caller.
    unsafe { core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack)) };
    (hi as u64) << 32 | lo as u64
}

/// Ask the hypervisor to fill this kernel's hypercall page (MSR from CPUID base+2). Returns
/// the page's address.
pub fn install_hypercall_page(base: u32) -> u64 {
    let msr = cpuid(base + 2, 0)[1];
    let page = core::ptr::addr_of!(HYPERCALL_PAGE) as u64; // identity-mapped: virtual = physical
                                                           // SAFETY: the MSR index is the one the hypervisor advertised; the page is ours.
    unsafe { wrmsr(msr, page) };
    PAGE.store(page, Ordering::Release);
    page
}

/// The hypercall page's bytes (after `install_hypercall_page`).
pub fn hypercall_page() -> &'static [u8; 4096] {
    // SAFETY: the page is a static; after installation only the hypervisor wrote it.
    unsafe { &(*core::ptr::addr_of!(HYPERCALL_PAGE)).0 }
}

/// How to enter the hypervisor.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Via {
    /// `call page + 32 * nr`.
    Page,
    /// VMMCALL (AMD).
    Vmmcall,
    /// VMCALL (Intel; on AMD it raises #UD, which a Xen hypervisor emulates).
    Vmcall,
}

/// Make hypercall `nr` with up to five arguments (64-bit convention: RDI, RSI, RDX, R10, R8).
///
/// # Safety
/// The arguments must be what the hypercall expects (pointers to memory the hypervisor may
/// write, for instance).
pub unsafe fn hypercall(via: Via, nr: u64, a: [u64; 5]) -> i64 {
    let ret: i64;
    // SAFETY: forwarded to the caller; the hypervisor clobbers only the registers listed.
    unsafe {
        match via {
            Via::Page => {
                let target = PAGE.load(Ordering::Acquire) + 32 * nr;
                core::arch::asm!("call {t}", t = in(reg) target,
                    inout("rax") nr as i64 => ret, inout("rdi") a[0] => _, inout("rsi") a[1] => _,
                    inout("rdx") a[2] => _, inout("r10") a[3] => _, inout("r8") a[4] => _,
                    out("rcx") _, out("r9") _, out("r11") _)
            }
            Via::Vmmcall => core::arch::asm!("vmmcall",
                inout("rax") nr as i64 => ret, inout("rdi") a[0] => _, inout("rsi") a[1] => _,
                inout("rdx") a[2] => _, inout("r10") a[3] => _, inout("r8") a[4] => _,
                out("rcx") _, out("r9") _, out("r11") _),
            Via::Vmcall => core::arch::asm!("vmcall",
                inout("rax") nr as i64 => ret, inout("rdi") a[0] => _, inout("rsi") a[1] => _,
                inout("rdx") a[2] => _, inout("r10") a[3] => _, inout("r8") a[4] => _,
                out("rcx") _, out("r9") _, out("r11") _),
        }
    }
    ret
}
