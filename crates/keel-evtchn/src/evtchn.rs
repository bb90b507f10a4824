//! One domain's event channels: the port table, the ABI in use, and every `EVTCHNOP_*`.
//!
//! The reference is Xen 4.17's `xen/common/event_channel.c`; every error is the one Xen
//! returns in the same situation, checked in the same order (so that, e.g., a full port
//! table wins over a bad remote port in `bind_interdomain`, as in Xen where the local port is
//! allocated first).
//!
//! Locking is keel's: it holds each domain's [`Evtchn`] in its own mutex and calls in with
//! `&mut`. Operations on two domains take the other one as a [`Peer`]; when the crate finds
//! it needs a domain the caller did not pass (it cannot be known before looking at the
//! port), it fails with [`Error::NeedPeer`] naming that domain, without changing anything,
//! and keel locks both (in domid order) and calls again. The retry re-validates from
//! scratch, since bindings may have changed while no lock was held.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use xen_abi::event_channel::{
    virq_is_per_vcpu, EVTCHN_2L_NR_CHANNELS, EVTCHN_FIFO_NR_CHANNELS, EVTCHN_FIFO_PRIORITY_DEFAULT,
    EVTCHN_FIFO_PRIORITY_MIN, NR_VIRQS,
};
use xen_abi::{DomId, Errno, EvtchnPort};

use crate::fifo::{control_block_base, Fifo};
use crate::memory::{GuestPage, SharedWords, TWO_LEVEL_WORDS};
use crate::notify::{Notify, Raised};
use crate::port::{Channel, PortInfo, PortState, PortStatus, HYPERVISOR_REMOTE_DOM};
use crate::two_level;

/// Ports the port table grows by: Xen allocates `struct evtchn` in page-sized buckets of 64
/// (4096 / 64-byte entries), and a port is "valid" (`port_is_valid`) once its bucket exists,
/// even while free. That decides `EVTCHNOP_status` on a free port: closed inside an existing
/// bucket, `-EINVAL` beyond. The first bucket exists from creation.
pub const PORTS_PER_BUCKET: u32 = 64;

/// Why an operation did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Fail the hypercall with this error.
    Errno(Errno),
    /// The operation needs this other domain's state: lock it (in domid order, with this
    /// one) and call again passing it as [`Peer::Other`]. Nothing was changed.
    NeedPeer(DomId),
}

impl From<Errno> for Error {
    fn from(e: Errno) -> Self {
        Error::Errno(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Errno(e) => write!(f, "{e}"),
            Error::NeedPeer(d) => write!(f, "needs the state of {d}"),
        }
    }
}

/// The other domain of an operation that may involve two.
pub enum Peer<'a, S, P> {
    /// No other domain: loopback channels only. An operation that turns out to need
    /// another domain fails with [`Error::NeedPeer`].
    Same,
    /// Another domain's state, locked by the caller.
    Other(&'a mut Evtchn<S, P>),
}

impl<S, P> fmt::Debug for Peer<'_, S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Same => f.write_str("Same"),
            Peer::Other(other) => write!(f, "Other({})", other.domid),
        }
    }
}

impl<S, P> Peer<'_, S, P> {
    /// The same peer, borrowed for a shorter time.
    pub fn reborrow(&mut self) -> Peer<'_, S, P> {
        match self {
            Peer::Same => Peer::Same,
            Peer::Other(other) => Peer::Other(other),
        }
    }

    /// The domain of [`Peer::Other`].
    pub fn domid(&self) -> Option<DomId> {
        match self {
            Peer::Same => None,
            Peer::Other(other) => Some(other.domid),
        }
    }

    /// The peer's state if it is domain `dom`.
    fn get(&mut self, dom: DomId) -> Option<&mut Evtchn<S, P>> {
        match self {
            Peer::Other(other) if other.domid == dom => Some(other),
            _ => None,
        }
    }
}

/// The ABI a domain uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abi {
    /// 2-level bitmaps in the shared-info page (every domain starts here).
    TwoLevel,
    /// FIFO queues, after the first `EVTCHNOP_init_control`.
    Fifo {
        /// Ports that have an event word (event array pages × 1024).
        event_words: u32,
    },
}

/// A domain's event channels.
pub struct Evtchn<S, P> {
    domid: DomId,
    nr_vcpus: u32,
    max_port: u32,
    /// Port table; its length is a multiple of [`PORTS_PER_BUCKET`] and never shrinks.
    ports: Vec<Channel>,
    /// Ports neither free nor reserved (held hypervisor ports count).
    active: u32,
    /// Per vCPU, the port bound to each VIRQ (0: none). Global VIRQs use vCPU 0's row.
    virqs: Vec<[u32; NR_VIRQS as usize]>,
    /// FIFO state, once the domain switched to the FIFO ABI.
    fifo: Option<Fifo<P>>,
    shared: S,
}

impl<S, P> fmt::Debug for Evtchn<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Evtchn")
            .field("domid", &self.domid)
            .field("nr_vcpus", &self.nr_vcpus)
            .field("max_port", &self.max_port)
            .field("active", &self.active)
            .field("fifo", &self.fifo.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: SharedWords, P: GuestPage> Evtchn<S, P> {
    /// Event channels for domain `domid` with `nr_vcpus` vCPUs, ports up to `max_port`
    /// (inclusive; Xen's `max_evtchn_port`: `xl` gives a domU 1023, dom0 gets the ABI's
    /// maximum, so pass `u32::MAX`), delivering into `shared`. The domain starts with the
    /// 2-level ABI and port 0 reserved.
    pub fn new(domid: DomId, nr_vcpus: u32, max_port: u32, shared: S) -> Self {
        let mut ports = vec![Channel::FREE; PORTS_PER_BUCKET as usize];
        ports[0].state = PortState::Reserved;
        Self {
            domid,
            nr_vcpus,
            max_port,
            ports,
            active: 0,
            virqs: vec![[0; NR_VIRQS as usize]; nr_vcpus as usize],
            fifo: None,
            shared,
        }
    }

    /// The domain these channels belong to.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The domain's vCPU count.
    pub fn nr_vcpus(&self) -> u32 {
        self.nr_vcpus
    }

    /// The highest port the domain may allocate (before the ABI's own limit).
    pub fn max_port(&self) -> u32 {
        self.max_port
    }

    /// Ports that are neither free nor reserved (a hypervisor port the guest closed counts
    /// until keel releases it).
    pub fn active_ports(&self) -> u32 {
        self.active
    }

    /// The ABI in use.
    pub fn abi(&self) -> Abi {
        match &self.fifo {
            None => Abi::TwoLevel,
            Some(f) => Abi::Fifo { event_words: f.event_words() },
        }
    }

    /// The guest memory events are delivered into.
    pub fn shared(&self) -> &S {
        &self.shared
    }

    /// The guest memory events are delivered into, e.g. to register a `vcpu_info` (keel then
    /// sets every selector bit and `evtchn_upcall_pending` in the new area, as Xen does).
    pub fn shared_mut(&mut self) -> &mut S {
        &mut self.shared
    }

    // ---- Port table ---------------------------------------------------------------------

    /// Xen `port_is_valid`: the port's bucket exists. Free ports can be valid.
    fn index(&self, port: EvtchnPort) -> Result<usize, Errno> {
        let idx = port.0 as usize;
        if idx < self.ports.len() {
            Ok(idx)
        } else {
            Err(Errno::EINVAL)
        }
    }

    /// Ports the current ABI can address (Xen `max_evtchns`): 4096, or 2^17 with FIFO
    /// whether or not the event array pages exist yet (an event raised on a port without its
    /// page is remembered until the page is added).
    fn abi_ports(&self) -> u32 {
        if self.fifo.is_some() {
            EVTCHN_FIFO_NR_CHANNELS
        } else {
            EVTCHN_2L_NR_CHANNELS
        }
    }

    /// FIFO: the port is still on a queue and cannot be reused yet.
    fn is_busy(&self, port: EvtchnPort) -> bool {
        self.fifo.as_ref().is_some_and(|f| f.is_busy(port))
    }

    /// Xen `get_free_port`: the lowest free, not busy port >= 1, growing the table by
    /// buckets when needed (the growth stays even if the operation then fails, as in Xen).
    fn allocate(&mut self) -> Result<usize, Errno> {
        let limit = self.max_port.min(self.abi_ports() - 1);
        for port in 1..=limit {
            let idx = port as usize;
            if idx >= self.ports.len() {
                let buckets = idx / PORTS_PER_BUCKET as usize + 1;
                self.ports.resize(buckets * PORTS_PER_BUCKET as usize, Channel::FREE);
                return Ok(idx);
            }
            if self.ports[idx].state == PortState::Free && !self.is_busy(EvtchnPort(port)) {
                return Ok(idx);
            }
        }
        Err(Errno::ENOSPC)
    }

    /// Binds the free port `idx` (Xen: set the state, then `evtchn_port_init`, which gives a
    /// FIFO port the default priority).
    fn bind(&mut self, idx: usize, state: PortState, notify_vcpu: u32) {
        let ch = &mut self.ports[idx];
        ch.state = state;
        ch.notify_vcpu = notify_vcpu;
        ch.fifo.priority = EVTCHN_FIFO_PRIORITY_DEFAULT as u8;
        self.active += 1;
    }

    /// Xen `evtchn_free`: clear the pending bit (so a re-bound port does not fire at once),
    /// make the port free and notifying vCPU 0.
    fn free(&mut self, idx: usize) {
        self.unbind(idx, PortState::Free);
        self.active = self.active.saturating_sub(1);
    }

    /// What closing does to the port itself: clear its pending bit, leave it in `state`
    /// (free, or closed but held by the hypervisor) notifying vCPU 0.
    fn unbind(&mut self, idx: usize, state: PortState) {
        let port = EvtchnPort(idx as u32);
        match &self.fifo {
            None => two_level::clear_pending(&self.shared, port),
            Some(f) => f.clear_pending(port),
        }
        let ch = &mut self.ports[idx];
        ch.state = state;
        ch.notify_vcpu = 0;
        // Xen leaves this flag set; clearing it keeps a stale event from firing on the
        // port's next binding when its page arrives.
        ch.fifo.pending_without_word = false;
    }

    /// Raises port `idx` for `vcpu` with the ABI in use (Xen `evtchn_port_set_pending`,
    /// which ignores ports that are not usable).
    fn raise(&mut self, idx: usize, vcpu: u32) -> Raised {
        let Some(ch) = self.ports.get_mut(idx) else {
            return Raised::NONE;
        };
        if !ch.state.is_usable() {
            return Raised::NONE;
        }
        let port = EvtchnPort(idx as u32);
        match &mut self.fifo {
            None => two_level::set_pending(&self.shared, port, vcpu),
            Some(f) => f.set_pending(&self.shared, &mut ch.fifo, port, vcpu),
        }
    }

    /// Raises `port` for its notify vCPU.
    fn raise_port(&mut self, port: EvtchnPort) -> Notify {
        let idx = port.0 as usize;
        let Some(vcpu) = self.ports.get(idx).map(|ch| ch.notify_vcpu) else {
            return Notify::none(self.domid);
        };
        self.raise(idx, vcpu).notify(self.domid, port)
    }

    fn port_pending(&self, port: EvtchnPort) -> bool {
        match &self.fifo {
            None => two_level::is_pending(&self.shared, port),
            Some(f) => f.is_pending(port),
        }
    }

    fn port_masked(&self, port: EvtchnPort) -> bool {
        match &self.fifo {
            None => two_level::is_masked(&self.shared, port),
            Some(f) => f.is_masked(port),
        }
    }

    // ---- EVTCHNOP_* ---------------------------------------------------------------------

    /// `EVTCHNOP_alloc_unbound`: a new port that `remote_dom` may bind to. keel resolves
    /// `DOMID_SELF` (in both `dom` and `remote_dom`) and checks privilege first; Xen does
    /// not check that `remote_dom` exists.
    ///
    /// Errors: `-ENOSPC` (no free port).
    pub fn alloc_unbound(&mut self, remote_dom: DomId) -> Result<EvtchnPort, Errno> {
        let idx = self.allocate()?;
        self.bind(idx, PortState::Unbound { remote_dom }, 0);
        Ok(EvtchnPort(idx as u32))
    }

    /// `EVTCHNOP_bind_interdomain`: connects a new local port to `remote_port` of the peer
    /// (`Peer::Same` for `remote_dom` == this domain). Afterwards the local port is set
    /// pending, as Xen does, because notifications sent while the remote port was unbound
    /// were dropped.
    ///
    /// Errors, in Xen's order: `-ENOSPC` (no free local port), `-EINVAL` (remote port
    /// invalid, not unbound, or not reserved for this domain). A [`Peer::Other`] with this
    /// domain's own id is a caller bug and fails `-EINVAL`.
    pub fn bind_interdomain(
        &mut self,
        mut peer: Peer<'_, S, P>,
        remote_port: EvtchnPort,
    ) -> Result<(EvtchnPort, Notify), Errno> {
        let me = self.domid;
        let remote_dom = peer.domid().unwrap_or(me);
        if matches!(peer, Peer::Other(_)) && remote_dom == me {
            return Err(Errno::EINVAL);
        }
        let lidx = self.allocate()?;
        let lport = EvtchnPort(lidx as u32);
        let remote = match &mut peer {
            Peer::Same => &mut *self,
            Peer::Other(other) => &mut **other,
        };
        let ridx = remote.index(remote_port)?;
        if remote.ports[ridx].state != (PortState::Unbound { remote_dom: me }) {
            return Err(Errno::EINVAL);
        }
        remote.ports[ridx].state = PortState::Interdomain { remote_dom: me, remote_port: lport };
        self.bind(lidx, PortState::Interdomain { remote_dom, remote_port }, 0);
        let notify = self.raise_port(lport);
        Ok((lport, notify))
    }

    /// `EVTCHNOP_bind_virq`: a new port for `virq` on `vcpu` (global VIRQs: vCPU 0 only,
    /// movable later with [`Evtchn::bind_vcpu`]).
    ///
    /// Errors, in Xen's order: `-EINVAL` (no such VIRQ; global VIRQ on a vCPU other than
    /// 0), `-ENOENT` (no such vCPU), `-EEXIST` (already bound on that vCPU), `-ENOSPC`.
    pub fn bind_virq(&mut self, virq: u32, vcpu: u32) -> Result<EvtchnPort, Errno> {
        if virq >= NR_VIRQS || (!virq_is_per_vcpu(virq) && vcpu != 0) {
            return Err(Errno::EINVAL);
        }
        if vcpu >= self.nr_vcpus {
            return Err(Errno::ENOENT);
        }
        let slot = (vcpu as usize, virq as usize);
        if self.virqs[slot.0][slot.1] != 0 {
            return Err(Errno::EEXIST);
        }
        let idx = self.allocate()?;
        self.bind(idx, PortState::Virq { virq }, vcpu);
        self.virqs[slot.0][slot.1] = idx as u32;
        Ok(EvtchnPort(idx as u32))
    }

    /// `EVTCHNOP_bind_ipi`: a new port that [`Evtchn::send`] raises on `vcpu`.
    ///
    /// Errors: `-ENOENT` (no such vCPU), `-ENOSPC`.
    pub fn bind_ipi(&mut self, vcpu: u32) -> Result<EvtchnPort, Errno> {
        if vcpu >= self.nr_vcpus {
            return Err(Errno::ENOENT);
        }
        let idx = self.allocate()?;
        self.bind(idx, PortState::Ipi, vcpu);
        Ok(EvtchnPort(idx as u32))
    }

    /// `EVTCHNOP_bind_pirq`: keel gives guests no physical IRQs, so this answers as Xen does
    /// for a domain with no PIRQs (`pirq >= d->nr_pirqs`): `-EINVAL`, whatever the
    /// arguments.
    pub fn bind_pirq(&mut self, _pirq: u32, _flags: u32) -> Result<EvtchnPort, Errno> {
        Err(Errno::EINVAL)
    }

    /// `EVTCHNOP_close`. The remote end of an interdomain channel becomes unbound, reserved
    /// for this domain, so that it can bind again (Xen `evtchn_close`). The closed port's
    /// pending bit is cleared; a FIFO port still on a queue stays busy until the guest
    /// unlinks it. A port whose other end is the hypervisor becomes
    /// [`PortState::HypervisorClosed`]: closed for the guest, not reusable while keel holds it.
    ///
    /// Errors: `-EINVAL` (invalid, free or reserved port, or a hypervisor port already
    /// closed); [`Error::NeedPeer`] for an interdomain port whose remote domain was not passed.
    pub fn close(&mut self, port: EvtchnPort, mut peer: Peer<'_, S, P>) -> Result<(), Error> {
        let idx = self.index(port)?;
        match self.ports[idx].state {
            PortState::Free | PortState::Reserved | PortState::HypervisorClosed => return Err(Errno::EINVAL.into()),
            PortState::Hypervisor => {
                self.unbind(idx, PortState::HypervisorClosed);
                return Ok(());
            }
            PortState::Unbound { .. } | PortState::Ipi => {}
            PortState::Virq { virq } => {
                let vcpu = if virq_is_per_vcpu(virq) { self.ports[idx].notify_vcpu } else { 0 };
                if let Some(slot) = self.virqs.get_mut(vcpu as usize).and_then(|row| row.get_mut(virq as usize)) {
                    if *slot == port.0 {
                        *slot = 0;
                    }
                }
            }
            PortState::Interdomain { remote_dom, remote_port } => {
                let me = self.domid;
                let back = PortState::Interdomain { remote_dom: me, remote_port: port };
                if remote_dom == me {
                    self.free(idx);
                    if let Some(r) = self.ports.get_mut(remote_port.0 as usize) {
                        if r.state == back {
                            r.state = PortState::Unbound { remote_dom: me };
                        }
                    }
                    return Ok(());
                }
                let other = peer.get(remote_dom).ok_or(Error::NeedPeer(remote_dom))?;
                if let Some(r) = other.ports.get_mut(remote_port.0 as usize) {
                    if r.state == back {
                        r.state = PortState::Unbound { remote_dom: me };
                    }
                }
            }
        }
        self.free(idx);
        Ok(())
    }

    /// `EVTCHNOP_send`: raises the remote end of an interdomain channel (in the peer, or in
    /// this domain for loopback) or an IPI port itself, on the notify vCPU of the port
    /// raised. Sending on an unbound port is silently dropped, as Xen does. Sending on a
    /// port whose other end is the hypervisor raises nothing: the answer names the port in
    /// [`Notify::to_hypervisor`] for keel to serve.
    ///
    /// Errors: `-EINVAL` (invalid port; free, reserved, closed or VIRQ port);
    /// [`Error::NeedPeer`] for an interdomain port whose remote domain was not passed.
    pub fn send(&mut self, port: EvtchnPort, mut peer: Peer<'_, S, P>) -> Result<Notify, Error> {
        let idx = self.index(port)?;
        match self.ports[idx].state {
            PortState::Interdomain { remote_dom, remote_port } => {
                if remote_dom == self.domid {
                    return Ok(self.raise_port(remote_port));
                }
                let other = peer.get(remote_dom).ok_or(Error::NeedPeer(remote_dom))?;
                Ok(other.raise_port(remote_port))
            }
            PortState::Ipi => Ok(self.raise_port(port)),
            PortState::Hypervisor => Ok(Notify::hypervisor(self.domid, port)),
            PortState::Unbound { .. } => Ok(Notify::none(self.domid)),
            PortState::Free | PortState::Reserved | PortState::HypervisorClosed | PortState::Virq { .. } => {
                Err(Errno::EINVAL.into())
            }
        }
    }

    /// `EVTCHNOP_status` for one of this domain's ports (keel resolves `dom` and checks
    /// privilege). A free port whose bucket exists reads as closed.
    ///
    /// Errors: `-EINVAL` (port beyond the table).
    pub fn status(&self, port: EvtchnPort) -> Result<PortStatus, Errno> {
        let ch = &self.ports[self.index(port)?];
        Ok(PortStatus { binding: ch.state.binding(port), vcpu: ch.notify_vcpu })
    }

    /// `EVTCHNOP_bind_vcpu`: events on `port` notify `vcpu` from now on. Xen allows it for
    /// unbound and interdomain ports and global VIRQs (and so for a port whose other end is
    /// the hypervisor, which the guest sees as interdomain).
    ///
    /// Events already pending: with FIFO, an event still on the old vCPU's queue is
    /// delivered there (as with Xen; the port's last-queue tracking keeps the queues intact).
    /// With 2-level, Xen only changes the notify vCPU, so an event pending and unmasked at
    /// that moment stays announced on the old vCPU, whose guest handler ignores ports bound
    /// elsewhere (Linux masks the port around the call and unmasks it afterwards to get it
    /// redelivered). keel goes one step further: it re-announces such an event on the new
    /// vCPU (selector bit, then upcall), so it is not stranded; at worst the guest scans once
    /// for nothing.
    ///
    /// Errors, in Xen's order: `-ENOENT` (no such vCPU), `-EINVAL` (invalid port; free,
    /// reserved, IPI or per-vCPU VIRQ port).
    pub fn bind_vcpu(&mut self, port: EvtchnPort, vcpu: u32) -> Result<Notify, Errno> {
        if vcpu >= self.nr_vcpus {
            return Err(Errno::ENOENT);
        }
        let idx = self.index(port)?;
        let ch = &mut self.ports[idx];
        match ch.state {
            PortState::Virq { virq } if !virq_is_per_vcpu(virq) => {}
            PortState::Unbound { .. } | PortState::Interdomain { .. } | PortState::Hypervisor => {}
            _ => return Err(Errno::EINVAL),
        }
        let moved = ch.notify_vcpu != vcpu;
        ch.notify_vcpu = vcpu;
        let upcall = if moved && self.fifo.is_none() { two_level::reannounce(&self.shared, port, vcpu) } else { None };
        Ok(Notify::event(self.domid, upcall, None))
    }

    /// `EVTCHNOP_unmask`: clears the port's mask and, if it is pending, delivers it now to
    /// its notify vCPU. Free ports are accepted and ignored, as by Xen.
    ///
    /// Errors: `-EINVAL` (port beyond the table).
    pub fn unmask(&mut self, port: EvtchnPort) -> Result<Notify, Errno> {
        let idx = self.index(port)?;
        let ch = &mut self.ports[idx];
        if !ch.state.is_usable() {
            return Ok(Notify::none(self.domid));
        }
        let vcpu = ch.notify_vcpu;
        let raised = match &mut self.fifo {
            None => Raised { newly_pending: false, upcall: two_level::unmask(&self.shared, port, vcpu) },
            Some(f) => f.unmask(&self.shared, &mut ch.fifo, port, vcpu),
        };
        Ok(raised.notify(self.domid, port))
    }

    /// `EVTCHNOP_reset` (also what domain destruction does): closes every port and goes
    /// back to the 2-level ABI, dropping (unpinning) the FIFO pages. keel checks privilege
    /// and that the domain is the caller or paused.
    ///
    /// Ports whose other end is the hypervisor are left as they are, bound (or closed and
    /// held): keel, their backend, stays connected, as Xen's toolstack and xenconsoled connect
    /// a console again after a soft reset, so that a kernel started anew (kexec) finds the
    /// console its HVM parameters name. (Xen's own hypervisor-held channels survive a reset
    /// too.) The guest closes one with [`Evtchn::close`]. Leaving FIFO clears its pending
    /// state, as every 2-level pending bit.
    ///
    /// Interdomain ports whose remote domain is not the peer passed are left alone, and the
    /// call then fails with [`Error::NeedPeer`] for one of those domains after closing
    /// everything else: call again with it (use [`Evtchn::peer_domains`] to see them all)
    /// until it succeeds. Loopback channels need no peer.
    pub fn reset(&mut self, mut peer: Peer<'_, S, P>) -> Result<(), Error> {
        let mut needed = None;
        for idx in 1..self.ports.len() {
            match self.ports[idx].state {
                PortState::Free | PortState::Reserved | PortState::Hypervisor | PortState::HypervisorClosed => continue,
                PortState::Interdomain { remote_dom, .. }
                    if remote_dom != self.domid && peer.domid() != Some(remote_dom) =>
                {
                    needed.get_or_insert(remote_dom);
                    continue;
                }
                _ => {}
            }
            self.close(EvtchnPort(idx as u32), peer.reborrow())?;
        }
        if let Some(dom) = needed {
            return Err(Error::NeedPeer(dom));
        }
        // Xen `evtchn_reset`: with every port closed, switch back to 2-level.
        if self.fifo.take().is_some() {
            self.clear_two_level_state();
        }
        Ok(())
    }

    /// Clears the 2-level pending bitmap and every selector word, on the way back from FIFO
    /// (every port is free by then).
    ///
    /// Xen leaves both as they were when the domain switched to FIFO: ports pending then
    /// keep their bit (closing them under FIFO cleared their event words instead), and a
    /// selector bit set then is never cleared by a FIFO guest, which does not read it. Left
    /// alone, the first event on a re-bound port would find its pending bit, or its word's
    /// selector bit, already set and raise no upcall.
    fn clear_two_level_state(&self) {
        use core::sync::atomic::Ordering::SeqCst;
        for word in 0..TWO_LEVEL_WORDS {
            self.shared.pending(word).store(0, SeqCst);
        }
        for vcpu in 0..self.nr_vcpus {
            if let Some(sel) = self.shared.pending_sel(vcpu) {
                sel.store(0, SeqCst);
            }
        }
    }

    /// `EVTCHNOP_set_priority` (FIFO): the priority of the port's *next* linking; an event
    /// already queued stays on its queue.
    ///
    /// Errors, in Xen's order: `-EINVAL` (port beyond the table), `-ENOSYS` (2-level ABI),
    /// `-EACCES` (free or reserved port), `-EINVAL` (priority above 15).
    pub fn set_priority(&mut self, port: EvtchnPort, priority: u32) -> Result<(), Errno> {
        let idx = self.index(port)?;
        if self.fifo.is_none() {
            return Err(Errno::ENOSYS);
        }
        let ch = &mut self.ports[idx];
        if !ch.state.is_usable() {
            return Err(Errno::EACCES);
        }
        if priority > EVTCHN_FIFO_PRIORITY_MIN {
            return Err(Errno::EINVAL);
        }
        ch.fifo.priority = priority as u8;
        Ok(())
    }

    /// `EVTCHNOP_init_control`: registers `vcpu`'s FIFO control block at byte `offset` of a
    /// guest page that `map` maps and pins (keel translates `control_gfn`; Xen answers
    /// `-EINVAL` for a frame it cannot map). `map` is called only once the arguments are
    /// valid, so the errors come in Xen's order. The caller reports `link_bits` =
    /// [`xen_abi::event_channel::EVTCHN_FIFO_LINK_BITS`] on success.
    ///
    /// The first call switches the domain to FIFO: every vCPU gets empty queues, every port
    /// the default priority, and every bound port pending in the 2-level bitmap is
    /// remembered as pending and raised when its event array page is added.
    ///
    /// Errors, in Xen's order: `-ENOENT` (no such vCPU), `-EINVAL` (block crosses the page
    /// end; offset not 8-aligned; vCPU already has a control block), then `map`'s error.
    pub fn init_control(
        &mut self,
        vcpu: u32,
        offset: u32,
        map: impl FnOnce() -> Result<P, Errno>,
    ) -> Result<(), Errno> {
        if vcpu >= self.nr_vcpus {
            return Err(Errno::ENOENT);
        }
        let base = control_block_base(offset)?;
        if self.fifo.as_ref().is_some_and(|f| f.has_control_block(vcpu)) {
            return Err(Errno::EINVAL);
        }
        let page = map()?;
        if let Some(f) = &mut self.fifo {
            f.set_control_block(vcpu, page, base);
            return Ok(());
        }
        let mut fifo = Fifo::new(self.nr_vcpus);
        fifo.set_control_block(vcpu, page, base);
        // Xen `setup_ports`: carry the 2-level pending state over (Xen does it for every
        // valid port; only bound ones matter, since a free port's pending bit means nothing).
        let two_level_ports = self.ports.len().min(EVTCHN_2L_NR_CHANNELS as usize);
        for idx in 1..two_level_ports {
            let pending = two_level::is_pending(&self.shared, EvtchnPort(idx as u32));
            let ch = &mut self.ports[idx];
            ch.fifo.priority = EVTCHN_FIFO_PRIORITY_DEFAULT as u8;
            ch.fifo.pending_without_word = ch.state.is_usable() && pending;
        }
        self.fifo = Some(fifo);
        Ok(())
    }

    /// `EVTCHNOP_expand_array`: adds the next page of FIFO event words, which `map` maps and
    /// pins (called only once the domain is known to have room for it). Events raised on
    /// the page's ports while it was missing are raised now; the returned notifications are
    /// the resulting upcalls and pending ports.
    ///
    /// Errors, in Xen's order: `-EOPNOTSUPP` (2-level ABI), `-ENOSPC` (all 128 pages
    /// present), then `map`'s error.
    pub fn expand_array(&mut self, map: impl FnOnce() -> Result<P, Errno>) -> Result<Vec<Notify>, Errno> {
        let fifo = self.fifo.as_mut().ok_or(Errno::EOPNOTSUPP)?;
        if !fifo.can_add_page() {
            return Err(Errno::ENOSPC);
        }
        let ports = fifo.add_page(map()?);
        let mut out = Vec::new();
        let end = (ports.end as usize).min(self.ports.len());
        for idx in (ports.start as usize)..end {
            let ch = &mut self.ports[idx];
            if !ch.fifo.pending_without_word {
                continue;
            }
            ch.fifo.pending_without_word = false;
            let port = EvtchnPort(idx as u32);
            let raised = fifo.set_pending(&self.shared, &mut ch.fifo, port, ch.notify_vcpu);
            let notify = raised.notify(self.domid, port);
            if !notify.is_empty() {
                out.push(notify);
            }
        }
        Ok(out)
    }

    // ---- keel's own use -----------------------------------------------------------------

    /// Raises a VIRQ (Xen `send_guest_vcpu_virq` / `send_guest_global_virq`): a per-vCPU
    /// VIRQ on the port `vcpu` bound; a global VIRQ on the port bound on vCPU 0 (`vcpu` is
    /// ignored), delivered to that port's notify vCPU. An unbound VIRQ, or an unknown VIRQ
    /// or vCPU, does nothing.
    pub fn send_virq(&mut self, virq: u32, vcpu: u32) -> Notify {
        let Some(port) = self.virq_port(virq, vcpu) else {
            return Notify::none(self.domid);
        };
        self.raise_port(port)
    }

    /// A new port whose other end is the hypervisor ([`PortState::Hypervisor`]), notifying
    /// vCPU 0: keel's end of a device it serves itself (the PV console of a domain it built,
    /// where Xen's toolstack allocates an unbound port that xenconsoled in dom0 then binds).
    /// keel holds the port until it calls [`Evtchn::release_hypervisor`]; meanwhile the number
    /// is never given to another binding, even after the guest closes it.
    ///
    /// Errors: `-ENOSPC` (no free port).
    pub fn bind_hypervisor(&mut self) -> Result<EvtchnPort, Errno> {
        let idx = self.allocate()?;
        self.bind(idx, PortState::Hypervisor, 0);
        Ok(EvtchnPort(idx as u32))
    }

    /// keel notifies the guest through its end of `port` (Xen: the backend's
    /// `EVTCHNOP_send`): the port is raised on its notify vCPU, like a VIRQ. A port that is
    /// not [`PortState::Hypervisor`] (the guest closed it, or it is something else) is left
    /// alone.
    pub fn raise_hypervisor(&mut self, port: EvtchnPort) -> Notify {
        match self.ports.get(port.0 as usize) {
            Some(ch) if ch.state == PortState::Hypervisor => self.raise_port(port),
            _ => Notify::none(self.domid),
        }
    }

    /// keel lets go of its end of `port`. A port the guest still has open becomes unbound,
    /// reserved for [`HYPERVISOR_REMOTE_DOM`] (what the guest's end becomes on Xen when the
    /// backend in dom0 closes its port); one the guest closed becomes free.
    ///
    /// Errors: `-EINVAL` (not a port whose other end is the hypervisor).
    pub fn release_hypervisor(&mut self, port: EvtchnPort) -> Result<(), Errno> {
        let idx = self.index(port)?;
        match self.ports[idx].state {
            PortState::Hypervisor => {
                self.ports[idx].state = PortState::Unbound { remote_dom: HYPERVISOR_REMOTE_DOM };
                Ok(())
            }
            PortState::HypervisorClosed => {
                self.ports[idx].state = PortState::Free;
                self.active = self.active.saturating_sub(1);
                Ok(())
            }
            _ => Err(Errno::EINVAL),
        }
    }

    /// The port bound to `virq` on `vcpu` (vCPU 0's for a global VIRQ, whatever `vcpu`).
    pub fn virq_port(&self, virq: u32, vcpu: u32) -> Option<EvtchnPort> {
        let vcpu = if virq_is_per_vcpu(virq) { vcpu } else { 0 };
        let port = *self.virqs.get(vcpu as usize)?.get(virq as usize)?;
        (port != 0).then_some(EvtchnPort(port))
    }

    /// Whether `port` is pending, for `SCHEDOP_poll` (Xen `evtchn_port_poll`).
    ///
    /// Errors: `-EINVAL` (port beyond the table, free or reserved).
    pub fn is_pending(&self, port: EvtchnPort) -> Result<bool, Errno> {
        let idx = self.index(port)?;
        if !self.ports[idx].state.is_usable() {
            return Err(Errno::EINVAL);
        }
        Ok(self.port_pending(port))
    }

    /// Every port in use (not free, not reserved), in port order.
    pub fn ports(&self) -> impl Iterator<Item = PortInfo> + '_ {
        self.ports.iter().enumerate().filter(|(_, ch)| ch.state.is_usable()).map(|(idx, ch)| {
            let port = EvtchnPort(idx as u32);
            PortInfo {
                port,
                state: ch.state,
                notify_vcpu: ch.notify_vcpu,
                pending: self.port_pending(port),
                masked: self.port_masked(port),
                priority: ch.fifo.priority,
            }
        })
    }

    /// The other domains this domain has interdomain channels with, sorted, each once: the
    /// peers [`Evtchn::reset`] will need.
    pub fn peer_domains(&self) -> Vec<DomId> {
        let mut doms: Vec<DomId> = self
            .ports
            .iter()
            .filter_map(|ch| match ch.state {
                PortState::Interdomain { remote_dom, .. } if remote_dom != self.domid => Some(remote_dom),
                _ => None,
            })
            .collect();
        doms.sort_unstable();
        doms.dedup();
        doms
    }

    /// The FIFO state, for tests.
    #[cfg(test)]
    pub(crate) fn fifo_state(&self) -> Option<&Fifo<P>> {
        self.fifo.as_ref()
    }

    /// The table length (valid ports), for tests.
    #[cfg(test)]
    pub(crate) fn valid_ports(&self) -> usize {
        self.ports.len()
    }
}

#[cfg(test)]
mod tests;
