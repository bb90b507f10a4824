//! What keel does on each kind of VM exit (vendor-neutral `Exit`s).
//!
//! The platform a PVH guest sees: CPUID and MSRs per `keel-guest`'s policy; port 0xE9 is a
//! debug console and every other I/O port reads as all-ones and ignores writes (Xen's null
//! handler); the local APIC page is emulated (`keel-vlapic`, instructions decoded by
//! `keel-x86` since there are no decode assists on QEMU's TCG); VMMCALL is a hypercall.
//! Intel's VMCALL is not: on AMD it raises #UD in the guest, exactly as on Xen 4.17, which
//! intercepts #UD only for cross-vendor guests (a guest that sees an AMD CPU uses VMMCALL;
//! emulating on #UD would only widen the attack surface). Anything keel cannot make sense of crashes only this domain, with a
//! report naming the exit and the vCPU's registers.

use alloc::sync::Arc;

use keel_guest::msr::{Owner, Read, Write, EFER_GUEST_WRITABLE};
use keel_x86::mmio::{MmioOp, Reg};
use keel_x86::CpuMode;

use super::guestmem;
use super::vcpu::{Hw, Vcpu};
use super::Domain;
use crate::arch::x86::svm::vmcb::Seg;
use crate::arch::x86::time;
use crate::arch::x86::virt::{vector, Event, Exit, IoExit};

/// What the vCPU's run loop does after an exit.
pub enum Next {
    /// Enter the guest again.
    Continue,
    /// The vCPU blocked.
    Block,
    /// The vCPU yielded its CPU.
    Yield,
    /// The vCPU (or its domain) stopped.
    Stop,
}

/// Base of the local APIC page every vCPU sees (xAPIC mode).
const LAPIC_BASE: u64 = 0xfee0_0000;

/// Handle one exit.
pub fn handle(v: &Arc<Vcpu>, d: &Arc<Domain>, hw: &mut Hw, exit: Exit) -> Next {
    match exit {
        Exit::Cpuid => cpuid(v, d, hw),
        Exit::Rdmsr => rdmsr(v, d, hw),
        Exit::Wrmsr => wrmsr(v, d, hw),
        Exit::Io(io) => port_io(v, d, hw, io),
        Exit::Hlt => {
            if !skip(d, hw) {
                return crash(v, d, hw, "cannot read the HLT instruction");
            }
            if hw.cpu.rflags() & (1 << 9) == 0 {
                v.down(d);
                Next::Stop
            } else {
                // HLT right after STI sits in its shadow, yet wakes for an interrupt pending
                // then: IF alone decides.
                v.begin_block();
                if v.block(None, true) {
                    Next::Block
                } else {
                    Next::Continue
                }
            }
        }
        Exit::Hypercall => {
            // Whether the guest could take an interrupt at the VMMCALL (STI's shadow may cover
            // it), before skipping it ends the shadow: SCHEDOP_block and poll decide by it.
            let irqs_open = hw.cpu.interrupts_enabled();
            if !skip(d, hw) {
                return crash(v, d, hw, "cannot read the VMMCALL instruction");
            }
            crate::hypercall::dispatch(v, d, hw, irqs_open)
        }
        Exit::Exception { vector, error_code } => {
            hw.cpu.inject(Event::Exception(vector, error_code));
            Next::Continue
        }
        Exit::NestedPageFault(npf) => {
            if npf.gpa & !0xfff == LAPIC_BASE && v.vlapic.lock().mode() == keel_vlapic::Mode::XApic {
                return lapic_mmio(v, d, hw, npf.gpa, npf.write);
            }
            let kind = d.with_mem(|m| m.lookup(keel_mm::Gpa::new(npf.gpa).gfn()).map(|m| m.kind)).flatten();
            if npf.write && kind == Some(keel_p2m::P2mType::ForeignGrant) {
                return discard_write(v, d, hw, npf.gpa);
            }
            crash(
                v,
                d,
                hw,
                format_args!(
                    "{} of guest-physical {:#x}, which is not the domain's memory",
                    if npf.fetch {
                        "instruction fetch"
                    } else if npf.write {
                        "write"
                    } else {
                        "read"
                    },
                    npf.gpa
                ),
            )
        }
        Exit::Shutdown => crash(v, d, hw, "triple fault"),
        Exit::ExternalInterrupt | Exit::Nmi => Next::Continue,
        Exit::InterruptWindow => {
            hw.cpu.request_interrupt_window(false);
            Next::Continue
        }
        Exit::Xsetbv => {
            let value = (hw.cpu.gprs.rdx << 32) | (hw.cpu.rax() & 0xffff_ffff);
            if hw.cpu.gprs.rcx & 0xffff_ffff != 0 || hw.cpu.cpl() != 0 || !hw.cpu.set_xcr0(value) {
                hw.cpu.inject(Event::Exception(vector::GP, Some(0)));
                return Next::Continue;
            }
            if skip(d, hw) {
                Next::Continue
            } else {
                crash(v, d, hw, "cannot read the XSETBV instruction")
            }
        }
        Exit::Pause => Next::Yield,
        Exit::Invd => {
            if skip(d, hw) {
                Next::Continue
            } else {
                crash(v, d, hw, "cannot read the INVD instruction")
            }
        }
        Exit::Forbidden => {
            hw.cpu.inject(Event::Exception(vector::UD, None));
            Next::Continue
        }
        Exit::InvalidState => crash(v, d, hw, "the CPU refused to run the vCPU: its state is invalid"),
        Exit::Unknown { code, info1, info2 } => {
            crash(v, d, hw, format_args!("unexpected exit {code:#x} (info {info1:#x}, {info2:#x})"))
        }
    }
}

/// Crash the domain: print why and the vCPU's state.
pub fn crash(v: &Arc<Vcpu>, d: &Arc<Domain>, hw: &Hw, why: impl core::fmt::Display) -> Next {
    d.crash(format_args!("vCPU {}: {}", v.id, why));
    dump(v, d, hw);
    Next::Stop
}

/// Print a vCPU's registers (crash reports).
pub fn dump(v: &Vcpu, d: &Domain, hw: &Hw) {
    let c = &hw.cpu;
    let g = &c.gprs;
    let (cr0, cr3, cr4, efer) = c.control_regs();
    let cs = c.cs();
    log::error!(
        "d{}v{}: rip {:04x}:{:016x} rsp {:016x} rflags {:016x} cpl {}",
        d.id,
        v.id,
        cs.selector,
        c.rip(),
        c.rsp(),
        c.rflags(),
        c.cpl()
    );
    log::error!("d{}v{}: rax {:016x} rbx {:016x} rcx {:016x} rdx {:016x}", d.id, v.id, c.rax(), g.rbx, g.rcx, g.rdx);
    log::error!("d{}v{}: rsi {:016x} rdi {:016x} rbp {:016x} r8  {:016x}", d.id, v.id, g.rsi, g.rdi, g.rbp, g.r8);
    log::error!("d{}v{}: r9  {:016x} r10 {:016x} r11 {:016x} r12 {:016x}", d.id, v.id, g.r9, g.r10, g.r11, g.r12);
    log::error!("d{}v{}: r13 {:016x} r14 {:016x} r15 {:016x}", d.id, v.id, g.r13, g.r14, g.r15);
    log::error!("d{}v{}: cr0 {:016x} cr3 {:016x} cr4 {:016x} efer {:016x}", d.id, v.id, cr0, cr3, cr4, efer);
}

/// The guest's CPU mode (for the instruction decoder).
fn cpu_mode(hw: &Hw) -> CpuMode {
    let (cr0, _, _, efer) = hw.cpu.control_regs();
    let cs = hw.cpu.cs();
    if cr0 & 1 == 0 {
        CpuMode::Real
    } else if efer & (1 << 10) != 0 && cs.long {
        CpuMode::Long64
    } else if efer & (1 << 10) != 0 {
        if cs.default_big {
            CpuMode::Compat32
        } else {
            CpuMode::Compat16
        }
    } else if cs.default_big {
        CpuMode::Protected32
    } else {
        CpuMode::Protected16
    }
}

/// CS.base + RIP.
fn linear_rip(hw: &Hw) -> u64 {
    hw.cpu.cs().base.wrapping_add(hw.cpu.rip())
}

/// Advance RIP past the intercepted instruction: the hardware's next RIP when it saved one,
/// else keel's decoder on the instruction bytes. False if the instruction cannot be read or
/// decoded (the caller crashes the domain).
fn skip(d: &Domain, hw: &mut Hw) -> bool {
    if let Some(next) = hw.cpu.hw_next_rip() {
        hw.cpu.set_rip(next);
        return true;
    }
    let mut bytes = [0u8; keel_x86::MAX_INSN_LEN];
    let rip = linear_rip(hw);
    // Fetch what can be read (the instruction may end right before an unmapped page).
    let mut n = bytes.len();
    while n > 0 && guestmem::read_linear(d, hw, rip, &mut bytes[..n], true).is_err() {
        n -= 1;
    }
    match keel_x86::instruction_length(&bytes[..n], cpu_mode(hw)) {
        Ok(len) => {
            hw.cpu.set_rip(hw.cpu.rip().wrapping_add(len as u64));
            true
        }
        Err(_) => false,
    }
}

/// What the guest's CPUID answers depend on, for `v` in its current state.
pub fn cpuid_context(v: &Vcpu, hw: &Hw) -> keel_guest::cpuid::Context {
    keel_guest::cpuid::Context {
        vcpu_id: v.id,
        vcpus: v.nr_vcpus,
        domid: v.domid,
        tsc_khz: time::tsc_khz() as u32,
        guest_cr4: hw.cpu.control_regs().2,
        phys_addr_bits: 48,
    }
}

/// The host's CPUID.
pub fn host_cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

fn cpuid(v: &Arc<Vcpu>, d: &Arc<Domain>, hw: &mut Hw) -> Next {
    let leaf = hw.cpu.rax() as u32;
    let sub = hw.cpu.gprs.rcx as u32;
    let ctx = cpuid_context(v, hw);
    let [ra, rb, rc, rd] = keel_guest::cpuid::guest_cpuid(&host_cpuid, &ctx, leaf, sub);
    hw.cpu.set_rax(ra as u64);
    hw.cpu.gprs.rbx = rb as u64;
    hw.cpu.gprs.rcx = rc as u64;
    hw.cpu.gprs.rdx = rd as u64;
    if skip(d, hw) {
        Next::Continue
    } else {
        crash(v, d, hw, "cannot read the CPUID instruction")
    }
}

fn gp(hw: &mut Hw) -> Next {
    hw.cpu.inject(Event::Exception(vector::GP, Some(0)));
    Next::Continue
}

fn rdmsr(v: &Arc<Vcpu>, d: &Arc<Domain>, hw: &mut Hw) -> Next {
    let msr = hw.cpu.gprs.rcx as u32;
    let value = match hw.msrs.read(msr) {
        Read::Value(x) => x,
        Read::Gp => return gp(hw),
        Read::Owned(Owner::Efer) => hw.cpu.control_regs().3,
        Read::Owned(Owner::Tsc) => crate::arch::x86::cpu::rdtsc().wrapping_add(hw.cpu.vmcb().tsc_offset()),
        Read::Owned(Owner::ApicBase) => v.vlapic.lock().apic_base(),
        Read::Owned(Owner::X2apic) => match v.vlapic.lock().msr_read(msr, time::now_ns()) {
            Ok(x) => x,
            Err(_) => return gp(hw),
        },
        Read::Owned(Owner::HypercallPage) => return gp(hw),
    };
    hw.cpu.set_rax(value & 0xffff_ffff);
    hw.cpu.gprs.rdx = value >> 32;
    if skip(d, hw) {
        Next::Continue
    } else {
        crash(v, d, hw, "cannot read the RDMSR instruction")
    }
}

fn wrmsr(v: &Arc<Vcpu>, d: &Arc<Domain>, hw: &mut Hw) -> Next {
    let msr = hw.cpu.gprs.rcx as u32;
    let value = (hw.cpu.gprs.rdx << 32) | (hw.cpu.rax() & 0xffff_ffff);
    match hw.msrs.write(msr, value) {
        Write::Done => {}
        Write::Gp => return gp(hw),
        Write::Owned(Owner::Efer) => {
            if value & !EFER_GUEST_WRITABLE != 0 {
                return gp(hw);
            }
            // LMA is the hardware's to set.
            let lma = hw.cpu.control_regs().3 & (1 << 10);
            hw.cpu.set_guest_efer((value & !(1 << 10)) | lma);
        }
        Write::Owned(Owner::Tsc) => {
            let host = crate::arch::x86::cpu::rdtsc();
            hw.cpu.vmcb_mut().set_tsc_offset(value.wrapping_sub(host));
        }
        Write::Owned(Owner::ApicBase) => {
            // The vLAPIC's lock is released before its actions run (they may raise vectors).
            let result = v.vlapic.lock().write_apic_base(value);
            match result {
                Ok(actions) => apic_actions(v, d, actions),
                Err(_) => return gp(hw),
            }
        }
        Write::Owned(Owner::X2apic) => {
            let result = v.vlapic.lock().msr_write(msr, value, time::now_ns());
            match result {
                Ok(actions) => apic_actions(v, d, actions),
                Err(_) => return gp(hw),
            }
        }
        Write::Owned(Owner::HypercallPage) => {
            let page = keel_guest::hypercall_page::hypercall_page(true);
            if d.with_mem(|m| m.write(keel_mm::Gpa::new(value), &page)).is_none_or(|r| r.is_err()) {
                return gp(hw);
            }
            d.hypercall_page.store(value, core::sync::atomic::Ordering::Relaxed);
        }
    }
    if skip(d, hw) {
        Next::Continue
    } else {
        crash(v, d, hw, "cannot read the WRMSR instruction")
    }
}

/// Route what a vLAPIC register write asked for: IPIs to the targeted vCPUs, timer changes.
fn apic_actions(v: &Arc<Vcpu>, d: &Arc<Domain>, actions: keel_vlapic::Actions) {
    if let Some(ipi) = actions.ipi {
        let sender = keel_guest::cpuid::apic_id(v.id);
        for target in &d.vcpus {
            let received = {
                let mut lapic = target.vlapic.lock();
                if !ipi.targets(sender, &lapic) {
                    continue;
                }
                lapic.deliver(&ipi)
            };
            target.received(received);
        }
    }
    if actions.became_enabled {
        // An upcall raised while the APIC was software-disabled was dropped by it; the guest
        // still has `evtchn_upcall_pending` set and would never get another (Xen re-asserts
        // it here too).
        v.reassert_upcall(d);
        v.kick();
    }
}

/// A write to a read-only grant mapping: as Xen (a "discard write" page), the instruction
/// completes without writing; an instruction keel cannot decode gets #GP.
fn discard_write(v: &Arc<Vcpu>, d: &Arc<Domain>, hw: &mut Hw, gpa: u64) -> Next {
    let mut bytes = [0u8; keel_x86::MAX_INSN_LEN];
    let rip = linear_rip(hw);
    let mut n = bytes.len();
    while n > 0 && guestmem::read_linear(d, hw, rip, &mut bytes[..n], true).is_err() {
        n -= 1;
    }
    match keel_x86::mmio::decode_mmio(&bytes[..n], cpu_mode(hw)) {
        Ok(insn) if matches!(insn.op, MmioOp::Store { .. }) => {
            hw.cpu.set_rip(hw.cpu.rip().wrapping_add(insn.len as u64));
        }
        _ => {
            log::debug!("d{}v{}: write to the read-only grant mapping at {gpa:#x}: #GP", d.id, v.id);
            hw.cpu.inject(Event::Exception(vector::GP, Some(0)));
        }
    }
    Next::Continue
}

/// An access to the xAPIC page: decode the instruction and perform it on the vLAPIC.
fn lapic_mmio(v: &Arc<Vcpu>, d: &Arc<Domain>, hw: &mut Hw, gpa: u64, write: bool) -> Next {
    let mut bytes = [0u8; keel_x86::MAX_INSN_LEN];
    let rip = linear_rip(hw);
    let mut n = bytes.len();
    while n > 0 && guestmem::read_linear(d, hw, rip, &mut bytes[..n], true).is_err() {
        n -= 1;
    }
    let Ok(insn) = keel_x86::mmio::decode_mmio(&bytes[..n], cpu_mode(hw)) else {
        return crash(v, d, hw, format_args!("cannot emulate the instruction accessing the local APIC at {gpa:#x}"));
    };
    let offset = (gpa & 0xfff) as u32;
    let now = time::now_ns();
    match insn.op {
        MmioOp::Load { dest, .. } if !write => {
            let raw = v.vlapic.lock().mmio_read(offset & !0xf, now) as u64;
            let data = raw >> (8 * (offset & 3));
            let old = get_reg(hw, dest);
            match insn.op.load_result(old, data) {
                Some(new) => set_reg(hw, dest, new),
                None => return crash(v, d, hw, format_args!("unsupported local APIC load at {gpa:#x}")),
            }
        }
        MmioOp::Store { size, .. } if write => {
            let Some(value) = insn.op.store_data(|i| get_reg(hw, Reg::gpr(i as u8))) else {
                return crash(v, d, hw, format_args!("unsupported local APIC store at {gpa:#x}"));
            };
            // APIC registers are 32 bits wide, 16-byte aligned, and written as a whole.
            if size >= 4 && offset & 0xf == 0 {
                let actions = v.vlapic.lock().mmio_write(offset, value as u32, now);
                apic_actions(v, d, actions);
            }
        }
        _ => return crash(v, d, hw, format_args!("unsupported local APIC access at {gpa:#x}")),
    }
    hw.cpu.set_rip(hw.cpu.rip().wrapping_add(insn.len as u64));
    Next::Continue
}

/// A general-purpose register.
pub fn get_reg(hw: &Hw, r: Reg) -> u64 {
    let g = &hw.cpu.gprs;
    match r {
        Reg::Rax => hw.cpu.rax(),
        Reg::Rcx => g.rcx,
        Reg::Rdx => g.rdx,
        Reg::Rbx => g.rbx,
        Reg::Rsp => hw.cpu.rsp(),
        Reg::Rbp => g.rbp,
        Reg::Rsi => g.rsi,
        Reg::Rdi => g.rdi,
        Reg::R8 => g.r8,
        Reg::R9 => g.r9,
        Reg::R10 => g.r10,
        Reg::R11 => g.r11,
        Reg::R12 => g.r12,
        Reg::R13 => g.r13,
        Reg::R14 => g.r14,
        Reg::R15 => g.r15,
        Reg::Ah => (hw.cpu.rax() >> 8) & 0xff,
        Reg::Ch => (g.rcx >> 8) & 0xff,
        Reg::Dh => (g.rdx >> 8) & 0xff,
        Reg::Bh => (g.rbx >> 8) & 0xff,
    }
}

/// Write a register's full new value (the decoder already applied x86's merge rules).
fn set_reg(hw: &mut Hw, r: Reg, new: u64) {
    let value = new;
    let g = &mut hw.cpu.gprs;
    match r {
        Reg::Rax => hw.cpu.set_rax(new),
        Reg::Rcx => g.rcx = new,
        Reg::Rdx => g.rdx = new,
        Reg::Rbx => g.rbx = new,
        Reg::Rsp => hw.cpu.vmcb_mut().set_rsp(new),
        Reg::Rbp => g.rbp = new,
        Reg::Rsi => g.rsi = new,
        Reg::Rdi => g.rdi = new,
        Reg::R8 => g.r8 = new,
        Reg::R9 => g.r9 = new,
        Reg::R10 => g.r10 = new,
        Reg::R11 => g.r11 = new,
        Reg::R12 => g.r12 = new,
        Reg::R13 => g.r13 = new,
        Reg::R14 => g.r14 = new,
        Reg::R15 => g.r15 = new,
        Reg::Ah => hw.cpu.set_rax((hw.cpu.rax() & !0xff00) | ((value & 0xff) << 8)),
        Reg::Ch => g.rcx = (g.rcx & !0xff00) | ((value & 0xff) << 8),
        Reg::Dh => g.rdx = (g.rdx & !0xff00) | ((value & 0xff) << 8),
        Reg::Bh => g.rbx = (g.rbx & !0xff00) | ((value & 0xff) << 8),
    }
}

/// Port I/O: 0xE9 is the debug console; everything else reads all-ones and drops writes.
fn port_io(v: &Arc<Vcpu>, d: &Arc<Domain>, hw: &mut Hw, io: IoExit) -> Next {
    let size = io.size as usize;
    let ones = if size == 4 { 0xffff_ffff } else { (1u64 << (8 * size)) - 1 };
    if !io.string {
        if io.input {
            let value = if io.port == 0xe9 { 0xe9 } else { ones };
            let rax = hw.cpu.rax();
            let merged = if size == 4 { value } else { (rax & !ones) | value };
            hw.cpu.set_rax(merged);
        } else if io.port == 0xe9 {
            let b = (hw.cpu.rax() & ones).to_le_bytes();
            d.console_write(&b[..size]);
        }
        hw.cpu.set_rip(io.next_rip);
        return Next::Continue;
    }
    // INS/OUTS: walk the guest's buffer (DS:RSI for OUTS, ES:RDI for INS), honouring REP,
    // the direction flag and the address size.
    let mask = match io.addr_size {
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    };
    let mut count = if io.rep { hw.cpu.gprs.rcx & mask } else { 1 };
    let step = if hw.cpu.rflags() & (1 << 10) != 0 { (size as u64).wrapping_neg() } else { size as u64 };
    // Bound the work done in one exit; REP resumes (RIP unchanged) if more remains.
    let mut budget = 4096;
    while count > 0 && budget > 0 {
        if io.input {
            let addr = hw.cpu.segment_base(Seg::Es).wrapping_add(hw.cpu.gprs.rdi & mask);
            let value = ones.to_le_bytes();
            if guestmem::write_linear(d, hw, addr, &value[..size]).is_err() {
                return crash(v, d, hw, format_args!("INS to an address it cannot write ({addr:#x})"));
            }
            hw.cpu.gprs.rdi = (hw.cpu.gprs.rdi & !mask) | (hw.cpu.gprs.rdi.wrapping_add(step) & mask);
        } else {
            let addr = hw.cpu.segment_base(Seg::Ds).wrapping_add(hw.cpu.gprs.rsi & mask);
            let mut buf = [0u8; 4];
            if guestmem::read_linear(d, hw, addr, &mut buf[..size], false).is_err() {
                return crash(v, d, hw, format_args!("OUTS from an address it cannot read ({addr:#x})"));
            }
            if io.port == 0xe9 {
                d.console_write(&buf[..size]);
            }
            hw.cpu.gprs.rsi = (hw.cpu.gprs.rsi & !mask) | (hw.cpu.gprs.rsi.wrapping_add(step) & mask);
        }
        count -= 1;
        budget -= 1;
    }
    if io.rep {
        hw.cpu.gprs.rcx = (hw.cpu.gprs.rcx & !mask) | (count & mask);
    }
    if count == 0 {
        hw.cpu.set_rip(io.next_rip);
    }
    Next::Continue
}
