//! keel's console: the serial line, log levels, and the in-memory console ring.
//!
//! Every message goes into the console ring (read later by `xl dmesg`, as Xen's conring is);
//! messages at or above the `loglvl=` threshold also go to the serial line when
//! `console=com1`. keel's own lines are prefixed `(keel) `, the way Xen prefixes `(XEN) `.
//!
//! Printing takes a spin lock with interrupts disabled, so an interrupt handler on the same
//! CPU can never deadlock against an interrupted print. The fatal-error path switches the
//! console to *emergency* mode: from then on the one CPU reporting the error writes without
//! the lock, because the lock may be held by a CPU that will never release it.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use spin::Mutex;

use crate::arch::x86::cpu::InterruptGuard;
use crate::arch::x86::serial::{LineConfig, Parity, Uart};

/// Size of the console ring (a power of two).
pub const RING_SIZE: usize = 64 * 1024;

/// Severity of a console message, ordered from most to least severe.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Ord, PartialOrd)]
#[repr(u8)]
pub enum Level {
    /// Something failed.
    Error = 1,
    /// Something is wrong but keel carries on.
    Warning = 2,
    /// Normal progress.
    Info = 3,
    /// Detail for developers.
    Debug = 4,
}

struct Ring {
    buf: [u8; RING_SIZE],
    /// Bytes ever written; the ring holds the last `min(written, RING_SIZE)` of them.
    written: u64,
}

impl Ring {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.buf[(self.written % RING_SIZE as u64) as usize] = b;
            self.written += 1;
        }
    }
}

struct State {
    /// I/O base of the console UART; 0 for no serial console. (All-zero initial state keeps
    /// the 64 KiB ring in .bss rather than in the image file.)
    serial_base: u16,
    ring: Ring,
}

impl State {
    fn serial(&self) -> Option<Uart> {
        (self.serial_base != 0).then(|| Uart::new(self.serial_base))
    }
}

static STATE: Mutex<State> = Mutex::new(State { serial_base: 0, ring: Ring { buf: [0; RING_SIZE], written: 0 } });

/// The default console UART (COM1).
const COM1: u16 = 0x3f8;

/// Messages less severe than this are kept in the ring only.
static THRESHOLD: AtomicU8 = AtomicU8::new(Level::Info as u8);
static EMERGENCY: AtomicBool = AtomicBool::new(false);

/// Bring the serial line up with keel's default settings (COM1, 115200 8n1) so that boot
/// messages can be printed before the command line has been read.
pub fn early_init() {
    let mut state = STATE.lock();
    state.serial_base = COM1;
    Uart::new(COM1).init(&LineConfig { baud: Some(115_200), data_bits: 8, parity: Parity::None, stop_bits: 1 });
    drop(state);
    log::set_logger(&LOGGER).ok();
    log::set_max_level(log::LevelFilter::Debug);
}

/// Apply `console=`, `com1=` and `loglvl=`: `uart` is the UART to use (`None` for
/// `console=none`); messages less severe than `threshold` (all, for `None`) stay in the ring.
pub fn configure(uart: Option<(u16, LineConfig)>, threshold: Option<Level>) {
    let _irq = InterruptGuard::new();
    let mut state = STATE.lock();
    state.serial_base = match uart {
        Some((base, cfg)) => {
            Uart::new(base).init(&cfg);
            base
        }
        None => 0,
    };
    THRESHOLD.store(threshold.map_or(0, |l| l as u8), Ordering::Relaxed);
}

/// Switch to lock-free emergency output (the fatal-error path; never switched back).
pub fn enter_emergency() {
    EMERGENCY.store(true, Ordering::SeqCst);
}

struct Sink<'a> {
    state: &'a mut State,
    to_serial: bool,
}

impl Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.state.ring.push(s.as_bytes());
        if self.to_serial {
            if let Some(uart) = self.state.serial() {
                uart.write_str(s);
            }
        }
        Ok(())
    }
}

/// Write one message: `prefix`, then `args`, then a newline.
pub fn write_line(level: Level, prefix: &str, args: fmt::Arguments<'_>) {
    let to_serial = level as u8 <= THRESHOLD.load(Ordering::Relaxed);
    let emit = |state: &mut State| {
        let mut sink = Sink { state, to_serial };
        let _ = sink.write_str(prefix);
        let _ = sink.write_fmt(args);
        let _ = sink.write_str("\n");
    };
    if EMERGENCY.load(Ordering::Relaxed) {
        let mut guard = STATE.try_lock();
        if guard.is_none() {
            // SAFETY: in emergency mode exactly one CPU (the one reporting a fatal error)
            // prints; every other CPU is being stopped. The lock may be held by a CPU that
            // will never release it, so it is broken; at worst a line interleaves with a
            // half-written one.
            unsafe { STATE.force_unlock() };
            guard = STATE.try_lock();
        }
        if let Some(mut state) = guard {
            emit(&mut state);
        }
        return;
    }
    let _irq = InterruptGuard::new();
    emit(&mut STATE.lock());
}

/// A line of a guest's console output, prefixed with its domain: `(d1) text`.
pub fn guest_line(domid: u16, text: &str) {
    write_line(Level::Info, "", format_args!("(d{domid}) {text}"));
}

/// Print a line with no prefix at info level (the machine-parsed `keel: ready:` line).
pub fn raw_line(args: fmt::Arguments<'_>) {
    write_line(Level::Info, "", args);
}

/// Copy up to `out.len()` bytes of the ring starting at absolute offset `from` (bytes ever
/// written); returns (bytes copied, offset of the oldest byte still in the ring).
pub fn read_ring(from: u64, out: &mut [u8]) -> (usize, u64) {
    let _irq = InterruptGuard::new();
    let state = STATE.lock();
    let oldest = state.ring.written.saturating_sub(RING_SIZE as u64);
    let start = from.max(oldest);
    let n = (state.ring.written.saturating_sub(start) as usize).min(out.len());
    for (i, o) in out.iter_mut().take(n).enumerate() {
        *o = state.ring.buf[((start + i as u64) % RING_SIZE as u64) as usize];
    }
    (n, oldest)
}

/// A byte typed on the serial line, if any.
pub fn poll_input() -> Option<u8> {
    let _irq = InterruptGuard::new();
    STATE.lock().serial().and_then(|u| u.try_get())
}

/// Characters typed on the serial line for dom0 (CONSOLEIO_read): whatever the UART holds
/// now, up to `out.len()` bytes. Returns how many were read.
pub fn read_input(out: &mut [u8]) -> usize {
    let mut n = 0;
    while n < out.len() {
        match poll_input() {
            Some(b) => {
                out[n] = b;
                n += 1;
            }
            None => break,
        }
    }
    n
}

struct Logger;
static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let (level, prefix) = match record.level() {
            log::Level::Error => (Level::Error, "(keel) error: "),
            log::Level::Warn => (Level::Warning, "(keel) warning: "),
            log::Level::Info => (Level::Info, "(keel) "),
            log::Level::Debug | log::Level::Trace => (Level::Debug, "(keel) debug: "),
        };
        write_line(level, prefix, *record.args());
    }

    fn flush(&self) {}
}

/// Print a line prefixed `(keel) ` regardless of the log threshold's effect on `log` macros
/// (used by the exception dump, which must always reach the serial line).
#[macro_export]
macro_rules! kprintln {
    ($($arg:tt)*) => {
        $crate::console::write_line($crate::console::Level::Error, "(keel) ", format_args!($($arg)*))
    };
}
