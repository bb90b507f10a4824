//! Hypercalls: one declarative table (number, name, typed arguments, handler) and the
//! dispatcher the VMMCALL/VMCALL exit calls.
//!
//! Calling convention (Xen's, 64-bit HVM): RAX = number, arguments in RDI, RSI, RDX, R10, R8,
//! result in RAX (negative = -errno). A guest in 32-bit mode passes EBX, ECX, EDX, ESI, EDI.
//! Hypercalls from CPL > 0 fail with -EPERM. Every pointer argument is a guest virtual address
//! (`Gva`) and is only ever reached through `guestmem`'s checked copies. An unknown hypercall
//! or sub-op returns -ENOSYS, as Xen does.

mod console_io;
mod memory_op;
mod sched_op;
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
}

impl Call<'_> {
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

fn efault(_: Fault) -> Errno {
    Errno::EFAULT
}

/// What a handler asks for besides its return value.
pub enum Outcome {
    /// Return this value (>= 0) in RAX.
    Ret(i64),
    /// The vCPU blocks (RAX = 0 when it resumes).
    Block,
    /// The vCPU yields (RAX = 0).
    Yield,
    /// The vCPU's domain stopped (shutdown): do not resume it.
    Stop,
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
    17 => xen_version::xen_version(cmd: u32, arg: Gva);
    18 => console_io::console_io(cmd: u32, count: u32, buf: Gva);
    29 => sched_op::sched_op(cmd: u32, arg: Gva);
}

/// Name of hypercall `nr` (for traces).
pub fn name(nr: u64) -> &'static str {
    TABLE.iter().find(|e| e.nr == nr).map_or("unknown", |e| e.name)
}

/// Handle the hypercall the vCPU just made (RIP already past the instruction).
pub fn dispatch(v: &Arc<Vcpu>, d: &Arc<Domain>, hw: &mut Hw) -> Next {
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
        Some(e) => (e.handler)(&mut Call { vcpu: v, domain: d, hw }, args),
        None => Err(Errno::ENOSYS),
    };
    match result {
        Ok(Outcome::Ret(r)) => {
            hw.cpu.set_rax(r as u64);
            Next::Continue
        }
        Ok(Outcome::Block) => {
            hw.cpu.set_rax(0);
            if v.block(None) {
                Next::Block
            } else {
                Next::Continue
            }
        }
        Ok(Outcome::Yield) => {
            hw.cpu.set_rax(0);
            Next::Yield
        }
        Ok(Outcome::Stop) => Next::Stop,
        Err(e) => {
            hw.cpu.set_rax(e.as_ret() as u64);
            Next::Continue
        }
    }
}
