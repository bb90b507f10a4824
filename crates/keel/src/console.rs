//! keel's console: the serial line, log levels, the in-memory console ring, and where serial
//! input goes.
//!
//! Every message goes into the console ring (read later by `xl dmesg`, as Xen's conring is);
//! messages at or above the `loglvl=` threshold also go to the serial line when
//! `console=com1`. keel's own lines are prefixed `(keel) `, the way Xen prefixes `(XEN) `.
//!
//! Serial input belongs to one target at a time: keel, or one domain. Ctrl-A three times in
//! a row moves it on (keel, then every live domain by id, then keel again), as Xen's
//! `conswitch` does between Xen and dom0. dom0 reads its input with `CONSOLEIO_read` (and is
//! told with `VIRQ_CONSOLE`); a domU gets it in its PV console ring (`dom::console`); keel has
//! no use for input yet and drops it. The UART is polled, without interrupts (keel does not
//! drive the IO-APIC yet): by CPU 0's [`housekeeping`] every [`INPUT_POLL_NS`] while a domain
//! lives, and by dom0's `CONSOLEIO_read`. The same poll serves the PV consoles whose guests
//! wrote without notifying.
//!
//! Printing takes a spin lock with interrupts disabled, so an interrupt handler on the same
//! CPU can never deadlock against an interrupted print. The fatal-error path switches the
//! console to *emergency* mode: from then on the one CPU reporting the error writes without
//! the lock, because the lock may be held by a CPU that will never release it.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use keel_guest::console::{InputSwitch, InputTarget};
use spin::Mutex;

use crate::arch::x86::cpu::InterruptGuard;
use crate::arch::x86::serial::{LineConfig, Parity, Uart};
use crate::sync::IrqMutex;

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

/// How often CPU 0 polls the UART and the PV consoles while a domain lives.
pub const INPUT_POLL_NS: u64 = 20_000_000;

/// Typed bytes kept for `CONSOLEIO_read` until they are read; more are dropped.
const HELD_INPUT_MAX: usize = 4096;

/// Bytes taken from the UART per poll at most (its FIFO holds 16; QEMU's may hold more).
const MAX_INPUT_PER_POLL: usize = 256;

/// Where serial input goes.
struct Input {
    switch: InputSwitch,
    target: InputTarget,
    /// Typed for a domain without a PV console (dom0), not read yet (`CONSOLEIO_read`).
    held: VecDeque<u8>,
    /// The domain `held` is for.
    held_for: u16,
}

static INPUT: IrqMutex<Input> = IrqMutex::new(Input {
    switch: InputSwitch::new(),
    target: InputTarget::Hypervisor,
    held: VecDeque::new(),
    held_for: 0,
});

/// When CPU 0 next polls (monotonic ns); 0 until the first domain is built.
static NEXT_POLL: AtomicU64 = AtomicU64::new(0);

/// A CPU is taking bytes from the UART and handing them on: another one leaves it to it, so
/// that typed bytes reach their target in order.
static POLLING: AtomicBool = AtomicBool::new(false);

/// Set where serial input goes first (the builder: dom0, else the first domain built; `None`:
/// keel), say so, and start polling.
pub fn set_input_target(domid: Option<u16>) {
    let target = domid.map_or(InputTarget::Hypervisor, InputTarget::Domain);
    INPUT.lock().target = target;
    announce(target);
    if domid.is_some() {
        NEXT_POLL.store(crate::arch::x86::time::now_ns(), Ordering::Release);
    }
}

/// Print the one line saying where input goes now.
fn announce(target: InputTarget) {
    let hint = "(type 'CTRL-a' three times to switch input)";
    match target.domain() {
        None => log::info!("*** serial input to keel {hint}"),
        Some(id) => match crate::dom::get(id).filter(|d| !d.name.is_empty()) {
            Some(d) => log::info!("*** serial input to d{id} ({}) {hint}", d.name),
            None => log::info!("*** serial input to d{id} {hint}"),
        },
    }
}

/// Domain `id` is gone: what was typed for it goes, and if input went to it, it goes to keel
/// now.
pub fn domain_gone(id: u16) {
    let mut input = INPUT.lock();
    if input.held_for == id {
        input.held.clear();
    }
    if input.target == InputTarget::Domain(id) {
        input.target = InputTarget::Hypervisor;
        drop(input);
        announce(InputTarget::Hypervisor);
    }
}

/// CPU 0's console housekeeping, to call on every pass of its loop: at most every
/// [`INPUT_POLL_NS`] while a domain lives, take what was typed and serve the PV consoles.
pub fn housekeeping(now: u64) {
    let due = NEXT_POLL.load(Ordering::Acquire);
    if due == 0 || now < due {
        return;
    }
    if crate::dom::count() == 0 {
        // Nothing to serve until a domain exists again.
        NEXT_POLL.store(0, Ordering::Release);
        return;
    }
    NEXT_POLL.store(now + INPUT_POLL_NS, Ordering::Release);
    poll_serial();
    crate::dom::console::poll_all();
}

/// When CPU 0 must next run [`housekeeping`] (for the timer it arms before halting), if it
/// must.
pub fn next_housekeeping() -> Option<u64> {
    match NEXT_POLL.load(Ordering::Acquire) {
        0 => None,
        t => Some(t),
    }
}

/// Take what was typed on the serial line and hand it to its target (through the Ctrl-A
/// switch).
fn poll_serial() {
    if POLLING.swap(true, Ordering::Acquire) {
        return;
    }
    take_and_deliver();
    POLLING.store(false, Ordering::Release);
}

fn take_and_deliver() {
    let mut typed = [0u8; MAX_INPUT_PER_POLL];
    let mut n = 0;
    while n < typed.len() {
        match poll_input() {
            Some(b) => {
                typed[n] = b;
                n += 1;
            }
            None => break,
        }
    }
    if n == 0 {
        return;
    }
    // Cut into runs per target (a switch in the middle starts a new run), delivered after
    // the lock is dropped.
    let mut runs: Vec<(InputTarget, Vec<u8>)> = Vec::new();
    {
        let mut input = INPUT.lock();
        for &b in &typed[..n] {
            let target = input.target;
            let mut deliver = |x: u8| match runs.last_mut() {
                Some((t, bytes)) if *t == target => bytes.push(x),
                _ => runs.push((target, alloc::vec![x])),
            };
            if input.switch.feed(b, &mut deliver) {
                let live = crate::dom::all().iter().filter(|d| !d.is_dying()).map(|d| d.id).collect::<Vec<_>>();
                input.target = input.target.next(live);
                announce(input.target);
            }
        }
    }
    for (target, bytes) in runs {
        deliver(target, &bytes);
    }
}

/// Typed `bytes` for `target`: into a domU's PV console ring; for a domain without one
/// (dom0), held for `CONSOLEIO_read` and announced with `VIRQ_CONSOLE`, as Xen does for dom0.
fn deliver(target: InputTarget, bytes: &[u8]) {
    let Some(d) = target.domain().and_then(crate::dom::get) else { return };
    if crate::dom::console::queue_input(&d, bytes) {
        return;
    }
    {
        let mut input = INPUT.lock();
        if input.held_for != d.id {
            input.held.clear();
            input.held_for = d.id;
        }
        let room = HELD_INPUT_MAX.saturating_sub(input.held.len());
        input.held.extend(bytes.iter().take(room));
    }
    if let Some(v0) = d.vcpus.first() {
        d.send_virq(xen_abi::event_channel::VIRQ_CONSOLE, v0);
    }
}

/// Characters typed on the serial line for dom0 (CONSOLEIO_read): see [`read_input_for`].
pub fn read_input(out: &mut [u8]) -> usize {
    read_input_for(0, out)
}

/// Characters typed on the serial line for domain `domid` through `CONSOLEIO_read`: what is
/// held for it, after taking what the UART holds now, up to `out.len()` bytes. Returns how
/// many were read. A domain with a PV console gets its input in its ring instead, so this
/// finds nothing for it.
pub fn read_input_for(domid: u16, out: &mut [u8]) -> usize {
    poll_serial();
    let mut input = INPUT.lock();
    if input.held_for != domid {
        return 0;
    }
    let n = out.len().min(input.held.len());
    for (o, b) in out.iter_mut().zip(input.held.drain(..n)) {
        *o = b;
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
