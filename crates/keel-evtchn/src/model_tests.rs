//! State-machine tests: random sequences of operations on two domains, run against the
//! crate (with keel's lock-the-peer-and-retry loop) and against a simple model.
//!
//! After every step the crate must agree with the model on every port's binding, notify
//! vCPU, pending state and the number of ports in use (no leaks; closed ports are reused,
//! lowest first), interdomain bindings must be symmetric, and the upcalls an operation
//! reports must be exactly the vCPUs whose `evtchn_upcall_pending` it set. A guest that
//! follows Linux's algorithms consumes events only when its upcall flag is set; every event
//! it sees must be pending in the model (no duplicates, nothing spurious), and after a
//! drain no pending, unmasked, bound port may be left unseen (nothing lost). Ports whose
//! other end is the hypervisor (keel's PV console) take part: the guest's sends on them reach
//! keel and nobody else, keel raises them, a reset leaves them connected, and a closed one is
//! never reused until released.

use std::collections::{BTreeMap, BTreeSet};
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;
use xen_abi::event_channel::{
    virq_is_per_vcpu, EvtchnBinding, NR_VIRQS, VIRQ_CONSOLE, VIRQ_DEBUG, VIRQ_DOM_EXC, VIRQ_TIMER,
};
use xen_abi::{DomId, Errno, EvtchnPort};

use crate::testkit::{domain, FakePage, FakeShared, Guest, TestEvtchn, LINKED};
use crate::{Abi, Error, Notify, Peer, PortState};

const DOMS: [DomId; 2] = [DomId(1), DomId(2)];
/// A domain that never binds anything (a remote for unbound ports only).
const OTHER: DomId = DomId(3);
const VCPUS: u32 = 2;
const MAX_PORT: u32 = 12;
/// Ports the operations use: 0, the allocatable ones, and a few valid ones above max_port.
const PORTS: u32 = 17;
const VIRQS: [u32; 8] = [VIRQ_TIMER, VIRQ_DEBUG, VIRQ_CONSOLE, VIRQ_DOM_EXC, 5, 23, 24, 99];

#[derive(Clone, Debug)]
enum Op {
    AllocUnbound { d: usize, remote: usize },
    BindInterdomain { d: usize, r: usize, rport: u32 },
    BindIpi { d: usize, vcpu: u32 },
    BindVirq { d: usize, virq: u32, vcpu: u32 },
    Close { d: usize, port: u32 },
    Send { d: usize, port: u32 },
    Mask { d: usize, port: u32 },
    Unmask { d: usize, port: u32 },
    RawUnmask { d: usize, port: u32 },
    BindVcpu { d: usize, port: u32, vcpu: u32 },
    SetPriority { d: usize, port: u32, prio: u32 },
    SendVirq { d: usize, virq: u32, vcpu: u32 },
    Consume { d: usize, vcpu: u32 },
    Drain,
    Reset { d: usize },
    InitFifo { d: usize },
    BindHypervisor { d: usize },
    RaiseHypervisor { d: usize, port: u32 },
    ReleaseHypervisor { d: usize, port: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    let d = 0..2usize;
    let port = 0..PORTS;
    let vcpu = 0..VCPUS + 1;
    let virq = proptest::sample::select(VIRQS.to_vec());
    prop_oneof![
        4 => (d.clone(), 0..3usize).prop_map(|(d, remote)| Op::AllocUnbound { d, remote }),
        4 => (d.clone(), 0..2usize, port.clone()).prop_map(|(d, r, rport)| Op::BindInterdomain { d, r, rport }),
        2 => (d.clone(), vcpu.clone()).prop_map(|(d, vcpu)| Op::BindIpi { d, vcpu }),
        2 => (d.clone(), virq.clone(), vcpu.clone()).prop_map(|(d, virq, vcpu)| Op::BindVirq { d, virq, vcpu }),
        3 => (d.clone(), port.clone()).prop_map(|(d, port)| Op::Close { d, port }),
        8 => (d.clone(), port.clone()).prop_map(|(d, port)| Op::Send { d, port }),
        2 => (d.clone(), port.clone()).prop_map(|(d, port)| Op::Mask { d, port }),
        3 => (d.clone(), port.clone()).prop_map(|(d, port)| Op::Unmask { d, port }),
        1 => (d.clone(), 0..70u32).prop_map(|(d, port)| Op::RawUnmask { d, port }),
        4 => (d.clone(), port.clone(), vcpu.clone()).prop_map(|(d, port, vcpu)| Op::BindVcpu { d, port, vcpu }),
        2 => (d.clone(), port.clone(), 0..17u32).prop_map(|(d, port, prio)| Op::SetPriority { d, port, prio }),
        2 => (d.clone(), virq, vcpu.clone()).prop_map(|(d, virq, vcpu)| Op::SendVirq { d, virq, vcpu }),
        6 => (d.clone(), vcpu).prop_map(|(d, vcpu)| Op::Consume { d, vcpu }),
        2 => Just(Op::Drain),
        1 => d.clone().prop_map(|d| Op::Reset { d }),
        1 => d.clone().prop_map(|d| Op::InitFifo { d }),
        2 => d.clone().prop_map(|d| Op::BindHypervisor { d }),
        3 => (d.clone(), port.clone()).prop_map(|(d, port)| Op::RaiseHypervisor { d, port }),
        1 => (d, port).prop_map(|(d, port)| Op::ReleaseHypervisor { d, port }),
    ]
}

/// The model of one domain.
#[derive(Default)]
struct Model {
    fifo: bool,
    /// Ports in use: (state, notify vCPU).
    ports: BTreeMap<u32, (PortState, u32)>,
    /// Ports whose pending bit is set.
    pending: BTreeSet<u32>,
    /// (row vCPU, VIRQ) -> port.
    virqs: BTreeMap<(u32, u32), u32>,
}

struct World {
    doms: Vec<TestEvtchn>,
    guests: Vec<Guest>,
    models: Vec<Model>,
}

fn index_of(dom: DomId) -> usize {
    DOMS.iter().position(|&d| d == dom).expect("a peer outside the world")
}

/// Two distinct domains' states at once, as keel holds two locks.
fn pair(doms: &mut [TestEvtchn], a: usize, b: usize) -> (&mut TestEvtchn, &mut TestEvtchn) {
    assert_ne!(a, b);
    let (lo, hi) = doms.split_at_mut(1);
    if a == 0 {
        (&mut lo[0], &mut hi[0])
    } else {
        (&mut hi[0], &mut lo[0])
    }
}

type P<'a> = Peer<'a, FakeShared, FakePage>;

fn snapshot(d: &TestEvtchn) -> Vec<Result<crate::PortStatus, Errno>> {
    (0..64).map(|p| d.status(EvtchnPort(p))).collect()
}

impl World {
    fn new() -> Self {
        let (mut doms, mut guests) = (Vec::new(), Vec::new());
        for dom in DOMS {
            let (d, g) = domain(dom.0, VCPUS, MAX_PORT);
            doms.push(d);
            guests.push(g);
        }
        Self { doms, guests, models: vec![Model::default(), Model::default()] }
    }

    /// Calls `f` on domain `d` as keel would: without a peer first, then, if the crate asks
    /// for one, with it. A `NeedPeer` answer must leave the domain unchanged.
    fn call<R>(&mut self, d: usize, mut f: impl FnMut(&mut TestEvtchn, P<'_>) -> Result<R, Error>) -> Result<R, Errno> {
        let before = snapshot(&self.doms[d]);
        match f(&mut self.doms[d], Peer::Same) {
            Ok(r) => Ok(r),
            Err(Error::Errno(e)) => Err(e),
            Err(Error::NeedPeer(dom)) => {
                assert_eq!(snapshot(&self.doms[d]), before, "NeedPeer changed the domain");
                let o = index_of(dom);
                let (me, other) = pair(&mut self.doms, d, o);
                match f(me, Peer::Other(other)) {
                    Ok(r) => Ok(r),
                    Err(Error::Errno(e)) => Err(e),
                    Err(Error::NeedPeer(again)) => panic!("asked for {again} after getting {dom}"),
                }
            }
        }
    }

    fn upcall_flags(&self) -> Vec<(usize, u32, u8)> {
        let mut out = Vec::new();
        for (i, g) in self.guests.iter().enumerate() {
            for v in 0..VCPUS {
                out.push((i, v, g.shared.0.vcpus[v as usize].upcall.load(std::sync::atomic::Ordering::SeqCst)));
            }
        }
        out
    }

    /// The model's lowest allocatable port of domain `d`.
    fn model_alloc(&self, d: usize) -> Option<u32> {
        let m = &self.models[d];
        let g = &self.guests[d];
        let busy =
            |p: u32| m.fifo && g.word(p).is_some_and(|w| w.load(std::sync::atomic::Ordering::SeqCst) & LINKED != 0);
        (1..=MAX_PORT).find(|&p| !m.ports.contains_key(&p) && !busy(p))
    }

    /// The model's state of `port` of domain `d`, if it is not free.
    fn state(&self, d: usize, port: u32) -> Option<PortState> {
        self.models[d].ports.get(&port).map(|e| e.0)
    }

    /// Whether `port` of `d` is bound to something (Xen's `evtchn_usable`).
    fn usable(&self, d: usize, port: u32) -> bool {
        self.state(d, port).is_some_and(|s| s != PortState::HypervisorClosed)
    }

    /// Marks `port` of `d` pending in the model; returns whether it was not pending before.
    fn model_raise(&mut self, d: usize, port: u32) -> bool {
        self.models[d].pending.insert(port)
    }

    fn model_close(&mut self, d: usize, port: u32) {
        let me = DOMS[d];
        let (state, vcpu) = self.models[d].ports.remove(&port).expect("closing a free port");
        self.models[d].pending.remove(&port);
        match state {
            PortState::Virq { virq } => {
                let row = if virq_is_per_vcpu(virq) { vcpu } else { 0 };
                self.models[d].virqs.remove(&(row, virq));
            }
            PortState::Interdomain { remote_dom, remote_port } => {
                let r = index_of(remote_dom);
                let entry = self.models[r].ports.get_mut(&remote_port.0).expect("asymmetric model");
                entry.0 = PortState::Unbound { remote_dom: me };
            }
            // keel still holds its end: the number stays taken.
            PortState::Hypervisor => {
                self.models[d].ports.insert(port, (PortState::HypervisorClosed, 0));
            }
            _ => {}
        }
    }

    /// Runs vCPU `vcpu` of domain `d`'s upcall handler if its upcall is pending, checking
    /// every event it handles against the model.
    fn consume(&mut self, d: usize, vcpu: u32) -> Result<bool, TestCaseError> {
        let flag = self.guests[d].shared.0.vcpus[vcpu as usize].upcall.load(std::sync::atomic::Ordering::SeqCst);
        if flag == 0 {
            return Ok(false);
        }
        let bound: BTreeMap<u32, u32> = self.models[d].ports.iter().map(|(&p, &(_, v))| (p, v)).collect();
        let handled =
            self.guests[d].upcall(vcpu, |port| bound.get(&port) == Some(&vcpu)).map_err(TestCaseError::fail)?;
        for port in handled {
            prop_assert!(self.models[d].ports.contains_key(&port), "d{} handled free port {}", d, port);
            prop_assert!(self.models[d].pending.remove(&port), "d{} port {} handled twice or spuriously", d, port);
        }
        Ok(true)
    }

    /// Runs every upcall until none is pending, then checks nothing is left behind.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..100 {
            let mut any = false;
            for d in 0..DOMS.len() {
                for v in 0..VCPUS {
                    any |= self.consume(d, v)?;
                }
            }
            if !any {
                for (d, m) in self.models.iter().enumerate() {
                    for &port in &m.pending {
                        prop_assert!(
                            self.guests[d].is_masked(port),
                            "d{} port {} pending and unmasked but never delivered",
                            d,
                            port
                        );
                    }
                }
                return Ok(());
            }
        }
        Err(TestCaseError::fail("upcalls never stopped"))
    }

    /// Checks a send-like operation's notification against the model.
    fn check_raise(&mut self, target: usize, port: u32, notify: Notify) -> Result<(), TestCaseError> {
        prop_assert_eq!(notify.dom, DOMS[target]);
        let newly = self.model_raise(target, port);
        prop_assert_eq!(notify.pending, newly.then_some(EvtchnPort(port)), "d{} port {}", target, port);
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let flags_before = self.upcall_flags();
        let mut notes: Vec<Notify> = Vec::new();
        let mut guest_ran = false;
        match *op {
            Op::AllocUnbound { d, remote } => {
                let remote_dom = if remote < 2 { DOMS[remote] } else { OTHER };
                let expect = self.model_alloc(d);
                let got = self.doms[d].alloc_unbound(remote_dom);
                match expect {
                    Some(p) => {
                        prop_assert_eq!(got, Ok(EvtchnPort(p)));
                        self.models[d].ports.insert(p, (PortState::Unbound { remote_dom }, 0));
                    }
                    None => prop_assert_eq!(got, Err(Errno::ENOSPC)),
                }
            }
            Op::BindInterdomain { d, r, rport } => {
                let me = DOMS[d];
                let expect_local = self.model_alloc(d);
                let remote_ok =
                    self.models[r].ports.get(&rport).map(|e| e.0) == Some(PortState::Unbound { remote_dom: me });
                let got = if r == d {
                    self.doms[d].bind_interdomain(Peer::Same, EvtchnPort(rport))
                } else {
                    let (a, b) = pair(&mut self.doms, d, r);
                    a.bind_interdomain(Peer::Other(b), EvtchnPort(rport))
                };
                match (expect_local, remote_ok) {
                    (None, _) => prop_assert_eq!(got, Err(Errno::ENOSPC)),
                    (Some(_), false) => prop_assert_eq!(got, Err(Errno::EINVAL)),
                    (Some(lp), true) => {
                        let (port, notify) = got.map_err(|e| TestCaseError::fail(std::format!("{e}")))?;
                        prop_assert_eq!(port, EvtchnPort(lp));
                        let rs = PortState::Interdomain { remote_dom: DOMS[r], remote_port: EvtchnPort(rport) };
                        self.models[d].ports.insert(lp, (rs, 0));
                        self.models[r].ports.get_mut(&rport).unwrap().0 =
                            PortState::Interdomain { remote_dom: me, remote_port: port };
                        self.check_raise(d, lp, notify)?;
                        notes.push(notify);
                    }
                }
            }
            Op::BindIpi { d, vcpu } => {
                let got = self.doms[d].bind_ipi(vcpu);
                if vcpu >= VCPUS {
                    prop_assert_eq!(got, Err(Errno::ENOENT));
                } else if let Some(p) = self.model_alloc(d) {
                    prop_assert_eq!(got, Ok(EvtchnPort(p)));
                    self.models[d].ports.insert(p, (PortState::Ipi, vcpu));
                } else {
                    prop_assert_eq!(got, Err(Errno::ENOSPC));
                }
            }
            Op::BindVirq { d, virq, vcpu } => {
                let got = self.doms[d].bind_virq(virq, vcpu);
                let global = !virq_is_per_vcpu(virq);
                if virq >= NR_VIRQS || (global && vcpu != 0) {
                    prop_assert_eq!(got, Err(Errno::EINVAL));
                } else if vcpu >= VCPUS {
                    prop_assert_eq!(got, Err(Errno::ENOENT));
                } else if self.models[d].virqs.contains_key(&(vcpu, virq)) {
                    prop_assert_eq!(got, Err(Errno::EEXIST));
                } else if let Some(p) = self.model_alloc(d) {
                    prop_assert_eq!(got, Ok(EvtchnPort(p)));
                    self.models[d].ports.insert(p, (PortState::Virq { virq }, vcpu));
                    self.models[d].virqs.insert((vcpu, virq), p);
                } else {
                    prop_assert_eq!(got, Err(Errno::ENOSPC));
                }
            }
            Op::Close { d, port } => {
                let got = self.call(d, |e, peer| e.close(EvtchnPort(port), peer));
                if self.usable(d, port) {
                    prop_assert_eq!(got, Ok(()));
                    self.model_close(d, port);
                } else {
                    prop_assert_eq!(got, Err(Errno::EINVAL));
                }
            }
            Op::Send { d, port } => {
                let got = self.call(d, |e, peer| e.send(EvtchnPort(port), peer));
                match self.models[d].ports.get(&port).map(|e| e.0) {
                    Some(PortState::Interdomain { remote_dom, remote_port }) => {
                        let notify = got.map_err(|e| TestCaseError::fail(std::format!("{e}")))?;
                        self.check_raise(index_of(remote_dom), remote_port.0, notify)?;
                        notes.push(notify);
                    }
                    Some(PortState::Ipi) => {
                        let notify = got.map_err(|e| TestCaseError::fail(std::format!("{e}")))?;
                        self.check_raise(d, port, notify)?;
                        notes.push(notify);
                    }
                    Some(PortState::Unbound { .. }) => prop_assert_eq!(got, Ok(Notify::none(DOMS[d]))),
                    Some(PortState::Hypervisor) => {
                        prop_assert_eq!(got, Ok(Notify::hypervisor(DOMS[d], EvtchnPort(port))));
                    }
                    _ => prop_assert_eq!(got, Err(Errno::EINVAL)),
                }
            }
            Op::Mask { d, port } => self.guests[d].mask(port),
            Op::Unmask { d, port } => {
                let dom = &mut self.doms[d];
                let mut result = None;
                self.guests[d].unmask(port, |p| result = Some(dom.unmask(p)));
                if let Some(r) = result {
                    let notify = r.map_err(|e| TestCaseError::fail(std::format!("{e}")))?;
                    prop_assert_eq!(notify.pending, None);
                    notes.push(notify);
                }
            }
            Op::RawUnmask { d, port } => {
                let got = self.doms[d].unmask(EvtchnPort(port));
                if port >= 64 {
                    prop_assert_eq!(got, Err(Errno::EINVAL));
                } else {
                    let notify = got.map_err(|e| TestCaseError::fail(std::format!("{e}")))?;
                    prop_assert_eq!(notify.pending, None);
                    notes.push(notify);
                }
            }
            Op::BindVcpu { d, port, vcpu } => {
                let got = self.doms[d].bind_vcpu(EvtchnPort(port), vcpu);
                let movable = match self.models[d].ports.get(&port).map(|e| e.0) {
                    Some(PortState::Unbound { .. } | PortState::Interdomain { .. } | PortState::Hypervisor) => true,
                    Some(PortState::Virq { virq }) => !virq_is_per_vcpu(virq),
                    _ => false,
                };
                if vcpu >= VCPUS {
                    prop_assert_eq!(got, Err(Errno::ENOENT));
                } else if !movable {
                    prop_assert_eq!(got, Err(Errno::EINVAL));
                } else {
                    let notify = got.map_err(|e| TestCaseError::fail(std::format!("{e}")))?;
                    self.models[d].ports.get_mut(&port).unwrap().1 = vcpu;
                    notes.push(notify);
                }
            }
            Op::SetPriority { d, port, prio } => {
                let got = self.doms[d].set_priority(EvtchnPort(port), prio);
                let expect = if !self.models[d].fifo {
                    Err(Errno::ENOSYS)
                } else if !self.usable(d, port) {
                    Err(Errno::EACCES)
                } else if prio > 15 {
                    Err(Errno::EINVAL)
                } else {
                    Ok(())
                };
                prop_assert_eq!(got, expect);
            }
            Op::SendVirq { d, virq, vcpu } => {
                let notify = self.doms[d].send_virq(virq, vcpu);
                let row = if virq_is_per_vcpu(virq) { vcpu } else { 0 };
                match self.models[d].virqs.get(&(row, virq)).copied() {
                    Some(port) => self.check_raise(d, port, notify)?,
                    None => prop_assert_eq!(notify, Notify::none(DOMS[d])),
                }
                notes.push(notify);
            }
            Op::Consume { d, vcpu } => {
                guest_ran = true;
                if vcpu < VCPUS {
                    self.consume(d, vcpu)?;
                }
            }
            Op::Drain => {
                guest_ran = true;
                self.drain()?;
            }
            Op::Reset { d } => {
                let mut rounds = 0;
                loop {
                    rounds += 1;
                    prop_assert!(rounds <= 3, "reset did not converge");
                    match self.doms[d].reset(Peer::Same) {
                        Ok(()) => break,
                        Err(Error::Errno(e)) => return Err(TestCaseError::fail(std::format!("reset: {e}"))),
                        Err(Error::NeedPeer(dom)) => {
                            let (me, other) = pair(&mut self.doms, d, index_of(dom));
                            match me.reset(Peer::Other(other)) {
                                Ok(()) => break,
                                Err(Error::NeedPeer(_)) => continue,
                                Err(Error::Errno(e)) => return Err(TestCaseError::fail(std::format!("reset: {e}"))),
                            }
                        }
                    }
                }
                // Everything closes but the ports whose other end is keel.
                let ports: Vec<u32> = self.models[d].ports.keys().copied().collect();
                for port in ports {
                    if self.usable(d, port) && self.state(d, port) != Some(PortState::Hypervisor) {
                        self.model_close(d, port);
                    }
                }
                if self.models[d].fifo {
                    self.models[d].fifo = false;
                    self.guests[d].back_to_two_level();
                    // Leaving FIFO clears every pending event, the survivors' too.
                    self.models[d].pending.clear();
                }
            }
            Op::InitFifo { d } => {
                if self.models[d].fifo {
                    let got = self.doms[d].init_control(0, 0, || Ok(FakePage::new()));
                    prop_assert_eq!(got, Err(Errno::EINVAL));
                } else {
                    let (dom, guest) = (&mut self.doms[d], &mut self.guests[d]);
                    notes.extend(guest.init_fifo(dom, 1));
                    self.models[d].fifo = true;
                    // Carried-over events land in masked words (Linux masks new pages): no
                    // upcall, and still pending in the model.
                    for n in &notes {
                        prop_assert_eq!(n.upcall, None);
                        let port = n.pending.map(|p| p.0);
                        prop_assert!(port.is_some_and(|p| self.models[d].pending.contains(&p)));
                    }
                }
            }
            Op::BindHypervisor { d } => {
                let got = self.doms[d].bind_hypervisor();
                match self.model_alloc(d) {
                    Some(p) => {
                        prop_assert_eq!(got, Ok(EvtchnPort(p)));
                        self.models[d].ports.insert(p, (PortState::Hypervisor, 0));
                    }
                    None => prop_assert_eq!(got, Err(Errno::ENOSPC)),
                }
            }
            Op::RaiseHypervisor { d, port } => {
                let notify = self.doms[d].raise_hypervisor(EvtchnPort(port));
                if self.state(d, port) == Some(PortState::Hypervisor) {
                    self.check_raise(d, port, notify)?;
                } else {
                    prop_assert_eq!(notify, Notify::none(DOMS[d]));
                }
                notes.push(notify);
            }
            Op::ReleaseHypervisor { d, port } => {
                let got = self.doms[d].release_hypervisor(EvtchnPort(port));
                match self.state(d, port) {
                    Some(PortState::Hypervisor) => {
                        prop_assert_eq!(got, Ok(()));
                        let held = PortState::Unbound { remote_dom: crate::HYPERVISOR_REMOTE_DOM };
                        self.models[d].ports.get_mut(&port).unwrap().0 = held;
                    }
                    Some(PortState::HypervisorClosed) => {
                        prop_assert_eq!(got, Ok(()));
                        self.models[d].ports.remove(&port);
                    }
                    _ => prop_assert_eq!(got, Err(Errno::EINVAL)),
                }
            }
        }
        if !guest_ran {
            self.check_upcalls(&flags_before, &notes)?;
        }
        self.check_state()
    }

    /// The vCPUs whose upcall flag went 0 -> 1 are exactly those the operation reported.
    fn check_upcalls(&self, before: &[(usize, u32, u8)], notes: &[Notify]) -> Result<(), TestCaseError> {
        let reported: BTreeSet<(usize, u32)> =
            notes.iter().filter_map(|n| n.upcall.map(|v| (index_of(n.dom), v))).collect();
        let raised: BTreeSet<(usize, u32)> = before
            .iter()
            .zip(self.upcall_flags())
            .filter(|(b, a)| b.2 == 0 && a.2 != 0)
            .map(|(b, _)| (b.0, b.1))
            .collect();
        prop_assert_eq!(reported, raised);
        Ok(())
    }

    /// Whether a guest taking its upcalls would find `port` of domain `d`: 2-level, its
    /// word's selector bit and the upcall flag are set on its notify vCPU; FIFO, it is on a
    /// queue whose `ready` bit and vCPU's upcall flag are set, walking from the queue's head.
    fn announced(&self, d: usize, port: u32, notify_vcpu: u32) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let g = &self.guests[d];
        let info = |v: u32| &g.shared.0.vcpus[v as usize];
        if !self.models[d].fifo {
            let sel = info(notify_vcpu).sel.load(SeqCst);
            return sel & (1 << (port / 64)) != 0 && info(notify_vcpu).upcall.load(SeqCst) != 0;
        }
        for v in 0..VCPUS {
            let Some(cb) = &g.control[v as usize] else { continue };
            if info(v).upcall.load(SeqCst) == 0 {
                continue;
            }
            let ready = cb.0.words[0].load(SeqCst);
            for q in (0..16).filter(|q| ready & (1 << q) != 0) {
                let mut cur = cb.0.words[2 + q].load(SeqCst);
                for _ in 0..=MAX_PORT {
                    let Some(w) = g.word(cur).map(|w| w.load(SeqCst)) else { break };
                    if cur == 0 || w & LINKED == 0 {
                        break;
                    }
                    if cur == port {
                        return true;
                    }
                    cur = w & xen_abi::event_channel::EVTCHN_FIFO_LINK_MASK;
                }
            }
        }
        false
    }

    fn check_state(&self) -> Result<(), TestCaseError> {
        for (d, m) in self.models.iter().enumerate() {
            for &port in &m.pending {
                let vcpu = m.ports[&port].1;
                prop_assert!(
                    self.guests[d].is_masked(port) || self.announced(d, port, vcpu),
                    "d{} port {} pending and unmasked but not announced",
                    d,
                    port
                );
            }
        }
        for (d, (dom, m)) in self.doms.iter().zip(&self.models).enumerate() {
            prop_assert_eq!(dom.abi() != Abi::TwoLevel, m.fifo);
            prop_assert_eq!(dom.active_ports() as usize, m.ports.len(), "d{} leaks", d);
            for port in 0..64u32 {
                let st = dom.status(EvtchnPort(port)).map_err(|e| TestCaseError::fail(std::format!("{e}")))?;
                let (binding, vcpu) = match m.ports.get(&port) {
                    Some(&(state, vcpu)) => (state.binding(EvtchnPort(port)), vcpu),
                    None => (EvtchnBinding::Closed, 0),
                };
                prop_assert_eq!(st.binding, binding, "d{} port {}", d, port);
                prop_assert_eq!(st.vcpu, vcpu, "d{} port {}", d, port);
                match (st.binding, self.state(d, port)) {
                    (EvtchnBinding::Interdomain { dom: rd, port: rp }, Some(PortState::Hypervisor)) => {
                        prop_assert_eq!((rd, rp), (DomId(0), EvtchnPort(port)), "d{} port {}", d, port);
                    }
                    (EvtchnBinding::Interdomain { dom: rd, port: rp }, _) => {
                        let back = self.doms[index_of(rd)].status(rp).unwrap().binding;
                        prop_assert_eq!(back, EvtchnBinding::Interdomain { dom: DOMS[d], port: EvtchnPort(port) });
                    }
                    _ => {}
                }
                let pending = dom.is_pending(EvtchnPort(port));
                if self.usable(d, port) {
                    prop_assert_eq!(pending, Ok(m.pending.contains(&port)), "d{} port {} pending", d, port);
                } else {
                    prop_assert_eq!(pending, Err(Errno::EINVAL));
                }
            }
            for virq in 0..NR_VIRQS {
                for vcpu in 0..VCPUS {
                    let row = if virq_is_per_vcpu(virq) { vcpu } else { 0 };
                    let expect = m.virqs.get(&(row, virq)).map(|&p| EvtchnPort(p));
                    prop_assert_eq!(dom.virq_port(virq, vcpu), expect);
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn two_domains_follow_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut world = World::new();
        for op in &ops {
            world.apply(op)?;
        }
        world.drain()?;
    }

    #[test]
    fn two_fifo_domains_follow_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut world = World::new();
        world.apply(&Op::InitFifo { d: 0 })?;
        world.apply(&Op::InitFifo { d: 1 })?;
        for op in &ops {
            world.apply(op)?;
        }
        world.drain()?;
    }
}
