//! Two probe domains (`probe.peer=<domid>`, keel only: Xen's dom0 cannot create a peer):
//! an interdomain event channel between them, events both ways, closing and rebinding, and a
//! grant of one mapped, written and copied by the other.
//!
//! The handshake needs no shared memory: the domain with the lower id (A) allocates an
//! unbound port for the other (B) and waits until `EVTCHNOP_status` shows it connected; B
//! tries `bind_interdomain` on A's ports 1 to 63 until one succeeds (only a port A allocated
//! for B can). From then on the two take turns, each waiting (with a timeout) for the other's
//! event before acting, so at most one notification is in flight each way.

use xen_abi::event_channel::EvtchnBinding;
use xen_abi::grant_table::{
    GnttabCopyPtr, GrantRef, GNTCOPY_SOURCE_GREF, GNTMAP_HOST_MAP, GNTST_OKAY, GTF_PERMIT_ACCESS,
};
use xen_abi::{DomId, XenPfn};

use super::events::count;
use super::evtchn::{alloc_unbound, bind_interdomain, close, send, status};
use super::fw::{self, ensure, fail, Msg, R};
use super::{gnt, pages, Ctx};
use crate::checks::Tap;

/// How long to wait for the other domain at each step.
const STEP_MS: u64 = 10_000;

struct Link {
    peer: u16,
    /// Whether this domain is A (lower id).
    a: bool,
    /// This domain's end.
    port: u32,
    /// The other domain's end.
    remote: u32,
    /// Deliveries of `port` already accounted for.
    seen: u32,
}

impl Link {
    fn signal(&self) -> R {
        let rc = send(self.port);
        ensure!(rc == 0, "send on port {}: rc {rc}", self.port);
        Ok(())
    }

    fn wait(&mut self, what: &str) -> R {
        let port = self.port;
        let seen = self.seen;
        if !fw::wait_until(STEP_MS, || count(port) > seen) {
            fail!("no event from dom {} ({what}) within {} s", self.peer, STEP_MS / 1000);
        }
        self.seen = count(port);
        Ok(())
    }
}

fn connect(ctx: &Ctx, peer: u16) -> Result<Link, Msg> {
    let a = ctx.domid < peer;
    if a {
        let port = alloc_unbound(DomId(peer)).map_err(|rc| Msg::new(format_args!("alloc_unbound: rc {rc}")))?;
        let mut remote = None;
        fw::wait_until(STEP_MS, || {
            if let Ok(s) = status(port) {
                if let EvtchnBinding::Interdomain { dom, port } = s.binding() {
                    if dom.0 == peer {
                        remote = Some(port.0);
                    }
                }
            }
            remote.is_some()
        });
        let Some(remote) = remote else {
            close(port);
            fail!("dom {peer} did not bind to port {port} within {} s", STEP_MS / 1000);
        };
        // Let B take the notification its bind raised before the first real one.
        fw::pause_us(100_000);
        Ok(Link { peer, a, port, remote, seen: count(port) })
    } else {
        let mut found = None;
        fw::wait_until(STEP_MS, || {
            for p in 1..64 {
                if let Ok(local) = bind_interdomain(DomId(peer), p) {
                    found = Some((local, p));
                    return true;
                }
            }
            fw::pause_us(5_000);
            false
        });
        let Some((port, remote)) = found else {
            fail!("no port of dom {peer} to bind to within {} s", STEP_MS / 1000);
        };
        // The bind raised one notification here: take it before counting.
        fw::pause_us(50_000);
        Ok(Link { peer, a, port, remote, seen: count(port) })
    }
}

fn check_connected(l: &Link) -> R {
    let s = status(l.port).map_err(|rc| Msg::new(format_args!("status: rc {rc}")))?;
    let want = EvtchnBinding::Interdomain { dom: DomId(l.peer), port: xen_abi::EvtchnPort(l.remote) };
    ensure!(s.binding() == want, "status {:?}, want {want:?}", s.binding());
    Ok(())
}

fn both_ways(l: &mut Link) -> R {
    for round in 0..3 {
        if l.a {
            l.signal()?;
            l.wait("the reply")?;
        } else {
            l.wait("the ping")?;
            l.signal()?;
        }
        let _ = round;
    }
    Ok(())
}

fn close_rebind(l: &mut Link) -> R {
    if l.a {
        let rc = close(l.port);
        ensure!(rc == 0, "close: rc {rc}");
        // Give B time to see its end unbound, then bind to it again.
        fw::pause_us(200_000);
        let mut again = None;
        fw::wait_until(STEP_MS, || {
            again = bind_interdomain(DomId(l.peer), l.remote).ok();
            again.is_some()
        });
        let Some(port) = again else { fail!("rebinding to dom {}'s port {} failed", l.peer, l.remote) };
        l.port = port;
        fw::pause_us(100_000);
        l.seen = count(port);
        check_connected(l)?;
        l.signal()?;
        l.wait("the reply after rebinding")
    } else {
        let port = l.port;
        let peer = l.peer;
        let unbound = fw::wait_until(STEP_MS, || {
            status(port).is_ok_and(|s| s.binding() == EvtchnBinding::Unbound { remote_dom: DomId(peer) })
        });
        ensure!(unbound, "the port did not become unbound when dom {peer} closed its end");
        l.wait("the ping after rebinding")?;
        let s = status(port).map_err(|rc| Msg::new(format_args!("status: rc {rc}")))?;
        let EvtchnBinding::Interdomain { dom, port: remote } = s.binding() else {
            fail!("status {:?} after dom {peer} bound again", s.binding());
        };
        ensure!(dom.0 == peer, "connected to dom {}", dom.0);
        l.remote = remote.0;
        l.signal()
    }
}

fn grant_exchange(l: &mut Link) -> R {
    ensure!(gnt::ensure_frame0(), "grant frame 0 cannot be mapped");
    let page = pages::addr(pages::PEER_GRANT);
    if l.a {
        fw::fill(page, 0xa5);
        gnt::grant(gnt::REF_PEER, l.peer, pages::gfn(pages::PEER_GRANT), GTF_PERMIT_ACCESS);
        l.signal()?;
        let r = l.wait("the peer's map and copy");
        gnt::revoke(gnt::REF_PEER);
        r?;
        ensure!(fw::holds(page, 0x5a, 0, 4096), "the peer's writes through its mapping are not in the granted page");
        Ok(())
    } else {
        l.wait("the grant")?;
        let hole = pages::addr(pages::PEER_HOLE);
        ensure!(gnt::make_hole(pages::PEER_HOLE), "ballooning out the mapping page failed");
        let (st, h) = gnt::map(l.peer, gnt::REF_PEER, hole, GNTMAP_HOST_MAP);
        let r = (|| {
            ensure!(st == GNTST_OKAY, "mapping dom {}'s grant {}: status {st}", l.peer, gnt::REF_PEER);
            ensure!(fw::holds(hole, 0xa5, 0, 4096), "the mapped grant does not hold the peer's pattern");
            fw::fill(hole, 0x5a);
            let u = gnt::unmap(h, hole);
            ensure!(u == GNTST_OKAY, "unmap: status {u}");
            let st = gnt::copy(
                GnttabCopyPtr::by_gref(GrantRef(gnt::REF_PEER), DomId(l.peer), 0),
                GnttabCopyPtr::by_gmfn(XenPfn(pages::gfn(pages::PEER_COPY)), DomId::SELF, 0),
                4096,
                GNTCOPY_SOURCE_GREF,
            );
            ensure!(st == GNTST_OKAY, "copying from dom {}'s grant: status {st}", l.peer);
            ensure!(fw::holds(pages::addr(pages::PEER_COPY), 0x5a, 0, 4096), "the copy does not hold what was written");
            Ok(())
        })();
        gnt::refill(pages::PEER_HOLE);
        let s = l.signal();
        r.and(s)
    }
}

/// The `2dom-` checks.
pub fn run(t: &mut Tap, ctx: &Ctx) {
    let Some(peer) = ctx.peer else { return };
    let names = ["2dom-evtchn-connect", "2dom-evtchn-both-ways", "2dom-evtchn-close-rebind", "2dom-grant-map-copy"];
    let mut link = match connect(ctx, peer).and_then(|l| check_connected(&l).map(|()| l)) {
        Ok(l) => {
            t.run(names[0], Ok::<(), Msg>(()));
            l
        }
        Err(e) => {
            t.run(names[0], Err(e));
            for name in &names[1..] {
                t.check(name, false, format_args!("no channel to dom {peer}"));
            }
            return;
        }
    };
    t.run(names[1], both_ways(&mut link));
    t.run(names[2], close_rebind(&mut link));
    t.run(names[3], grant_exchange(&mut link));
    close(link.port);
}
