//! A port's hypervisor-side state: what it is bound to, whom it notifies, and its FIFO
//! bookkeeping. The pending and mask bits are not here: they live in guest memory.

use xen_abi::event_channel::EvtchnBinding;
use xen_abi::{DomId, EvtchnPort};

use crate::fifo::PortFifo;

/// What a port is bound to (Xen's `ECS_*` states). There is no PIRQ state: keel gives
/// guests no physical IRQs (see [`crate::Evtchn::bind_pirq`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortState {
    /// Available for allocation.
    Free,
    /// Never allocated: port 0.
    Reserved,
    /// Allocated by `EVTCHNOP_alloc_unbound`, or left behind when the remote end of an
    /// interdomain channel closed: waiting for `remote_dom` to bind it.
    Unbound {
        /// The domain allowed to bind the other end.
        remote_dom: DomId,
    },
    /// Connected to `remote_port` of `remote_dom` (possibly this domain: loopback).
    Interdomain {
        /// The other end's domain.
        remote_dom: DomId,
        /// The other end's port.
        remote_port: EvtchnPort,
    },
    /// Bound to a virtual IRQ. A per-vCPU VIRQ is bound on its notify vCPU; a global one is
    /// bound on vCPU 0 whatever vCPU it notifies.
    Virq {
        /// `VIRQ_*`.
        virq: u32,
    },
    /// An inter-processor interrupt: `EVTCHNOP_send` raises the port itself.
    Ipi,
    /// Connected to the hypervisor itself: keel is the other end, as the backend of a device
    /// it serves (the PV console of a domain keel built). The guest's `EVTCHNOP_send` goes to
    /// keel ([`crate::Notify::to_hypervisor`]); keel raises the port with
    /// [`crate::Evtchn::raise_hypervisor`]. `EVTCHNOP_close` closes it
    /// ([`PortState::HypervisorClosed`]); `EVTCHNOP_reset` leaves it connected.
    ///
    /// `EVTCHNOP_status` reports it as the guest would see the same channel on Xen, bound by a
    /// backend in dom0 (xenconsoled): interdomain, remote domain
    /// [`HYPERVISOR_REMOTE_DOM`] (0), and as remote port the port's own number. keel's end
    /// has no port of its own; mirroring the number keeps the answer stable, non-zero and
    /// different for every such channel of the domain.
    Hypervisor,
    /// A [`PortState::Hypervisor`] port the guest closed while keel still holds its end. It
    /// reads as closed (status, `EVTCHNOP_close`, `EVTCHNOP_send`, `SCHEDOP_poll` answer as for
    /// a free port) but is not allocated again until keel lets go of it
    /// ([`crate::Evtchn::release_hypervisor`]), so what keel holds never names another
    /// binding.
    HypervisorClosed,
}

/// The remote domain `EVTCHNOP_status` reports for a [`PortState::Hypervisor`] port: where
/// the backend would run on Xen (dom0).
pub const HYPERVISOR_REMOTE_DOM: DomId = DomId(0);

impl PortState {
    /// As `EVTCHNOP_status` reports it for port `port` (`Reserved` reads as closed, as with
    /// Xen; `port` only matters for [`PortState::Hypervisor`], whose reported remote port is
    /// the port's own number).
    pub fn binding(&self, port: EvtchnPort) -> EvtchnBinding {
        match *self {
            PortState::Free | PortState::Reserved | PortState::HypervisorClosed => EvtchnBinding::Closed,
            PortState::Unbound { remote_dom } => EvtchnBinding::Unbound { remote_dom },
            PortState::Interdomain { remote_dom, remote_port } => {
                EvtchnBinding::Interdomain { dom: remote_dom, port: remote_port }
            }
            PortState::Virq { virq } => EvtchnBinding::Virq(virq),
            PortState::Ipi => EvtchnBinding::Ipi,
            PortState::Hypervisor => EvtchnBinding::Interdomain { dom: HYPERVISOR_REMOTE_DOM, port },
        }
    }

    /// Xen's `evtchn_usable`: the port is bound to something (not free, not reserved, not
    /// closed while keel holds it), so its pending and mask bits mean something.
    pub fn is_usable(&self) -> bool {
        !matches!(self, PortState::Free | PortState::Reserved | PortState::HypervisorClosed)
    }
}

/// One entry of a domain's port table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Channel {
    pub state: PortState,
    /// vCPU that events on this port notify (0 for a free port, as Xen).
    pub notify_vcpu: u32,
    pub fifo: PortFifo,
}

impl Channel {
    /// A port that was never used.
    pub const FREE: Channel = Channel { state: PortState::Free, notify_vcpu: 0, fifo: PortFifo::INITIAL };
}

/// A port as [`crate::Evtchn::ports`] lists it (for teardown and `xl`-style dumps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortInfo {
    /// The port.
    pub port: EvtchnPort,
    /// Its binding.
    pub state: PortState,
    /// The vCPU it notifies.
    pub notify_vcpu: u32,
    /// Its pending bit in guest memory.
    pub pending: bool,
    /// Its mask bit in guest memory (true when the FIFO event word is missing).
    pub masked: bool,
    /// Its FIFO priority (meaningful with the FIFO ABI only).
    pub priority: u8,
}

/// `EVTCHNOP_status`'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortStatus {
    /// `status` and `u`.
    pub binding: EvtchnBinding,
    /// `vcpu`: the notify vCPU.
    pub vcpu: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_and_usability() {
        let p = EvtchnPort(5);
        assert_eq!(PortState::Free.binding(p), EvtchnBinding::Closed);
        assert_eq!(PortState::Reserved.binding(p), EvtchnBinding::Closed);
        assert_eq!(
            PortState::Unbound { remote_dom: DomId(4) }.binding(p),
            EvtchnBinding::Unbound { remote_dom: DomId(4) }
        );
        assert_eq!(
            PortState::Interdomain { remote_dom: DomId(2), remote_port: EvtchnPort(8) }.binding(p),
            EvtchnBinding::Interdomain { dom: DomId(2), port: EvtchnPort(8) }
        );
        assert_eq!(PortState::Virq { virq: 3 }.binding(p), EvtchnBinding::Virq(3));
        assert_eq!(PortState::Ipi.binding(p), EvtchnBinding::Ipi);
        assert!(!PortState::Free.is_usable() && !PortState::Reserved.is_usable());
        assert!(PortState::Ipi.is_usable() && PortState::Unbound { remote_dom: DomId(0) }.is_usable());
        assert_eq!(PortState::Hypervisor.binding(p), EvtchnBinding::Interdomain { dom: DomId(0), port: p });
        assert!(PortState::Hypervisor.is_usable());
        assert_eq!(PortState::HypervisorClosed.binding(p), EvtchnBinding::Closed);
        assert!(!PortState::HypervisorClosed.is_usable());
    }
}
