//! `console_io` (hypercall 18): the hypervisor console.
//!
//! Xen 4.17 asks XSM first (`xsm_console_io`): the dummy policy lets a domain flagged
//! `is_console` use every command, and otherwise only the control domain (`XSM_PRIV`);
//! everyone else gets `-EPERM` for every command (release builds), before the command is even
//! looked at. Xen flags dom0less domUs as console domains, and keel does the same for every
//! domain it builds at boot. A domain allowed in writes (`0`, also for zero bytes; `-EFAULT`
//! for an unreadable buffer, none for zero bytes), reads (the bytes typed so far, 0 when none;
//! `-E2BIG` above `INT_MAX`, before touching the buffer), and gets `-ENOSYS` for an unknown
//! command.
//!
//! Whether this domain is allowed is known without asking the hypervisor anything new: the
//! probe's first `CONSOLEIO_write` (how it decides where to print) succeeded or not
//! ([`Ctx::console`]). A privileged domain must be allowed; an unprivileged one may be either,
//! but then consistently: all of the above, or `-EPERM` for everything.

use super::fw::{ensure, nr, raw, E2BIG, EFAULT, ENOSYS, EPERM, R, UNMAPPED};
use super::Ctx;
use crate::checks::Tap;

const WRITE: u64 = 0;
const READ: u64 = 1;

/// Whether this domain may use `console_io`: privileged, or a console domain (its first write
/// succeeded).
fn allowed(ctx: &Ctx) -> bool {
    ctx.privileged || ctx.console
}

/// `want` if this domain may use `console_io`, else `-EPERM`.
fn expect(ctx: &Ctx, want: i64) -> i64 {
    if allowed(ctx) {
        want
    } else {
        EPERM
    }
}

fn io(cmd: u64, count: u64, buf: u64) -> i64 {
    // SAFETY: call sites pass a buffer of the probe at least `count` bytes long, or UNMAPPED.
    unsafe { raw(nr::CONSOLE_IO, [cmd, count, buf, 0, 0]) }
}

fn write(ctx: &Ctx) -> R {
    let msg = b"probe: console_io write check\n";
    let rc = io(WRITE, msg.len() as u64, msg.as_ptr() as u64);
    let want = expect(ctx, 0);
    ensure!(rc == want, "rc {rc}, want {want}");
    let rc = io(WRITE, 0, msg.as_ptr() as u64);
    ensure!(rc == want, "zero bytes: rc {rc}, want {want}");
    Ok(())
}

fn write_bad_pointer(ctx: &Ctx) -> R {
    let rc = io(WRITE, 16, UNMAPPED);
    let want = expect(ctx, EFAULT);
    ensure!(rc == want, "16 bytes from an unmapped buffer: rc {rc}, want {want}");
    let rc = io(WRITE, 0, UNMAPPED);
    let want = expect(ctx, 0);
    ensure!(rc == want, "zero bytes from an unmapped buffer: rc {rc}, want {want}");
    Ok(())
}

fn read(ctx: &Ctx) -> R {
    let mut buf = [0u8; 64];
    let rc = io(READ, buf.len() as u64, buf.as_mut_ptr() as u64);
    let want = expect(ctx, 0);
    ensure!(rc == want, "nothing typed: rc {rc}, want {want}");
    let rc = io(READ, 0, buf.as_mut_ptr() as u64);
    ensure!(rc == want, "zero bytes: rc {rc}, want {want}");
    // Refused before any copy: no buffer needed.
    let rc = io(READ, 0x8000_0000, UNMAPPED);
    let want = expect(ctx, E2BIG);
    ensure!(rc == want, "count 2^31: rc {rc}, want {want}");
    Ok(())
}

fn unknown(ctx: &Ctx) -> R {
    let mut buf = [0u8; 8];
    for cmd in [2u64, 3, 0xffff] {
        let rc = io(cmd, 0, buf.as_mut_ptr() as u64);
        let want = expect(ctx, ENOSYS);
        ensure!(rc == want, "command {cmd}: rc {rc}, want {want}");
    }
    Ok(())
}

/// The `con-` checks.
pub fn run(t: &mut Tap, ctx: &Ctx) {
    t.run("con-write", write(ctx));
    t.run("con-write-bad-pointer", write_bad_pointer(ctx));
    t.run("con-read-nothing-typed", read(ctx));
    t.run("con-unknown-cmd", unknown(ctx));
}
