//! Hypercalls: one declarative table (number, name, typed arguments, handler) and the
//! dispatcher the VMMCALL/VMCALL exit calls.
//!
//! Calling convention (Xen's, 64-bit HVM): RAX = number, arguments in RDI, RSI, RDX, R10, R8,
//! result in RAX (negative = -errno). A guest in 32-bit mode passes EBX, ECX, EDX, ESI, EDI.
//! Hypercalls from CPL > 0 fail with -EPERM. Every pointer argument is a guest virtual address
//! (`Gva`) and is only ever reached through `guestmem`'s checked copies. An unknown hypercall
//! or sub-op returns -ENOSYS, as Xen does.

mod console_io;
mod event_channel_op;
mod grant_table_op;
mod hvm_op;
mod memory_op;
mod multicall;
mod physdev_op;
mod sched_op;
mod vcpu_op;
mod vm_assist;
mod xen_version;

use alloc::sync::Arc;

use xen_abi::errno::Errno;

use crate::dom::exits::Next;
use crate::dom::guestmem::{self, Fault};
use crate::dom::vcpu::{Hw, Vcpu};
use crate::dom::Domain;

/// A guest virtual address passed as a hypercall argument.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Gva(pub u64);

/// The context a handler runs in: the calling vCPU, its domain, its registers.
pub struct Call<'a> {
    /// The calling vCPU.
    pub vcpu: &'a Arc<Vcpu>,
    /// Its domain.
    pub domain: &'a Arc<Domain>,
    /// Its hardware state (registers, for guest-memory translation).
    pub hw: &'a mut Hw,
    /// When the hypercall started (monotonic ns), for preemption.
    pub started_ns: u64,
    /// Inside a multicall (which may not nest).
    pub in_multicall: bool,
    /// The guest could take an interrupt when it made the call (IF set, no interrupt shadow).
    pub irqs_open: bool,
}

/// How long a hypercall may run before a preemptible one continues later (Xen preempts when
/// a softirq is pending; keel when the CPU must reschedule, or after this).
const PREEMPT_AFTER_NS: u64 = 1_000_000;

impl Call<'_> {
    /// Whether a long hypercall should stop here and continue later (see `continuation`).
    pub fn preempt_due(&self) -> bool {
        crate::arch::x86::percpu::this_cpu().need_resched.load(core::sync::atomic::Ordering::Acquire)
            || crate::arch::x86::time::now_ns().saturating_sub(self.started_ns) > PREEMPT_AFTER_NS
    }

    /// Continue this hypercall later with these arguments: the guest re-executes the
    /// hypercall instruction with them, as after Xen's `hypercall_create_continuation` (so
    /// other vCPUs, interrupts and preemption get their turn in between).
    pub fn continuation(&self, args: [u64; 5]) -> Outcome {
        Outcome::Continue(args)
    }

    /// Read a hypercall argument structure from guest memory (-EFAULT if it cannot be).
    pub fn read<T: zerocopy::FromBytes + zerocopy::IntoBytes>(&self, at: Gva) -> Result<T, Errno> {
        guestmem::read_struct(self.domain, self.hw, at.0).map_err(efault)
    }

    /// Write a hypercall result structure to guest memory.
    pub fn write<T: zerocopy::IntoBytes + zerocopy::Immutable>(&self, at: Gva, v: &T) -> Result<(), Errno> {
        guestmem::write_struct(self.domain, self.hw, at.0, v).map_err(efault)
    }

    /// Read raw bytes from guest memory.
    pub fn read_bytes(&self, at: Gva, buf: &mut [u8]) -> Result<(), Errno> {
        guestmem::read_linear(self.domain, self.hw, at.0, buf, false).map_err(efault)
    }

    /// Write raw bytes to guest memory.
    pub fn write_bytes(&self, at: Gva, bytes: &[u8]) -> Result<(), Errno> {
        guestmem::write_linear(self.domain, self.hw, at.0, bytes).map_err(efault)
    }
}

/// The domain a hypercall names, as Xen's `rcu_lock_domain_by_any_id`: DOMID_SELF is the
/// caller; an unknown id is -ESRCH.
pub fn domain_by_any_id(c: &Call<'_>, id: xen_abi::domid::DomId) -> Result<Arc<Domain>, Errno> {
    if id == xen_abi::domid::DomId::SELF || id.0 == c.domain.id {
        return Ok(c.domain.clone());
    }
    crate::dom::get(id.0).ok_or(Errno::ESRCH)
}

/// The domain a hypercall acts on, when the caller may only act on itself unless privileged
/// (Xen's XSM_TARGET check): another domain from an unprivileged caller is -EPERM.
pub fn target_domain(c: &Call<'_>, id: xen_abi::domid::DomId) -> Result<Arc<Domain>, Errno> {
    let d = domain_by_any_id(c, id)?;
    if d.id != c.domain.id && !c.domain.privileged {
        return Err(Errno::EPERM);
    }
    Ok(d)
}

fn efault(_: Fault) -> Errno {
    Errno::EFAULT
}

/// What a handler asks for besides its return value.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    /// Return this value (>= 0) in RAX.
    Ret(i64),
    /// The vCPU blocks (RAX = 0 when it resumes).
    Block,
    /// The vCPU blocks at most until this system time (SCHEDOP_poll; RAX = 0 when it resumes).
    BlockUntil(Option<u64>),
    /// The vCPU yields (RAX = 0).
    Yield,
    /// The vCPU's domain stopped (shutdown): do not resume it.
    Stop,
    /// The calling vCPU went down (VCPUOP_down on itself): RAX = 0 when it is brought up.
    Offline,
    /// Re-execute the hypercall with these arguments (a continuation).
    Continue([u64; 5]),
}

/// A handler's result: an outcome, or Xen's errno (RAX = -errno).
pub type HcResult = Result<Outcome, Errno>;

/// Conversion of a raw 64-bit argument register into a handler's parameter type, with C's
/// truncation for the narrower types Xen declares (`unsigned int cmd`).
trait FromArg {
    fn from_arg(raw: u64) -> Self;
}

impl FromArg for u64 {
    fn from_arg(raw: u64) -> Self {
        raw
    }
}

impl FromArg for u32 {
    fn from_arg(raw: u64) -> Self {
        raw as u32
    }
}

impl FromArg for Gva {
    fn from_arg(raw: u64) -> Self {
        Gva(raw)
    }
}

type Handler = fn(&mut Call<'_>, [u64; 5]) -> HcResult;

/// One row of the table.
struct Entry {
    nr: u64,
    name: &'static str,
    handler: Handler,
}

/// The hypercall table: `number => handler(argument: type, ...)`. The macro generates, per
/// row, the decoding of the argument registers into the declared types.
macro_rules! hypercalls {
    ($($nr:literal => $module:ident :: $func:ident ( $($arg:ident : $ty:ty),* );)*) => {
        const TABLE: &[Entry] = &[
            $(Entry {
                nr: $nr,
                name: stringify!($module),
                handler: {
                    #[allow(unused_variables, unused_mut, unused_assignments)]
                    fn decode(c: &mut Call<'_>, a: [u64; 5]) -> HcResult {
                        let mut i = 0;
                        $(let $arg = <$ty as FromArg>::from_arg(a[i]); i += 1;)*
                        $module::$func(c, $($arg),*)
                    }
                    decode
                },
            },)*
        ];
    };
}

hypercalls! {
    12 => memory_op::memory_op(cmd: u64, arg: Gva);
    13 => multicall::multicall(list: Gva, nr_calls: u32);
    17 => xen_version::xen_version(cmd: u32, arg: Gva);
    18 => console_io::console_io(cmd: u32, count: u32, buf: Gva);
    20 => grant_table_op::grant_table_op(cmd: u32, uop: Gva, count: u32);
    21 => vm_assist::vm_assist(cmd: u32, kind: u32);
    24 => vcpu_op::vcpu_op(cmd: u32, vcpuid: u32, arg: Gva);
    29 => sched_op::sched_op(cmd: u32, arg: Gva);
    32 => event_channel_op::event_channel_op(cmd: u32, arg: Gva);
    33 => physdev_op::physdev_op(cmd: u32, arg: Gva);
    34 => hvm_op::hvm_op(op: u64, arg: Gva);
}

/// Run hypercall `nr` with `args` in the context of `c` (the dispatcher, and multicall for
/// each of its entries).
pub fn invoke(c: &mut Call<'_>, nr: u64, args: [u64; 5]) -> HcResult {
    match TABLE.iter().find(|e| e.nr == nr) {
        Some(e) => (e.handler)(c, args),
        None => Err(Errno::ENOSYS),
    }
}

/// Name of hypercall `nr` (for traces).
pub fn name(nr: u64) -> &'static str {
    TABLE.iter().find(|e| e.nr == nr).map_or("unknown", |e| e.name)
}

/// Handle the hypercall the vCPU just made (RIP already past the instruction).
pub fn dispatch(v: &Arc<Vcpu>, d: &Arc<Domain>, hw: &mut Hw, irqs_open: bool) -> Next {
    let nr = hw.cpu.rax();
    if hw.cpu.cpl() != 0 {
        hw.cpu.set_rax(Errno::EPERM.as_ret() as u64);
        return Next::Continue;
    }
    let g = &hw.cpu.gprs;
    let long = hw.cpu.cs().long;
    let args = if long {
        [g.rdi, g.rsi, g.rdx, g.r10, g.r8]
    } else {
        [g.rbx & 0xffff_ffff, g.rcx & 0xffff_ffff, g.rdx & 0xffff_ffff, g.rsi & 0xffff_ffff, g.rdi & 0xffff_ffff]
    };
    let nr = if long { nr } else { nr & 0xffff_ffff };
    let result = match TABLE.iter().find(|e| e.nr == nr) {
        Some(e) => (e.handler)(
            &mut Call {
                vcpu: v,
                domain: d,
                hw,
                started_ns: crate::arch::x86::time::now_ns(),
                in_multicall: false,
                irqs_open,
            },
            args,
        ),
        None => Err(Errno::ENOSYS),
    };
    match result {
        Ok(Outcome::Ret(r)) => {
            hw.cpu.set_rax(r as u64);
            Next::Continue
        }
        Ok(Outcome::Block) => {
            hw.cpu.set_rax(0);
            v.begin_block();
            if v.block(None, irqs_open) {
                Next::Block
            } else {
                Next::Continue
            }
        }
        Ok(Outcome::BlockUntil(deadline)) => {
            hw.cpu.set_rax(0);
            // `poll` called `begin_block` before it looked at the ports.
            if v.block(deadline, irqs_open) {
                Next::Block
            } else {
                v.polling.store(0, core::sync::atomic::Ordering::Release);
                Next::Continue
            }
        }
        Ok(Outcome::Yield) => {
            hw.cpu.set_rax(0);
            Next::Yield
        }
        Ok(Outcome::Stop) => Next::Stop,
        Ok(Outcome::Offline) => {
            hw.cpu.set_rax(0);
            Next::Stop
        }
        Ok(Outcome::Continue(a)) => {
            // Back onto the 3-byte VMMCALL, number and arguments in place again.
            hw.cpu.set_rax(nr);
            let g = &mut hw.cpu.gprs;
            if long {
                (g.rdi, g.rsi, g.rdx, g.r10, g.r8) = (a[0], a[1], a[2], a[3], a[4]);
            } else {
                (g.rbx, g.rcx, g.rdx, g.rsi, g.rdi) = (a[0], a[1], a[2], a[3], a[4]);
            }
            hw.cpu.set_rip(hw.cpu.rip().wrapping_sub(3));
            Next::Continue
        }
        Err(e) => {
            hw.cpu.set_rax(e.as_ret() as u64);
            Next::Continue
        }
    }
}
