//! Event channels, keel's side of `keel-evtchn`: where a domain's shared event words live,
//! the locking of one or two domains' channel tables, and what keel does after an operation
//! (raise a vCPU's upcall, wake vCPUs polling a port, serve a device whose other end is keel
//! itself: the PV console).
//!
//! Locking: a domain's event-channel lock comes before its vCPUs' locks and any memory lock;
//! when two domains' tables are needed they are taken in domid order.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use keel_evtchn::{Error, Evtchn, Notify, Peer, SharedWords};
use xen_abi::errno::Errno;
use xen_abi::EvtchnPort;

use super::memory::PinnedPage;
use super::shared::VCPU_INFO_SIZE;
use super::Domain;

/// A domain's event channels.
pub type Channels = Evtchn<KeelShared, PinnedPage>;

/// The shared words of a domain's events: its shared_info page and each vCPU's vcpu_info.
///
/// Holds direct-map addresses. Invariant (upheld by `Domain`): the shared_info frame is the
/// domain's for as long as the domain exists, and a registered vcpu_info lies in a page its
/// vCPU keeps pinned for as long as the vCPU exists; the `Channels` holding this are only
/// used while the domain is alive.
pub struct KeelShared {
    shared_info: u64,
    /// Address of each vCPU's vcpu_info (`None`: none yet, a vCPU beyond 31).
    vcpu_info: Vec<Option<u64>>,
}

impl KeelShared {
    /// The words of a domain whose shared_info frame is at `shared_info_va` (direct map),
    /// with `nr_vcpus` vCPUs whose vcpu_info is in shared_info for the first 32.
    pub fn new(shared_info_va: u64, nr_vcpus: u32) -> Self {
        let base = shared_info_va + core::mem::offset_of!(xen_abi::shared_info::SharedInfo, vcpu_info) as u64;
        let vcpu_info = (0..nr_vcpus as usize)
            .map(|v| (v < xen_abi::shared_info::XEN_LEGACY_MAX_VCPUS).then(|| base + (v * VCPU_INFO_SIZE) as u64))
            .collect();
        KeelShared { shared_info: shared_info_va, vcpu_info }
    }

    /// vCPU `vcpu` registered its vcpu_info at direct-map address `va` (in a page it pins).
    pub fn set_vcpu_info(&mut self, vcpu: u32, va: u64) {
        if let Some(slot) = self.vcpu_info.get_mut(vcpu as usize) {
            *slot = Some(va);
        }
    }

    fn word<T>(&self, va: u64) -> &T {
        // SAFETY: `va` is within a live, pinned or keel-owned frame (see the type's invariant),
        // naturally aligned for T (offsets from xen-abi's checked layouts), and T is an atomic
        // type: the guest changes these words concurrently.
        unsafe { &*(va as *const T) }
    }
}

impl SharedWords for KeelShared {
    fn pending(&self, word: usize) -> &AtomicU64 {
        let off = core::mem::offset_of!(xen_abi::shared_info::SharedInfo, evtchn_pending) + 8 * (word % 64);
        self.word(self.shared_info + off as u64)
    }

    fn mask(&self, word: usize) -> &AtomicU64 {
        let off = core::mem::offset_of!(xen_abi::shared_info::SharedInfo, evtchn_mask) + 8 * (word % 64);
        self.word(self.shared_info + off as u64)
    }

    fn pending_sel(&self, vcpu: u32) -> Option<&AtomicU64> {
        let base = (*self.vcpu_info.get(vcpu as usize)?)?;
        Some(self.word(base + core::mem::offset_of!(xen_abi::shared_info::VcpuInfo, evtchn_pending_sel) as u64))
    }

    fn upcall_pending(&self, vcpu: u32) -> Option<&AtomicU8> {
        let base = (*self.vcpu_info.get(vcpu as usize)?)?;
        Some(self.word(base + core::mem::offset_of!(xen_abi::shared_info::VcpuInfo, evtchn_upcall_pending) as u64))
    }
}

impl keel_evtchn::GuestPage for PinnedPage {
    fn words(&self) -> &[AtomicU32; 1024] {
        self.words()
    }
}

/// What a vCPU is polling (SCHEDOP_poll): 0 nothing, `ANY_PORT` several ports, else the port.
pub const ANY_PORT: u32 = u32::MAX;

/// Do what an operation's `Notify` asks: raise the upcall of a vCPU, wake the vCPUs polling
/// the port, serve the backend keel runs behind a port whose other end is keel (the guest
/// notified its PV console). `d` is the domain the notify names, if the caller has it at
/// hand. Called with no event-channel lock held.
pub fn act(notify: Notify, d: Option<&Arc<Domain>>) {
    if notify.is_empty() {
        return;
    }
    let owned;
    let d = match d {
        Some(d) if d.id == notify.dom.0 => d,
        _ => {
            let Some(found) = super::get(notify.dom.0) else { return };
            owned = found;
            &owned
        }
    };
    if let Some(v) = notify.upcall.and_then(|v| d.vcpus.get(v as usize)) {
        v.raise_upcall();
    }
    if let Some(port) = notify.pending {
        for v in &d.vcpus {
            let polled = v.polling.load(Ordering::Acquire);
            if polled == ANY_PORT || (polled != 0 && polled == port.0) {
                v.kick();
            }
        }
    }
    if let Some(port) = notify.to_hypervisor {
        // The console is the only backend keel serves itself so far.
        if d.pvconsole.lock().as_ref().is_some_and(|c| c.port() == port) {
            super::console::service(d);
        }
    }
}

/// Run `f` on `a`'s channels with `b`'s as the peer (both locked, in domid order; `Same`
/// when they are one domain).
pub fn with_pair<R>(a: &Domain, b: &Domain, f: impl FnOnce(&mut Channels, Peer<'_, KeelShared, PinnedPage>) -> R) -> R {
    if a.id == b.id {
        return f(&mut a.evtchn.lock(), Peer::Same);
    }
    if a.id < b.id {
        let mut x = a.evtchn.lock();
        let mut y = b.evtchn.lock();
        f(&mut x, Peer::Other(&mut y))
    } else {
        let mut y = b.evtchn.lock();
        let mut x = a.evtchn.lock();
        f(&mut x, Peer::Other(&mut y))
    }
}

/// Run a two-domain operation on `d`'s channels: first with `d` alone (loopback, or no peer
/// needed); if the crate names a peer it needs, lock that one too and retry (the crate
/// re-validates: bindings may have changed in between).
pub fn with_peer<R>(
    d: &Arc<Domain>,
    mut f: impl FnMut(&mut Channels, Peer<'_, KeelShared, PinnedPage>) -> Result<R, Error>,
) -> Result<R, Errno> {
    let mut need = match f(&mut d.evtchn.lock(), Peer::Same) {
        Ok(r) => return Ok(r),
        Err(Error::Errno(e)) => return Err(e),
        Err(Error::NeedPeer(dom)) => dom,
    };
    // A few rounds at most: the binding can only change under a concurrent close/rebind.
    for _ in 0..8 {
        let Some(peer) = super::get(need.0) else {
            // The peer is gone; keel closes a domain's ports (turning its peers' ends
            // unbound) before it leaves the table, so this is a race with that close.
            return Err(Errno::EINVAL);
        };
        match with_pair(d, &peer, &mut f) {
            Ok(r) => return Ok(r),
            Err(Error::Errno(e)) => return Err(e),
            Err(Error::NeedPeer(dom)) => need = dom,
        }
    }
    Err(Errno::EAGAIN)
}

/// Close every port of a domain that is going away (its peers' ends become unbound, as on
/// Xen when a domain dies).
pub fn close_all(d: &Arc<Domain>) {
    if let Err(e) = with_peer(d, |ch, peer| ch.reset(peer)) {
        log::error!("d{}: closing its event channels failed: {e:?}", d.id);
    }
}

/// Whether `port` of `d` is pending (SCHEDOP_poll).
pub fn is_pending(d: &Domain, port: EvtchnPort) -> Result<bool, Errno> {
    d.evtchn.lock().is_pending(port)
}
