//! The FIFO event-channel ABI: `EVTCHNOP_init_control`, `expand_array`, `set_priority`,
//! delivery through the per-vCPU queues, and `EVTCHNOP_reset` back to the 2-level ABI.
//!
//! Xen 4.17: `init_control` wants the 72-byte control block inside one page and 8-byte
//! aligned (`-EINVAL`), an existing vCPU (`-ENOENT`), a RAM gfn (`-EINVAL`), once per vCPU
//! (`-EINVAL`), and answers 17 link bits; the first call switches the domain to FIFO.
//! `expand_array` is `-EOPNOTSUPP` before that. Priorities are 0 (highest) to 15
//! (`-EINVAL` above); a higher-priority queue is served first, a queue in order of arrival.
//! `EVTCHNOP_reset` of the domain itself closes every port and returns to the 2-level ABI.

use xen_abi::event_channel::*;
use xen_abi::{DomId, XenPfn};

use super::events::{self, count, rec};
use super::evtchn::{bind_ipi, close, expect_delivery, expect_quiet, send, status, unmask};
use super::fw::{self, ensure, evtchn, Msg, EINVAL, ENOENT, ENOSYS, EOPNOTSUPP, ESRCH, R};
use super::{pages, Ctx};
use crate::checks::Tap;

fn err(what: &str, rc: i64) -> Msg {
    Msg::new(format_args!("{what} returned {rc}"))
}

fn init_control(vcpu: u32, gfn: u64, offset: u32) -> (i64, u8) {
    let mut c = EvtchnInitControl { control_gfn: XenPfn(gfn), offset, vcpu, link_bits: 0, _pad: [0; 7] };
    let rc = evtchn(EVTCHNOP_INIT_CONTROL, &mut c);
    (rc, c.link_bits)
}

fn expand(gfn: u64) -> i64 {
    evtchn(EVTCHNOP_EXPAND_ARRAY, &mut EvtchnExpandArray { array_gfn: XenPfn(gfn) })
}

fn set_priority(port: u32, priority: u32) -> i64 {
    evtchn(EVTCHNOP_SET_PRIORITY, &mut EvtchnSetPriority { port: EvtchnPort(port), priority })
}

fn cb_slot(vcpu: usize) -> (u64, u32) {
    (pages::gfn(pages::FIFO_CB), 128 * vcpu as u32)
}

fn init_control_errors() -> R {
    let rc = expand(pages::gfn(pages::FIFO_ARRAY));
    ensure!(rc == EOPNOTSUPP, "expand_array before init_control: rc {rc}, want -EOPNOTSUPP");
    let (gfn, _) = cb_slot(0);
    for (what, vcpu, gfn, offset, want) in [
        ("vCPU 1000", 1000, gfn, 0, ENOENT),
        ("offset 4032 (block crosses the page)", 0, gfn, 4032, EINVAL),
        ("offset 4 (misaligned)", 0, gfn, 4, EINVAL),
        ("a gfn with no memory", 0, 0xf_ffff_ffff, 0, EINVAL),
    ] {
        let (rc, _) = init_control(vcpu, gfn, offset);
        ensure!(rc == want, "{what}: rc {rc}, want {want}");
    }
    // Still 2-level after the failures.
    let p = bind_ipi(0).map_err(|rc| err("bind_ipi", rc))?;
    let rc = set_priority(p, 1);
    close(p);
    ensure!(rc == ENOSYS, "set_priority after failed init_controls: rc {rc}, want -ENOSYS (still 2-level)");
    Ok(())
}

fn switch_to_fifo() -> R {
    for page in [pages::FIFO_CB, pages::FIFO_ARRAY, pages::FIFO_ARRAY + 1] {
        for i in 0..4096 {
            fw::poke(pages::addr(page), i, 0);
        }
    }
    let (gfn, offset) = cb_slot(0);
    let (rc, bits) = init_control(0, gfn, offset);
    ensure!(rc == 0, "init_control(vCPU 0): rc {rc}");
    events::set_fifo_control_block(0, (gfn << 12) + offset as u64);
    events::set_fifo(true);
    ensure!(bits as u32 == EVTCHN_FIFO_LINK_BITS, "link_bits {bits}, want {EVTCHN_FIFO_LINK_BITS}");
    let (rc, _) = init_control(0, gfn, offset);
    ensure!(rc == EINVAL, "init_control twice for vCPU 0: rc {rc}, want -EINVAL");
    Ok(())
}

fn expand_array() -> R {
    for i in 0..events::FIFO_ARRAY_PAGES {
        let rc = expand(pages::gfn(pages::FIFO_ARRAY + i));
        ensure!(rc == 0, "expand_array (page {i}): rc {rc}");
        events::set_fifo_array_page(i, pages::addr(pages::FIFO_ARRAY + i));
    }
    let rc = expand(0xf_ffff_ffff);
    ensure!(rc == EINVAL, "expand_array with a gfn with no memory: rc {rc}, want -EINVAL");
    Ok(())
}

fn delivery() -> R {
    let p = bind_ipi(0).map_err(|rc| err("bind_ipi", rc))?;
    let r = (|| {
        ensure!(events::fifo_word(p).is_some(), "port {p} is beyond the event array");
        let seen = count(p);
        ensure!(send(p) == 0, "send failed");
        expect_delivery(p, seen, "send (FIFO)")?;
        let w = events::fifo_word(p).map_or(0, |w| w.load(core::sync::atomic::Ordering::Acquire));
        ensure!(w & ((1 << EVTCHN_FIFO_PENDING) | (1 << EVTCHN_FIFO_LINKED)) == 0, "event word {w:#x} after delivery");
        Ok(())
    })();
    close(p);
    r
}

fn mask_unmask() -> R {
    let p = bind_ipi(0).map_err(|rc| err("bind_ipi", rc))?;
    let r = (|| {
        events::mask(p);
        let seen = count(p);
        ensure!(send(p) == 0, "send failed");
        ensure!(events::is_pending(p), "a masked port that was sent is not pending");
        expect_quiet(p, seen, "send while masked")?;
        let rc = unmask(p);
        ensure!(rc == 0, "EVTCHNOP_unmask: rc {rc}");
        expect_delivery(p, seen, "unmask of a pending port")
    })();
    events::clear_mask_bit(p);
    close(p);
    r
}

fn priorities() -> R {
    let a = bind_ipi(0).map_err(|rc| err("bind_ipi", rc))?;
    let b = bind_ipi(0);
    let r = (|| {
        let b = b.map_err(|rc| err("bind_ipi", rc))?;
        let rc = set_priority(a, EVTCHN_FIFO_PRIORITY_MIN + 1);
        ensure!(rc == EINVAL, "priority 16: rc {rc}, want -EINVAL");
        for p in 0..=EVTCHN_FIFO_PRIORITY_MIN {
            let rc = set_priority(a, p);
            ensure!(rc == 0, "priority {p}: rc {rc}");
        }
        let rc = set_priority(100_000, 3);
        ensure!(rc == EINVAL, "priority of port 100000: rc {rc}, want -EINVAL");
        // a at priority 10, b at 2: both pending before interrupts are on; b comes first.
        ensure!(set_priority(a, 10) == 0 && set_priority(b, 2) == 0, "set_priority failed");
        let (sa, sb) = (count(a), count(b));
        ensure!(send(a) == 0 && send(b) == 0, "send failed");
        expect_delivery(a, sa, "priority 10")?;
        expect_delivery(b, sb, "priority 2")?;
        let (qa, qb) = (
            rec(a).seq.load(core::sync::atomic::Ordering::Acquire),
            rec(b).seq.load(core::sync::atomic::Ordering::Acquire),
        );
        ensure!(qb < qa, "priority 2 was delivered after priority 10");
        // Same priority: in order of arrival.
        ensure!(set_priority(a, 7) == 0 && set_priority(b, 7) == 0, "set_priority failed");
        let (sa, sb) = (count(a), count(b));
        ensure!(send(a) == 0 && send(b) == 0, "send failed");
        expect_delivery(a, sa, "first of one queue")?;
        expect_delivery(b, sb, "second of one queue")?;
        let (qa, qb) = (
            rec(a).seq.load(core::sync::atomic::Ordering::Acquire),
            rec(b).seq.load(core::sync::atomic::Ordering::Acquire),
        );
        ensure!(qa < qb, "a queue was not served in order of arrival");
        Ok(())
    })();
    close(a);
    if let Ok(b) = b {
        close(b);
    }
    r
}

fn other_vcpu() -> R {
    let (gfn, offset) = cb_slot(1);
    let (rc, _) = init_control(1, gfn, offset);
    ensure!(rc == 0, "init_control(vCPU 1): rc {rc}");
    events::set_fifo_control_block(1, (gfn << 12) + offset as u64);
    let p = bind_ipi(1).map_err(|rc| err("bind_ipi(vcpu 1)", rc))?;
    let seen = count(p);
    let sent = send(p);
    let r = expect_delivery(p, seen, "an IPI event for vCPU 1 (FIFO)");
    let cpu = rec(p).cpu.load(core::sync::atomic::Ordering::Acquire);
    close(p);
    ensure!(sent == 0, "send: rc {sent}");
    r?;
    ensure!(cpu == 1, "taken on vCPU {cpu}");
    Ok(())
}

fn reset_to_2l() -> R {
    let kept = bind_ipi(0).map_err(|rc| err("bind_ipi", rc))?;
    let rc = evtchn(EVTCHNOP_RESET, &mut EvtchnReset { dom: DomId(1000) });
    ensure!(rc == ESRCH, "reset of dom 1000: rc {rc}, want -ESRCH");
    let rc = evtchn(EVTCHNOP_RESET, &mut EvtchnReset { dom: DomId::SELF });
    ensure!(rc == 0, "EVTCHNOP_reset(SELF): rc {rc}");
    events::set_fifo(false);
    let s = status(kept).map_err(|rc| err("status", rc))?;
    ensure!(s.binding() == EvtchnBinding::Closed, "a port bound before the reset is {:?}", s.binding());
    let p = bind_ipi(0).map_err(|rc| err("bind_ipi after reset", rc))?;
    let rc = set_priority(p, 1);
    let seen = count(p);
    let sent = send(p);
    let r = expect_delivery(p, seen, "send after the reset (2-level)");
    close(p);
    ensure!(rc == ENOSYS, "set_priority after the reset: rc {rc}, want -ENOSYS (2-level again)");
    ensure!(sent == 0, "send: rc {sent}");
    r
}

/// The `fifo-` checks. They end with the domain back on the 2-level ABI.
pub fn run(t: &mut Tap, ctx: &Ctx) {
    t.run("fifo-init-control-errors", init_control_errors());
    let switched = switch_to_fifo();
    let ok = switched.is_ok();
    t.run("fifo-init-control", switched);
    let mut names = ["fifo-expand-array", "fifo-delivery", "fifo-mask-unmask", "fifo-priorities", "fifo-other-vcpu"];
    let names = if ctx.smp() { &mut names[..] } else { &mut names[..4] };
    if !ok {
        for name in names.iter() {
            t.check(name, false, format_args!("the FIFO ABI could not be set up"));
        }
    } else {
        t.run("fifo-expand-array", expand_array());
        t.run("fifo-delivery", delivery());
        t.run("fifo-mask-unmask", mask_unmask());
        t.run("fifo-priorities", priorities());
        if ctx.smp() {
            let r = if crate::smp::ap_online(1) {
                other_vcpu()
            } else {
                Err(Msg::new(format_args!("vCPU 1 is not running")))
            };
            t.run("fifo-other-vcpu", r);
        }
    }
    t.run("fifo-reset-to-2l", reset_to_2l());
}
