//! The memory keel shares with a domain for events and time: the shared_info page (event
//! bitmaps, the wall clock, the vcpu_info of vCPUs 0-31) and the vcpu_info a vCPU registers in
//! its own RAM instead (VCPUOP_register_vcpu_info). keel publishes pvclock time into both.
//!
//! Time: keel's monotonic clock *is* Xen system time (`time::now_ns`), computed from the TSC
//! with the very scale published here. Every `vcpu_time_info` carries one anchor, taken when
//! keel first publishes time (`tsc_timestamp` = the TSC then, `system_time` = keel's clock
//! then, so neither is 0, as on Xen), and never changes: a guest computing
//! `system_time + scale(tsc - tsc_timestamp)` reads keel's clock (at most 1 ns behind it, from
//! rounding the anchor, never ahead: a timer keel fires is never early by the guest's clock),
//! identically on every vCPU (the TSCs run in step, hence `XEN_PVCLOCK_TSC_STABLE_BIT`).

use core::mem::offset_of;
use core::sync::atomic::{fence, AtomicU64, AtomicU8, Ordering};

use keel_mm::Pfn;
use xen_abi::shared_info::{SharedInfo, VcpuInfo, VcpuTimeInfo, XEN_LEGACY_MAX_VCPUS, XEN_PVCLOCK_TSC_STABLE_BIT};

use super::memory::{FrameView, KeelFrame, PinnedPage};
use crate::arch::x86::{rtc, time};

/// Size of a `vcpu_info`.
pub const VCPU_INFO_SIZE: usize = core::mem::size_of::<VcpuInfo>();

/// The domain's shared_info page: a frame keel owns from the domain's creation (events can be
/// recorded before the guest maps it), mapped into the guest's p2m where it asks.
pub struct SharedInfoPage {
    frame: KeelFrame,
}

impl SharedInfoPage {
    /// A fresh page: zeroed, with the wall clock and every legacy vCPU's time published.
    pub fn new() -> Option<Self> {
        let page = SharedInfoPage { frame: KeelFrame::new()? };
        page.publish_wallclock();
        for v in 0..XEN_LEGACY_MAX_VCPUS as u32 {
            if let Some(info) = page.legacy_vcpu_info(v) {
                info.publish_time();
            }
        }
        Some(page)
    }

    /// Its frame.
    pub fn mfn(&self) -> Pfn {
        self.frame.mfn()
    }

    /// Its direct-map address.
    pub fn va(&self) -> u64 {
        crate::arch::x86::paging::phys_to_virt(self.frame.mfn().addr().as_u64())
    }

    fn view(&self) -> FrameView<'_> {
        self.frame.view()
    }

    /// `evtchn_pending[word]` (`word` < 64).
    pub fn evtchn_pending(&self, word: usize) -> &AtomicU64 {
        self.view().u64(offset_of!(SharedInfo, evtchn_pending) + 8 * (word % 64))
    }

    /// `evtchn_mask[word]` (`word` < 64).
    pub fn evtchn_mask(&self, word: usize) -> &AtomicU64 {
        self.view().u64(offset_of!(SharedInfo, evtchn_mask) + 8 * (word % 64))
    }

    /// The vcpu_info slot of `vcpu` in this page (vCPUs 0-31 only).
    pub fn legacy_vcpu_info(&self, vcpu: u32) -> Option<VcpuInfoRef<'_>> {
        ((vcpu as usize) < XEN_LEGACY_MAX_VCPUS).then(|| VcpuInfoRef {
            view: self.view(),
            base: offset_of!(SharedInfo, vcpu_info) + vcpu as usize * VCPU_INFO_SIZE,
        })
    }

    /// Write the wall clock at system time zero (`wc_*`), with Xen's version protocol.
    pub fn publish_wallclock(&self) {
        let base = rtc::base_ns();
        let (sec, nsec) = (base / 1_000_000_000, (base % 1_000_000_000) as u32);
        let view = self.view();
        let version = view.u32(offset_of!(SharedInfo, wc_version));
        let v = version.load(Ordering::Relaxed);
        version.store(v.wrapping_add(1) | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        view.u32(offset_of!(SharedInfo, wc_sec)).store(sec as u32, Ordering::Relaxed);
        view.u32(offset_of!(SharedInfo, wc_nsec)).store(nsec, Ordering::Relaxed);
        view.u32(offset_of!(SharedInfo, wc_sec_hi)).store((sec >> 32) as u32, Ordering::Relaxed);
        fence(Ordering::Release);
        version.store((v.wrapping_add(1) | 1).wrapping_add(1), Ordering::Relaxed);
    }
}

/// One vCPU's `vcpu_info`, wherever it lives.
#[derive(Clone, Copy)]
pub struct VcpuInfoRef<'a> {
    view: FrameView<'a>,
    base: usize,
}

impl<'a> VcpuInfoRef<'a> {
    /// `evtchn_upcall_pending`.
    pub fn upcall_pending(&self) -> &'a AtomicU8 {
        self.view.u8(self.base + offset_of!(VcpuInfo, evtchn_upcall_pending))
    }

    /// `evtchn_upcall_mask` (meaningful to PV guests; HVM guests mask with RFLAGS.IF).
    pub fn upcall_mask(&self) -> &'a AtomicU8 {
        self.view.u8(self.base + offset_of!(VcpuInfo, evtchn_upcall_mask))
    }

    /// `evtchn_pending_sel`.
    pub fn pending_sel(&self) -> &'a AtomicU64 {
        self.view.u64(self.base + offset_of!(VcpuInfo, evtchn_pending_sel))
    }

    /// Copy the whole structure out (for moving it).
    pub fn read(&self) -> [u8; VCPU_INFO_SIZE] {
        let mut b = [0; VCPU_INFO_SIZE];
        self.view.read(self.base, &mut b);
        b
    }

    /// Overwrite the whole structure.
    pub fn write(&self, bytes: &[u8; VCPU_INFO_SIZE]) {
        self.view.write(self.base, bytes);
    }

    /// Publish the pvclock time (see the module doc) with Xen's version protocol: odd while
    /// the fields change, even when they are consistent.
    pub fn publish_time(&self) {
        write_time_info(self.view, self.base + offset_of!(VcpuInfo, time));
    }
}

/// The `vcpu_time_info` keel publishes (see the module doc).
pub fn time_info(version: u32) -> VcpuTimeInfo {
    let scale = time::scale();
    let (tsc_timestamp, system_time) = anchor();
    VcpuTimeInfo {
        version,
        pad0: 0,
        tsc_timestamp,
        system_time,
        tsc_to_system_mul: scale.mul,
        tsc_shift: scale.shift,
        flags: XEN_PVCLOCK_TSC_STABLE_BIT,
        pad1: [0; 2],
    }
}

/// The TSC of the pvclock anchor (0: not taken yet).
static ANCHOR_TSC: AtomicU64 = AtomicU64::new(0);

/// The pvclock anchor `(tsc_timestamp, system_time)` every `vcpu_time_info` carries: taken
/// once, on first use (after TSC calibration: domains are built later).
fn anchor() -> (u64, u64) {
    let mut tsc = ANCHOR_TSC.load(Ordering::Acquire);
    if tsc == 0 {
        let now = crate::arch::x86::cpu::rdtsc().max(time::tsc_epoch()).max(1);
        tsc = match ANCHOR_TSC.compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => now,
            Err(first) => first,
        };
    }
    (tsc, time::tsc_to_ns(tsc.saturating_sub(time::tsc_epoch())))
}

/// Write a `vcpu_time_info` at `at` in `view` with the version protocol.
fn write_time_info(view: FrameView<'_>, at: usize) {
    use zerocopy::IntoBytes;
    let version = view.u32(at + offset_of!(VcpuTimeInfo, version));
    let begin = version.load(Ordering::Relaxed).wrapping_add(1) | 1;
    version.store(begin, Ordering::Relaxed);
    fence(Ordering::Release);
    let info = time_info(begin);
    let start = offset_of!(VcpuTimeInfo, tsc_timestamp);
    view.write(at + start, &info.as_bytes()[start..]);
    fence(Ordering::Release);
    version.store(begin.wrapping_add(1), Ordering::Relaxed);
}

/// A vcpu_info a vCPU registered in its own RAM: the page stays pinned while it is used.
pub struct RegisteredVcpuInfo {
    page: PinnedPage,
    offset: usize,
}

impl RegisteredVcpuInfo {
    /// Place a vcpu_info at `offset` in `page` (the caller checked that it fits).
    pub fn new(page: PinnedPage, offset: usize) -> Self {
        RegisteredVcpuInfo { page, offset }
    }

    /// Its contents.
    pub fn get(&self) -> VcpuInfoRef<'_> {
        VcpuInfoRef { view: self.page.view(), base: self.offset }
    }

    /// Its direct-map address (valid while its vCPU lives).
    pub fn va(&self) -> u64 {
        self.page.va() + self.offset as u64
    }
}

/// The secondary `vcpu_time_info` a vCPU registered (VCPUOP_register_vcpu_time_memory_area),
/// for its user-space clock.
pub struct RegisteredTimeArea {
    page: PinnedPage,
    offset: usize,
}

impl RegisteredTimeArea {
    /// Place it at `offset` in `page` (8-byte aligned, fitting: checked by the caller).
    pub fn new(page: PinnedPage, offset: usize) -> Self {
        let area = RegisteredTimeArea { page, offset };
        area.publish();
        area
    }

    /// Publish the time into it.
    pub fn publish(&self) {
        write_time_info(self.page.view(), self.offset);
    }
}
