//! One guest vCPU's SVM state: its VMCB, the registers VMRUN does not switch, its ASID, its
//! FPU/SSE/AVX state, and the event it is being given.

use core::sync::atomic::{AtomicBool, Ordering};

use raw_cpuid::CpuId;
use x86_64::registers::control::{Cr4, Cr4Flags};

use super::exit;
use super::vmcb::{attr, intercept1, intercept2, Seg, Segment as VmcbSeg, TlbControl, Vmcb};
use super::{features, permission_maps, vmrun, CpuSvm, GuestGprs};
use crate::arch::x86::cpu::efer;
use crate::arch::x86::paging;
use crate::arch::x86::virt::{Event, Exit, Segment};
use crate::mm;

/// Xen's (and the architecture's) reset PAT.
const DEFAULT_PAT: u64 = 0x0007_0406_0007_0406;
/// EVENTINJ / EXITINTINFO: valid.
const EVENT_VALID: u64 = 1 << 31;
/// ... the error code is valid.
const EVENT_ERR_VALID: u64 = 1 << 11;

/// Why a vCPU could not be created.
#[derive(Debug, Clone, Copy, Eq, PartialEq)]
pub enum CreateError {
    /// No SVM on this machine.
    NoSvm,
    /// No memory for the VMCB or the FPU area.
    OutOfMemory,
}

/// Size and components of the XSAVE area (or the 512-byte FXSAVE area without XSAVE).
struct FpuLayout {
    xsave: bool,
    size: usize,
    /// XCR0 bits the host supports (the guest may enable a subset).
    supported_xcr0: u64,
}

fn fpu_layout() -> &'static FpuLayout {
    static LAYOUT: spin::Once<FpuLayout> = spin::Once::new();
    LAYOUT.call_once(|| {
        let cpuid = CpuId::new();
        match cpuid.get_extended_state_info() {
            Some(x) if crate::arch::x86::cpu::features().xsave => {
                // CPUID 0xD.0: EDX:EAX = the XCR0 bits the CPU supports; keel offers x87, SSE,
                // AVX, the AVX-512 states and PKRU (no MPX, no supervisor states).
                let r = core::arch::x86_64::__cpuid_count(0xd, 0);
                let supported = ((r.edx as u64) << 32 | r.eax as u64) & 0x2e7;
                FpuLayout {
                    xsave: true,
                    size: x.xsave_area_size_supported_features() as usize,
                    supported_xcr0: supported,
                }
            }
            _ => FpuLayout { xsave: false, size: 512, supported_xcr0: 0x3 },
        }
    })
}

/// Host CR4 bits guests' FPU state handling needs (set once per CPU).
pub fn enable_host_fpu_features() {
    let layout = fpu_layout();
    // SAFETY: OSFXSR/OSXMMEXCPT let keel save SSE state with FXSAVE/XSAVE; OSXSAVE enables
    // XSAVE and XCR0 (only when the CPU has XSAVE). keel itself never uses FPU/SSE registers.
    unsafe {
        Cr4::update(|f| {
            f.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE);
            if layout.xsave {
                f.insert(Cr4Flags::OSXSAVE);
            }
        })
    };
}

/// An SVM vCPU.
pub struct SvmVcpu {
    vmcb_pa: u64,
    vmcb: &'static mut Vmcb,
    /// Registers VMRUN leaves to software.
    pub gprs: GuestGprs,
    /// (CPU, ASID generation, ASID) of the last run.
    asid: (u32, u64, u32),
    /// A p2m change requires flushing this guest's TLB entries before it runs again (set from
    /// any CPU, so atomic).
    flush_pending: AtomicBool,
    /// FPU/SSE/AVX state while the vCPU is not loaded.
    fpu_pa: u64,
    fpu_order: u8,
    /// The guest's XCR0.
    xcr0: u64,
    /// Number of VMRUNs (statistics).
    pub runs: u64,
}

// SAFETY: the VMCB reference is unique to this vCPU (its own frame); the vCPU is used by one CPU
// at a time (the scheduler guarantees it), and moves between CPUs only while not running.
unsafe impl Send for SvmVcpu {}

impl SvmVcpu {
    /// A vCPU with every intercept keel needs, nested paging on `ncr3`, and the reset state of
    /// a PVH vCPU (32-bit protected mode, paging off) not yet pointed anywhere.
    pub fn new(ncr3: u64) -> Result<Self, CreateError> {
        let f = features().ok_or(CreateError::NoSvm)?;
        let layout = fpu_layout();
        let vmcb_pa = mm::alloc_frames(0).ok_or(CreateError::OutOfMemory)?.addr().as_u64();
        let fpu_order = (layout.size.div_ceil(4096).next_power_of_two().trailing_zeros()) as u8;
        let Some(fpu) = mm::alloc_frames(fpu_order) else {
            mm::free_frames(keel_mm::PhysAddr::new(vmcb_pa).pfn_floor(), 0);
            return Err(CreateError::OutOfMemory);
        };
        let fpu_pa = fpu.addr().as_u64();
        // SAFETY: the frames were just allocated for this vCPU; they are zeroed (a zeroed XSAVE
        // area restores every component to its initial state) and then owned by it alone.
        let vmcb = unsafe {
            core::ptr::write_bytes(paging::phys_to_virt(fpu_pa) as *mut u8, 0, 4096 << fpu_order);
            if !layout.xsave {
                // FXSAVE format: MXCSR reset value at offset 24, FCW at 0.
                let p = paging::phys_to_virt(fpu_pa) as *mut u8;
                core::ptr::write_unaligned(p as *mut u16, 0x37f);
                core::ptr::write_unaligned(p.add(24) as *mut u32, 0x1f80);
            }
            let v = paging::phys_to_virt(vmcb_pa) as *mut Vmcb;
            v.write(Vmcb::zeroed());
            &mut *v
        };
        let (iopm, msrpm) = permission_maps();
        vmcb.set_intercepts1(
            intercept1::INTR
                | intercept1::NMI
                | intercept1::SMI
                | intercept1::CPUID
                | intercept1::INVD
                | intercept1::HLT
                | intercept1::INVLPGA
                | intercept1::IOIO
                | intercept1::MSR
                | intercept1::SHUTDOWN,
        );
        vmcb.set_intercepts2(
            intercept2::VMRUN
                | intercept2::VMMCALL
                | intercept2::VMLOAD
                | intercept2::VMSAVE
                | intercept2::STGI
                | intercept2::CLGI
                | intercept2::SKINIT
                | intercept2::RDTSCP
                | intercept2::MONITOR
                | intercept2::MWAIT
                | intercept2::XSETBV,
        );
        // No exception is intercepted: Intel's VMCALL raises #UD in the guest, as on Xen.
        vmcb.set_exception_intercepts(0);
        vmcb.set_iopm_base(iopm);
        vmcb.set_msrpm_base(msrpm);
        vmcb.set_np_control(1);
        vmcb.set_ncr3(ncr3);
        // V_INTR_MASKING: the guest's RFLAGS.IF and TPR govern only virtual interrupts; keel
        // keeps physical ones.
        vmcb.set_vintr(1 << 24);
        let _ = f;
        let mut v = SvmVcpu {
            vmcb_pa,
            vmcb,
            gprs: GuestGprs::default(),
            asid: (u32::MAX, 0, 0),
            flush_pending: AtomicBool::new(true),
            fpu_pa,
            fpu_order,
            xcr0: 1,
            runs: 0,
        };
        v.reset_pvh(0, 0);
        Ok(v)
    }

    fn common_reset(&mut self) {
        let vmcb = &mut *self.vmcb;
        vmcb.set_efer(efer::SVME);
        vmcb.set_cr4(0);
        vmcb.set_cr3(0);
        vmcb.set_cr2(0);
        vmcb.set_dr6(0xffff_0ff0);
        vmcb.set_dr7(0x400);
        vmcb.set_g_pat(DEFAULT_PAT);
        vmcb.set_rflags(2);
        vmcb.set_rsp(0);
        vmcb.set_rax(0);
        vmcb.set_event_inj(0);
        vmcb.set_interrupt_shadow(0);
        vmcb.set_segment(Seg::Ldtr, VmcbSeg { selector: 0, attrib: attr::LDT, limit: 0, base: 0 });
        vmcb.set_segment(Seg::Tr, VmcbSeg { selector: 0, attrib: attr::TSS32_BUSY, limit: 0x67, base: 0 });
        self.gprs = GuestGprs::default();
        self.xcr0 = 1;
    }

    /// The PVH entry state Xen uses (xen-abi.md §1.2): 32-bit flat protected mode, paging off,
    /// CR0 = PE|ET, EBX = start info.
    pub fn reset_pvh(&mut self, entry: u32, start_info: u32) {
        self.common_reset();
        let vmcb = &mut *self.vmcb;
        vmcb.set_cr0(0x11);
        let code = VmcbSeg { selector: 0x10, attrib: attr::CODE32, limit: 0xffff_ffff, base: 0 };
        let data = VmcbSeg { selector: 0x18, attrib: attr::DATA32, limit: 0xffff_ffff, base: 0 };
        vmcb.set_segment(Seg::Cs, code);
        for s in [Seg::Ds, Seg::Es, Seg::Ss, Seg::Fs, Seg::Gs] {
            vmcb.set_segment(s, data);
        }
        vmcb.set_segment(Seg::Gdtr, VmcbSeg::default());
        vmcb.set_segment(Seg::Idtr, VmcbSeg::default());
        vmcb.set_cpl(0);
        vmcb.set_rip(entry as u64);
        self.gprs.rbx = start_info as u64;
    }

    /// The state a guest gave with VCPUOP_initialise (validated by `keel_guest::vcpu_context`).
    pub fn reset_initial(&mut self, st: &keel_guest::vcpu_context::InitialState) {
        self.common_reset();
        let vmcb = &mut *self.vmcb;
        vmcb.set_cr0(st.cr0);
        vmcb.set_cr3(st.cr3);
        vmcb.set_cr4(st.cr4);
        vmcb.set_efer(st.efer | efer::SVME);
        for (seg, s) in [Seg::Cs, Seg::Ds, Seg::Ss, Seg::Es, Seg::Tr].into_iter().zip(st.segments) {
            vmcb.set_segment(seg, VmcbSeg { selector: 0, attrib: s.attrib, limit: s.limit, base: s.base });
        }
        // FS and GS as DS; LDTR null (from `common_reset`); no descriptor tables yet.
        vmcb.set_segment(
            Seg::Fs,
            VmcbSeg { selector: 0, attrib: st.segments[1].attrib, limit: st.segments[1].limit, base: 0 },
        );
        vmcb.set_segment(
            Seg::Gs,
            VmcbSeg { selector: 0, attrib: st.segments[1].attrib, limit: st.segments[1].limit, base: 0 },
        );
        vmcb.set_segment(Seg::Gdtr, VmcbSeg::default());
        vmcb.set_segment(Seg::Idtr, VmcbSeg::default());
        vmcb.set_cpl(((st.segments[0].attrib >> 5) & 3) as u8);
        vmcb.set_rip(st.rip);
        vmcb.set_rflags(st.rflags | 2);
        let [rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi] = st.gprs;
        vmcb.set_rax(rax);
        vmcb.set_rsp(rsp);
        self.gprs.rcx = rcx;
        self.gprs.rdx = rdx;
        self.gprs.rbx = rbx;
        self.gprs.rbp = rbp;
        self.gprs.rsi = rsi;
        self.gprs.rdi = rdi;
    }

    /// The state after INIT and STARTUP with `vector`: real mode at vector << 12.
    pub fn reset_startup(&mut self, vector: u8) {
        self.common_reset();
        let vmcb = &mut *self.vmcb;
        vmcb.set_cr0(0x6000_0010);
        let cs = VmcbSeg {
            selector: (vector as u16) << 8,
            attrib: attr::REAL_CODE,
            limit: 0xffff,
            base: (vector as u64) << 12,
        };
        vmcb.set_segment(Seg::Cs, cs);
        let data = VmcbSeg { selector: 0, attrib: attr::REAL_DATA, limit: 0xffff, base: 0 };
        for s in [Seg::Ds, Seg::Es, Seg::Ss, Seg::Fs, Seg::Gs] {
            vmcb.set_segment(s, data);
        }
        vmcb.set_segment(Seg::Gdtr, VmcbSeg { selector: 0, attrib: 0, limit: 0xffff, base: 0 });
        vmcb.set_segment(Seg::Idtr, VmcbSeg { selector: 0, attrib: 0, limit: 0xffff, base: 0 });
        vmcb.set_cpl(0);
        vmcb.set_rip(0);
    }

    /// The VMCB (read-only view).
    pub fn vmcb(&self) -> &Vmcb {
        self.vmcb
    }

    /// The VMCB, for field setters.
    pub fn vmcb_mut(&mut self) -> &mut Vmcb {
        self.vmcb
    }

    /// Require a TLB flush of this guest before it next runs (after a p2m change).
    pub fn request_tlb_flush(&self) {
        self.flush_pending.store(true, Ordering::Release);
    }

    /// Enter the guest on this CPU until the next exit, and say why it stopped.
    ///
    /// Interrupts must be disabled; physical interrupts that arrive while the guest runs make
    /// it exit and are taken by keel after `run` returns (interrupts enabled again).
    pub fn run(&mut self, cpu: u32, svm: &mut CpuSvm) -> Exit {
        let f = features().copied().unwrap_or_default();
        let (asid, gen, fresh) = svm.asid_for(cpu, self.asid);
        if asid != self.asid.2 {
            self.vmcb.set_asid(asid);
        }
        self.asid = (cpu, gen, asid);
        let flush = fresh | self.flush_pending.swap(false, Ordering::AcqRel);
        if flush {
            self.vmcb.set_tlb_control(if f.flush_by_asid { TlbControl::FlushAsid } else { TlbControl::FlushAll });
        }
        self.runs += 1;
        // SAFETY: SVM is enabled on this CPU (`svm` exists only after `enable_this_cpu`), the VMCB
        // was built by `new` with a valid guest state, and the caller disabled interrupts.
        unsafe { vmrun(self.vmcb_pa, &mut self.gprs, svm.host_vmcb_pa()) };
        self.vmcb.set_tlb_control(TlbControl::None);
        self.vmcb.mark_all_clean(if f.vmcb_clean { u32::MAX } else { 0 });
        // An event whose delivery the exit interrupted must be delivered again.
        let pending = self.vmcb.exit_int_info();
        if pending & EVENT_VALID != 0 {
            self.vmcb.set_event_inj(pending);
        }
        exit::decode(self.vmcb)
    }

    /// RIP of the next instruction when the hardware told keel (NRIP save); `None` otherwise.
    pub fn hw_next_rip(&self) -> Option<u64> {
        features().filter(|f| f.nrip_save).map(|_| self.vmcb.next_rip()).filter(|&r| r != 0)
    }

    /// Queue `event` for the next entry. Returns false if another event is already queued.
    pub fn inject(&mut self, event: Event) -> bool {
        if self.vmcb.event_inj() & EVENT_VALID != 0 {
            return false;
        }
        let v = match event {
            Event::Interrupt(vec) => vec as u64,
            Event::Nmi => 2 | (2 << 8),
            Event::Exception(vec, None) => vec as u64 | (3 << 8),
            Event::Exception(vec, Some(code)) => vec as u64 | (3 << 8) | EVENT_ERR_VALID | ((code as u64) << 32),
        };
        self.vmcb.set_event_inj(v | EVENT_VALID);
        true
    }

    /// Whether an event is queued for the next entry.
    pub fn event_pending(&self) -> bool {
        self.vmcb.event_inj() & EVENT_VALID != 0
    }

    /// Whether the guest would take a maskable interrupt now (IF set, no interrupt shadow).
    pub fn interrupts_enabled(&self) -> bool {
        self.vmcb.rflags() & (1 << 9) != 0 && self.vmcb.interrupt_shadow() & 1 == 0
    }

    /// Ask for an exit as soon as the guest can take an interrupt (`false` cancels).
    pub fn request_interrupt_window(&mut self, on: bool) {
        let i1 = self.vmcb.intercepts1();
        let vintr = self.vmcb.vintr();
        if on {
            // A dummy virtual interrupt (V_IRQ, priority 0xf, ignoring TPR): its acceptance is
            // the VINTR intercept.
            self.vmcb.set_vintr(vintr | (1 << 8) | (0xf << 16) | (1 << 20));
            self.vmcb.set_intercepts1(i1 | intercept1::VINTR);
        } else if i1 & intercept1::VINTR != 0 {
            self.vmcb.set_vintr(vintr & !((1 << 8) | (0xf << 16) | (1 << 20)));
            self.vmcb.set_intercepts1(i1 & !intercept1::VINTR);
        }
    }

    /// RIP.
    pub fn rip(&self) -> u64 {
        self.vmcb.rip()
    }

    /// Set RIP; clears the interrupt shadow as a completed instruction would.
    pub fn set_rip(&mut self, rip: u64) {
        self.vmcb.set_rip(rip);
        self.vmcb.set_interrupt_shadow(0);
    }

    /// RAX.
    pub fn rax(&self) -> u64 {
        self.vmcb.rax()
    }

    /// Set RAX.
    pub fn set_rax(&mut self, v: u64) {
        self.vmcb.set_rax(v);
    }

    /// RSP.
    pub fn rsp(&self) -> u64 {
        self.vmcb.rsp()
    }

    /// RFLAGS.
    pub fn rflags(&self) -> u64 {
        self.vmcb.rflags()
    }

    /// CR0, CR3, CR4 and EFER as the guest sees them (EFER without SVME).
    pub fn control_regs(&self) -> (u64, u64, u64, u64) {
        (self.vmcb.cr0(), self.vmcb.cr3(), self.vmcb.cr4(), self.vmcb.efer() & !efer::SVME)
    }

    /// Set the guest's EFER (SVME stays set underneath, as VMRUN requires).
    pub fn set_guest_efer(&mut self, v: u64) {
        self.vmcb.set_efer(v | efer::SVME);
    }

    /// The guest's CPL.
    pub fn cpl(&self) -> u8 {
        self.vmcb.cpl()
    }

    /// CS as the decoder needs it.
    pub fn cs(&self) -> Segment {
        let s = self.vmcb.segment(Seg::Cs);
        Segment {
            selector: s.selector,
            base: s.base,
            limit: s.limit,
            long: s.attrib & (1 << 9) != 0,
            default_big: s.attrib & (1 << 10) != 0,
        }
    }

    /// A data segment's base (for string I/O: DS or ES).
    pub fn segment_base(&self, s: Seg) -> u64 {
        self.vmcb.segment(s).base
    }

    /// The guest's XCR0.
    pub fn xcr0(&self) -> u64 {
        self.xcr0
    }

    /// XSETBV: set the guest's XCR0 if the value is legal (x87 always on, AVX needs SSE, only
    /// components this CPU supports). Returns false for a #GP.
    pub fn set_xcr0(&mut self, v: u64) -> bool {
        let layout = fpu_layout();
        let legal = layout.xsave && v & 1 != 0 && v & !layout.supported_xcr0 == 0 && (v & 4 == 0 || v & 2 != 0);
        if legal {
            self.xcr0 = v;
            // SAFETY: the value is a subset of what the CPU supports, with x87 set; this vCPU's
            // state is the one loaded on this CPU.
            unsafe { xsetbv(v) };
        }
        legal
    }

    /// Load this vCPU's FPU/SSE/AVX state into the CPU (it is about to run here).
    pub fn load_fpu(&self) {
        let layout = fpu_layout();
        let area = paging::phys_to_virt(self.fpu_pa);
        // SAFETY: the area is this vCPU's, big enough for the CPU's state format, 64-byte aligned
        // (a frame); XCR0 is set to the guest's value first so XRSTOR restores what it enabled.
        unsafe {
            if layout.xsave {
                xsetbv(self.xcr0);
                core::arch::asm!("xrstor64 [{}]", in(reg) area, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack));
            } else {
                core::arch::asm!("fxrstor64 [{}]", in(reg) area, options(nostack));
            }
        }
    }

    /// Save this vCPU's FPU/SSE/AVX state from the CPU (it stops running here).
    ///
    /// XCR0 is read back first: a CPU that does not intercept XSETBV (QEMU 7.2's TCG does
    /// not) lets the guest set it directly, so the value in the CPU is the guest's, whatever
    /// keel last saw. It can only hold components the CPU supports, for which the save area is
    /// sized.
    pub fn save_fpu(&mut self) {
        let layout = fpu_layout();
        let area = paging::phys_to_virt(self.fpu_pa);
        // SAFETY: as in `load_fpu`; XCR0 holds this vCPU's value (read back here).
        unsafe {
            if layout.xsave {
                let (lo, hi): (u32, u32);
                core::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack));
                self.xcr0 = (hi as u64) << 32 | lo as u64;
                core::arch::asm!("xsave64 [{}]", in(reg) area, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack));
            } else {
                core::arch::asm!("fxsave64 [{}]", in(reg) area, options(nostack));
            }
        }
    }
}

impl Drop for SvmVcpu {
    fn drop(&mut self) {
        mm::free_frames(keel_mm::PhysAddr::new(self.vmcb_pa).pfn_floor(), 0);
        mm::free_frames(keel_mm::PhysAddr::new(self.fpu_pa).pfn_floor(), self.fpu_order);
    }
}

/// Write XCR0.
///
/// # Safety
/// `v` must be a legal XCR0 for this CPU (x87 set, only supported components).
unsafe fn xsetbv(v: u64) {
    // SAFETY: forwarded to the caller.
    unsafe {
        core::arch::asm!("xsetbv", in("ecx") 0, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack))
    };
}

/// Exit codes the core may want to print (re-exported for crash reports).
pub use super::exit::INVALID as EXIT_INVALID;
