//! The probe's output: the Xen console (`CONSOLEIO_write`), or port 0xE9 when the hypervisor
//! refuses the hypercall (as real Xen does for unprivileged domains in release builds).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use pvh_rt::xen::{hypercall, Via};

/// Hypercall number of console_io.
const CONSOLE_IO: u64 = 18;
/// CONSOLEIO_write.
const CONSOLEIO_WRITE: u64 = 0;

static USE_PORT: AtomicBool = AtomicBool::new(false);

/// Decide how to print: try the hypercall once.
pub fn init() {
    let probe = b"";
    // SAFETY: a zero-length write from a valid buffer.
    let rc = unsafe { hypercall(Via::Vmmcall, CONSOLE_IO, [CONSOLEIO_WRITE, 0, probe.as_ptr() as u64, 0, 0]) };
    USE_PORT.store(rc < 0, Ordering::Relaxed);
}

/// Whether the hypervisor accepted the first `CONSOLEIO_write` (made by [`init`]): the probe
/// prints through `console_io`, not port 0xE9.
pub fn uses_console_io() -> bool {
    !USE_PORT.load(Ordering::Relaxed)
}

fn port_e9(bytes: &[u8]) {
    for &b in bytes {
        // SAFETY: port 0xE9 is the debug console; writing it has no other effect.
        unsafe { core::arch::asm!("out 0xe9, al", in("al") b, options(nomem, nostack, preserves_flags)) };
    }
}

/// Write raw bytes.
pub fn write(bytes: &[u8]) {
    if USE_PORT.load(Ordering::Relaxed) {
        port_e9(bytes);
        return;
    }
    // SAFETY: the buffer is valid for `len` bytes; the hypervisor only reads it.
    let rc = unsafe {
        hypercall(Via::Vmmcall, CONSOLE_IO, [CONSOLEIO_WRITE, bytes.len() as u64, bytes.as_ptr() as u64, 0, 0])
    };
    if rc < 0 {
        port_e9(bytes);
    }
}

/// Collects a line so it is written with one hypercall.
struct LineBuf {
    buf: [u8; 256],
    len: usize,
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                write(&self.buf);
                self.len = 0;
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Print one line.
pub fn line(args: fmt::Arguments<'_>) {
    let mut b = LineBuf { buf: [0; 256], len: 0 };
    let _ = b.write_fmt(args);
    let _ = b.write_str("\n");
    write(&b.buf[..b.len]);
}
