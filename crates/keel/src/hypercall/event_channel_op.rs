//! `event_channel_op`: a guest's event channels, 2-level and FIFO. The state machine is
//! `keel-evtchn`; this decodes the arguments, resolves domains with Xen 4.17's rules
//! (`DOMID_SELF`, -ESRCH, and -EPERM for another domain unless privileged), and acts on what an
//! operation asks for (upcalls, poller wake-ups).

use xen_abi::errno::Errno;
use xen_abi::event_channel::*;
use xen_abi::DomId;

use super::{Call, Gva, HcResult, Outcome};
use crate::dom::events::{self, with_pair, with_peer};
use crate::dom::memory::PinnedPage;

/// `event_channel_op(cmd, arg)`.
pub fn event_channel_op(c: &mut Call<'_>, cmd: u32, arg: Gva) -> HcResult {
    let d = c.domain.clone();
    match cmd {
        EVTCHNOP_ALLOC_UNBOUND => {
            let mut op: EvtchnAllocUnbound = c.read(arg)?;
            let target = super::target_domain(c, op.dom)?;
            let remote = if op.remote_dom == DomId::SELF { DomId(c.domain.id) } else { op.remote_dom };
            op.port = target.evtchn.lock().alloc_unbound(remote)?;
            c.write(arg, &op)?;
        }
        EVTCHNOP_BIND_INTERDOMAIN => {
            let mut op: EvtchnBindInterdomain = c.read(arg)?;
            let remote = super::domain_by_any_id(c, op.remote_dom)?;
            let (port, notify) = with_pair(&d, &remote, |ch, peer| ch.bind_interdomain(peer, op.remote_port))?;
            events::act(notify, Some(&d));
            op.local_port = port;
            c.write(arg, &op)?;
        }
        EVTCHNOP_BIND_VIRQ => {
            let mut op: EvtchnBindVirq = c.read(arg)?;
            op.port = d.evtchn.lock().bind_virq(op.virq, op.vcpu)?;
            c.write(arg, &op)?;
        }
        EVTCHNOP_BIND_IPI => {
            let mut op: EvtchnBindIpi = c.read(arg)?;
            op.port = d.evtchn.lock().bind_ipi(op.vcpu)?;
            c.write(arg, &op)?;
        }
        EVTCHNOP_BIND_PIRQ => {
            let mut op: EvtchnBindPirq = c.read(arg)?;
            op.port = d.evtchn.lock().bind_pirq(op.pirq, op.flags)?;
            c.write(arg, &op)?;
        }
        EVTCHNOP_CLOSE => {
            let op: EvtchnClose = c.read(arg)?;
            with_peer(&d, |ch, peer| ch.close(op.port, peer))?;
        }
        EVTCHNOP_SEND => {
            let op: EvtchnSend = c.read(arg)?;
            let notify = with_peer(&d, |ch, peer| ch.send(op.port, peer))?;
            // The remote domain's upcall, or (a port whose other end is keel) the backend
            // keel serves for this domain: its PV console.
            events::act(notify, Some(&d));
        }
        EVTCHNOP_STATUS => {
            let mut op: EvtchnStatus = c.read(arg)?;
            let target = super::target_domain(c, op.dom)?;
            let st = target.evtchn.lock().status(op.port)?;
            op.set_binding(st.binding);
            op.vcpu = st.vcpu;
            c.write(arg, &op)?;
        }
        EVTCHNOP_BIND_VCPU => {
            let op: EvtchnBindVcpu = c.read(arg)?;
            let notify = d.evtchn.lock().bind_vcpu(op.port, op.vcpu)?;
            events::act(notify, Some(&d));
        }
        EVTCHNOP_UNMASK => {
            let op: EvtchnUnmask = c.read(arg)?;
            let notify = d.evtchn.lock().unmask(op.port)?;
            events::act(notify, Some(&d));
        }
        EVTCHNOP_RESET | EVTCHNOP_RESET_CONT => {
            let op: EvtchnReset = c.read(arg)?;
            let target = super::target_domain(c, op.dom)?;
            with_peer(&target, |ch, peer| ch.reset(peer))?;
        }
        EVTCHNOP_INIT_CONTROL => {
            let mut op: EvtchnInitControl = c.read(arg)?;
            let gfn = keel_mm::Gfn::new(op.control_gfn.0);
            let mem = d.mem.clone();
            d.evtchn
                .lock()
                .init_control(op.vcpu, op.offset, || PinnedPage::pin(&mem, gfn).map_err(|_| Errno::EINVAL))?;
            op.link_bits = EVTCHN_FIFO_LINK_BITS as u8;
            c.write(arg, &op)?;
        }
        EVTCHNOP_EXPAND_ARRAY => {
            let op: EvtchnExpandArray = c.read(arg)?;
            let gfn = keel_mm::Gfn::new(op.array_gfn.0);
            let mem = d.mem.clone();
            let notifies = d.evtchn.lock().expand_array(|| PinnedPage::pin(&mem, gfn).map_err(|_| Errno::EINVAL))?;
            for n in notifies {
                events::act(n, Some(&d));
            }
        }
        EVTCHNOP_SET_PRIORITY => {
            let op: EvtchnSetPriority = c.read(arg)?;
            d.evtchn.lock().set_priority(op.port, op.priority)?;
        }
        _ => return Err(Errno::ENOSYS),
    }
    Ok(Outcome::Ret(0))
}
