//! What an operation asks keel to do after it returns: raise an upcall, wake pollers.
//!
//! The crate only writes guest memory; interrupts and the scheduler are keel's. Every
//! operation that can make a port pending returns a [`Notify`] naming the domain concerned
//! (for `EVTCHNOP_send` on an interdomain channel, the *remote* domain), the vCPU whose
//! `evtchn_upcall_pending` went from 0 to 1 (keel injects the upcall and kicks that vCPU),
//! and the port whose pending bit went from 0 to 1 (keel wakes that domain's vCPUs blocked in
//! `SCHEDOP_poll` on it, as Xen's `evtchn_check_pollers` does; a masked port still wakes
//! pollers). A guest's `EVTCHNOP_send` on a port whose other end is the hypervisor
//! ([`crate::PortState::Hypervisor`]) raises nothing in any domain: the [`Notify`] names the
//! port in [`Notify::to_hypervisor`] instead, for keel to serve (the PV console).

use xen_abi::{DomId, EvtchnPort};

/// Follow-up work for keel after an event-channel operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "an upcall or a poller wake-up may be needed"]
pub struct Notify {
    /// The domain whose vCPU and port the other fields name.
    pub dom: DomId,
    /// This vCPU's `evtchn_upcall_pending` was set by this operation: inject the upcall
    /// (per-vCPU vector or callback vector) and kick the vCPU out of HLT or guest mode.
    pub upcall: Option<u32>,
    /// This port's pending bit was set by this operation: wake the domain's vCPUs polling it
    /// (`SCHEDOP_poll`).
    pub pending: Option<EvtchnPort>,
    /// The guest notified the hypervisor's end of this port of `dom`
    /// ([`crate::PortState::Hypervisor`]): keel serves whatever it bound the port for.
    pub to_hypervisor: Option<EvtchnPort>,
}

impl Notify {
    /// Nothing to do (for domain `dom`).
    pub const fn none(dom: DomId) -> Self {
        Self { dom, upcall: None, pending: None, to_hypervisor: None }
    }

    /// An upcall for `vcpu` and/or a newly pending `port` of domain `dom`.
    pub const fn event(dom: DomId, upcall: Option<u32>, pending: Option<EvtchnPort>) -> Self {
        Self { dom, upcall, pending, to_hypervisor: None }
    }

    /// The guest of `dom` notified the hypervisor's end of its `port`.
    pub const fn hypervisor(dom: DomId, port: EvtchnPort) -> Self {
        Self { dom, upcall: None, pending: None, to_hypervisor: Some(port) }
    }

    /// True if there is nothing to do.
    pub const fn is_empty(&self) -> bool {
        self.upcall.is_none() && self.pending.is_none() && self.to_hypervisor.is_none()
    }
}

/// What raising one port did, before it is tied to a domain and port ([`Notify`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Raised {
    /// The pending bit went from 0 to 1.
    pub newly_pending: bool,
    /// This vCPU's `evtchn_upcall_pending` went from 0 to 1.
    pub upcall: Option<u32>,
}

impl Raised {
    /// Nothing happened.
    pub const NONE: Raised = Raised { newly_pending: false, upcall: None };

    /// As a [`Notify`] for `port` of domain `dom`.
    pub fn notify(self, dom: DomId, port: EvtchnPort) -> Notify {
        Notify::event(dom, self.upcall, self.newly_pending.then_some(port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_empty_and_raised_maps_fields() {
        assert!(Notify::none(DomId(3)).is_empty());
        let n = Raised { newly_pending: true, upcall: Some(2) }.notify(DomId(3), EvtchnPort(9));
        assert_eq!(n, Notify::event(DomId(3), Some(2), Some(EvtchnPort(9))));
        assert!(!n.is_empty());
        let n = Raised { newly_pending: false, upcall: Some(1) }.notify(DomId(3), EvtchnPort(9));
        assert_eq!(n.pending, None);
        assert!(!n.is_empty());
        assert!(Raised::NONE.notify(DomId(1), EvtchnPort(1)).is_empty());
        let h = Notify::hypervisor(DomId(2), EvtchnPort(4));
        assert!(!h.is_empty());
        assert_eq!((h.upcall, h.pending, h.to_hypervisor), (None, None, Some(EvtchnPort(4))));
    }
}
