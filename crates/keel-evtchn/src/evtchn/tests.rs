//! Unit tests: every operation and every error, on both ABIs, loopback and two domains.

use std::vec;
use std::vec::Vec;

use xen_abi::event_channel::{
    EvtchnBinding, EVTCHN_FIFO_LINK_BITS, VIRQ_CONSOLE, VIRQ_DEBUG, VIRQ_DOM_EXC, VIRQ_TIMER, VIRQ_XENPMU,
};
use xen_abi::{DomId, Errno, EvtchnPort};

use super::*;
use crate::testkit::{domain, FakePage, FakeShared, Guest, TestEvtchn, LINKED, MASKED, PENDING};

const A: DomId = DomId(1);
const B: DomId = DomId(2);

fn p(n: u32) -> EvtchnPort {
    EvtchnPort(n)
}

fn fresh(domid: DomId, fifo: bool) -> (TestEvtchn, Guest) {
    let (mut d, mut g) = domain(domid.0, 2, 1023);
    if fifo {
        let _ = g.init_fifo(&mut d, 1);
    }
    (d, g)
}

/// Unmasks `port` the way a guest does when it is not pending (no hypercall needed).
fn open(g: &Guest, port: EvtchnPort) {
    g.unmask(port.0, |_| panic!("port {port} unexpectedly pending"));
}

fn binding(d: &TestEvtchn, port: EvtchnPort) -> EvtchnBinding {
    d.status(port).unwrap().binding
}

fn for_both_abis(test: impl Fn(bool)) {
    test(false);
    test(true);
}

/// A's port `pa` connected to B's port `pb`, both unmasked, nothing pending.
fn connect(a: &mut TestEvtchn, ga: &Guest, b: &mut TestEvtchn, gb: &mut Guest) -> (EvtchnPort, EvtchnPort) {
    let pa = a.alloc_unbound(b.domid()).unwrap();
    let (pb, _) = b.bind_interdomain(Peer::Other(a), pa).unwrap();
    open(ga, pa);
    // The bind-time event may be pending behind a mask: unmask as Linux does, consume it.
    gb.unmask(pb.0, |port| {
        let _ = b.unmask(port).unwrap();
    });
    let _ = gb.upcall(0, |_| true).unwrap();
    assert!(!gb.is_pending(pb.0));
    (pa, pb)
}

#[test]
fn fresh_domain() {
    let (d, _) = fresh(A, false);
    assert_eq!(d.domid(), A);
    assert_eq!(d.nr_vcpus(), 2);
    assert_eq!(d.max_port(), 1023);
    assert_eq!(d.abi(), Abi::TwoLevel);
    assert_eq!(d.active_ports(), 0);
    assert_eq!(d.ports().count(), 0);
    assert_eq!(d.status(p(0)), Ok(PortStatus { binding: EvtchnBinding::Closed, vcpu: 0 }));
    assert_eq!(d.status(p(63)), Ok(PortStatus { binding: EvtchnBinding::Closed, vcpu: 0 }));
    assert_eq!(d.status(p(64)), Err(Errno::EINVAL));
    assert_eq!(d.status(p(u32::MAX)), Err(Errno::EINVAL));
    assert_eq!(d.is_pending(p(0)), Err(Errno::EINVAL));
    assert_eq!(d.valid_ports(), 64);
    assert!(d.peer_domains().is_empty());
    assert!(std::format!("{d:?}").contains("Evtchn"));
}

#[test]
fn port_zero_is_reserved() {
    let (mut d, _) = fresh(A, false);
    assert_eq!(d.close(p(0), Peer::Same), Err(Error::Errno(Errno::EINVAL)));
    assert_eq!(d.send(p(0), Peer::Same), Err(Error::Errno(Errno::EINVAL)));
    assert_eq!(d.bind_vcpu(p(0), 0), Err(Errno::EINVAL));
    assert_eq!(d.unmask(p(0)), Ok(Notify::none(A)));
    assert_eq!(d.alloc_unbound(B), Ok(p(1)));
}

#[test]
fn allocation_takes_the_lowest_free_port() {
    for_both_abis(|fifo| {
        let (mut d, _) = fresh(A, fifo);
        assert_eq!(d.alloc_unbound(B), Ok(p(1)));
        assert_eq!(d.bind_ipi(1), Ok(p(2)));
        assert_eq!(d.bind_virq(VIRQ_TIMER, 0), Ok(p(3)));
        assert_eq!(d.active_ports(), 3);
        d.close(p(2), Peer::Same).unwrap();
        assert_eq!(d.active_ports(), 2);
        assert_eq!(d.alloc_unbound(A), Ok(p(2)));
        assert_eq!(d.alloc_unbound(A), Ok(p(4)));
    });
}

#[test]
fn max_port_limits_allocation() {
    for_both_abis(|fifo| {
        let (mut d, mut g) = domain(A.0, 1, 3);
        if fifo {
            let _ = g.init_fifo(&mut d, 1);
        }
        assert_eq!(d.bind_ipi(0), Ok(p(1)));
        assert_eq!(d.bind_ipi(0), Ok(p(2)));
        assert_eq!(d.bind_ipi(0), Ok(p(3)));
        assert_eq!(d.bind_ipi(0), Err(Errno::ENOSPC));
        assert_eq!(d.alloc_unbound(B), Err(Errno::ENOSPC));
        assert_eq!(d.bind_virq(VIRQ_TIMER, 0), Err(Errno::ENOSPC));
        assert_eq!(d.active_ports(), 3);
        // Ports above max_port are still valid (their bucket exists) and read as closed.
        assert_eq!(binding(&d, p(40)), EvtchnBinding::Closed);
    });
}

#[test]
fn two_level_abi_limits_to_4096_ports_and_fifo_beyond() {
    let (mut d, _) = domain(A.0, 1, u32::MAX);
    for n in 1..4096 {
        assert_eq!(d.bind_ipi(0), Ok(p(n)));
    }
    assert_eq!(d.bind_ipi(0), Err(Errno::ENOSPC));
    assert_eq!(d.valid_ports(), 4096);
    assert_eq!(d.status(p(4096)), Err(Errno::EINVAL));

    let (mut d, mut g) = domain(A.0, 1, u32::MAX);
    let _ = g.init_fifo(&mut d, 1);
    for n in 1..=4100 {
        assert_eq!(d.bind_ipi(0), Ok(p(n)));
    }
    assert_eq!(d.abi(), Abi::Fifo { event_words: 1024 });
}

#[test]
fn table_grows_by_buckets_and_never_shrinks() {
    let (mut d, _) = fresh(A, false);
    for _ in 1..64 {
        let _ = d.alloc_unbound(B).unwrap();
    }
    assert_eq!(d.valid_ports(), 64);
    assert_eq!(d.alloc_unbound(B), Ok(p(64)));
    assert_eq!(d.valid_ports(), 128);
    assert_eq!(binding(&d, p(127)), EvtchnBinding::Closed);
    assert_eq!(d.status(p(128)), Err(Errno::EINVAL));
    d.close(p(64), Peer::Same).unwrap();
    assert_eq!(binding(&d, p(100)), EvtchnBinding::Closed);
    // A failed bind still grows the table when it had to allocate a new bucket (as Xen's
    // get_free_port does before the remote port is checked).
    let (mut d, _) = fresh(A, false);
    for _ in 1..64 {
        let _ = d.alloc_unbound(B).unwrap();
    }
    assert_eq!(d.bind_interdomain(Peer::Same, p(5)), Err(Errno::EINVAL));
    assert_eq!(d.valid_ports(), 128);
    assert_eq!(d.active_ports(), 63);
}

#[test]
fn alloc_unbound_and_status() {
    let (mut d, _) = fresh(A, false);
    let port = d.alloc_unbound(B).unwrap();
    assert_eq!(d.status(port), Ok(PortStatus { binding: EvtchnBinding::Unbound { remote_dom: B }, vcpu: 0 }));
    // Sending on an unbound port is silently dropped.
    assert_eq!(d.send(port, Peer::Same), Ok(Notify::none(A)));
    assert_eq!(d.is_pending(port), Ok(false));
}

#[test]
fn bind_interdomain_two_domains() {
    for_both_abis(|fifo| {
        let (mut a, ga) = fresh(A, fifo);
        let (mut b, gb) = fresh(B, fifo);
        let pa = a.alloc_unbound(B).unwrap();
        assert_eq!(pa, p(1));
        let _ = b.alloc_unbound(A).unwrap();
        open(&gb, p(2));
        let (pb, notify) = b.bind_interdomain(Peer::Other(&mut a), pa).unwrap();
        assert_eq!(pb, p(2));
        assert_eq!(binding(&a, pa), EvtchnBinding::Interdomain { dom: B, port: pb });
        assert_eq!(binding(&b, pb), EvtchnBinding::Interdomain { dom: A, port: pa });
        // The local end is set pending: notifications to the unbound port were dropped.
        assert_eq!(notify, Notify::event(B, Some(0), Some(pb)));
        assert!(gb.is_pending(pb.0));
        assert!(!ga.is_pending(pa.0));
        assert_eq!(a.peer_domains(), vec![B]);
        assert_eq!(b.peer_domains(), vec![A]);
        assert_eq!((a.active_ports(), b.active_ports()), (1, 2));
    });
}

#[test]
fn bind_interdomain_errors() {
    let (mut a, _) = fresh(A, false);
    let (mut b, _) = fresh(B, false);
    let for_b = a.alloc_unbound(B).unwrap();
    let for_c = a.alloc_unbound(DomId(3)).unwrap();
    let ipi = a.bind_ipi(0).unwrap();
    // Beyond the table, free, reserved, unbound for someone else, not unbound.
    for bad in [p(64), p(u32::MAX), p(10), p(0), for_c, ipi] {
        assert_eq!(b.bind_interdomain(Peer::Other(&mut a), bad), Err(Errno::EINVAL), "{bad}");
    }
    assert_eq!(b.active_ports(), 0);
    // Unbound for B, but B asks as loopback (its own table): EINVAL.
    assert_eq!(b.bind_interdomain(Peer::Same, for_b), Err(Errno::EINVAL));
    // A peer with our own domid is a caller bug.
    let (mut a2, _) = fresh(A, false);
    let x = a2.alloc_unbound(A).unwrap();
    assert_eq!(a.bind_interdomain(Peer::Other(&mut a2), x), Err(Errno::EINVAL));
    // Already bound: a second bind fails.
    let (pb, _) = b.bind_interdomain(Peer::Other(&mut a), for_b).unwrap();
    assert_eq!(b.bind_interdomain(Peer::Other(&mut a), for_b), Err(Errno::EINVAL));
    assert_eq!(b.active_ports(), 1);
    assert_eq!(binding(&b, pb), EvtchnBinding::Interdomain { dom: A, port: for_b });
}

#[test]
fn bind_interdomain_no_local_port_wins_over_bad_remote() {
    let (mut a, _) = fresh(A, false);
    let (mut b, _) = domain(B.0, 1, 1);
    let _ = b.bind_ipi(0).unwrap();
    assert_eq!(b.bind_interdomain(Peer::Other(&mut a), p(50)), Err(Errno::ENOSPC));
}

#[test]
fn loopback_channel() {
    for_both_abis(|fifo| {
        let (mut d, mut g) = fresh(A, fifo);
        let p1 = d.alloc_unbound(A).unwrap();
        open(&g, p1);
        open(&g, p(2));
        let (p2, n) = d.bind_interdomain(Peer::Same, p1).unwrap();
        assert_eq!(n, Notify::event(A, Some(0), Some(p2)));
        assert_eq!(binding(&d, p1), EvtchnBinding::Interdomain { dom: A, port: p2 });
        assert_eq!(binding(&d, p2), EvtchnBinding::Interdomain { dom: A, port: p1 });
        assert!(d.peer_domains().is_empty());
        assert_eq!(g.upcall(0, |_| true).unwrap(), vec![p2.0]);
        let n = d.send(p2, Peer::Same).unwrap();
        assert_eq!(n, Notify::event(A, Some(0), Some(p1)));
        let n = d.send(p1, Peer::Same).unwrap();
        assert_eq!(n, Notify::event(A, None, Some(p2)), "upcall flag still set");
        let mut seen = g.upcall(0, |_| true).unwrap();
        seen.sort();
        assert_eq!(seen, vec![p1.0, p2.0]);
        d.close(p1, Peer::Same).unwrap();
        assert_eq!(binding(&d, p1), EvtchnBinding::Closed);
        assert_eq!(binding(&d, p2), EvtchnBinding::Unbound { remote_dom: A });
        // The unbound end can be bound again, by this domain.
        let (p3, _) = d.bind_interdomain(Peer::Same, p2).unwrap();
        assert_eq!(p3, p1);
    });
}

#[test]
fn bind_virq() {
    let (mut d, _) = fresh(A, false);
    assert_eq!(d.bind_virq(24, 0), Err(Errno::EINVAL));
    assert_eq!(d.bind_virq(u32::MAX, 0), Err(Errno::EINVAL));
    // Global VIRQs only on vCPU 0, checked before the vCPU exists.
    assert_eq!(d.bind_virq(VIRQ_CONSOLE, 1), Err(Errno::EINVAL));
    assert_eq!(d.bind_virq(VIRQ_CONSOLE, 9), Err(Errno::EINVAL));
    assert_eq!(d.bind_virq(VIRQ_TIMER, 2), Err(Errno::ENOENT));
    assert_eq!(d.bind_virq(VIRQ_TIMER, u32::MAX), Err(Errno::ENOENT));
    let t0 = d.bind_virq(VIRQ_TIMER, 0).unwrap();
    let t1 = d.bind_virq(VIRQ_TIMER, 1).unwrap();
    assert_eq!(d.bind_virq(VIRQ_TIMER, 1), Err(Errno::EEXIST));
    let con = d.bind_virq(VIRQ_CONSOLE, 0).unwrap();
    assert_eq!(d.bind_virq(VIRQ_CONSOLE, 0), Err(Errno::EEXIST));
    // An undefined VIRQ below NR_VIRQS binds as a global one, as with Xen.
    assert_eq!(d.bind_virq(5, 1), Err(Errno::EINVAL));
    let v5 = d.bind_virq(5, 0).unwrap();
    assert_eq!(d.status(t1), Ok(PortStatus { binding: EvtchnBinding::Virq(VIRQ_TIMER), vcpu: 1 }));
    assert_eq!(d.status(con), Ok(PortStatus { binding: EvtchnBinding::Virq(VIRQ_CONSOLE), vcpu: 0 }));
    assert_eq!(d.virq_port(VIRQ_TIMER, 0), Some(t0));
    assert_eq!(d.virq_port(VIRQ_TIMER, 1), Some(t1));
    assert_eq!(d.virq_port(VIRQ_CONSOLE, 1), Some(con), "global VIRQs live on vCPU 0");
    assert_eq!(d.virq_port(5, 0), Some(v5));
    assert_eq!(d.virq_port(VIRQ_DEBUG, 0), None);
    assert_eq!(d.virq_port(VIRQ_TIMER, 7), None);
    assert_eq!(d.virq_port(99, 0), None);
    // Closing frees the VIRQ for binding again.
    d.close(t1, Peer::Same).unwrap();
    assert_eq!(d.virq_port(VIRQ_TIMER, 1), None);
    assert_eq!(d.bind_virq(VIRQ_TIMER, 1), Ok(t1));
    // A global VIRQ moved to vCPU 1 is still found, and freed, on vCPU 0's table.
    let _ = d.bind_vcpu(con, 1).unwrap();
    assert_eq!(d.virq_port(VIRQ_CONSOLE, 0), Some(con));
    d.close(con, Peer::Same).unwrap();
    assert_eq!(d.virq_port(VIRQ_CONSOLE, 0), None);
    assert_eq!(d.bind_virq(VIRQ_CONSOLE, 0), Ok(con));
}

#[test]
fn bind_ipi_and_send() {
    for_both_abis(|fifo| {
        let (mut d, mut g) = fresh(A, fifo);
        assert_eq!(d.bind_ipi(2), Err(Errno::ENOENT));
        let ipi = d.bind_ipi(1).unwrap();
        open(&g, ipi);
        assert_eq!(d.status(ipi), Ok(PortStatus { binding: EvtchnBinding::Ipi, vcpu: 1 }));
        let n = d.send(ipi, Peer::Same).unwrap();
        assert_eq!(n, Notify::event(A, Some(1), Some(ipi)));
        assert_eq!(d.is_pending(ipi), Ok(true));
        // Coalesced while pending.
        assert_eq!(d.send(ipi, Peer::Same), Ok(Notify::none(A)));
        assert_eq!(g.upcall(0, |port| port != ipi.0).unwrap(), Vec::<u32>::new());
        assert_eq!(g.upcall(1, |port| port == ipi.0).unwrap(), vec![ipi.0]);
        assert_eq!(d.is_pending(ipi), Ok(false));
    });
}

#[test]
fn bind_pirq_answers_as_for_a_domain_without_pirqs() {
    let (mut d, _) = fresh(A, false);
    assert_eq!(d.bind_pirq(0, 0), Err(Errno::EINVAL));
    assert_eq!(d.bind_pirq(16, 1), Err(Errno::EINVAL));
    assert_eq!(d.active_ports(), 0);
}

#[test]
fn close_errors() {
    let (mut d, _) = fresh(A, false);
    assert_eq!(d.close(p(1), Peer::Same), Err(Error::Errno(Errno::EINVAL)));
    assert_eq!(d.close(p(64), Peer::Same), Err(Error::Errno(Errno::EINVAL)));
    let port = d.bind_ipi(0).unwrap();
    d.close(port, Peer::Same).unwrap();
    assert_eq!(d.close(port, Peer::Same), Err(Error::Errno(Errno::EINVAL)));
}

#[test]
fn close_interdomain_needs_the_peer_and_leaves_it_unbound() {
    for_both_abis(|fifo| {
        let (mut a, ga) = fresh(A, fifo);
        let (mut b, mut gb) = fresh(B, fifo);
        let (pa, pb) = connect(&mut a, &ga, &mut b, &mut gb);
        let _ = b.bind_vcpu(pb, 1).unwrap();
        let (mut c, _) = fresh(DomId(3), fifo);
        assert_eq!(a.close(pa, Peer::Same), Err(Error::NeedPeer(B)));
        assert_eq!(a.close(pa, Peer::Other(&mut c)), Err(Error::NeedPeer(B)));
        assert_eq!(binding(&a, pa), EvtchnBinding::Interdomain { dom: B, port: pb }, "unchanged");
        // A pending event on the closing end is cleared; the remote end keeps its own.
        let _ = b.send(pb, Peer::Other(&mut a)).unwrap();
        let _ = a.send(pa, Peer::Other(&mut b)).unwrap();
        assert!(ga.is_pending(pa.0) && gb.is_pending(pb.0));
        a.close(pa, Peer::Other(&mut b)).unwrap();
        assert!(!ga.is_pending(pa.0));
        assert!(gb.is_pending(pb.0));
        assert_eq!(binding(&a, pa), EvtchnBinding::Closed);
        assert_eq!(b.status(pb), Ok(PortStatus { binding: EvtchnBinding::Unbound { remote_dom: A }, vcpu: 1 }));
        assert_eq!(a.status(pa).unwrap().vcpu, 0);
        // A can bind to it again.
        let (again, _) = a.bind_interdomain(Peer::Other(&mut b), pb).unwrap();
        assert_eq!(binding(&b, pb), EvtchnBinding::Interdomain { dom: A, port: again });
    });
}

#[test]
fn send_errors_and_peers() {
    let (mut a, ga) = fresh(A, false);
    let (mut b, mut gb) = fresh(B, false);
    let (pa, pb) = connect(&mut a, &ga, &mut b, &mut gb);
    let virq = a.bind_virq(VIRQ_DOM_EXC, 0).unwrap();
    assert_eq!(a.send(virq, Peer::Same), Err(Error::Errno(Errno::EINVAL)));
    assert_eq!(a.send(p(30), Peer::Same), Err(Error::Errno(Errno::EINVAL)));
    assert_eq!(a.send(p(0), Peer::Same), Err(Error::Errno(Errno::EINVAL)));
    assert_eq!(a.send(p(64), Peer::Same), Err(Error::Errno(Errno::EINVAL)));
    assert_eq!(a.send(pa, Peer::Same), Err(Error::NeedPeer(B)));
    assert!(!gb.is_pending(pb.0));
    let n = a.send(pa, Peer::Other(&mut b)).unwrap();
    assert_eq!(n, Notify::event(B, Some(0), Some(pb)));
    assert_eq!(gb.upcall(0, |_| true).unwrap(), vec![pb.0]);
    let n = b.send(pb, Peer::Other(&mut a)).unwrap();
    assert_eq!(n, Notify::event(A, Some(0), Some(pa)));
}

#[test]
fn errors_display() {
    assert_eq!(std::format!("{}", Error::Errno(Errno::EINVAL)), "EINVAL");
    assert_eq!(std::format!("{}", Error::NeedPeer(B)), "needs the state of d2");
    assert_eq!(Error::from(Errno::ENOSPC), Error::Errno(Errno::ENOSPC));
    let mut b = fresh(B, false).0;
    let mut peer: Peer<'_, FakeShared, FakePage> = Peer::Other(&mut b);
    assert_eq!(peer.reborrow().domid(), Some(B));
    assert_eq!(std::format!("{peer:?}"), "Other(d2)");
    assert_eq!(std::format!("{:?}", Peer::<FakeShared, FakePage>::Same), "Same");
    assert_eq!(Peer::<FakeShared, FakePage>::Same.domid(), None);
}

#[test]
fn bind_vcpu_errors_in_xens_order() {
    let (mut d, _) = fresh(A, false);
    let ipi = d.bind_ipi(0).unwrap();
    let timer = d.bind_virq(VIRQ_TIMER, 0).unwrap();
    let pmu = d.bind_virq(VIRQ_XENPMU, 0).unwrap();
    assert_eq!(d.bind_vcpu(p(64), 2), Err(Errno::ENOENT), "vCPU checked before the port");
    assert_eq!(d.bind_vcpu(p(64), 1), Err(Errno::EINVAL));
    assert_eq!(d.bind_vcpu(p(20), 1), Err(Errno::EINVAL), "free port");
    assert_eq!(d.bind_vcpu(ipi, 1), Err(Errno::EINVAL));
    assert_eq!(d.bind_vcpu(timer, 1), Err(Errno::EINVAL));
    assert_eq!(d.bind_vcpu(pmu, 1), Err(Errno::EINVAL));
    assert_eq!(d.status(ipi).unwrap().vcpu, 0);
    let unbound = d.alloc_unbound(B).unwrap();
    let con = d.bind_virq(VIRQ_CONSOLE, 0).unwrap();
    assert_eq!(d.bind_vcpu(unbound, 1), Ok(Notify::none(A)));
    assert_eq!(d.bind_vcpu(con, 1), Ok(Notify::none(A)));
    assert_eq!(d.status(unbound).unwrap().vcpu, 1);
    assert_eq!(d.status(con).unwrap().vcpu, 1);
}

#[test]
fn bind_vcpu_moves_delivery_two_level() {
    let (mut a, ga) = fresh(A, false);
    let (mut b, mut gb) = fresh(B, false);
    let (pa, pb) = connect(&mut a, &ga, &mut b, &mut gb);
    assert_eq!(b.bind_vcpu(pb, 1), Ok(Notify::none(B)));
    let n = a.send(pa, Peer::Other(&mut b)).unwrap();
    assert_eq!(n.upcall, Some(1));
    assert_eq!(gb.upcall(1, |port| port == pb.0).unwrap(), vec![pb.0]);

    // Pending and unmasked when moved: announced on vCPU 0 (which ignores it, as Linux
    // does for a port bound elsewhere), then re-announced on vCPU 1 by the move.
    let _ = b.bind_vcpu(pb, 0).unwrap();
    let n = a.send(pa, Peer::Other(&mut b)).unwrap();
    assert_eq!(n.upcall, Some(0));
    let n = b.bind_vcpu(pb, 1).unwrap();
    assert_eq!(n, Notify::event(B, Some(1), None));
    assert_eq!(gb.upcall(0, |port| port != pb.0).unwrap(), Vec::<u32>::new());
    assert_eq!(gb.upcall(1, |port| port == pb.0).unwrap(), vec![pb.0]);

    // Masked when moved (what Linux does): nothing now, delivered on unmask.
    gb.mask(pb.0);
    let _ = a.send(pa, Peer::Other(&mut b)).unwrap();
    assert_eq!(b.bind_vcpu(pb, 0), Ok(Notify::none(B)));
    let mut unmasked = None;
    gb.unmask(pb.0, |port| unmasked = Some(b.unmask(port).unwrap()));
    assert_eq!(unmasked, Some(Notify::event(B, Some(0), None)));
    assert_eq!(gb.upcall(0, |port| port == pb.0).unwrap(), vec![pb.0]);
    // Same vCPU: nothing to re-announce.
    assert_eq!(b.bind_vcpu(pb, 0), Ok(Notify::none(B)));
}

#[test]
fn bind_vcpu_moves_delivery_fifo() {
    let (mut a, ga) = fresh(A, true);
    let (mut b, mut gb) = fresh(B, true);
    let (pa, pb) = connect(&mut a, &ga, &mut b, &mut gb);
    let _ = b.bind_vcpu(pb, 1).unwrap();
    let n = a.send(pa, Peer::Other(&mut b)).unwrap();
    assert_eq!(n, Notify::event(B, Some(1), Some(pb)));
    assert_eq!(gb.upcall(0, |_| true).unwrap(), Vec::<u32>::new());
    assert_eq!(gb.upcall(1, |_| true).unwrap(), vec![pb.0]);

    // Still linked on vCPU 1's queue when moved back to 0: consumed from vCPU 1's queue.
    let _ = a.send(pa, Peer::Other(&mut b)).unwrap();
    assert_eq!(b.bind_vcpu(pb, 0), Ok(Notify::none(B)));
    assert_eq!(gb.upcall(1, |_| true).unwrap(), vec![pb.0]);
    // The next event goes to vCPU 0.
    let n = a.send(pa, Peer::Other(&mut b)).unwrap();
    assert_eq!(n.upcall, Some(0));
    assert_eq!(gb.upcall(0, |_| true).unwrap(), vec![pb.0]);
}

#[test]
fn unmask_two_level() {
    let (mut d, mut g) = fresh(A, false);
    assert_eq!(d.unmask(p(64)), Err(Errno::EINVAL));
    assert_eq!(d.unmask(p(7)), Ok(Notify::none(A)), "free port: accepted, ignored");
    let ipi = d.bind_ipi(1).unwrap();
    g.mask(ipi.0);
    let n = d.send(ipi, Peer::Same).unwrap();
    assert_eq!(n, Notify::event(A, None, Some(ipi)), "masked: pending, no upcall");
    assert_eq!(g.upcall(1, |_| true).unwrap(), Vec::<u32>::new());
    let n = d.unmask(ipi).unwrap();
    assert_eq!(n, Notify::event(A, Some(1), None));
    assert!(!g.is_masked(ipi.0));
    assert_eq!(g.upcall(1, |_| true).unwrap(), vec![ipi.0]);
}

#[test]
fn unmask_fifo() {
    let (mut d, mut g) = fresh(A, true);
    let ipi = d.bind_ipi(1).unwrap();
    assert!(g.is_masked(ipi.0), "Linux's pages start masked");
    let n = d.send(ipi, Peer::Same).unwrap();
    assert_eq!(n, Notify::event(A, None, Some(ipi)));
    assert_eq!(g.word(ipi.0).unwrap().load(std::sync::atomic::Ordering::SeqCst), PENDING | MASKED);
    let mut hypercalls = 0;
    g.unmask(ipi.0, |port| {
        hypercalls += 1;
        assert_eq!(d.unmask(port), Ok(Notify::event(A, Some(1), None)));
    });
    assert_eq!(hypercalls, 1);
    assert_eq!(g.upcall(1, |_| true).unwrap(), vec![ipi.0]);
    // Free port with its word: ignored.
    assert_eq!(d.unmask(p(9)), Ok(Notify::none(A)));
    assert!(g.is_masked(9));
}

#[test]
fn is_pending_for_poll() {
    for_both_abis(|fifo| {
        let (mut d, g) = fresh(A, fifo);
        assert_eq!(d.is_pending(p(5)), Err(Errno::EINVAL));
        assert_eq!(d.is_pending(p(64)), Err(Errno::EINVAL));
        let ipi = d.bind_ipi(0).unwrap();
        g.mask(ipi.0);
        assert_eq!(d.is_pending(ipi), Ok(false));
        let n = d.send(ipi, Peer::Same).unwrap();
        assert_eq!(n.pending, Some(ipi), "masked ports still wake pollers");
        assert_eq!(d.is_pending(ipi), Ok(true));
    });
}

#[test]
fn reset_closes_everything_and_asks_for_peers() {
    for_both_abis(|fifo| {
        let (mut a, ga) = fresh(A, fifo);
        let (mut b, mut gb) = fresh(B, fifo);
        let (mut c, mut gc) = fresh(DomId(3), fifo);
        let (pa_b, pb) = connect(&mut a, &ga, &mut b, &mut gb);
        let (pa_c, pc) = connect(&mut a, &ga, &mut c, &mut gc);
        let lo = a.alloc_unbound(A).unwrap();
        let _ = a.bind_interdomain(Peer::Same, lo).unwrap();
        let _ = a.bind_virq(VIRQ_TIMER, 1).unwrap();
        let _ = a.bind_ipi(0).unwrap();
        let _ = a.alloc_unbound(B).unwrap();
        assert_eq!(a.peer_domains(), vec![B, DomId(3)]);

        assert_eq!(a.reset(Peer::Same), Err(Error::NeedPeer(B)));
        // Everything but the two interdomain channels with other domains is closed.
        let left: Vec<EvtchnPort> = a.ports().map(|i| i.port).collect();
        assert_eq!(left, vec![pa_b, pa_c]);
        assert_eq!(a.reset(Peer::Other(&mut b)), Err(Error::NeedPeer(DomId(3))));
        assert_eq!(binding(&b, pb), EvtchnBinding::Unbound { remote_dom: A });
        assert_eq!(a.reset(Peer::Other(&mut c)), Ok(()));
        assert_eq!(binding(&c, pc), EvtchnBinding::Unbound { remote_dom: A });
        assert_eq!(a.active_ports(), 0);
        assert_eq!(a.virq_port(VIRQ_TIMER, 1), None);
        assert_eq!(a.abi(), Abi::TwoLevel, "reset goes back to 2-level");
        assert_eq!(a.reset(Peer::Same), Ok(()));
        assert_eq!(a.alloc_unbound(B), Ok(p(1)));
    });
}

#[test]
fn set_priority() {
    let (mut d, _) = fresh(A, false);
    let ipi = d.bind_ipi(0).unwrap();
    assert_eq!(d.set_priority(p(64), 3), Err(Errno::EINVAL), "invalid port first");
    assert_eq!(d.set_priority(ipi, 3), Err(Errno::ENOSYS), "2-level");
    assert_eq!(d.set_priority(p(9), 3), Err(Errno::ENOSYS));

    let (mut d, mut g) = fresh(A, true);
    let ipi = d.bind_ipi(0).unwrap();
    open(&g, ipi);
    assert_eq!(d.set_priority(p(64), 3), Err(Errno::EINVAL));
    assert_eq!(d.set_priority(p(9), 3), Err(Errno::EACCES), "free port");
    assert_eq!(d.set_priority(p(0), 3), Err(Errno::EACCES), "reserved port");
    assert_eq!(d.set_priority(ipi, 16), Err(Errno::EINVAL));
    assert_eq!(d.set_priority(ipi, u32::MAX), Err(Errno::EINVAL));
    assert_eq!(d.set_priority(ipi, 3), Ok(()));
    assert_eq!(d.ports().next().unwrap().priority, 3);
    let _ = d.send(ipi, Peer::Same).unwrap();
    let cb = g.control[0].clone().unwrap();
    let ready = cb.0.words[0].load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(ready, 1 << 3, "queued at priority 3");
    assert_eq!(g.upcall(0, |_| true).unwrap(), vec![ipi.0]);
    // A re-bound port gets the default priority back.
    d.close(ipi, Peer::Same).unwrap();
    let again = d.bind_ipi(0).unwrap();
    assert_eq!(again, ipi);
    assert_eq!(d.ports().next().unwrap().priority, 7);
}

#[test]
fn init_control_errors_in_xens_order() {
    let (mut d, _) = fresh(A, false);
    let never = || -> Result<FakePage, Errno> { panic!("map called for invalid arguments") };
    assert_eq!(d.init_control(2, 7, never), Err(Errno::ENOENT));
    assert_eq!(d.init_control(0, 4096 - 64, never), Err(Errno::EINVAL));
    assert_eq!(d.init_control(0, u32::MAX, never), Err(Errno::EINVAL));
    assert_eq!(d.init_control(0, 12, never), Err(Errno::EINVAL));
    assert_eq!(d.init_control(0, 0, || Err(Errno::EINVAL)), Err(Errno::EINVAL), "map failure");
    assert_eq!(d.abi(), Abi::TwoLevel, "a failed first call does not switch");
    assert_eq!(d.init_control(0, 4096 - 72, || Ok(FakePage::new())), Ok(()));
    assert_eq!(d.abi(), Abi::Fifo { event_words: 0 });
    assert_eq!(d.init_control(0, 0, never), Err(Errno::EINVAL), "already registered");
    assert_eq!(d.init_control(1, 0, || Ok(FakePage::new())), Ok(()));
    assert_eq!(EVTCHN_FIFO_LINK_BITS, 17);
}

#[test]
fn expand_array_errors_and_limit() {
    let (mut d, _) = fresh(A, false);
    assert_eq!(
        d.expand_array(|| -> Result<FakePage, Errno> { panic!("map called in 2-level") }),
        Err(Errno::EOPNOTSUPP)
    );
    d.init_control(0, 0, || Ok(FakePage::new())).unwrap();
    assert_eq!(d.expand_array(|| Err(Errno::ENOMEM)), Err(Errno::ENOMEM));
    assert_eq!(d.abi(), Abi::Fifo { event_words: 0 });
    let page = FakePage::new();
    for _ in 0..128 {
        let page = page.clone();
        assert_eq!(d.expand_array(move || Ok(page)), Ok(vec![]));
    }
    assert_eq!(d.abi(), Abi::Fifo { event_words: 1 << 17 });
    assert_eq!(d.expand_array(|| -> Result<FakePage, Errno> { panic!("map called when full") }), Err(Errno::ENOSPC));
}

#[test]
fn switch_to_fifo_carries_pending_ports_over() {
    let (mut d, mut g) = fresh(A, false);
    let a = d.bind_ipi(0).unwrap();
    let b = d.bind_ipi(1).unwrap();
    let c = d.bind_ipi(0).unwrap();
    let _ = d.send(a, Peer::Same).unwrap();
    let _ = d.send(b, Peer::Same).unwrap();
    // A stray pending bit on a free port is not carried over.
    g.shared.0.pending[0].fetch_or(1 << 20, std::sync::atomic::Ordering::SeqCst);
    // The guest acknowledged the upcalls but is switching ABIs before scanning.
    for v in &g.shared.0.vcpus {
        v.upcall.store(0, std::sync::atomic::Ordering::SeqCst);
    }
    // Linux would mask everything first; use unmasked zero pages here to see delivery.
    for v in 0..2 {
        let page = FakePage::new();
        g.control[v] = Some(page.clone());
        d.init_control(v as u32, 0, move || Ok(page)).unwrap();
    }
    assert_eq!(d.is_pending(a), Ok(false), "no event word yet");
    let page = FakePage::new();
    g.array.push(page.clone());
    let mut notes = d.expand_array(move || Ok(page)).unwrap();
    notes.sort_by_key(|n| n.upcall);
    assert_eq!(notes, vec![Notify::event(A, Some(0), Some(a)), Notify::event(A, Some(1), Some(b)),]);
    assert_eq!(g.upcall(0, |_| true).unwrap(), vec![a.0]);
    assert_eq!(g.upcall(1, |_| true).unwrap(), vec![b.0]);
    assert_eq!(d.is_pending(c), Ok(false));
    assert_eq!(g.word(20).unwrap().load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn fifo_events_beyond_the_array_wait_for_their_page() {
    let (mut d, mut g) = domain(A.0, 1, u32::MAX);
    let _ = g.init_fifo(&mut d, 1);
    for _ in 1..1030 {
        let _ = d.bind_ipi(0).unwrap();
    }
    let far = p(1029);
    assert_eq!(d.send(far, Peer::Same), Ok(Notify::none(A)));
    assert_eq!(d.is_pending(far), Ok(false));
    assert!(d.ports().find(|i| i.port == far).unwrap().masked);
    // Closed and re-bound before the page arrives: the old event is forgotten.
    let near = p(1028);
    let _ = d.send(near, Peer::Same).unwrap();
    d.close(near, Peer::Same).unwrap();
    assert_eq!(d.bind_ipi(0), Ok(near));
    // Unmasked page (Linux would mask it, then unmask each port it binds).
    let page = FakePage::new();
    g.array.push(page.clone());
    let notes = d.expand_array(move || Ok(page)).unwrap();
    assert_eq!(notes, vec![Notify::event(A, Some(0), Some(far))]);
    assert_eq!(g.upcall(0, |_| true).unwrap(), vec![far.0]);
}

#[test]
fn fifo_linked_port_is_busy_until_the_guest_unlinks_it() {
    let (mut d, mut g) = fresh(A, true);
    let a = d.bind_ipi(0).unwrap();
    open(&g, a);
    let _ = d.send(a, Peer::Same).unwrap();
    d.close(a, Peer::Same).unwrap();
    assert_eq!(g.word(a.0).unwrap().load(std::sync::atomic::Ordering::SeqCst), LINKED, "still queued");
    let b = d.bind_ipi(0).unwrap();
    assert_ne!(b, a, "a linked port is not reused");
    // The guest consumes the queue: the closed port is unlinked and ignored.
    assert_eq!(g.upcall(0, |_| true).unwrap(), Vec::<u32>::new());
    assert_eq!(d.bind_ipi(0), Ok(a));
}

#[test]
fn fifo_priorities_and_tails_across_moves() {
    // Two ports on one queue; the tail is moved to another priority and raised again after
    // being consumed; later events on the old queue still arrive.
    let (mut d, mut g) = fresh(A, true);
    let x = d.bind_ipi(0).unwrap();
    let y = d.alloc_unbound(A).unwrap();
    for port in [x, y, p(3)] {
        open(&g, port);
    }
    let (z, _) = d.bind_interdomain(Peer::Same, y).unwrap();
    assert_eq!(g.upcall(0, |_| true).unwrap(), vec![z.0]);
    let _ = d.send(x, Peer::Same).unwrap();
    let _ = d.send(z, Peer::Same).unwrap(); // raises y
    assert_eq!(d.fifo_state().unwrap().tail(0, 7), y.0);
    assert_eq!(g.upcall(0, |_| true).unwrap(), vec![x.0, y.0]);
    d.set_priority(y, 2).unwrap();
    let _ = d.send(z, Peer::Same).unwrap();
    assert_eq!(d.fifo_state().unwrap().tail(0, 7), 0, "old tail forgotten");
    let _ = d.send(x, Peer::Same).unwrap();
    let mut seen = g.upcall(0, |_| true).unwrap();
    assert_eq!(seen, vec![y.0, x.0], "priority 2 first");
    let _ = d.send(x, Peer::Same).unwrap();
    seen = g.upcall(0, |_| true).unwrap();
    assert_eq!(seen, vec![x.0]);
}

#[test]
fn send_virq() {
    for_both_abis(|fifo| {
        let (mut d, mut g) = fresh(A, fifo);
        assert_eq!(d.send_virq(VIRQ_TIMER, 0), Notify::none(A), "unbound");
        assert_eq!(d.send_virq(99, 0), Notify::none(A));
        assert_eq!(d.send_virq(VIRQ_TIMER, 9), Notify::none(A));
        let t1 = d.bind_virq(VIRQ_TIMER, 1).unwrap();
        let exc = d.bind_virq(VIRQ_DOM_EXC, 0).unwrap();
        open(&g, t1);
        open(&g, exc);
        assert_eq!(d.send_virq(VIRQ_TIMER, 1), Notify::event(A, Some(1), Some(t1)));
        assert_eq!(d.send_virq(VIRQ_TIMER, 0), Notify::none(A));
        // Global: bound on vCPU 0, moved to vCPU 1; the vCPU argument is ignored.
        let _ = d.bind_vcpu(exc, 1).unwrap();
        assert_eq!(d.send_virq(VIRQ_DOM_EXC, 0), Notify::event(A, None, Some(exc)));
        let mut seen = g.upcall(1, |_| true).unwrap();
        seen.sort();
        assert_eq!(seen, vec![t1.0, exc.0]);
        assert_eq!(d.send_virq(VIRQ_DOM_EXC, 1).upcall, Some(1));
    });
}

#[test]
fn vcpu_without_vcpu_info_keeps_events_pending() {
    // Two vCPUs, but only vCPU 0 has a vcpu_info.
    let mut d: TestEvtchn = Evtchn::new(A, 2, 100, FakeShared::new(1));
    let ipi = d.bind_ipi(1).unwrap();
    assert_eq!(d.send(ipi, Peer::Same), Ok(Notify::event(A, None, Some(ipi))));
    assert_eq!(d.is_pending(ipi), Ok(true));
}

#[test]
fn ports_lists_what_is_in_use() {
    for_both_abis(|fifo| {
        let (mut d, g) = fresh(A, fifo);
        let u = d.alloc_unbound(B).unwrap();
        let i = d.bind_ipi(1).unwrap();
        open(&g, i);
        g.mask(u.0);
        let _ = d.send(i, Peer::Same).unwrap();
        let list: Vec<PortInfo> = d.ports().collect();
        assert_eq!(
            list,
            vec![
                PortInfo {
                    port: u,
                    state: PortState::Unbound { remote_dom: B },
                    notify_vcpu: 0,
                    pending: false,
                    masked: true,
                    priority: 7
                },
                PortInfo { port: i, state: PortState::Ipi, notify_vcpu: 1, pending: true, masked: false, priority: 7 },
            ]
        );
    });
}

#[test]
fn reset_from_fifo_leaves_clean_two_level_state() {
    use std::sync::atomic::Ordering::SeqCst;
    let (mut d, mut g) = fresh(A, false);
    let ipi = d.bind_ipi(0).unwrap();
    let n = d.send(ipi, Peer::Same).unwrap();
    assert_eq!(n.upcall, Some(0));
    // The guest switches to FIFO without scanning the 2-level words; its FIFO handler then
    // clears the upcall flag but never looks at the 2-level selector.
    let _ = g.init_fifo(&mut d, 1);
    assert_eq!(g.upcall(0, |_| true).unwrap(), Vec::<u32>::new());
    assert_eq!(d.reset(Peer::Same), Ok(()));
    g.back_to_two_level();
    assert_eq!(g.shared.0.pending[0].load(SeqCst), 0);
    assert_eq!(g.shared.0.vcpus[0].sel.load(SeqCst), 0);
    // The re-bound port delivers its first event.
    assert_eq!(d.bind_ipi(0), Ok(ipi));
    assert_eq!(d.send(ipi, Peer::Same), Ok(Notify::event(A, Some(0), Some(ipi))));
    assert_eq!(g.upcall(0, |_| true).unwrap(), vec![ipi.0]);
}

#[test]
fn reset_in_two_level_keeps_guest_words() {
    use std::sync::atomic::Ordering::SeqCst;
    // Without a FIFO round trip, reset is Xen's: closing clears each port's own bit only.
    let (mut d, g) = fresh(A, false);
    let ipi = d.bind_ipi(0).unwrap();
    let _ = d.send(ipi, Peer::Same).unwrap();
    g.shared.0.pending[1].store(0b100, SeqCst);
    assert_eq!(d.reset(Peer::Same), Ok(()));
    assert_eq!(g.shared.0.pending[0].load(SeqCst), 0);
    assert_eq!(g.shared.0.pending[1].load(SeqCst), 0b100);
    assert_eq!(g.shared.0.vcpus[0].sel.load(SeqCst), 1);
}

#[test]
fn hypervisor_port_status_send_and_raise() {
    for_both_abis(|fifo| {
        let (mut d, mut g) = fresh(A, fifo);
        let con = d.bind_hypervisor().unwrap();
        assert_eq!(con, p(1));
        assert_eq!(d.active_ports(), 1);
        // What the guest sees: an interdomain channel with dom0, as with xenconsoled.
        let want = EvtchnBinding::Interdomain { dom: DomId(0), port: con };
        assert_eq!(d.status(con), Ok(PortStatus { binding: want, vcpu: 0 }));
        assert_eq!(d.peer_domains(), Vec::<DomId>::new(), "no peer domain to lock");
        // The guest's send reaches keel only: nothing pending anywhere.
        assert_eq!(d.send(con, Peer::Same), Ok(Notify::hypervisor(A, con)));
        assert_eq!(d.is_pending(con), Ok(false));
        // keel raises it like a VIRQ, on its notify vCPU.
        open(&g, con);
        assert_eq!(d.raise_hypervisor(con), Notify::event(A, Some(0), Some(con)));
        assert_eq!(d.raise_hypervisor(con), Notify::none(A), "coalesced while pending");
        assert_eq!(g.upcall(0, |_| true).unwrap(), vec![con.0]);
        // Movable like an interdomain port.
        let _ = d.bind_vcpu(con, 1).unwrap();
        assert_eq!(d.status(con).unwrap().vcpu, 1);
        assert_eq!(d.raise_hypervisor(con), Notify::event(A, Some(1), Some(con)));
        assert_eq!(g.upcall(1, |_| true).unwrap(), vec![con.0]);
        // Other ports are not keel's to raise.
        let ipi = d.bind_ipi(0).unwrap();
        assert_eq!(d.raise_hypervisor(ipi), Notify::none(A));
        assert_eq!(d.raise_hypervisor(p(40)), Notify::none(A));
        assert_eq!(d.raise_hypervisor(p(4000)), Notify::none(A));
        assert_eq!(d.release_hypervisor(ipi), Err(Errno::EINVAL));
        assert_eq!(d.release_hypervisor(p(4000)), Err(Errno::EINVAL));
    });
}

#[test]
fn closed_hypervisor_port_is_held_until_released() {
    for_both_abis(|fifo| {
        let (mut d, g) = fresh(A, fifo);
        let con = d.bind_hypervisor().unwrap();
        g.mask(con.0);
        let _ = d.raise_hypervisor(con);
        assert_eq!(d.is_pending(con), Ok(true));
        d.close(con, Peer::Same).unwrap();
        // Closed for the guest...
        assert_eq!(d.status(con), Ok(PortStatus { binding: EvtchnBinding::Closed, vcpu: 0 }));
        assert_eq!(d.close(con, Peer::Same), Err(Errno::EINVAL.into()));
        assert_eq!(d.send(con, Peer::Same), Err(Errno::EINVAL.into()));
        assert_eq!(d.is_pending(con), Err(Errno::EINVAL));
        assert_eq!(d.bind_vcpu(con, 1), Err(Errno::EINVAL));
        assert!(!g.is_pending(con.0), "closing cleared the pending bit");
        assert_eq!(d.raise_hypervisor(con), Notify::none(A));
        assert_eq!(d.ports().count(), 0);
        // ...but never given to another binding while keel holds it.
        assert_eq!(d.bind_ipi(0), Ok(p(2)));
        assert_eq!(d.active_ports(), 2);
        // keel lets go: the number is free again.
        assert_eq!(d.release_hypervisor(con), Ok(()));
        assert_eq!(d.release_hypervisor(con), Err(Errno::EINVAL));
        assert_eq!(d.active_ports(), 1);
        assert_eq!(d.bind_ipi(0), Ok(con));
    });
}

#[test]
fn released_hypervisor_port_is_left_unbound_for_dom0() {
    let (mut d, _) = fresh(A, false);
    let con = d.bind_hypervisor().unwrap();
    assert_eq!(d.release_hypervisor(con), Ok(()));
    assert_eq!(binding(&d, con), EvtchnBinding::Unbound { remote_dom: DomId(0) });
    assert_eq!(d.send(con, Peer::Same), Ok(Notify::none(A)));
    d.close(con, Peer::Same).unwrap();
    assert_eq!(d.active_ports(), 0);
    assert_eq!(d.bind_ipi(0), Ok(con));
}

#[test]
fn reset_leaves_hypervisor_ports_connected() {
    for_both_abis(|fifo| {
        let (mut d, mut g) = fresh(A, fifo);
        let _ipi = d.bind_ipi(0).unwrap();
        let con = d.bind_hypervisor().unwrap();
        let held = d.bind_hypervisor().unwrap();
        d.close(held, Peer::Same).unwrap();
        g.mask(con.0);
        let _ = d.raise_hypervisor(con);
        assert_eq!(d.reset(Peer::Same), Ok(()));
        if fifo {
            g.back_to_two_level();
        }
        let want = EvtchnBinding::Interdomain { dom: DomId(0), port: con };
        assert_eq!(binding(&d, con), want, "keel's console stays connected");
        assert_eq!(binding(&d, held), EvtchnBinding::Closed);
        assert_eq!(d.active_ports(), 2);
        // Leaving FIFO drops every pending event; staying on 2-level keeps it.
        assert_eq!(d.is_pending(con), Ok(!fifo));
        assert_eq!(d.bind_ipi(0), Ok(p(1)));
        assert_eq!(d.bind_ipi(0), Ok(p(4)), "neither hypervisor port is reused");
        assert_eq!(d.send(con, Peer::Same), Ok(Notify::hypervisor(A, con)));
        // Still served: unmasking delivers what is pending, keel raises it again.
        g.unmask(con.0, |port| {
            let _ = d.unmask(port).unwrap();
        });
        let seen = g.upcall(0, |_| true).unwrap();
        assert_eq!(seen, if fifo { vec![] } else { vec![con.0] });
        assert_eq!(d.raise_hypervisor(con), Notify::event(A, Some(0), Some(con)));
        assert_eq!(g.upcall(0, |_| true).unwrap(), vec![con.0]);
    });
}

#[test]
fn hypervisor_port_needs_a_free_port() {
    let (mut d, _) = domain(A.0, 1, 2);
    assert_eq!(d.bind_hypervisor(), Ok(p(1)));
    assert_eq!(d.bind_hypervisor(), Ok(p(2)));
    assert_eq!(d.bind_hypervisor(), Err(Errno::ENOSPC));
}
