//! `event_channel_op` (hypercall 32) with the 2-level ABI: allocation and binding of every
//! kind of port, sending, masking, closing, status, moving delivery to another vCPU, and the
//! errors of each.
//!
//! Xen 4.17: port 0 is reserved (status "closed", cannot be closed or sent to); ports at or
//! above 4096 are `-EINVAL`; a global VIRQ binds on vCPU 0 only; a vCPU binds a per-vCPU VIRQ
//! once (`-EEXIST`); `bind_interdomain` leaves the new local port pending; sending on an
//! unbound port is dropped silently, on a VIRQ port is `-EINVAL`; closing one end of an
//! interdomain channel leaves the other unbound; closing clears the pending bit; only
//! interdomain, unbound and global-VIRQ ports can change vCPU (`-EINVAL` otherwise);
//! `EVTCHNOP_unmask` redelivers a port that became pending while masked, clearing the mask bit
//! by hand does not.

use xen_abi::event_channel::*;
use xen_abi::DomId;

use super::events::{self, count, wait_count};
use super::fw::{
    ensure, evtchn, nr, num, pause_us, Msg, EEXIST, EFAULT, EINVAL, ENOENT, ENOSYS, EOPNOTSUPP, ESRCH, R, UNMAPPED,
};
use super::Ctx;
use crate::checks::Tap;

/// How long a delivery may take (ms) before a check gives up.
pub const DELIVERY_MS: u64 = 1000;
/// How long to watch for a delivery that must not happen (ms).
pub const QUIET_MS: u64 = 30;

fn err(what: &str, rc: i64) -> Msg {
    Msg::new(format_args!("{what} returned {rc}"))
}

/// `EVTCHNOP_alloc_unbound` in this domain for `remote`.
pub fn alloc_unbound(remote: DomId) -> Result<u32, i64> {
    let mut a = EvtchnAllocUnbound { dom: DomId::SELF, remote_dom: remote, port: EvtchnPort(0) };
    match evtchn(EVTCHNOP_ALLOC_UNBOUND, &mut a) {
        0 => Ok(a.port.0),
        rc => Err(rc),
    }
}

/// `EVTCHNOP_bind_interdomain` to `remote`'s port `rport`.
pub fn bind_interdomain(remote: DomId, rport: u32) -> Result<u32, i64> {
    let mut b = EvtchnBindInterdomain {
        remote_dom: remote,
        _pad0: 0,
        remote_port: EvtchnPort(rport),
        local_port: EvtchnPort(0),
    };
    match evtchn(EVTCHNOP_BIND_INTERDOMAIN, &mut b) {
        0 => Ok(b.local_port.0),
        rc => Err(rc),
    }
}

/// `EVTCHNOP_bind_virq`.
pub fn bind_virq(virq: u32, vcpu: u32) -> Result<u32, i64> {
    let mut b = EvtchnBindVirq { virq, vcpu, port: EvtchnPort(0) };
    match evtchn(EVTCHNOP_BIND_VIRQ, &mut b) {
        0 => Ok(b.port.0),
        rc => Err(rc),
    }
}

/// `EVTCHNOP_bind_ipi`.
pub fn bind_ipi(vcpu: u32) -> Result<u32, i64> {
    let mut b = EvtchnBindIpi { vcpu, port: EvtchnPort(0) };
    match evtchn(EVTCHNOP_BIND_IPI, &mut b) {
        0 => Ok(b.port.0),
        rc => Err(rc),
    }
}

/// `EVTCHNOP_close`.
pub fn close(port: u32) -> i64 {
    evtchn(EVTCHNOP_CLOSE, &mut EvtchnClose { port: EvtchnPort(port) })
}

/// `EVTCHNOP_send`.
pub fn send(port: u32) -> i64 {
    evtchn(EVTCHNOP_SEND, &mut EvtchnSend { port: EvtchnPort(port) })
}

/// `EVTCHNOP_unmask`.
pub fn unmask(port: u32) -> i64 {
    evtchn(EVTCHNOP_UNMASK, &mut EvtchnUnmask { port: EvtchnPort(port) })
}

/// `EVTCHNOP_bind_vcpu`.
pub fn bind_vcpu(port: u32, vcpu: u32) -> i64 {
    evtchn(EVTCHNOP_BIND_VCPU, &mut EvtchnBindVcpu { port: EvtchnPort(port), vcpu })
}

/// `EVTCHNOP_status` of this domain's `port`.
pub fn status_of(dom: DomId, port: u32) -> Result<EvtchnStatus, i64> {
    let mut s = EvtchnStatus { dom, port: EvtchnPort(port), ..Default::default() };
    match evtchn(EVTCHNOP_STATUS, &mut s) {
        0 => Ok(s),
        rc => Err(rc),
    }
}

/// `EVTCHNOP_status` of this domain's `port`.
pub fn status(port: u32) -> Result<EvtchnStatus, i64> {
    status_of(DomId::SELF, port)
}

/// Wait for one more delivery of `port` than `seen`; the error says what happened.
pub fn expect_delivery(port: u32, seen: u32, what: &str) -> R {
    let c = wait_count(port, seen, DELIVERY_MS);
    ensure!(c > seen, "{what}: port {port} was not delivered within {DELIVERY_MS} ms {}", events::PortState(port));
    Ok(())
}

/// Watch `port` for `QUIET_MS` and fail if it was delivered.
pub fn expect_quiet(port: u32, seen: u32, what: &str) -> R {
    pause_us(QUIET_MS * 1000);
    let c = count(port);
    ensure!(c == seen, "{what}: port {port} was delivered ({} times)", c - seen);
    Ok(())
}

fn check_binding(port: u32, want: EvtchnBinding, vcpu: u32) -> R {
    let s = status(port).map_err(|rc| err("EVTCHNOP_status", rc))?;
    ensure!(s.binding() == want, "port {port}: status {:?}, want {want:?}", s.binding());
    ensure!(s.vcpu == vcpu, "port {port}: vcpu {}, want {vcpu}", s.vcpu);
    Ok(())
}

fn alloc_unbound_check(ctx: &Ctx) -> R {
    let p = alloc_unbound(DomId::SELF).map_err(|rc| err("alloc_unbound(SELF)", rc))?;
    let q = alloc_unbound(DomId(1000));
    let r = (|| {
        ensure!(p > 0 && p < NR_EVENT_CHANNELS, "port {p}");
        // DOMID_SELF as the remote is recorded as the domain's own id.
        check_binding(p, EvtchnBinding::Unbound { remote_dom: DomId(ctx.domid) }, 0)?;
        let q = q.map_err(|rc| err("alloc_unbound(remote 1000)", rc))?;
        ensure!(q != p, "the same port twice");
        check_binding(q, EvtchnBinding::Unbound { remote_dom: DomId(1000) }, 0)
    })();
    close(p);
    if let Ok(q) = q {
        close(q);
    }
    r
}

fn alloc_unbound_errors() -> R {
    let mut a = EvtchnAllocUnbound { dom: DomId(1000), remote_dom: DomId::SELF, port: EvtchnPort(0) };
    let rc = evtchn(EVTCHNOP_ALLOC_UNBOUND, &mut a);
    ensure!(rc == ESRCH, "dom 1000: rc {rc}, want -ESRCH");
    let rc = num(nr::EVENT_CHANNEL_OP, [EVTCHNOP_ALLOC_UNBOUND as u64, UNMAPPED, 0, 0, 0]);
    ensure!(rc == EFAULT, "unmapped argument: rc {rc}, want -EFAULT");
    Ok(())
}

fn bind_ipi_check() -> R {
    let p = bind_ipi(0).map_err(|rc| err("bind_ipi(vcpu 0)", rc))?;
    let r = (|| {
        check_binding(p, EvtchnBinding::Ipi, 0)?;
        let seen = count(p);
        let rc = send(p);
        ensure!(rc == 0, "send: rc {rc}");
        expect_delivery(p, seen, "send")?;
        ensure!(events::rec(p).cpu.load(core::sync::atomic::Ordering::Acquire) == 0, "delivered on another vCPU");
        let rc = bind_ipi(1000).err().unwrap_or(0);
        ensure!(rc == ENOENT, "bind_ipi(vcpu 1000): rc {rc}, want -ENOENT");
        Ok(())
    })();
    close(p);
    r
}

fn loopback_pair() -> Result<(u32, u32), Msg> {
    let a = alloc_unbound(DomId::SELF).map_err(|rc| err("alloc_unbound", rc))?;
    match bind_interdomain(DomId::SELF, a) {
        Ok(b) => Ok((a, b)),
        Err(rc) => {
            close(a);
            Err(err("bind_interdomain(SELF, its own unbound port)", rc))
        }
    }
}

fn interdomain_loopback(ctx: &Ctx) -> R {
    let (a, b) = loopback_pair()?;
    let initial = count(b);
    let me = DomId(ctx.domid);
    let r = (|| {
        ensure!(a != b, "both ends are port {a}");
        check_binding(a, EvtchnBinding::Interdomain { dom: me, port: EvtchnPort(b) }, 0)?;
        check_binding(b, EvtchnBinding::Interdomain { dom: me, port: EvtchnPort(a) }, 0)?;
        wait_count(b, initial, DELIVERY_MS);
        let (sa, sb) = (count(a), count(b));
        ensure!(send(a) == 0, "send on {a} failed");
        expect_delivery(b, sb, "send on the first end")?;
        ensure!(send(b) == 0, "send on {b} failed");
        expect_delivery(a, sa, "send on the second end")?;
        // Closing one end leaves the other unbound, waiting for this domain again.
        let rc = close(b);
        ensure!(rc == 0, "close: rc {rc}");
        check_binding(a, EvtchnBinding::Unbound { remote_dom: me }, 0)
    })();
    close(a);
    close(b);
    r
}

fn bind_interdomain_notifies() -> R {
    let a = alloc_unbound(DomId::SELF).map_err(|rc| err("alloc_unbound", rc))?;
    // Xen marks the new local port pending at once, in case the remote end sent before.
    let r = match bind_interdomain(DomId::SELF, a) {
        Ok(b) => {
            // Interrupts are off until the wait: the delivery cannot have happened yet.
            let r = expect_delivery(b, count(b), "bind_interdomain");
            close(b);
            r
        }
        Err(rc) => Err(err("bind_interdomain", rc)),
    };
    close(a);
    r
}

fn bind_interdomain_errors() -> R {
    let ipi = bind_ipi(0).map_err(|rc| err("bind_ipi", rc))?;
    let other = alloc_unbound(DomId(1000));
    let r = (|| {
        let cases = [
            ("an IPI port", DomId::SELF, ipi, EINVAL),
            ("port 4096", DomId::SELF, NR_EVENT_CHANNELS, EINVAL),
            ("port 0", DomId::SELF, 0, EINVAL),
            ("dom 1000", DomId(1000), 1, ESRCH),
        ];
        for (what, dom, port, want) in cases {
            let rc = bind_interdomain(dom, port).map(|p| {
                close(p);
                0
            });
            ensure!(rc == Err(want), "binding to {what}: {rc:?}, want {want}");
        }
        let other = other.map_err(|rc| err("alloc_unbound(remote 1000)", rc))?;
        let rc = bind_interdomain(DomId::SELF, other);
        ensure!(rc == Err(EINVAL), "binding to a port meant for dom 1000: {rc:?}, want -EINVAL");
        Ok(())
    })();
    close(ipi);
    if let Ok(o) = other {
        close(o);
    }
    r
}

fn bind_virq_check() -> R {
    let p = bind_virq(VIRQ_TIMER, 0).map_err(|rc| err("bind_virq(TIMER, 0)", rc))?;
    let r = (|| {
        check_binding(p, EvtchnBinding::Virq(VIRQ_TIMER), 0)?;
        let rc = bind_virq(VIRQ_TIMER, 0).map(|q| {
            close(q);
            0
        });
        ensure!(rc == Err(EEXIST), "binding VIRQ_TIMER twice on vCPU 0: {rc:?}, want -EEXIST");
        let rc = send(p);
        ensure!(rc == EINVAL, "send on a VIRQ port: rc {rc}, want -EINVAL");
        Ok(())
    })();
    let rc = close(p);
    r?;
    ensure!(rc == 0, "close: rc {rc}");
    // Free again once closed.
    let p = bind_virq(VIRQ_TIMER, 0).map_err(|rc| err("rebinding VIRQ_TIMER after close", rc))?;
    close(p);
    Ok(())
}

fn bind_virq_kinds() -> R {
    for (name, virq) in [("VIRQ_DEBUG", VIRQ_DEBUG), ("VIRQ_CONSOLE", VIRQ_CONSOLE), ("VIRQ_DOM_EXC", VIRQ_DOM_EXC)] {
        let p = bind_virq(virq, 0).map_err(|rc| err(name, rc))?;
        let r = check_binding(p, EvtchnBinding::Virq(virq), 0);
        close(p);
        r?;
    }
    Ok(())
}

fn bind_virq_errors() -> R {
    let cases = [
        ("global VIRQ_CONSOLE on vCPU 1", VIRQ_CONSOLE, 1, EINVAL),
        ("global VIRQ_DOM_EXC on vCPU 1", VIRQ_DOM_EXC, 1, EINVAL),
        ("VIRQ 24 (NR_VIRQS)", NR_VIRQS, 0, EINVAL),
        ("VIRQ 0x80000000", 0x8000_0000, 0, EINVAL),
        ("VIRQ_TIMER on vCPU 1000", VIRQ_TIMER, 1000, ENOENT),
    ];
    for (what, virq, vcpu, want) in cases {
        let rc = bind_virq(virq, vcpu).map(|p| {
            close(p);
            0
        });
        ensure!(rc == Err(want), "{what}: {rc:?}, want {want}");
    }
    Ok(())
}

fn send_errors() -> R {
    let u = alloc_unbound(DomId::SELF).map_err(|rc| err("alloc_unbound", rc))?;
    let r = (|| {
        let seen = count(u);
        let rc = send(u);
        ensure!(rc == 0, "send on an unbound port: rc {rc}, want 0 (dropped)");
        expect_quiet(u, seen, "send on an unbound port")?;
        for (what, port) in [("port 0", 0), ("port 4096", NR_EVENT_CHANNELS), ("port 0xffffffff", u32::MAX)] {
            let rc = send(port);
            ensure!(rc == EINVAL, "send on {what}: rc {rc}, want -EINVAL");
        }
        Ok(())
    })();
    close(u);
    let rc = send(u);
    r?;
    ensure!(rc == EINVAL, "send on a closed port: rc {rc}, want -EINVAL");
    Ok(())
}

fn mask_pending_unmask() -> R {
    let p = bind_ipi(0).map_err(|rc| err("bind_ipi", rc))?;
    let r = (|| {
        events::mask(p);
        let seen = count(p);
        ensure!(send(p) == 0, "send failed");
        ensure!(events::is_pending(p), "a masked port that was sent is not pending");
        expect_quiet(p, seen, "send while masked")?;
        // Clearing the mask bit by hand does not redeliver.
        events::clear_mask_bit(p);
        expect_quiet(p, seen, "mask bit cleared without EVTCHNOP_unmask")?;
        ensure!(events::is_pending(p), "the port stopped being pending");
        events::mask(p);
        let rc = unmask(p);
        ensure!(rc == 0, "EVTCHNOP_unmask: rc {rc}");
        ensure!(!events::is_masked(p), "still masked after EVTCHNOP_unmask");
        expect_delivery(p, seen, "EVTCHNOP_unmask of a pending port")?;
        pause_us(QUIET_MS * 1000);
        ensure!(count(p) == seen + 1, "delivered {} times, want once", count(p) - seen);
        Ok(())
    })();
    events::clear_mask_bit(p);
    close(p);
    r
}

fn close_clears_pending() -> R {
    let p = bind_ipi(0).map_err(|rc| err("bind_ipi", rc))?;
    events::mask(p);
    let sent = send(p);
    let pending = events::is_pending(p);
    let rc = close(p);
    let after = events::is_pending(p);
    events::clear_mask_bit(p);
    ensure!(sent == 0 && pending, "send {sent}, pending {pending}");
    ensure!(rc == 0, "close: rc {rc}");
    ensure!(!after, "the pending bit survived close");
    Ok(())
}

fn close_errors() -> R {
    let p = bind_ipi(0).map_err(|rc| err("bind_ipi", rc))?;
    let rc = close(p);
    ensure!(rc == 0, "close: rc {rc}");
    let rc = close(p);
    ensure!(rc == EINVAL, "closing twice: rc {rc}, want -EINVAL");
    check_binding(p, EvtchnBinding::Closed, 0)?;
    for (what, port) in [("port 0", 0), ("port 4096", NR_EVENT_CHANNELS)] {
        let rc = close(port);
        ensure!(rc == EINVAL, "close({what}): rc {rc}, want -EINVAL");
    }
    Ok(())
}

fn status_errors() -> R {
    let rc = status(NR_EVENT_CHANNELS).err();
    ensure!(rc == Some(EINVAL), "status(4096): {rc:?}, want -EINVAL");
    let rc = status_of(DomId(1000), 1).err();
    ensure!(rc == Some(ESRCH), "status of dom 1000: {rc:?}, want -ESRCH");
    // Port 0 is reserved: reported closed.
    check_binding(0, EvtchnBinding::Closed, 0)?;
    Ok(())
}

fn unmask_errors() -> R {
    let rc = unmask(NR_EVENT_CHANNELS);
    ensure!(rc == EINVAL, "unmask(4096): rc {rc}, want -EINVAL");
    let p = bind_ipi(0).map_err(|rc| err("bind_ipi", rc))?;
    close(p);
    let rc = unmask(p);
    ensure!(rc == 0, "unmask of a closed port: rc {rc}, want 0");
    Ok(())
}

fn bind_vcpu_errors() -> R {
    let ipi = bind_ipi(0).map_err(|rc| err("bind_ipi", rc))?;
    let timer = bind_virq(VIRQ_TIMER, 0);
    let unbound = alloc_unbound(DomId::SELF);
    let r = (|| {
        let rc = bind_vcpu(ipi, 0);
        ensure!(rc == EINVAL, "bind_vcpu of an IPI port: rc {rc}, want -EINVAL");
        let timer = timer.map_err(|rc| err("bind_virq(TIMER)", rc))?;
        let rc = bind_vcpu(timer, 0);
        ensure!(rc == EINVAL, "bind_vcpu of a per-vCPU VIRQ: rc {rc}, want -EINVAL");
        let unbound = unbound.map_err(|rc| err("alloc_unbound", rc))?;
        let rc = bind_vcpu(unbound, 1000);
        ensure!(rc == ENOENT, "bind_vcpu to vCPU 1000: rc {rc}, want -ENOENT");
        let rc = bind_vcpu(NR_EVENT_CHANNELS, 0);
        ensure!(rc == EINVAL, "bind_vcpu of port 4096: rc {rc}, want -EINVAL");
        let rc = bind_vcpu(unbound, 0);
        ensure!(rc == 0, "bind_vcpu of an unbound port to vCPU 0: rc {rc}");
        Ok(())
    })();
    close(ipi);
    if let Ok(p) = timer {
        close(p);
    }
    if let Ok(p) = unbound {
        close(p);
    }
    r
}

fn two_level_only_ops() -> R {
    let p = bind_ipi(0).map_err(|rc| err("bind_ipi", rc))?;
    let rc = evtchn(EVTCHNOP_SET_PRIORITY, &mut EvtchnSetPriority { port: EvtchnPort(p), priority: 3 });
    close(p);
    ensure!(rc == ENOSYS, "set_priority with the 2-level ABI: rc {rc}, want -ENOSYS");
    let rc = evtchn(EVTCHNOP_EXPAND_ARRAY, &mut EvtchnExpandArray { array_gfn: xen_abi::XenPfn(0) });
    ensure!(rc == EOPNOTSUPP, "expand_array with the 2-level ABI: rc {rc}, want -EOPNOTSUPP");
    Ok(())
}

fn unknown_op() -> R {
    for cmd in [15u64, 100] {
        let rc = num(nr::EVENT_CHANNEL_OP, [cmd, UNMAPPED, 0, 0, 0]);
        ensure!(rc == ENOSYS, "command {cmd}: rc {rc}, want -ENOSYS");
    }
    Ok(())
}

// ---- With a second vCPU ----

fn bind_vcpu_moves_delivery() -> R {
    let (a, b) = loopback_pair()?;
    let initial = count(b);
    let r = (|| {
        wait_count(b, initial, DELIVERY_MS);
        let rc = bind_vcpu(b, 1);
        ensure!(rc == 0, "bind_vcpu(port, 1): rc {rc}");
        let s = status(b).map_err(|rc| err("status", rc))?;
        ensure!(s.vcpu == 1, "status says vCPU {}", s.vcpu);
        let seen = count(b);
        ensure!(send(a) == 0, "send failed");
        expect_delivery(b, seen, "send after bind_vcpu(1)")?;
        let cpu = events::rec(b).cpu.load(core::sync::atomic::Ordering::Acquire);
        ensure!(cpu == 1, "the upcall was taken on vCPU {cpu}, want 1");
        let rc = bind_vcpu(b, 0);
        ensure!(rc == 0, "bind_vcpu(port, 0): rc {rc}");
        let seen = count(b);
        ensure!(send(a) == 0, "send failed");
        expect_delivery(b, seen, "send after bind_vcpu(0)")?;
        let cpu = events::rec(b).cpu.load(core::sync::atomic::Ordering::Acquire);
        ensure!(cpu == 0, "after moving back the upcall was taken on vCPU {cpu}");
        Ok(())
    })();
    close(a);
    close(b);
    r
}

fn ipi_to_other_vcpu() -> R {
    let p = bind_ipi(1).map_err(|rc| err("bind_ipi(vcpu 1)", rc))?;
    let r = (|| {
        check_binding(p, EvtchnBinding::Ipi, 1)?;
        let seen = count(p);
        ensure!(send(p) == 0, "send failed");
        expect_delivery(p, seen, "send from vCPU 0")?;
        let cpu = events::rec(p).cpu.load(core::sync::atomic::Ordering::Acquire);
        ensure!(cpu == 1, "taken on vCPU {cpu}, want 1");
        Ok(())
    })();
    close(p);
    r
}

fn virq_on_other_vcpu() -> R {
    let p = bind_virq(VIRQ_TIMER, 1).map_err(|rc| err("bind_virq(TIMER, vcpu 1)", rc))?;
    let r = check_binding(p, EvtchnBinding::Virq(VIRQ_TIMER), 1);
    close(p);
    r?;
    let g = bind_virq(VIRQ_CONSOLE, 0).map_err(|rc| err("bind_virq(CONSOLE)", rc))?;
    let rc = bind_vcpu(g, 1);
    let r = check_binding(g, EvtchnBinding::Virq(VIRQ_CONSOLE), 1);
    close(g);
    ensure!(rc == 0, "bind_vcpu of a global VIRQ: rc {rc}, want 0");
    r
}

fn unmask_other_vcpu() -> R {
    let p = bind_ipi(1).map_err(|rc| err("bind_ipi(vcpu 1)", rc))?;
    let r = (|| {
        events::mask(p);
        let seen = count(p);
        ensure!(send(p) == 0, "send failed");
        expect_quiet(p, seen, "send while masked")?;
        let rc = unmask(p);
        ensure!(rc == 0, "unmask: rc {rc}");
        expect_delivery(p, seen, "unmask from vCPU 0")?;
        let cpu = events::rec(p).cpu.load(core::sync::atomic::Ordering::Acquire);
        ensure!(cpu == 1, "taken on vCPU {cpu}, want 1");
        Ok(())
    })();
    events::clear_mask_bit(p);
    close(p);
    r
}

/// The `evtchn-` checks of one vCPU (2-level ABI).
pub fn run(t: &mut Tap, ctx: &Ctx) {
    t.run("evtchn-alloc-unbound", alloc_unbound_check(ctx));
    t.run("evtchn-alloc-unbound-errors", alloc_unbound_errors());
    t.run("evtchn-bind-ipi", bind_ipi_check());
    t.run("evtchn-interdomain-loopback", interdomain_loopback(ctx));
    t.run("evtchn-bind-interdomain-notifies", bind_interdomain_notifies());
    t.run("evtchn-bind-interdomain-errors", bind_interdomain_errors());
    t.run("evtchn-bind-virq-timer", bind_virq_check());
    t.run("evtchn-bind-virq-kinds", bind_virq_kinds());
    t.run("evtchn-bind-virq-errors", bind_virq_errors());
    t.run("evtchn-send-errors", send_errors());
    t.run("evtchn-mask-pending-unmask", mask_pending_unmask());
    t.run("evtchn-close-clears-pending", close_clears_pending());
    t.run("evtchn-close-errors", close_errors());
    t.run("evtchn-status-errors", status_errors());
    t.run("evtchn-unmask-errors", unmask_errors());
    t.run("evtchn-bind-vcpu-errors", bind_vcpu_errors());
    t.run("evtchn-2l-no-fifo-ops", two_level_only_ops());
    t.run("evtchn-unknown-op", unknown_op());
}

/// The `evtchn-` checks that need a second vCPU running the task loop.
pub fn run_smp(t: &mut Tap, ctx: &Ctx) {
    if !ctx.smp() {
        return;
    }
    if !crate::smp::ap_online(1) {
        t.check("evtchn-bind-vcpu-moves-delivery", false, format_args!("vCPU 1 is not running"));
        return;
    }
    t.run("evtchn-bind-vcpu-moves-delivery", bind_vcpu_moves_delivery());
    t.run("evtchn-bind-ipi-other-vcpu", ipi_to_other_vcpu());
    t.run("evtchn-bind-virq-other-vcpu", virq_on_other_vcpu());
    t.run("evtchn-unmask-other-vcpu", unmask_other_vcpu());
}
