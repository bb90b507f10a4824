//! Event delivery for the suite: where shared_info and each vCPU's vcpu_info are, the upcall
//! handlers (the per-vCPU LAPIC vector and the HVM_PARAM_CALLBACK_IRQ vector), the 2-level
//! and FIFO scans, and a record per port of what was delivered (how often, on which vCPU, at
//! what pvclock time and TSC, in which order), which the checks wait on with timeouts.
//!
//! The handlers never trust the hypervisor: ports out of range are counted as strays, loops
//! are bounded.

use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

use xen_abi::event_channel::{
    EVTCHN_FIFO_BUSY, EVTCHN_FIFO_LINKED, EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_MASKED, EVTCHN_FIFO_PENDING,
};
use xen_abi::shared_info::VcpuTimeInfo;

use super::fw;
use crate::smp::{vcpu_id, MAX_VCPUS};

/// The per-vCPU upcall vector (`HVMOP_set_evtchn_upcall_vector`, through the local APIC).
pub const UPCALL_VECTOR: u8 = 0xf3;
/// The domain-wide callback vector (`HVM_PARAM_CALLBACK_IRQ` of type vector, no EOI).
pub const CALLBACK_VECTOR: u8 = 0xf2;
/// Ports with a record (2-level: all of them).
pub const NPORTS: usize = 4096;

/// shared_info's offsets (public/xen.h, x86-64).
const SI_PENDING: u64 = 2048;
const SI_MASK: u64 = 2560;
/// vcpu_info's offsets.
const VI_PENDING_SEL: u64 = 8;
const VI_TIME: u64 = 32;

/// What was delivered on one port.
pub struct PortRec {
    /// Deliveries.
    pub count: AtomicU32,
    /// vCPU of the last delivery.
    pub cpu: AtomicU32,
    /// pvclock time of the last delivery (0 when the vCPU had no valid time).
    pub ns: AtomicU64,
    /// TSC at the last delivery.
    pub tsc: AtomicU64,
    /// Global sequence number of the last delivery.
    pub seq: AtomicU32,
}

#[allow(clippy::declare_interior_mutable_const)]
const REC: PortRec = PortRec {
    count: AtomicU32::new(0),
    cpu: AtomicU32::new(0),
    ns: AtomicU64::new(0),
    tsc: AtomicU64::new(0),
    seq: AtomicU32::new(0),
};

static RECS: [PortRec; NPORTS] = [REC; NPORTS];
static SEQ: AtomicU32 = AtomicU32::new(0);
/// Deliveries to ports beyond `NPORTS` or to nonsense positions.
pub static STRAYS: AtomicU32 = AtomicU32::new(0);

/// Address of the shared_info mapping (0: not mapped).
static SHINFO: AtomicU64 = AtomicU64::new(0);
/// Address of each vCPU's vcpu_info (0: none yet).
static VCPU_INFO: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// FIFO ABI active.
static FIFO: AtomicBool = AtomicBool::new(false);
/// Per-vCPU FIFO control block address.
static FIFO_CB: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// FIFO event-array pages (addresses), in port order.
static FIFO_ARRAY: [AtomicU64; FIFO_ARRAY_PAGES] = [const { AtomicU64::new(0) }; FIFO_ARRAY_PAGES];
/// Event-array pages the suite can give.
pub const FIFO_ARRAY_PAGES: usize = 2;
/// Per-vCPU, per-priority local queue heads (Linux keeps the same).
static FIFO_HEAD: [[AtomicU32; 16]; MAX_VCPUS] = [const { [const { AtomicU32::new(0) }; 16] }; MAX_VCPUS];

/// Upcalls taken per vCPU, by vector: [per-vCPU vector, callback vector].
pub static UPCALLS: [[AtomicU32; 2]; MAX_VCPUS] = [const { [const { AtomicU32::new(0) }; 2] }; MAX_VCPUS];
/// Whether to read the local APIC's ISR in the handlers (slow: checks only).
pub static WATCH_ISR: AtomicBool = AtomicBool::new(false);
/// Last ISR observation per vector: 0 none, 1 in service, 2 not in service.
pub static ISR_SEEN: [AtomicU8; 2] = [AtomicU8::new(0), AtomicU8::new(0)];
/// Whether to take pvclock time in the handlers.
pub static STAMP_TIME: AtomicBool = AtomicBool::new(true);

/// The record of `port` (ports beyond the table share a dummy record).
pub fn rec(port: u32) -> &'static PortRec {
    static DUMMY: PortRec = REC;
    RECS.get(port as usize).unwrap_or(&DUMMY)
}

/// Deliveries of `port` so far.
pub fn count(port: u32) -> u32 {
    rec(port).count.load(Ordering::Acquire)
}

/// Wait (interrupts on) until `port` has been delivered more than `seen` times; returns the
/// record's count.
pub fn wait_count(port: u32, seen: u32, ms: u64) -> u32 {
    fw::wait_until(ms, || count(port) > seen);
    count(port)
}

/// Where shared_info is mapped (0: nowhere yet).
pub fn shinfo() -> u64 {
    SHINFO.load(Ordering::Acquire)
}

/// Point the suite at shared_info mapped at `addr`; vCPUs without a registered vcpu_info use
/// their slot in it.
pub fn set_shinfo(addr: u64) {
    let old = SHINFO.swap(addr, Ordering::AcqRel);
    for (i, slot) in VCPU_INFO.iter().enumerate() {
        let cur = slot.load(Ordering::Acquire);
        if cur == 0 || (old != 0 && cur == old + 64 * i as u64) {
            slot.store(addr + 64 * i as u64, Ordering::Release);
        }
    }
}

/// The vcpu_info of `vcpu` (0: none).
pub fn vcpu_info(vcpu: usize) -> u64 {
    VCPU_INFO.get(vcpu).map_or(0, |v| v.load(Ordering::Acquire))
}

/// `vcpu`'s vcpu_info now lives at `addr` (after `VCPUOP_register_vcpu_info`).
pub fn set_vcpu_info(vcpu: usize, addr: u64) {
    if let Some(v) = VCPU_INFO.get(vcpu) {
        v.store(addr, Ordering::Release);
    }
}

fn atomic_u64(addr: u64) -> &'static AtomicU64 {
    // SAFETY: callers pass 8-byte aligned addresses inside shared_info or a vcpu_info, pages
    // the hypervisor and the probe share and update with atomic operations.
    unsafe { &*(addr as *const AtomicU64) }
}

fn atomic_u32(addr: u64) -> &'static AtomicU32 {
    // SAFETY: as in `atomic_u64`, for 4-byte aligned words (FIFO event words, control blocks).
    unsafe { &*(addr as *const AtomicU32) }
}

fn atomic_u8(addr: u64) -> &'static AtomicU8 {
    // SAFETY: as in `atomic_u64`, for bytes (evtchn_upcall_pending).
    unsafe { &*(addr as *const AtomicU8) }
}

/// The 2-level pending word of `port`.
fn pending_word(port: u32) -> Option<&'static AtomicU64> {
    let si = shinfo();
    (si != 0 && port < 4096).then(|| atomic_u64(si + SI_PENDING + 8 * (port / 64) as u64))
}

fn mask_word(port: u32) -> Option<&'static AtomicU64> {
    let si = shinfo();
    (si != 0 && port < 4096).then(|| atomic_u64(si + SI_MASK + 8 * (port / 64) as u64))
}

/// Whether `port` is pending (2-level bitmap or FIFO event word).
pub fn is_pending(port: u32) -> bool {
    if FIFO.load(Ordering::Acquire) {
        return fifo_word(port).is_some_and(|w| w.load(Ordering::Acquire) & (1 << EVTCHN_FIFO_PENDING) != 0);
    }
    pending_word(port).is_some_and(|w| w.load(Ordering::Acquire) & (1 << (port % 64)) != 0)
}

/// Whether `port` is masked.
pub fn is_masked(port: u32) -> bool {
    if FIFO.load(Ordering::Acquire) {
        return fifo_word(port).is_some_and(|w| w.load(Ordering::Acquire) & (1 << EVTCHN_FIFO_MASKED) != 0);
    }
    mask_word(port).is_some_and(|w| w.load(Ordering::Acquire) & (1 << (port % 64)) != 0)
}

/// Mask `port` (the guest's own operation: a bit in shared memory).
pub fn mask(port: u32) {
    if FIFO.load(Ordering::Acquire) {
        if let Some(w) = fifo_word(port) {
            w.fetch_or(1 << EVTCHN_FIFO_MASKED, Ordering::AcqRel);
        }
    } else if let Some(w) = mask_word(port) {
        w.fetch_or(1 << (port % 64), Ordering::AcqRel);
    }
}

/// Clear `port`'s mask bit locally (no hypercall: a pending port is not redelivered).
pub fn clear_mask_bit(port: u32) {
    if FIFO.load(Ordering::Acquire) {
        if let Some(w) = fifo_word(port) {
            w.fetch_and(!(1 << EVTCHN_FIFO_MASKED), Ordering::AcqRel);
        }
    } else if let Some(w) = mask_word(port) {
        w.fetch_and(!(1u64 << (port % 64)), Ordering::AcqRel);
    }
}

/// Clear `port`'s pending bit (2-level).
pub fn clear_pending(port: u32) {
    if FIFO.load(Ordering::Acquire) {
        if let Some(w) = fifo_word(port) {
            w.fetch_and(!(1 << EVTCHN_FIFO_PENDING), Ordering::AcqRel);
        }
    } else if let Some(w) = pending_word(port) {
        w.fetch_and(!(1u64 << (port % 64)), Ordering::AcqRel);
    }
}

/// `vcpu`'s evtchn_upcall_pending byte.
pub fn upcall_pending(vcpu: usize) -> u8 {
    let vi = vcpu_info(vcpu);
    if vi == 0 {
        return 0;
    }
    atomic_u8(vi).load(Ordering::Acquire)
}

/// `vcpu`'s evtchn_pending_sel.
pub fn pending_sel(vcpu: usize) -> u64 {
    let vi = vcpu_info(vcpu);
    if vi == 0 {
        return 0;
    }
    atomic_u64(vi + VI_PENDING_SEL).load(Ordering::Acquire)
}

/// Use the FIFO ABI from now on (`cbs[v]` is vCPU v's control block address or 0).
pub fn set_fifo(on: bool) {
    if !on {
        for cb in &FIFO_CB {
            cb.store(0, Ordering::Release);
        }
        for a in &FIFO_ARRAY {
            a.store(0, Ordering::Release);
        }
    }
    for q in &FIFO_HEAD {
        for h in q {
            h.store(0, Ordering::Release);
        }
    }
    FIFO.store(on, Ordering::Release);
}

/// `vcpu`'s FIFO control block is at `addr`.
pub fn set_fifo_control_block(vcpu: usize, addr: u64) {
    if let Some(cb) = FIFO_CB.get(vcpu) {
        cb.store(addr, Ordering::Release);
    }
}

/// Event-array page `i` is at `addr`.
pub fn set_fifo_array_page(i: usize, addr: u64) {
    if let Some(a) = FIFO_ARRAY.get(i) {
        a.store(addr, Ordering::Release);
    }
}

/// FIFO event word of `port`, if its array page is known.
pub fn fifo_word(port: u32) -> Option<&'static AtomicU32> {
    let page = FIFO_ARRAY.get(port as usize / 1024)?.load(Ordering::Acquire);
    (page != 0).then(|| atomic_u32(page + 4 * (port as u64 % 1024)))
}

fn record(port: u32, cpu: usize) {
    let Some(r) = RECS.get(port as usize) else {
        STRAYS.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let tsc = fw::rdtsc();
    let ns = if STAMP_TIME.load(Ordering::Relaxed) { now_on(cpu) } else { 0 };
    r.tsc.store(tsc, Ordering::Relaxed);
    r.ns.store(ns, Ordering::Relaxed);
    r.cpu.store(cpu as u32, Ordering::Relaxed);
    r.seq.store(SEQ.fetch_add(1, Ordering::Relaxed) + 1, Ordering::Relaxed);
    r.count.fetch_add(1, Ordering::Release);
}

/// The 2-level scan: what Linux's `evtchn_2l_handle_events` does.
fn scan_2l(cpu: usize) {
    let vi = vcpu_info(cpu);
    let si = shinfo();
    if vi == 0 || si == 0 {
        return;
    }
    let pending_flag = atomic_u8(vi);
    let sel = atomic_u64(vi + VI_PENDING_SEL);
    for _ in 0..64 {
        pending_flag.store(0, Ordering::Release);
        let mut words = sel.swap(0, Ordering::AcqRel);
        while words != 0 {
            let w = words.trailing_zeros();
            words &= words - 1;
            let pend = atomic_u64(si + SI_PENDING + 8 * w as u64);
            let mask = atomic_u64(si + SI_MASK + 8 * w as u64).load(Ordering::Acquire);
            let mut bits = pend.load(Ordering::Acquire) & !mask;
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                // Acknowledge (clear pending) before handling, as Linux does.
                let old = pend.fetch_and(!(1u64 << b), Ordering::AcqRel);
                if old & (1 << b) != 0 {
                    record(w * 64 + b, cpu);
                }
            }
        }
        if pending_flag.load(Ordering::Acquire) == 0 {
            break;
        }
    }
}

/// Unlink the head event of a FIFO queue: clear LINKED and the link, return the link.
fn clear_linked(word: &AtomicU32) -> u32 {
    let mut w = word.load(Ordering::Acquire);
    for _ in 0..1000 {
        let new = w & !((1 << EVTCHN_FIFO_LINKED) | EVTCHN_FIFO_LINK_MASK);
        match word.compare_exchange(w, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return w & EVTCHN_FIFO_LINK_MASK,
            Err(now) => w = now,
        }
    }
    0
}

/// The FIFO scan: what Linux's `__evtchn_fifo_handle_events` does.
fn scan_fifo(cpu: usize) {
    let vi = vcpu_info(cpu);
    let cb = FIFO_CB.get(cpu).map_or(0, |c| c.load(Ordering::Acquire));
    if vi == 0 || cb == 0 {
        return;
    }
    atomic_u8(vi).store(0, Ordering::Release);
    let ready_word = atomic_u32(cb);
    let mut ready = ready_word.swap(0, Ordering::AcqRel);
    let mut budget = 10_000;
    while ready != 0 && budget > 0 {
        budget -= 1;
        let q = ready.trailing_zeros() as usize;
        if q >= 16 {
            break;
        }
        let local = &FIFO_HEAD[cpu][q];
        let mut head = local.load(Ordering::Acquire);
        if head == 0 {
            fence(Ordering::Acquire);
            head = atomic_u32(cb + 8 + 4 * q as u64).load(Ordering::Acquire);
        }
        let port = head;
        let Some(word) = fifo_word(port) else {
            STRAYS.fetch_add(1, Ordering::Relaxed);
            local.store(0, Ordering::Release);
            ready &= !(1 << q);
            continue;
        };
        let next = clear_linked(word);
        if next == 0 {
            ready &= !(1 << q);
        }
        let w = word.load(Ordering::Acquire);
        if w & (1 << EVTCHN_FIFO_PENDING) != 0 && w & (1 << EVTCHN_FIFO_MASKED) == 0 {
            let old = word.fetch_and(!(1 << EVTCHN_FIFO_PENDING), Ordering::AcqRel);
            if old & (1 << EVTCHN_FIFO_PENDING) != 0 {
                record(port, cpu);
            }
        }
        local.store(next, Ordering::Release);
        ready |= ready_word.swap(0, Ordering::AcqRel);
    }
    let _ = EVTCHN_FIFO_BUSY;
}

fn dispatch(cpu: usize) {
    if FIFO.load(Ordering::Acquire) {
        scan_fifo(cpu);
    } else {
        scan_2l(cpu);
    }
}

fn upcall_vector(_: &mut pvh_rt::idt::Frame) {
    let cpu = vcpu_id();
    if WATCH_ISR.load(Ordering::Relaxed) {
        ISR_SEEN[0].store(if fw::in_service(UPCALL_VECTOR) { 1 } else { 2 }, Ordering::Relaxed);
    }
    if let Some(u) = UPCALLS.get(cpu) {
        u[0].fetch_add(1, Ordering::Relaxed);
    }
    dispatch(cpu);
    fw::eoi();
}

fn callback_vector(_: &mut pvh_rt::idt::Frame) {
    let cpu = vcpu_id();
    if WATCH_ISR.load(Ordering::Relaxed) {
        ISR_SEEN[1].store(if fw::in_service(CALLBACK_VECTOR) { 1 } else { 2 }, Ordering::Relaxed);
    }
    if let Some(u) = UPCALLS.get(cpu) {
        u[1].fetch_add(1, Ordering::Relaxed);
    }
    dispatch(cpu);
}

/// Install the upcall handlers (both vectors) in the IDT.
pub fn install_handlers() {
    pvh_rt::idt::register(UPCALL_VECTOR, upcall_vector);
    pvh_rt::idt::register(CALLBACK_VECTOR, callback_vector);
    pvh_rt::idt::register(fw::IDLE_TICK_VECTOR, fw::idle_tick);
}

/// Read a vcpu_time_info at `addr` consistently (version even and unchanged) together with
/// the TSC; `None` after 10 000 torn reads.
pub fn read_time(addr: u64) -> Option<(VcpuTimeInfo, u64)> {
    if addr == 0 {
        return None;
    }
    let version = atomic_u32(addr);
    for _ in 0..10_000 {
        let v1 = version.load(Ordering::Acquire);
        if v1 & 1 != 0 {
            core::hint::spin_loop();
            continue;
        }
        fence(Ordering::Acquire);
        // SAFETY: `addr` is a vcpu_time_info inside a mapped vcpu_info; a torn read is
        // detected by the version check below.
        let t = unsafe { core::ptr::read_volatile(addr as *const VcpuTimeInfo) };
        let tsc = fw::rdtsc();
        fence(Ordering::Acquire);
        if version.load(Ordering::Acquire) == v1 {
            return Some((t, tsc));
        }
    }
    None
}

/// `vcpu`'s time info (from its current vcpu_info).
pub fn time_info(vcpu: usize) -> Option<(VcpuTimeInfo, u64)> {
    let vi = vcpu_info(vcpu);
    if vi == 0 {
        return None;
    }
    read_time(vi + VI_TIME)
}

/// pvclock system time (ns) on `vcpu` (call it on that vCPU); 0 without a valid time info.
pub fn now_on(vcpu: usize) -> u64 {
    match time_info(vcpu) {
        Some((t, tsc)) if t.tsc_to_system_mul != 0 => t.system_time_at(tsc),
        _ => 0,
    }
}

/// pvclock system time on this vCPU.
pub fn now() -> u64 {
    now_on(vcpu_id())
}

/// System time as the hypervisor keeps it (`HVMOP_get_time`), else pvclock: deadlines and
/// timeouts are absolute in this time. pvclock follows it between the hypervisor's updates by
/// extrapolating with the TSC; raw TSC intervals do not (a hypervisor that emulates the TSC,
/// as Xen under TCG does, may stop it while the vCPU waits for a CPU).
pub fn xen_now() -> u64 {
    let mut t = xen_abi::hvm::XenHvmGetTime { now: 0 };
    if fw::hvmop(xen_abi::hvm::HVMOP_GET_TIME, &mut t) == 0 && t.now != 0 {
        t.now
    } else {
        now()
    }
}

/// Nanoseconds of `ticks` TSC ticks (at the CPUID/pvclock TSC frequency).
pub fn tsc_to_ns(ticks: u64) -> u64 {
    (ticks as u128 * 1_000_000 / fw::tsc_per_ms().max(1) as u128) as u64
}

/// What a failed wait for `port` found (for the failure message).
pub struct PortState(pub u32);

impl core::fmt::Display for PortState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let p = self.0;
        write!(
            f,
            "[pending {}, masked {}, vcpu0 upcall_pending {} sel {:#x}, upcalls {}/{}",
            is_pending(p) as u8,
            is_masked(p) as u8,
            upcall_pending(0),
            pending_sel(0),
            UPCALLS[0][0].load(Ordering::Relaxed),
            UPCALLS[0][1].load(Ordering::Relaxed)
        )?;
        if vcpu_info(1) != 0 {
            write!(
                f,
                ", vcpu1 upcall_pending {} sel {:#x}, upcalls {}/{}",
                upcall_pending(1),
                pending_sel(1),
                UPCALLS[1][0].load(Ordering::Relaxed),
                UPCALLS[1][1].load(Ordering::Relaxed)
            )?;
        }
        write!(f, "]")
    }
}
