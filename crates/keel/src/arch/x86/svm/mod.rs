//! AMD SVM: enabling it on each CPU, the world switch, and one guest vCPU's hardware state.
//!
//! Everything here is vendor-specific; the rest of keel sees it only through `virt`
//! (`VcpuHw`, `Exit`, `Event`), so Intel VT-x can later implement the same interface.
//!
//! * **Per CPU**: EFER.SVME, the host save area (VM_HSAVE_PA), a page where `vmsave` keeps the
//!   host's FS/GS/TR/LDTR/syscall-MSR state while a guest runs, and ASIDs handed out by
//!   generation (when they run out, the generation advances and the next VMRUN flushes the TLB).
//! * **World switch** (`svm_vmrun`, below): CLGI, save the host's VMLOAD state, load the guest's
//!   registers, VMLOAD/VMRUN/VMSAVE, store the guest's registers, refill the return-stack buffer
//!   (a guest must not steer keel's returns), VMLOAD the host state back, STGI.
//! * **Exits** are decoded into `virt::Exit` (`exit.rs`); instruction lengths come from NRIP when
//!   the CPU saves it and from keel's own decoder otherwise (QEMU's TCG has no NRIP-save).

pub mod exit;
pub mod vcpu;
pub mod vmcb;

use core::sync::atomic::{AtomicU64, Ordering};

use raw_cpuid::CpuId;
use spin::Once;

use super::cpu::{self, efer, msr};
use super::paging;
use crate::mm;

/// VM_CR: SVM disabled by firmware (bit 4).
const MSR_VM_CR: u32 = 0xc001_0114;
const VM_CR_SVMDIS: u64 = 1 << 4;
/// Physical address of the host save area.
const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;

/// What this CPU's SVM implementation offers (CPUID 0x8000000A).
#[derive(Clone, Copy, Debug, Default)]
pub struct SvmFeatures {
    /// SVM revision.
    pub revision: u8,
    /// Number of ASIDs (ASID 0 is the host's).
    pub asids: u32,
    /// Nested paging.
    pub npt: bool,
    /// NRIP save: the CPU stores the next RIP on intercepted instructions.
    pub nrip_save: bool,
    /// VMCB clean bits.
    pub vmcb_clean: bool,
    /// Flush-by-ASID TLB control.
    pub flush_by_asid: bool,
    /// Decode assists.
    pub decode_assists: bool,
    /// Pause filter.
    pub pause_filter: bool,
    /// IBPB (CPUID 0x80000008 EBX[12]): keel issues one when a CPU switches between domains.
    pub ibpb: bool,
}

static FEATURES: Once<Option<SvmFeatures>> = Once::new();

/// SVM's features on this machine, or `None` (with the reason logged once) when keel cannot
/// run guests: no SVM, SVM disabled by the firmware, or no nested paging.
pub fn features() -> Option<&'static SvmFeatures> {
    FEATURES
        .call_once(|| {
            if !cpu::features().svm {
                log::warn!("svm: this CPU has no AMD SVM: keel cannot run guests (Intel VT-x is not supported yet)");
                return None;
            }
            // SAFETY: VM_CR exists on every CPU with SVM.
            if unsafe { cpu::rdmsr(MSR_VM_CR) } & VM_CR_SVMDIS != 0 {
                log::warn!(
                    "svm: SVM is disabled by the firmware (VM_CR.SVMDIS): enable it in the BIOS setup to run guests"
                );
                return None;
            }
            let cpuid = CpuId::new();
            let Some(info) = cpuid.get_svm_info() else {
                log::warn!("svm: CPUID leaf 0x8000000a missing: keel cannot run guests");
                return None;
            };
            // CPUID 0x80000008 EBX[12]: IBPB (raw-cpuid does not decode it).
            let ibpb = core::arch::x86_64::__cpuid(0x8000_0000).eax >= 0x8000_0008
                && core::arch::x86_64::__cpuid(0x8000_0008).ebx & (1 << 12) != 0;
            let f = SvmFeatures {
                revision: info.revision(),
                asids: info.supported_asids(),
                npt: info.has_nested_paging(),
                nrip_save: info.has_nrip(),
                vmcb_clean: info.has_vmcb_clean_bits(),
                flush_by_asid: info.has_flush_by_asid(),
                decode_assists: info.has_decode_assists(),
                pause_filter: info.has_pause_filter(),
                ibpb,
            };
            if !f.npt {
                log::warn!("svm: no nested paging: keel needs it to run guests");
                return None;
            }
            log::info!(
                "svm: revision {}, {} ASIDs, nested paging{}{}{}{}{}",
                f.revision,
                f.asids,
                if f.nrip_save { ", NRIP save" } else { ", no NRIP save (keel decodes)" },
                if f.vmcb_clean { ", VMCB clean bits" } else { "" },
                if f.flush_by_asid { ", flush by ASID" } else { "" },
                if f.decode_assists { ", decode assists" } else { "" },
                if f.ibpb { ", IBPB" } else { "" },
            );
            Some(f)
        })
        .as_ref()
}

/// This CPU's SVM state.
pub struct CpuSvm {
    /// Physical address of the page `vmsave` keeps the host's state in.
    host_vmcb_pa: u64,
    /// ASID generation on this CPU.
    generation: u64,
    /// Next free ASID in this generation.
    next_asid: u32,
    /// The domain whose vCPU ran here last (for IBPB between domains).
    last_domain: u32,
}

impl CpuSvm {
    /// Hand out an ASID for a vCPU about to run here. `current` is the vCPU's (cpu, generation,
    /// asid) from its last run; returns the ASID to use and whether its TLB entries must be
    /// flushed (a new ASID, or a new generation).
    pub fn asid_for(&mut self, cpu: u32, current: (u32, u64, u32)) -> (u32, u64, bool) {
        let (last_cpu, gen, asid) = current;
        if last_cpu == cpu && gen == self.generation && asid != 0 {
            return (asid, gen, false);
        }
        let max = features().map_or(2, |f| f.asids.max(2));
        if self.next_asid >= max {
            self.generation += 1;
            self.next_asid = 1;
        }
        let asid = self.next_asid;
        self.next_asid += 1;
        (asid, self.generation, true)
    }

    /// Whether a switch to `domain` needs an indirect-branch barrier, and remember it.
    pub fn switching_domain(&mut self, domain: u32) -> bool {
        let switch = self.last_domain != domain;
        self.last_domain = domain;
        switch
    }

    /// The host-state page for `svm_vmrun`.
    pub fn host_vmcb_pa(&self) -> u64 {
        self.host_vmcb_pa
    }
}

/// Turn SVM on for this CPU. Returns its per-CPU state, or `None` if the machine cannot run
/// guests (see `features`) or memory ran out.
pub fn enable_this_cpu() -> Option<CpuSvm> {
    features()?;
    let hsave = mm::alloc_frames(0)?.addr().as_u64();
    let host_vmcb = mm::alloc_frames(0)?.addr().as_u64();
    // SAFETY: both frames were just allocated for this purpose; zeroing them through the direct map.
    unsafe {
        core::ptr::write_bytes(paging::phys_to_virt(hsave) as *mut u8, 0, 4096);
        core::ptr::write_bytes(paging::phys_to_virt(host_vmcb) as *mut u8, 0, 4096);
    }
    // SAFETY: the CPU has SVM and firmware left it enabled (checked by `features`); setting
    // EFER.SVME and pointing VM_HSAVE_PA at a page owned by this CPU is the architectural way
    // to turn it on. Neither changes anything for the host until the first VMRUN.
    unsafe {
        cpu::wrmsr(msr::EFER, cpu::rdmsr(msr::EFER) | efer::SVME);
        cpu::wrmsr(MSR_VM_HSAVE_PA, hsave);
    }
    Some(CpuSvm { host_vmcb_pa: host_vmcb, generation: 1, next_asid: 1, last_domain: u32::MAX })
}

// ------------------------------------------------------------------------------------------
// Permission maps: one I/O map and one MSR map shared by every guest (all ports intercepted;
// MSRs intercepted except the ones VMLOAD/VMSAVE or the VMCB switch anyway).
// ------------------------------------------------------------------------------------------

static IOPM_PA: AtomicU64 = AtomicU64::new(0);
static MSRPM_PA: AtomicU64 = AtomicU64::new(0);

/// MSRs a guest reads and writes directly: their guest values live in the VMCB and are
/// switched by VMRUN/VMLOAD/VMSAVE.
const PASSTHROUGH_MSRS: &[u32] = &[
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0xc000_0100, // FS_BASE
    0xc000_0101, // GS_BASE
    0xc000_0102, // KERNEL_GS_BASE
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
    0x277,       // PAT (G_PAT with nested paging)
];

/// Bit position of `msr`'s read-intercept bit in the MSR permission map.
fn msrpm_bit(msr: u32) -> Option<usize> {
    let (base, off) = match msr {
        0..=0x1fff => (0, msr),
        0xc000_0000..=0xc000_1fff => (0x800 * 8, msr - 0xc000_0000),
        0xc001_0000..=0xc001_1fff => (0x1000 * 8, msr - 0xc001_0000),
        _ => return None,
    };
    Some(base + 2 * off as usize)
}

/// Build the shared permission maps (once, on the boot CPU).
pub fn init_permission_maps() -> Option<()> {
    // IOPM: 12 KiB (3 frames, order 2 gives 16 KiB), every bit set: every port intercepted.
    let iopm = mm::alloc_frames(2)?.addr().as_u64();
    // MSRPM: 8 KiB (order 1).
    let msrpm = mm::alloc_frames(1)?.addr().as_u64();
    // SAFETY: the frames were just allocated for the maps and are reached via the direct map.
    let (io, ms) = unsafe {
        (
            core::slice::from_raw_parts_mut(paging::phys_to_virt(iopm) as *mut u8, 16384),
            core::slice::from_raw_parts_mut(paging::phys_to_virt(msrpm) as *mut u8, 8192),
        )
    };
    io.fill(0xff);
    ms.fill(0xff);
    for &m in PASSTHROUGH_MSRS {
        if let Some(bit) = msrpm_bit(m) {
            ms[bit / 8] &= !(0b11 << (bit % 8));
        }
    }
    IOPM_PA.store(iopm, Ordering::Release);
    MSRPM_PA.store(msrpm, Ordering::Release);
    Some(())
}

/// Physical addresses of the (I/O, MSR) permission maps.
pub fn permission_maps() -> (u64, u64) {
    (IOPM_PA.load(Ordering::Acquire), MSRPM_PA.load(Ordering::Acquire))
}

// ------------------------------------------------------------------------------------------
// The world switch.
// ------------------------------------------------------------------------------------------

/// The guest's general-purpose registers that VMRUN does not switch (RAX and RSP live in
/// the VMCB). Order matters: `svm_vmrun` uses these offsets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestGprs {
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

core::arch::global_asm!(
    r#"
    .section .text, "ax"
    .code64
    .global svm_vmrun
/* svm_vmrun(guest_vmcb_pa: rdi, gprs: rsi, host_vmcb_pa: rdx)
   Runs with GIF clear (the caller did CLGI), so no interrupt or NMI can observe the guest's
   FS/GS/TR state that VMLOAD installs. */
svm_vmrun:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    pushq %rsi                  /* [rsp+16]: gprs */
    pushq %rdx                  /* [rsp+8]:  host vmcb */
    pushq %rdi                  /* [rsp]:    guest vmcb */
    movq %rdx, %rax
    vmsave %rax                 /* host FS/GS/TR/LDTR/syscall MSRs -> host page */
    movq (%rsp), %rax
    movq 0x00(%rsi), %rbx
    movq 0x08(%rsi), %rcx
    movq 0x10(%rsi), %rdx
    movq 0x20(%rsi), %rdi
    movq 0x28(%rsi), %rbp
    movq 0x30(%rsi), %r8
    movq 0x38(%rsi), %r9
    movq 0x40(%rsi), %r10
    movq 0x48(%rsi), %r11
    movq 0x50(%rsi), %r12
    movq 0x58(%rsi), %r13
    movq 0x60(%rsi), %r14
    movq 0x68(%rsi), %r15
    movq 0x18(%rsi), %rsi
    vmload %rax
    vmrun %rax
    vmsave %rax
    movq 16(%rsp), %rax
    movq %rbx, 0x00(%rax)
    movq %rcx, 0x08(%rax)
    movq %rdx, 0x10(%rax)
    movq %rsi, 0x18(%rax)
    movq %rdi, 0x20(%rax)
    movq %rbp, 0x28(%rax)
    movq %r8,  0x30(%rax)
    movq %r9,  0x38(%rax)
    movq %r10, 0x40(%rax)
    movq %r11, 0x48(%rax)
    movq %r12, 0x50(%rax)
    movq %r13, 0x58(%rax)
    movq %r14, 0x60(%rax)
    movq %r15, 0x68(%rax)
    /* Overwrite the return-stack buffer with harmless entries (32 calls), so no return in
       keel can be predicted from entries the guest left behind. */
    movl $16, %ecx
1:  call 2f
    int3
2:  call 3f
    int3
3:  decl %ecx
    jnz 1b
    addq $(32 * 8), %rsp
    movq 8(%rsp), %rax
    vmload %rax                 /* the host's FS/GS (per-CPU data!) back */
    addq $24, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
"#,
    options(att_syntax)
);

unsafe extern "C" {
    fn svm_vmrun(guest_vmcb_pa: u64, gprs: *mut GuestGprs, host_vmcb_pa: u64);
}

/// Enter the guest described by the VMCB at `vmcb_pa` until the next #VMEXIT.
///
/// With V_INTR_MASKING the host's RFLAGS.IF decides whether a physical interrupt makes the
/// guest exit, so IF is set for the switch; CLGI holds every interrupt and NMI until VMRUN
/// (which sets GIF in the guest) and again from #VMEXIT until STGI, by which time IF is clear
/// again. A pending host interrupt is taken when the caller re-enables interrupts.
///
/// # Safety
/// SVM must be enabled on this CPU (`enable_this_cpu`), `vmcb_pa` must be a VMCB keel built
/// (valid guest state, VMRUN intercepted, an ASID, nested paging on), and `host_vmcb_pa` this
/// CPU's host-state page. Interrupts must be disabled.
pub unsafe fn vmrun(vmcb_pa: u64, gprs: &mut GuestGprs, host_vmcb_pa: u64) {
    // SAFETY: CLGI/STGI bracket the switch so that no interrupt or NMI runs while VMLOAD has
    // installed the guest's segment state; the caller guarantees the rest.
    unsafe {
        core::arch::asm!("clgi", "sti", options(nomem, nostack));
        svm_vmrun(vmcb_pa, gprs, host_vmcb_pa);
        core::arch::asm!("cli", "stgi", options(nomem, nostack));
    }
}

/// Indirect branch prediction barrier (when the CPU has one): issued when a CPU switches from
/// one domain's vCPU to another's, so one guest cannot train branches another executes.
pub fn ibpb() {
    if features().is_some_and(|f| f.ibpb) {
        // SAFETY: PRED_CMD exists when CPUID reports IBPB; writing 1 issues the barrier.
        unsafe { cpu::wrmsr(0x49, 1) };
    }
}
