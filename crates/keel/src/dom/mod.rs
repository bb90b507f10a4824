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
pub mod exits;
pub mod guestmem;
pub mod memory;
pub mod vcpu;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::sync::IrqMutex;
use memory::DomainMemory;
use vcpu::Vcpu;

/// A domain id (Xen's domid_t).
pub type DomId = u16;

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
}

impl ShutdownReason {
    /// From Xen's numeric reason.
    pub fn from_xen(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Poweroff,
            1 => Self::Reboot,
            2 => Self::Suspend,
            3 => Self::Crash,
            4 => Self::Watchdog,
            5 => Self::SoftReset,
            _ => return None,
        })
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
    /// Its id.
    pub id: DomId,
    /// Its name.
    pub name: String,
    /// dom0 and other privileged domains may use the privileged hypercalls.
    pub privileged: bool,
    /// Its vCPUs (fixed at creation).
    pub vcpus: Vec<Arc<Vcpu>>,
    /// Its memory (`None` once destroyed).
    mem: IrqMutex<Option<DomainMemory>>,
    /// Set once it is shutting down or crashed: vCPUs stop at their next exit.
    dying: AtomicBool,
    /// Nesting count of pauses (0 = running).
    pause_count: AtomicU32,
    /// Why it stopped, once it did.
    shutdown: IrqMutex<Option<ShutdownReason>>,
    /// HVM parameters (HVMOP_set_param / get_param).
    pub params: IrqMutex<[u64; 64]>,
    /// Guest-physical address of its hypercall page, once the guest asked for one.
    pub hypercall_page: AtomicU64,
    /// Characters written to the console not yet ended by a newline.
    pub console_line: IrqMutex<String>,
    /// Monotonic time at creation.
    pub created_ns: u64,
    /// The shared_info frame (keel's, mapped into the guest) and where the guest put it.
    shared_info: IrqMutex<SharedInfoSlot>,
    /// First of the 8 special pages (xenstore, console rings, ...), once built.
    special_pfn_base: AtomicU64,
}

/// The shared_info page: allocated on the guest's first XENMAPSPACE_shared_info request.
struct SharedInfoSlot {
    mfn: Option<keel_mm::Pfn>,
    gfn: Option<keel_mm::Gfn>,
}

impl Domain {
    /// Run `f` on the domain's memory; `None` if it is already destroyed.
    pub fn with_mem<R>(&self, f: impl FnOnce(&mut DomainMemory) -> R) -> Option<R> {
        self.mem.lock().as_mut().map(f)
    }

    /// Its name for messages ("d3" when it has none).
    pub fn display_name(&self) -> String {
        if self.name.is_empty() {
            alloc::format!("d{}", self.id)
        } else {
            self.name.clone()
        }
    }

    /// Remember where its special pages are (for the HVM parameters).
    pub fn set_special_pages(&self, base: keel_mm::Gfn) {
        self.special_pfn_base.store(base.as_u64(), Ordering::Release);
    }

    /// Map (or move) the domain's shared_info page to `gfn`.
    pub fn map_shared_info(&self, gfn: keel_mm::Gfn) -> Result<(), memory::MemError> {
        let mut slot = self.shared_info.lock();
        let mfn = match slot.mfn {
            Some(m) => m,
            None => {
                let m = crate::mm::alloc_frames(0).ok_or(memory::MemError::OutOfMemory)?;
                // SAFETY: a frame just allocated to keel for this domain's shared_info.
                unsafe {
                    core::ptr::write_bytes(
                        crate::arch::x86::paging::phys_to_virt(m.addr().as_u64()) as *mut u8,
                        0,
                        4096,
                    )
                };
                slot.mfn = Some(m);
                m
            }
        };
        self.with_mem(|mem| {
            if let Some(old) = slot.gfn {
                mem.unmap_keel_frame(old)?;
            }
            mem.map_keel_frame(gfn, mfn, keel_p2m::P2mType::SharedInfo).map(|_| ())
        })
        .unwrap_or(Err(memory::MemError::NotMapped))?;
        slot.gfn = Some(gfn);
        self.flush_guest_tlbs();
        Ok(())
    }

    /// After a p2m change that removed or moved mappings: every vCPU flushes its guest TLB
    /// before it runs again.
    pub fn flush_guest_tlbs(&self) {
        for v in &self.vcpus {
            v.request_tlb_flush();
        }
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

    /// The guest (or the toolstack) shut it down. The first reason sticks.
    pub fn shutdown(self: &Arc<Self>, reason: ShutdownReason) {
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
    let mem = DomainMemory::new(id, cfg.max_pages).map_err(|_| CreateError::OutOfMemory)?;
    let root = mem.root();
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
    let d = Arc::new(Domain {
        id,
        name: cfg.name.clone(),
        privileged: cfg.privileged,
        vcpus,
        mem: IrqMutex::new(Some(mem)),
        dying: AtomicBool::new(false),
        pause_count: AtomicU32::new(1),
        shutdown: IrqMutex::new(None),
        params: IrqMutex::new([0; 64]),
        hypercall_page: AtomicU64::new(0),
        console_line: IrqMutex::new(String::new()),
        created_ns: crate::arch::x86::time::now_ns(),
        shared_info: IrqMutex::new(SharedInfoSlot { mfn: None, gfn: None }),
        special_pfn_base: AtomicU64::new(0),
    });
    crate::sched::add_domain(&d, cfg.weight, cfg.cap, cfg.cpus);
    DOMAINS.lock().insert(id, d.clone());
    EVER_CREATED.store(true, Ordering::Release);
    Ok(d)
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
        if d.vcpus.iter().any(|v| v.is_running()) || !crate::sched::remove_domain(&d) {
            // A CPU is still leaving one of its vCPUs; try again on the next pass.
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
    let mem = d.mem.lock().take();
    let pages = mem.as_ref().map_or(0, |m| m.tot_pages());
    if let Some(m) = mem {
        m.destroy();
    }
    if let Some(mfn) = d.shared_info.lock().mfn.take() {
        crate::mm::free_frames(mfn, 0);
    }
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
