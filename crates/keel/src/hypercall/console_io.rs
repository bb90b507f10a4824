//! `console_io`: a guest writes to keel's console and reads keel's console input.
//!
//! Xen lets a domain use console_io when it is privileged or flagged `is_console` (as Xen's
//! dom0less domains are; others get -EPERM in release builds). Every domain keel builds at boot
//! is such a console domain, so each may write (lines are prefixed with the domain) and read
//! (the characters typed on keel's serial console, `console::read_input`), which is what test
//! guests and `earlyprintk=xen` need.

use xen_abi::console_io::{CONSOLEIO_READ, CONSOLEIO_WRITE};
use xen_abi::errno::Errno;

use super::{Call, Gva, HcResult, Outcome};

/// Bytes copied from the guest per step.
const CHUNK: usize = 256;

/// `console_io(cmd, count, buffer)`.
pub fn console_io(c: &mut Call<'_>, cmd: u32, count: u32, buf: Gva) -> HcResult {
    match cmd {
        CONSOLEIO_WRITE => {
            let mut chunk = [0u8; CHUNK];
            let mut done = 0usize;
            let total = count as usize;
            while done < total {
                // A long write continues later with what is left, as Xen's does.
                if done > 0 && c.preempt_due() {
                    let rest = (total - done) as u64;
                    return Ok(c.continuation([cmd as u64, rest, buf.0.wrapping_add(done as u64), 0, 0]));
                }
                let n = (total - done).min(CHUNK);
                c.read_bytes(Gva(buf.0.wrapping_add(done as u64)), &mut chunk[..n])?;
                c.domain.console_write(&chunk[..n]);
                done += n;
            }
            Ok(Outcome::Ret(0))
        }
        CONSOLEIO_READ => {
            // Every domain keel builds is a console domain (Xen's `is_console`, which its
            // dom0less domains have too), and those may read as dom0 may.
            // The result is a count or an errno: counts that could not be told apart from
            // errors are refused, as Xen does.
            if count > i32::MAX as u32 {
                return Err(Errno::E2BIG);
            }
            let mut chunk = [0u8; CHUNK];
            let n = crate::console::read_input(&mut chunk[..(count as usize).min(CHUNK)]);
            c.write_bytes(buf, &chunk[..n])?;
            Ok(Outcome::Ret(n as i64))
        }
        _ => Err(Errno::ENOSYS),
    }
}
