//! The suite's small framework: failure messages, typed hypercall wrappers, pages the probe
//! owns, the local APIC, and time (TSC and pvclock).
//!
//! Every check is a function returning [`R`]: `Ok(())` or a [`Msg`] saying what differed, so a
//! check reads as the list of facts it establishes (`ensure!(rc == -ENOSYS, "...")`).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use pvh_rt::xen::{cpuid, hypercall, Via};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Why a check failed (a bounded line of text: the probe has no allocator).
pub struct Msg {
    buf: [u8; 240],
    len: usize,
}

impl Msg {
    /// A message from format arguments (cut at 240 bytes).
    pub fn new(args: fmt::Arguments<'_>) -> Self {
        let mut m = Msg { buf: [0; 240], len: 0 };
        let _ = m.write_fmt(args);
        m
    }
}

impl Write for Msg {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(core::str::from_utf8(&self.buf[..self.len]).unwrap_or("(bad utf-8)"))
    }
}

/// A failure message handed from a task on another vCPU to the check that posted it (the
/// task mailbox's release and acquire order the bytes).
pub struct MsgSlot {
    bytes: [AtomicU8; 240],
    len: AtomicUsize,
}

impl MsgSlot {
    /// An empty slot.
    pub const fn new() -> Self {
        MsgSlot { bytes: [const { AtomicU8::new(0) }; 240], len: AtomicUsize::new(0) }
    }

    /// Leave `m` in the slot.
    pub fn put(&self, m: &Msg) {
        for (slot, &b) in self.bytes.iter().zip(&m.buf[..m.len]) {
            slot.store(b, Ordering::Relaxed);
        }
        self.len.store(m.len, Ordering::Release);
    }

    /// The message left in the slot.
    pub fn get(&self) -> Msg {
        let len = self.len.load(Ordering::Acquire).min(self.bytes.len());
        let mut m = Msg { buf: [0; 240], len };
        for (b, slot) in m.buf.iter_mut().zip(&self.bytes[..len]) {
            *b = slot.load(Ordering::Relaxed);
        }
        m
    }
}

/// A check's result.
pub type R = Result<(), Msg>;

/// Fail the check with a formatted message.
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::abi::fw::Msg::new(format_args!($($arg)*)))
    };
}

/// Fail the check with a formatted message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::abi::fw::fail!($($arg)*);
        }
    };
}

pub(crate) use {ensure, fail};

// Errno values (Xen's public errno.h, negated as hypercalls return them).
pub const EPERM: i64 = -1;
pub const ENOENT: i64 = -2;
pub const ESRCH: i64 = -3;
pub const ENXIO: i64 = -6;
pub const E2BIG: i64 = -7;
pub const EFAULT: i64 = -14;
pub const EBUSY: i64 = -16;
pub const EEXIST: i64 = -17;
pub const EINVAL: i64 = -22;
pub const ENOSPC: i64 = -28;
pub const ENOSYS: i64 = -38;
pub const ENODATA: i64 = -61;
pub const ENOBUFS: i64 = -105;
pub const EOPNOTSUPP: i64 = -95;

/// Hypercall numbers.
pub mod nr {
    pub const MEMORY_OP: u64 = 12;
    pub const MULTICALL: u64 = 13;
    pub const XEN_VERSION: u64 = 17;
    pub const CONSOLE_IO: u64 = 18;
    pub const GRANT_TABLE_OP: u64 = 20;
    pub const VM_ASSIST: u64 = 21;
    pub const VCPU_OP: u64 = 24;
    pub const SCHED_OP: u64 = 29;
    pub const EVENT_CHANNEL_OP: u64 = 32;
    pub const PHYSDEV_OP: u64 = 33;
    pub const HVM_OP: u64 = 34;
}

/// A guest-linear address no page table of the probe maps (pvh-rt maps only the first 4 GiB):
/// the hypervisor can neither read nor write through it, so passing it is always safe.
pub const UNMAPPED: u64 = 0xdead_0000_0000;

static VIA: AtomicU8 = AtomicU8::new(0);

/// Choose the hypercall instruction the CPU vendor implies (VMMCALL on AMD and Hygon, VMCALL
/// elsewhere), as Linux does.
pub fn init_via() {
    let v = cpuid(0, 0);
    let amd = v[1] == u32::from_le_bytes(*b"Auth") || v[1] == u32::from_le_bytes(*b"Hygo");
    VIA.store(if amd { 1 } else { 2 }, Ordering::Relaxed);
}

fn via() -> Via {
    match VIA.load(Ordering::Relaxed) {
        2 => Via::Vmcall,
        _ => Via::Vmmcall,
    }
}

/// Hypercall `nr` with raw arguments.
///
/// # Safety
/// Every pointer among `a` must be one the hypervisor may read and write as the hypercall
/// defines (or [`UNMAPPED`]).
pub unsafe fn raw(nr: u64, a: [u64; 5]) -> i64 {
    // SAFETY: forwarded to the caller.
    unsafe { hypercall(via(), nr, a) }
}

/// Hypercall `nr` whose arguments are all plain numbers (no pointer).
pub fn num(nr: u64, a: [u64; 5]) -> i64 {
    // SAFETY: no argument is a pointer the hypervisor could write through; numbers the
    // hypercall reads as addresses are either null or [`UNMAPPED`] at the call sites.
    unsafe { raw(nr, a) }
}

/// Structures without guest handles inside: passing one by reference lets the hypervisor
/// write only inside it.
pub trait Plain: IntoBytes + FromBytes + Immutable {}

macro_rules! plain {
    ($($t:ty),* $(,)?) => { $(impl Plain for $t {})* };
}

use xen_abi::{event_channel as ev, grant_table as gt, hvm, memory as mem, sched, vcpu, version};
plain!(
    ev::EvtchnAllocUnbound,
    ev::EvtchnBindInterdomain,
    ev::EvtchnBindVirq,
    ev::EvtchnBindIpi,
    ev::EvtchnClose,
    ev::EvtchnSend,
    ev::EvtchnStatus,
    ev::EvtchnBindVcpu,
    ev::EvtchnUnmask,
    ev::EvtchnReset,
    ev::EvtchnInitControl,
    ev::EvtchnExpandArray,
    ev::EvtchnSetPriority,
    gt::GnttabQuerySize,
    gt::GnttabSetVersion,
    gt::GnttabGetVersion,
    gt::GnttabMapGrantRef,
    gt::GnttabUnmapGrantRef,
    gt::GnttabCopy,
    hvm::XenHvmParam,
    hvm::XenHvmEvtchnUpcallVector,
    hvm::XenHvmPagetableDying,
    hvm::XenHvmGetTime,
    mem::XenAddToPhysmap,
    mem::XenRemoveFromPhysmap,
    sched::SchedShutdown,
    sched::SchedRemoteShutdown,
    sched::SchedWatchdog,
    vcpu::VcpuRegisterVcpuInfo,
    vcpu::VcpuSetPeriodicTimer,
    vcpu::VcpuSetSingleshotTimer,
    vcpu::VcpuRunstateInfo,
    vcpu::VcpuGetPhysid,
    vcpu::VcpuHvmContext,
    version::XenFeatureInfo,
    version::XenPlatformParameters,
    version::XenCompileInfo,
    u16,
    u32,
    u64,
    [u8; 16],
    [u8; 64],
    [u8; 1024],
);

/// `hypercall(nr, cmd, &mut arg)`: the usual shape of a sub-op with one argument structure.
pub fn op<T: Plain>(nr: u64, cmd: impl Into<u64>, arg: &mut T) -> i64 {
    // SAFETY: `arg` is a valid, exclusively borrowed `T` without embedded pointers; the
    // hypervisor reads and writes at most its bytes.
    unsafe { raw(nr, [cmd.into(), arg as *mut T as u64, 0, 0, 0]) }
}

/// `grant_table_op(cmd, &mut arg, 1)`.
pub fn gnttab<T: Plain>(cmd: impl Into<u64>, arg: &mut T) -> i64 {
    gnttab_n(cmd, core::slice::from_mut(arg))
}

/// `grant_table_op(cmd, args, args.len())`.
pub fn gnttab_n<T: Plain>(cmd: impl Into<u64>, args: &mut [T]) -> i64 {
    // SAFETY: `args` is a valid, exclusively borrowed array of `T` without embedded pointers.
    unsafe { raw(nr::GRANT_TABLE_OP, [cmd.into(), args.as_mut_ptr() as u64, args.len() as u64, 0, 0]) }
}

/// `vcpu_op(cmd, vcpu, &mut arg)`.
pub fn vcpu_op<T: Plain>(cmd: impl Into<u64>, vcpu: u32, arg: &mut T) -> i64 {
    // SAFETY: as in `op`.
    unsafe { raw(nr::VCPU_OP, [cmd.into(), vcpu as u64, arg as *mut T as u64, 0, 0]) }
}

/// `vcpu_op(cmd, vcpu, NULL)`.
pub fn vcpu_op0(cmd: impl Into<u64>, vcpu: u32) -> i64 {
    num(nr::VCPU_OP, [cmd.into(), vcpu as u64, 0, 0, 0])
}

/// `event_channel_op(cmd, &mut arg)`.
pub fn evtchn<T: Plain>(cmd: impl Into<u64>, arg: &mut T) -> i64 {
    op(nr::EVENT_CHANNEL_OP, cmd, arg)
}

/// `memory_op(cmd, &mut arg)`.
pub fn memop<T: Plain>(cmd: impl Into<u64>, arg: &mut T) -> i64 {
    op(nr::MEMORY_OP, cmd, arg)
}

/// `hvm_op(cmd, &mut arg)`.
pub fn hvmop<T: Plain>(cmd: impl Into<u64>, arg: &mut T) -> i64 {
    op(nr::HVM_OP, cmd, arg)
}

/// `sched_op(cmd, &mut arg)`.
pub fn schedop<T: Plain>(cmd: impl Into<u64>, arg: &mut T) -> i64 {
    op(nr::SCHED_OP, cmd, arg)
}

/// A page-aligned page of the probe's own memory (identity-mapped: its address is its
/// guest-physical address).
#[repr(C, align(4096))]
pub struct Page(pub [u8; 4096]);

impl Page {
    /// An all-zero page.
    pub const fn zeroed() -> Self {
        Page([0; 4096])
    }
}

/// Volatile read of byte `i` of the page at `addr`.
pub fn peek(addr: u64, i: usize) -> u8 {
    // SAFETY: callers pass pages of the probe that are mapped (RAM or a frame the hypervisor
    // put there); the read is within the page.
    unsafe { core::ptr::read_volatile((addr + (i & 0xfff) as u64) as *const u8) }
}

/// Volatile write of byte `i` of the page at `addr`.
pub fn poke(addr: u64, i: usize, v: u8) {
    // SAFETY: as in `peek`, for writable pages of the probe.
    unsafe { core::ptr::write_volatile((addr + (i & 0xfff) as u64) as *mut u8, v) }
}

/// Fill the page at `addr` with a pattern derived from `seed`.
pub fn fill(addr: u64, seed: u8) {
    for i in 0..4096 {
        poke(addr, i, seed.wrapping_add((i as u8).wrapping_mul(7)));
    }
}

/// Whether the page at `addr` holds the pattern of `seed` (bytes [from, to)).
pub fn holds(addr: u64, seed: u8, from: usize, to: usize) -> bool {
    (from..to).all(|i| peek(addr, i) == seed.wrapping_add((i as u8).wrapping_mul(7)))
}

/// The TSC.
pub fn rdtsc() -> u64 {
    crate::checks::rdtsc()
}

/// TSC ticks per millisecond.
pub fn tsc_per_ms() -> u64 {
    crate::checks::tsc_per_ms()
}

/// Run `f` with interrupts enabled (events are delivered), then disable them again.
pub fn with_irqs<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: every vector the hypervisor may deliver has a handler (see `events::init`).
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    let r = f();
    // SAFETY: interrupts off again.
    unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
    r
}

/// The vector of the local APIC timer tick that bounds [`wait_until`]'s halts.
pub const IDLE_TICK_VECTOR: u8 = 0x42;
/// The idle tick's period in bus cycles: 10 ms at the 100 MHz APIC bus.
const IDLE_TICK_COUNT: u32 = 1_000_000;

/// The idle tick's handler: nothing to do but acknowledge it.
pub fn idle_tick(_: &mut pvh_rt::idt::Frame) {
    eoi();
}

/// This vCPU's idle tick, running while the value lives: a periodic 10 ms local APIC timer
/// that bounds each halt of a wait.
///
/// Dropping it stops the timer (initial count 0) and only then masks it. Masking alone is
/// not enough: Xen 4.17 turns a periodic local APIC timer whose LVT entry is rewritten as
/// masked one-shot into a one-shot for the rest of the period, and its expiry kicks the vCPU
/// whether or not the entry is masked (`pt_timer_fn` calls `vcpu_kick`), which ends a
/// `SCHEDOP_block` or `SCHEDOP_poll` of a later check milliseconds too early. A tick already
/// pending is taken before the drop returns (an interrupt window of one instruction).
pub struct IdleTick(());

impl IdleTick {
    /// Start this vCPU's idle tick.
    pub fn start() -> Self {
        lapic_write(0x3e0, 0xb); // divide by 1
        lapic_write(0x320, IDLE_TICK_VECTOR as u32 | (1 << 17)); // periodic
        lapic_write(0x380, IDLE_TICK_COUNT);
        IdleTick(())
    }

    /// Halt with interrupts enabled until `done()` or the TSC passes `end`; returns whether
    /// `done()` held. Nothing that leaves the guest runs with interrupts off: the TSC (which a
    /// hypervisor may emulate, with an exit) is read with them on and `done()` asked again
    /// after it, so an upcall that arrives meanwhile is taken at once, not after the exit.
    pub fn wait(&self, end: u64, mut done: impl FnMut() -> bool) -> bool {
        loop {
            if done() {
                return true;
            }
            if with_irqs(rdtsc) > end {
                return done();
            }
            if done() {
                return true;
            }
            // SAFETY: halt with interrupts on (STI's shadow covers HLT, so an interrupt
            // arriving in between still ends it); every vector that can arrive has a handler.
            unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
        }
    }
}

impl Drop for IdleTick {
    fn drop(&mut self) {
        // Stopped (initial count 0), then masked.
        lapic_write(0x380, 0);
        lapic_write(0x320, 1 << 16);
        // SAFETY: one instruction with interrupts on, for a tick that was already pending;
        // every vector that can arrive has a handler.
        unsafe { core::arch::asm!("sti", "nop", "cli", options(nomem, nostack)) };
    }
}

/// Wait with interrupts enabled until `done()` or `ms` milliseconds of TSC time pass; returns
/// whether `done()` held. The vCPU halts between checks, as an idle guest does, so the
/// hypervisor sees it idle and delivers what is pending at once; the [`IdleTick`] bounds each
/// halt, and is stopped again at the end.
pub fn wait_until(ms: u64, done: impl FnMut() -> bool) -> bool {
    let end = rdtsc() + ms * tsc_per_ms();
    IdleTick::start().wait(end, done)
}

/// Wait `us` microseconds with interrupts enabled (halting, see [`wait_until`]).
pub fn pause_us(us: u64) {
    let end = rdtsc() + us * tsc_per_ms() / 1000;
    wait_until(us.div_ceil(1000) + 1, || rdtsc() >= end);
}

// The local APIC, in x2APIC mode (MSRs) when this CPU is in it, else through its page.

const LAPIC: u64 = 0xfee0_0000;

/// Whether this CPU's local APIC is in x2APIC mode.
pub fn x2apic() -> bool {
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU.
    unsafe { pvh_rt::xen::rdmsr(0x1b) & (1 << 10) != 0 }
}

/// Read local APIC register `reg` (xAPIC offset, e.g. 0x100 for ISR 0).
pub fn lapic_read(reg: u32) -> u32 {
    if x2apic() {
        // SAFETY: x2APIC MSRs 0x800 + reg/16 exist in x2APIC mode.
        unsafe { pvh_rt::xen::rdmsr(0x800 + (reg >> 4)) as u32 }
    } else {
        // SAFETY: the local APIC page, identity-mapped by pvh-rt.
        unsafe { core::ptr::read_volatile((LAPIC + reg as u64) as *const u32) }
    }
}

/// Write local APIC register `reg`.
pub fn lapic_write(reg: u32, v: u32) {
    if x2apic() {
        // SAFETY: as in `lapic_read`.
        unsafe { pvh_rt::xen::wrmsr(0x800 + (reg >> 4), v as u64) };
    } else {
        // SAFETY: as in `lapic_read`.
        unsafe { core::ptr::write_volatile((LAPIC + reg as u64) as *mut u32, v) };
    }
}

/// Arm this vCPU's local APIC timer once: `vector`, divide by 1, `count` bus cycles.
pub fn lapic_timer_oneshot(vector: u8, count: u32) {
    lapic_write(0x3e0, 0xb);
    lapic_write(0x320, vector as u32);
    lapic_write(0x380, count);
}

/// End of interrupt.
pub fn eoi() {
    lapic_write(0xb0, 0);
}

/// The vectors requested at this local APIC (its IRR), for failure messages.
pub struct Irr([u32; 8]);

impl Irr {
    /// Read this vCPU's IRR.
    pub fn read() -> Self {
        let mut irr = [0; 8];
        for (i, w) in irr.iter_mut().enumerate() {
            *w = lapic_read(0x200 + 0x10 * i as u32);
        }
        Irr(irr)
    }
}

impl fmt::Display for Irr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IRR [")?;
        let mut first = true;
        for v in (0..256).filter(|&v| self.0[v / 32] & (1 << (v % 32)) != 0) {
            write!(f, "{}{v:#x}", if first { "" } else { " " })?;
            first = false;
        }
        write!(f, "]")
    }
}

/// Whether `vector` is in service at this local APIC.
pub fn in_service(vector: u8) -> bool {
    lapic_read(0x100 + 0x10 * (vector as u32 / 32)) & (1 << (vector % 32)) != 0
}
