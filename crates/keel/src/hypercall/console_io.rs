//! `console_io`: a guest writes to (and, later, dom0 reads from) keel's console.
//!
//! Real Xen refuses CONSOLEIO_write from unprivileged domains in release builds; keel allows
//! it from every domain (each line is prefixed with the domain), which is what test guests and
//! `earlyprintk=xen` need.

use xen_abi::console_io::CONSOLEIO_WRITE;
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
                let n = (total - done).min(CHUNK);
                c.read_bytes(Gva(buf.0.wrapping_add(done as u64)), &mut chunk[..n])?;
                c.domain.console_write(&chunk[..n]);
                done += n;
            }
            Ok(Outcome::Ret(0))
        }
        _ => Err(Errno::ENOSYS),
    }
}
