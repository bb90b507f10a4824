//! Reaching guest memory the way the guest names it: every pointer a guest hands keel (a
//! hypercall argument, a string I/O buffer, the instruction at RIP) is a guest *virtual*
//! address. It is translated through the guest's own page tables (walked in guest-physical
//! memory through the p2m) and then through the p2m, page by page, with every step checked.
//! Nothing here dereferences a guest-supplied value directly: failures are errors.

use keel_mm::{Gpa, PAGE_SIZE};
use keel_x86::paging::{self, Access as WalkAccess, GuestMemError, GuestPhys, PagingMode, WalkError};

use super::memory::DomainMemory;
use super::vcpu::Hw;
use super::Domain;

/// A guest access that failed.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Fault {
    /// The guest's page tables do not allow the access (the guest would take this #PF).
    PageFault {
        /// The linear address.
        linear: u64,
        /// The #PF error code.
        error_code: u32,
    },
    /// The address is non-canonical, or the translation ends outside the domain's memory.
    Bad,
}

struct PhysView<'a>(&'a DomainMemory);

impl GuestPhys for PhysView<'_> {
    fn read_u64(&self, gpa: Gpa) -> Result<u64, GuestMemError> {
        let mut b = [0u8; 8];
        self.0.read(gpa, &mut b).map_err(|_| GuestMemError)?;
        Ok(u64::from_le_bytes(b))
    }

    fn read_u32(&self, gpa: Gpa) -> Result<u32, GuestMemError> {
        let mut b = [0u8; 4];
        self.0.read(gpa, &mut b).map_err(|_| GuestMemError)?;
        Ok(u32::from_le_bytes(b))
    }

    fn compare_exchange_u32(&self, gpa: Gpa, current: u32, new: u32) -> Result<bool, GuestMemError> {
        self.0.compare_exchange(gpa, current as u64, new as u64, false).map_err(|_| GuestMemError)
    }

    fn compare_exchange_u64(&self, gpa: Gpa, current: u64, new: u64) -> Result<bool, GuestMemError> {
        self.0.compare_exchange(gpa, current, new, true).map_err(|_| GuestMemError)
    }
}

fn mode(hw: &Hw) -> PagingMode {
    let (cr0, cr3, cr4, efer) = hw.cpu.control_regs();
    PagingMode { cr0, cr3, cr4, efer, maxphyaddr: 48 }
}

/// Translate one linear address for `access`.
fn translate(mem: &DomainMemory, hw: &Hw, linear: u64, access: WalkAccess) -> Result<Gpa, Fault> {
    paging::translate(&PhysView(mem), &mode(hw), linear, access).map_err(|e| match e {
        WalkError::PageFault { error_code } => Fault::PageFault { linear, error_code },
        _ => Fault::Bad,
    })
}

fn supervisor(write: bool, fetch: bool) -> WalkAccess {
    WalkAccess { write, user: false, fetch }
}

/// Copy `buf.len()` bytes from guest linear address `linear` (as the guest's kernel reads).
pub fn read_linear(d: &Domain, hw: &Hw, linear: u64, buf: &mut [u8], fetch: bool) -> Result<(), Fault> {
    d.with_mem(|mem| {
        let mut done = 0usize;
        while done < buf.len() {
            let la = linear.wrapping_add(done as u64);
            let n = ((PAGE_SIZE - (la & (PAGE_SIZE - 1))) as usize).min(buf.len() - done);
            let gpa = translate(mem, hw, la, supervisor(false, fetch))?;
            mem.read(gpa, &mut buf[done..done + n]).map_err(|_| Fault::Bad)?;
            done += n;
        }
        Ok(())
    })
    .unwrap_or(Err(Fault::Bad))
}

/// Copy `bytes` to guest linear address `linear` (as the guest's kernel writes), page by page;
/// like Xen's copy_to_guest, a fault part-way leaves the pages before it written.
pub fn write_linear(d: &Domain, hw: &Hw, linear: u64, bytes: &[u8]) -> Result<(), Fault> {
    d.with_mem(|mem| {
        let mut done = 0usize;
        while done < bytes.len() {
            let la = linear.wrapping_add(done as u64);
            let n = ((PAGE_SIZE - (la & (PAGE_SIZE - 1))) as usize).min(bytes.len() - done);
            let gpa = translate(mem, hw, la, supervisor(true, false))?;
            mem.write(gpa, &bytes[done..done + n]).map_err(|_| Fault::Bad)?;
            done += n;
        }
        Ok(())
    })
    .unwrap_or(Err(Fault::Bad))
}

/// Read a plain-data value (a hypercall argument structure) from guest virtual memory.
pub fn read_struct<T: zerocopy::FromBytes + zerocopy::IntoBytes>(d: &Domain, hw: &Hw, gva: u64) -> Result<T, Fault> {
    let mut v = T::new_zeroed();
    read_linear(d, hw, gva, v.as_mut_bytes(), false)?;
    Ok(v)
}

/// Write a plain-data value to guest virtual memory.
pub fn write_struct<T: zerocopy::IntoBytes + zerocopy::Immutable>(
    d: &Domain,
    hw: &Hw,
    gva: u64,
    v: &T,
) -> Result<(), Fault> {
    write_linear(d, hw, gva, v.as_bytes())
}
