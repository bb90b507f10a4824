//! The PV console keel serves for the domains it builds at boot (other than dom0, whose
//! console is `console_io`): keel is the backend xenconsoled is on Xen.
//!
//! Where things are, as Xen's toolstack lays them out:
//!
//! * the page: special page 7 of the domain (gfn 0xfefff), guest RAM the builder populated and
//!   zeroed, RESERVED in the guest's memory map; keel pins it (as xenconsoled maps it) for as
//!   long as the console exists, so the frame stays valid even if the guest gives it back;
//! * the event channel: a port whose other end is keel itself
//!   ([`keel_evtchn::PortState::Hypervisor`]), which the guest sees as an interdomain channel
//!   with dom0;
//! * `HVM_PARAM_CONSOLE_PFN` / `HVM_PARAM_CONSOLE_EVTCHN` name both (Linux's `hvc_xen` reads
//!   them with `HVMOP_get_param`).
//!
//! keel serves the ring ([`service`]) when the guest notifies the port and on CPU 0's periodic
//! poll (early `hvc` output may come without a notification): it drains `out` to the serial
//! console, cut into lines with the domain's prefix (`(d1) `), puts waiting input bytes into
//! `in`, and then notifies the guest, as Xen's backend does after consuming, so that a
//! frontend waiting for room writes more. The protocol itself is `keel_guest::console`.
//!
//! Locking: a domain's console lock is taken before the console output lock and never while
//! its event-channel lock is held; the guest is notified after the console lock is dropped.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::sync::atomic::AtomicU32;

use keel_guest::console::{self as ring, ConsolePage, LineBuffer};
use xen_abi::EvtchnPort;

use super::memory::{FrameView, PinnedPage};
use super::{events, Domain};

/// Typed bytes keel keeps for a domain whose `in` ring is full; more are dropped.
const MAX_PENDING_INPUT: usize = 4096;

/// Output consumed per [`service`] call at most: a guest writing without pause cannot keep a
/// CPU in keel; what is left is taken at the next notification or poll.
const MAX_OUTPUT_PER_SERVICE: usize = 4 * xen_abi::console_io::XENCONS_OUT_SIZE;

/// A domain's PV console, keel's side.
pub struct PvConsole {
    page: PinnedPage,
    port: EvtchnPort,
    line: LineBuffer,
    /// Typed bytes not yet in the `in` ring.
    input: VecDeque<u8>,
    /// The guest broke the ring's indices at least once (reported once).
    broken_reported: bool,
}

impl PvConsole {
    /// The event-channel port of the console (guest side).
    pub fn port(&self) -> EvtchnPort {
        self.port
    }
}

/// The console page through keel's view of the pinned frame.
struct Ring<'a>(FrameView<'a>);

impl ConsolePage for Ring<'_> {
    fn index(&self, offset: usize) -> &AtomicU32 {
        self.0.u32(offset)
    }

    fn read(&self, offset: usize, buf: &mut [u8]) {
        self.0.read(offset, buf);
    }

    fn write(&self, offset: usize, bytes: &[u8]) {
        self.0.write(offset, bytes);
    }
}

/// Why a domain got no PV console.
#[derive(Debug)]
pub enum AttachError {
    /// Its console page is not its writable RAM.
    Page(super::memory::MemError),
    /// No event-channel port was free.
    Port(xen_abi::errno::Errno),
}

/// Give `d` its PV console on the page at `gfn` (its special console page, zeroed): pin the
/// page, bind a port to keel, and publish both in the HVM parameters. Called by the builder,
/// before the domain first runs.
pub fn attach(d: &Arc<Domain>, gfn: keel_mm::Gfn) -> Result<(), AttachError> {
    let page = PinnedPage::pin(&d.mem, gfn).map_err(AttachError::Page)?;
    let port = d.evtchn.lock().bind_hypervisor().map_err(AttachError::Port)?;
    {
        let mut params = d.params.lock();
        params[xen_abi::hvm::HVM_PARAM_CONSOLE_PFN as usize] = gfn.as_u64();
        params[xen_abi::hvm::HVM_PARAM_CONSOLE_EVTCHN as usize] = port.0 as u64;
    }
    *d.pvconsole.lock() =
        Some(PvConsole { page, port, line: LineBuffer::new(), input: VecDeque::new(), broken_reported: false });
    Ok(())
}

/// Serve `d`'s console: print what the guest wrote, hand it waiting input, and notify it if
/// either moved the ring. Does nothing for a domain without a PV console.
pub fn service(d: &Arc<Domain>) {
    let port = {
        let mut guard = d.pvconsole.lock();
        let Some(con) = guard.as_mut() else { return };
        if !drain(d, con) {
            return;
        }
        con.port
    };
    let notify = d.evtchn.lock().raise_hypervisor(port);
    events::act(notify, Some(d));
}

/// Drain output and fill input; true if the ring moved (the guest should be notified).
fn drain(d: &Domain, con: &mut PvConsole) -> bool {
    let view = Ring(con.page.view());
    let mut moved = false;
    let mut buf = [0u8; 256];
    let mut taken = 0;
    while taken < MAX_OUTPUT_PER_SERVICE {
        let r = ring::read_output(&view, &mut buf);
        if let Some(skipped) = r.skipped {
            report_broken(d, &mut con.broken_reported, format_args!("output indices ({skipped} bytes skipped)"));
            moved = true;
        }
        if r.len == 0 {
            break;
        }
        con.line.push(&buf[..r.len], |line| crate::console::guest_line(d.id, line));
        taken += r.len;
        moved = true;
    }
    if !con.input.is_empty() {
        let (a, b) = con.input.as_slices();
        let first = ring::write_input(&view, a);
        let mut written = first.len;
        if first.len == a.len() && !b.is_empty() {
            written += ring::write_input(&view, b).len;
        }
        if first.resynced {
            report_broken(d, &mut con.broken_reported, format_args!("input indices"));
        }
        con.input.drain(..written);
        moved |= written > 0 || first.resynced;
    }
    moved
}

fn report_broken(d: &Domain, reported: &mut bool, what: core::fmt::Arguments<'_>) {
    if !core::mem::replace(reported, true) {
        log::warn!("d{} ({}): its PV console ring had broken {what}; resynchronised", d.id, d.display_name());
    }
}

/// Typed bytes for `d`: queued for its `in` ring, then served. False if `d` has no PV
/// console (the bytes are dropped).
pub fn queue_input(d: &Arc<Domain>, bytes: &[u8]) -> bool {
    {
        let mut guard = d.pvconsole.lock();
        let Some(con) = guard.as_mut() else { return false };
        let room = MAX_PENDING_INPUT.saturating_sub(con.input.len());
        con.input.extend(bytes.iter().take(room));
    }
    service(d);
    true
}

/// The periodic poll: serve every console with output or input waiting.
pub fn poll_all() {
    for d in super::all() {
        let busy = d
            .pvconsole
            .lock()
            .as_ref()
            .is_some_and(|con| !con.input.is_empty() || ring::has_output(&Ring(con.page.view())));
        if busy && !d.is_dying() {
            service(&d);
        }
    }
}

/// Tear `d`'s console down (the domain is being destroyed): print what is left in the ring and
/// the last partial line, let go of the port and unpin the page.
pub fn detach(d: &Domain) {
    let Some(mut con) = d.pvconsole.lock().take() else { return };
    let _ = drain(d, &mut con);
    if let Some(rest) = con.line.take_partial() {
        crate::console::guest_line(d.id, rest);
    }
    // keel's end goes: the guest's end becomes unbound (free if the guest had closed it).
    let _ = d.evtchn.lock().release_hypervisor(con.port);
}
