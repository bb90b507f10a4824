//! Domains: creation, the table of live domains, pausing, shutdown, crash and destruction.
//!
//! A domain owns its memory (`memory`), its vCPUs (`vcpu`) and a little platform state
//! (HVM parameters, the hypercall page, console line buffer). Lifecycle:
//!
//! ```text
//!   create (paused) -> build -> unpause -> running <-> paused
//!                                  |
//!              shutdown(reason) / crash  ->  dying  ->  destroyed (every frame returned)
//! ```
//!
//! A crash — a triple fault, an exit keel cannot handle, guest memory access outside the
//! domain — affects only that domain: keel prints why, with the vCPU's registers, and destroys
//! it; every other domain and keel itself go on.

pub mod builder;
pub mod console;
pub mod events;
pub mod exits;
pub mod grant;
pub mod guestmem;
pub mod memory;
pub mod shared;
pub mod vcpu;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::sync::IrqMutex;
use memory::DomainMemory;
use vcpu::Vcpu;

/// A domain id (Xen's domid_t).
pub type DomId = u16;

/// Highest event-channel port of an unprivileged domain (what `xl` gives by default,
/// `max_event_channels = 1023`); dom0 gets the FIFO ABI's whole range, as on Xen.
const DOMU_MAX_EVTCHN_PORT: u32 = 1023;

/// Watchdogs per domain (Xen's NR_DOMAIN_WATCHDOG_TIMERS).
const WATCHDOGS: usize = 2;

/// First domain id that is not a real domain (DOMID_FIRST_RESERVED).
pub const DOMID_FIRST_RESERVED: DomId = 0x7ff0;

/// Why a domain stopped (Xen's SHUTDOWN_* numbers).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum ShutdownReason {
    /// The guest powered off.
    Poweroff,
    /// The guest asked to be rebooted.
    Reboot,
    /// The guest suspended itself.
    Suspend,
    /// The guest crashed (or keel crashed it).
    Crash,
    /// The guest's watchdog fired.
    Watchdog,
    /// Soft reset.
    SoftReset,
    /// A reason Xen does not define (Xen accepts any 8-bit code and passes it on).
    Other(u8),
}

impl ShutdownReason {
    /// From Xen's numeric reason (truncated to 8 bits, as Xen does).
    pub fn from_xen(v: u32) -> Self {
        match v as u8 {
            0 => Self::Poweroff,
            1 => Self::Reboot,
            2 => Self::Suspend,
            3 => Self::Crash,
            4 => Self::Watchdog,
            5 => Self::SoftReset,
            other => Self::Other(other),
        }
    }

    /// Xen's number.
    pub fn to_xen(self) -> u8 {
        match self {
            Self::Poweroff => 0,
            Self::Reboot => 1,
            Self::Suspend => 2,
            Self::Crash => 3,
            Self::Watchdog => 4,
            Self::SoftReset => 5,
            Self::Other(v) => v,
        }
    }

    /// As an operator reads it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Poweroff => "poweroff",
            Self::Reboot => "reboot",
            Self::Suspend => "suspend",
            Self::Crash => "crash",
            Self::Watchdog => "watchdog",
            Self::SoftReset => "soft_reset",
            Self::Other(_) => "unknown reason",
        }
    }
}

/// What a domain is made of, before it exists.
pub struct DomainConfig {
    /// Its name (for messages; `xl list`).
    pub name: String,
    /// Whether it is privileged (dom0).
    pub privileged: bool,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// RAM in 4 KiB frames it may have.
    pub max_pages: u64,
    /// Scheduler weight (credit2; default 256).
    pub weight: u16,
    /// Scheduler cap in percent of one CPU (0 = none).
    pub cap: u16,
    /// Hard affinity of every vCPU: bit n = physical CPU n (`None`: every CPU).
    pub cpus: Option<u64>,
}

/// A live domain.
pub struct Domain {
    /// Its event channels (declared first: dropped before the vCPUs and frames its shared
    /// words live in).
    pub evtchn: IrqMutex<events::Channels>,
    /// Its id.
    pub id: DomId,
    /// Its name.
    pub name: String,
    /// dom0 and other privileged domains may use the privileged hypercalls.
    pub privileged: bool,
    /// Its vCPUs (fixed at creation).
    pub vcpus: Vec<Arc<Vcpu>>,
    /// Its memory (empty once destroyed; shared with the pins keel holds on its frames).
    pub mem: Arc<memory::MemCell>,
    /// Set once it is shutting down or crashed: vCPUs stop at their next exit.
    dying: AtomicBool,
    /// Nesting count of pauses (0 = running).
    pause_count: AtomicU32,
    /// Why it stopped, once it did.
    shutdown: IrqMutex<Option<ShutdownReason>>,
    /// HVM parameters (HVMOP_set_param / get_param).
    pub params: IrqMutex<[u64; xen_abi::hvm::HVM_NR_PARAMS as usize]>,
    /// The event callback vector (HVM_PARAM_CALLBACK_IRQ of the vector type), 0 if none.
    callback_vector: AtomicU8,
    /// VM assists enabled (bit n: VMASST_TYPE n).
    pub vm_assist: AtomicU64,
    /// SCHEDOP_shutdown_code: the reason the guest announced for its next shutdown
    /// (`u32::MAX`: none).
    shutdown_code: AtomicU32,
    /// SCHEDOP_watchdog timers: their deadlines.
    watchdogs: IrqMutex<[Option<u64>; WATCHDOGS]>,
    /// Guest-physical address of its hypercall page, once the guest asked for one.
    pub hypercall_page: AtomicU64,
    /// Characters written to the console not yet ended by a newline.
    pub console_line: IrqMutex<String>,
    /// Its PV console, if keel serves one for it (domains built at boot, except dom0).
    pub pvconsole: IrqMutex<Option<console::PvConsole>>,
    /// Monotonic time at creation.
    pub created_ns: u64,
    /// The shared_info page (keel's frame, mapped into the guest where it asks).
    pub shared_info: shared::SharedInfoPage,
    /// Where the guest mapped shared_info, if it did.
    shared_info_gfn: IrqMutex<Option<keel_mm::Gfn>>,
    /// It was reported as waiting for others to unmap its grants.
    zombie_reported: AtomicBool,
    /// Its grant table (as granter and as mapper).
    pub grant: IrqMutex<grant::Table>,
    /// The memory map the builder gave it (XENMEM_memory_map).
    memmap: IrqMutex<Vec<xen_abi::memory::E820Entry>>,
    /// First of the 8 special pages (xenstore, console rings, ...), once built.
    special_pfn_base: AtomicU64,
}

impl Domain {
    /// Run `f` on the domain's memory; `None` if it is already destroyed.
    pub fn with_mem<R>(&self, f: impl FnOnce(&mut DomainMemory) -> R) -> Option<R> {
        self.mem.with(f)
    }

    /// Its name for messages ("d3" when it has none).
    pub fn display_name(&self) -> String {
        if self.name.is_empty() {
            alloc::format!("d{}", self.id)
        } else {
            self.name.clone()
        }
    }

    /// Its memory map, as XENMEM_memory_map returns it.
    pub fn memory_map(&self) -> Vec<xen_abi::memory::E820Entry> {
        self.memmap.lock().clone()
    }

    /// Record its memory map (by the builder).
    pub fn set_memory_map(&self, map: Vec<xen_abi::memory::E820Entry>) {
        *self.memmap.lock() = map;
    }

    /// Remember where its special pages are (for the HVM parameters).
    pub fn set_special_pages(&self, base: keel_mm::Gfn) {
        self.special_pfn_base.store(base.as_u64(), Ordering::Release);
    }

    /// Map (or move) the domain's shared_info page to `gfn`.
    pub fn map_shared_info(&self, gfn: keel_mm::Gfn) -> Result<(), memory::MemError> {
        let mut slot = self.shared_info_gfn.lock();
        let mfn = self.shared_info.mfn();
        self.with_mem(|mem| {
            if let Some(old) = *slot {
                mem.unmap_keel_frame(old)?;
            }
            mem.map_keel_frame(gfn, mfn, keel_p2m::P2mType::SharedInfo).map(|_| ())
        })
        .unwrap_or(Err(memory::MemError::NotMapped))?;
        *slot = Some(gfn);
        self.flush_guest_tlbs();
        Ok(())
    }

    /// After a p2m change that removed or moved mappings: when this returns, no vCPU of the
    /// domain can use a stale translation (running ones were made to exit; every vCPU flushes
    /// before it next enters the guest). Only then may a removed frame be freed or handed on.
    pub fn flush_guest_tlbs(&self) {
        for v in &self.vcpus {
            v.flush_tlb_sync();
        }
    }

    /// The event callback vector, if the guest set one (HVM_PARAM_CALLBACK_IRQ, vector type).
    pub fn callback_vector(&self) -> Option<u8> {
        match self.callback_vector.load(Ordering::Acquire) {
            0 => None,
            v => Some(v),
        }
    }

    /// Record HVM_PARAM_CALLBACK_IRQ: only the vector type delivers anything on keel (a PVH
    /// domain has no emulated interrupt controller for the GSI and PCI INTx types).
    pub fn set_callback(&self, value: u64) {
        let vector = match xen_abi::hvm::CallbackVia::decode(value) {
            Ok(xen_abi::hvm::CallbackVia::Vector(v)) => v,
            _ => 0,
        };
        self.callback_vector.store(vector, Ordering::Release);
        if vector != 0 {
            for v in &self.vcpus {
                v.kick();
            }
        }
    }

    /// SCHEDOP_shutdown_code: remember `code` for the next shutdown, unless one is set.
    pub fn set_shutdown_code(&self, code: u8) {
        let _ = self.shutdown_code.compare_exchange(u32::MAX, code as u32, Ordering::AcqRel, Ordering::Acquire);
    }

    /// SCHEDOP_watchdog (Xen's `domain_watchdog`): id 0 creates a watchdog firing after
    /// `timeout` seconds and returns its id (1 or 2); otherwise feed watchdog `id` (timeout >
    /// 0) or stop it (timeout 0).
    pub fn watchdog(&self, id: u32, timeout: u32) -> Result<u32, xen_abi::errno::Errno> {
        use xen_abi::errno::Errno;
        if id as usize > WATCHDOGS {
            return Err(Errno::EINVAL);
        }
        let deadline = crate::arch::x86::time::now_ns().saturating_add(timeout as u64 * 1_000_000_000);
        let mut w = self.watchdogs.lock();
        let slot = if id == 0 {
            let slot = w.iter().position(Option::is_none).ok_or(Errno::ENOSPC)?;
            w[slot] = Some(deadline);
            slot
        } else {
            let slot = id as usize - 1;
            if w[slot].is_none() {
                return Err(Errno::EINVAL);
            }
            if timeout == 0 {
                w[slot] = None;
                return Ok(0);
            }
            w[slot] = Some(deadline);
            slot
        };
        drop(w);
        crate::timers::add_watchdog(deadline, self.id, slot);
        Ok(if id == 0 { slot as u32 + 1 } else { 0 })
    }

    /// A watchdog timer entry expired: if the watchdog still has that deadline (it was neither
    /// fed nor stopped since), the domain shuts down with reason watchdog.
    pub fn watchdog_expired(self: &Arc<Self>, slot: usize, deadline: u64) {
        let fired = {
            let mut w = self.watchdogs.lock();
            match w.get_mut(slot) {
                Some(s) if *s == Some(deadline) => {
                    *s = None;
                    true
                }
                _ => false,
            }
        };
        if fired && !self.is_dying() {
            log::warn!("d{} ({}): watchdog {} fired", self.id, self.display_name(), slot + 1);
            self.shutdown(ShutdownReason::Watchdog);
        }
    }

    /// Whether the guest asked for XEN_RUNSTATE_UPDATE marking.
    pub fn runstate_update_flag(&self) -> bool {
        self.vm_assist.load(Ordering::Relaxed) & (1 << xen_abi::vm_assist::VMASST_TYPE_RUNSTATE_UPDATE_FLAG) != 0
    }

    /// Send virtual interrupt `virq` for vCPU `v` (a per-vCPU VIRQ) or the domain (a global
    /// one: delivered through the port bound on vCPU 0).
    pub fn send_virq(self: &Arc<Self>, virq: u32, v: &Vcpu) {
        let notify = self.evtchn.lock().send_virq(virq, v.id);
        events::act(notify, Some(self));
    }

    /// Whether it is shutting down, crashed or being destroyed.
    pub fn is_dying(&self) -> bool {
        self.dying.load(Ordering::Acquire)
    }

    /// Whether it is paused.
    pub fn is_paused(&self) -> bool {
        self.pause_count.load(Ordering::Acquire) > 0
    }

    /// Why it stopped.
    pub fn shutdown_reason(&self) -> Option<ShutdownReason> {
        *self.shutdown.lock()
    }

    /// The guest (or the toolstack, or keel) shut it down. As on Xen, a reason announced
    /// earlier with SCHEDOP_shutdown_code wins over the one given here (but a crash is a crash),
    /// and the first shutdown sticks.
    pub fn shutdown(self: &Arc<Self>, reason: ShutdownReason) {
        let reason = match self.shutdown_code.load(Ordering::Acquire) {
            code if code <= u8::MAX as u32 && reason != ShutdownReason::Crash => ShutdownReason::from_xen(code),
            _ => reason,
        };
        {
            let mut r = self.shutdown.lock();
            if r.is_some() {
                return;
            }
            *r = Some(reason);
        }
        self.dying.store(true, Ordering::Release);
        log::info!("d{} ({}): shut down: {}", self.id, self.display_name(), reason.name());
        for v in &self.vcpus {
            v.stop();
        }
        notify_dom_exc(self.id);
        schedule_destroy(self.id);
    }

    /// keel crashes it: `why` is printed (the caller prints the vCPU's registers).
    pub fn crash(self: &Arc<Self>, why: core::fmt::Arguments<'_>) {
        log::error!("d{} ({}): crashed: {}", self.id, self.display_name(), why);
        self.shutdown(ShutdownReason::Crash);
    }

    /// Stop its vCPUs from running (nests).
    pub fn pause(&self) {
        if self.pause_count.fetch_add(1, Ordering::AcqRel) == 0 {
            for v in &self.vcpus {
                crate::sched::sleep(v);
                v.kick();
            }
        }
    }

    /// Undo one `pause`; when none is left, its runnable vCPUs are scheduled again.
    pub fn unpause(&self) {
        if self.pause_count.fetch_sub(1, Ordering::AcqRel) == 1 {
            for v in &self.vcpus {
                v.wake_if_runnable();
            }
        }
    }

    /// Console output from the guest: buffered per line, printed with the domain's prefix.
    pub fn console_write(&self, bytes: &[u8]) {
        let mut line = self.console_line.lock();
        for &b in bytes {
            match b {
                b'\n' => {
                    crate::console::guest_line(self.id, &line);
                    line.clear();
                }
                b'\r' => {}
                0x20..=0x7e | b'\t' => {
                    if line.len() < 1024 {
                        line.push(b as char);
                    }
                }
                _ => {
                    if line.len() < 1024 {
                        line.push('.');
                    }
                }
            }
        }
    }
}

/// The live domains, by id.
static DOMAINS: IrqMutex<BTreeMap<DomId, Arc<Domain>>> = IrqMutex::new(BTreeMap::new());
/// Domains shut down and waiting to be destroyed (by the next idle CPU).
static TO_DESTROY: IrqMutex<Vec<DomId>> = IrqMutex::new(Vec::new());
/// Whether any domain was ever created (for `when_idle`).
pub static EVER_CREATED: AtomicBool = AtomicBool::new(false);

/// The domain `id`, if it lives.
pub fn get(id: DomId) -> Option<Arc<Domain>> {
    DOMAINS.lock().get(&id).cloned()
}

/// Every live domain.
pub fn all() -> Vec<Arc<Domain>> {
    DOMAINS.lock().values().cloned().collect()
}

/// Number of live domains.
pub fn count() -> usize {
    DOMAINS.lock().len()
}

/// Why a domain could not be created.
#[derive(Debug, Clone, Copy, Eq, PartialEq)]
pub enum CreateError {
    /// No free domain id.
    NoId,
    /// Out of memory.
    OutOfMemory,
    /// This machine cannot run guests.
    NoVirtualization,
    /// A bad parameter (no vCPUs, ...).
    Invalid,
}

/// Create a domain with `id` (or the lowest free id above 0 if `None`), paused, with no memory
/// yet and its vCPUs offline.
pub fn create(id: Option<DomId>, cfg: &DomainConfig) -> Result<Arc<Domain>, CreateError> {
    if cfg.vcpus == 0 || cfg.vcpus > 128 {
        return Err(CreateError::Invalid);
    }
    let id = {
        let table = DOMAINS.lock();
        match id {
            Some(i) if !table.contains_key(&i) && i < DOMID_FIRST_RESERVED => i,
            Some(_) => return Err(CreateError::NoId),
            None => (1..DOMID_FIRST_RESERVED).find(|i| !table.contains_key(i)).ok_or(CreateError::NoId)?,
        }
    };
    let shared_info = shared::SharedInfoPage::new().ok_or(CreateError::OutOfMemory)?;
    let grant = grant::Table::new(xen_abi::DomId(id), keel_grant::GrantConfig::default(), &mut grant::KeelFrames)
        .map_err(|_| CreateError::OutOfMemory)?;
    let mem =
        Arc::new(memory::MemCell::new(DomainMemory::new(id, cfg.max_pages).map_err(|_| CreateError::OutOfMemory)?));
    let root = mem.with(|m| m.root()).unwrap_or(0);
    let mut vcpus = Vec::new();
    for v in 0..cfg.vcpus {
        match Vcpu::new(id, v, cfg.vcpus, root) {
            Ok(vc) => vcpus.push(Arc::new(vc)),
            Err(e) => {
                drop(vcpus);
                mem.destroy();
                return Err(e);
            }
        }
    }
    let max_port =
        if cfg.privileged { xen_abi::event_channel::EVTCHN_FIFO_NR_CHANNELS - 1 } else { DOMU_MAX_EVTCHN_PORT };
    let channels = keel_evtchn::Evtchn::new(
        xen_abi::DomId(id),
        cfg.vcpus,
        max_port,
        events::KeelShared::new(shared_info.va(), cfg.vcpus),
    );
    let d = Arc::new(Domain {
        evtchn: IrqMutex::new(channels),
        id,
        name: cfg.name.clone(),
        privileged: cfg.privileged,
        vcpus,
        mem,
        dying: AtomicBool::new(false),
        pause_count: AtomicU32::new(1),
        shutdown: IrqMutex::new(None),
        params: IrqMutex::new([0; xen_abi::hvm::HVM_NR_PARAMS as usize]),
        callback_vector: AtomicU8::new(0),
        vm_assist: AtomicU64::new(0),
        shutdown_code: AtomicU32::new(u32::MAX),
        watchdogs: IrqMutex::new([None; WATCHDOGS]),
        hypercall_page: AtomicU64::new(0),
        console_line: IrqMutex::new(String::new()),
        pvconsole: IrqMutex::new(None),
        created_ns: crate::arch::x86::time::now_ns(),
        shared_info,
        shared_info_gfn: IrqMutex::new(None),
        special_pfn_base: AtomicU64::new(0),
        memmap: IrqMutex::new(Vec::new()),
        grant: IrqMutex::new(grant),
        zombie_reported: AtomicBool::new(false),
    });
    crate::sched::add_domain(&d, cfg.weight, cfg.cap, cfg.cpus);
    DOMAINS.lock().insert(id, d.clone());
    EVER_CREATED.store(true, Ordering::Release);
    Ok(d)
}

/// Tell dom0 that a domain changed state (VIRQ_DOM_EXC, as Xen sends the hardware domain).
fn notify_dom_exc(changed: DomId) {
    if let Some(d0) = get(0).filter(|d0| d0.id != changed && !d0.is_dying()) {
        if let Some(v0) = d0.vcpus.first() {
            d0.send_virq(xen_abi::event_channel::VIRQ_DOM_EXC, v0);
        }
    }
}

fn schedule_destroy(id: DomId) {
    TO_DESTROY.lock().push(id);
    crate::sched::kick_idle();
}

/// Whether a domain is waiting to be destroyed.
pub fn destroy_pending() -> bool {
    !TO_DESTROY.lock().is_empty()
}

/// Destroy the domains that have shut down and whose vCPUs have all stopped running (called
/// from CPUs' idle paths). Returns how many were destroyed.
pub fn reap() -> usize {
    let pending: Vec<DomId> = core::mem::take(&mut *TO_DESTROY.lock());
    let mut done = 0;
    for id in pending {
        let Some(d) = get(id) else { continue };
        let runtime_ns = crate::sched::domain_runtime(&d);
        if d.vcpus.iter().any(|v| v.is_running()) {
            // A CPU is still leaving one of its vCPUs; try again on the next pass.
            TO_DESTROY.lock().push(id);
            continue;
        }
        // Its event channels close (peers' ends become unbound) and its own mappings of
        // others' grants go first (that can always be done); then, as on Xen, it stays a
        // dying domain while others still map its grants: their frames are its memory.
        events::close_all(&d);
        grant::release_mappings(&d);
        let pinned = d.grant.lock().pinned_count();
        if pinned > 0 {
            if !d.zombie_reported.swap(true, Ordering::AcqRel) {
                log::warn!(
                    "d{} ({}): waiting for other domains to unmap {pinned} of its grant(s) before it is destroyed",
                    d.id,
                    d.display_name()
                );
            }
            TO_DESTROY.lock().push(id);
            continue;
        }
        if !crate::sched::remove_domain(&d) {
            TO_DESTROY.lock().push(id);
            continue;
        }
        destroy(&d, runtime_ns);
        done += 1;
    }
    done
}

/// Remove a stopped domain and return everything it owned.
fn destroy(d: &Arc<Domain>, runtime_ns: u64) {
    DOMAINS.lock().remove(&d.id);
    console::detach(d);
    crate::console::domain_gone(d.id);
    let pages = d.mem.destroy();
    notify_dom_exc(d.id);
    log::info!(
        "d{} ({}): destroyed: ran {}.{:03} s of CPU time, returned {} KiB",
        d.id,
        d.display_name(),
        runtime_ns / 1_000_000_000,
        runtime_ns / 1_000_000 % 1000,
        pages * 4
    );
    for v in &d.vcpus {
        v.release();
    }
}
