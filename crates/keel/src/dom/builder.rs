//! Building the domains the boot modules describe (dom0 the Xen way, or several domains
//! dom0less; see `keel_boot::domains` for the syntax), as Xen builds a PVH guest: the kernel
//! (ELF, or a Debian bzImage unwrapped and decompressed here) loaded at its physical
//! addresses, the initrd, `hvm_start_info`, the memory map and a minimal ACPI set, and vCPU 0
//! at the PVH entry point. Every domain but dom0 also gets the PV console a toolstack would
//! set up (`dom::console`: keel is its backend), and serial input goes to dom0, or else to the
//! first domain built.

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use keel_boot::domains::{self, BootDomain, MAX_BOOT_DOMAINS};
use keel_loader::{DomainSpec, GuestMemory, LoadError};
use keel_mm::Gpa;

use super::{Domain, DomainConfig};
use crate::arch::x86::{paging, percpu, time};
use crate::mm;

/// Largest decompressed kernel keel accepts.
const MAX_KERNEL: usize = 256 << 20;

/// Guest memory through the domain's p2m.
struct Writer<'a>(&'a Domain);

impl GuestMemory for Writer<'_> {
    fn write(&mut self, gpa: Gpa, bytes: &[u8]) -> Result<(), ()> {
        self.0.with_mem(|m| m.write(gpa, bytes)).ok_or(())?.map_err(|_| ())
    }

    fn zero(&mut self, gpa: Gpa, len: u64) -> Result<(), ()> {
        self.0.with_mem(|m| m.zero(gpa, len)).ok_or(())?.map_err(|_| ())
    }
}

/// Why a boot domain could not be built.
#[derive(Debug)]
enum BuildError {
    Load(LoadError),
    Create(super::CreateError),
    Memory(super::memory::MemError),
    BadModule(&'static str),
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Load(e) => write!(f, "{e}"),
            Self::Create(e) => write!(f, "cannot create the domain: {e:?}"),
            Self::Memory(e) => write!(f, "cannot give it memory: {e:?}"),
            Self::BadModule(why) => f.write_str(why),
        }
    }
}

/// A boot module's bytes (through the direct map).
fn module_bytes(index: usize) -> Option<&'static [u8]> {
    let boot = crate::boot::info();
    let m = boot.modules().get(index)?;
    if mm::summary().usable_modules & (1 << index.min(63)) == 0 {
        return None;
    }
    let len = (m.end - m.start) as usize;
    // SAFETY: a usable module lies in RAM that keel reserved at boot (never allocated), which
    // the direct map covers; nothing writes it.
    Some(unsafe { core::slice::from_raw_parts(paging::phys_to_virt(m.start) as *const u8, len) })
}

/// Build and start every boot domain. Returns how many started.
pub fn build_boot_domains() -> usize {
    let args: Vec<String> = {
        let boot = crate::boot::info();
        boot.modules().iter().map(|m| boot.module_cmdline(m).1.to_string()).collect()
    };
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let mut plans: [Option<BootDomain<'_>>; MAX_BOOT_DOMAINS] = [None; MAX_BOOT_DOMAINS];
    let n = domains::plan(&refs, &mut plans, &mut |w| log::warn!("boot: {w}"));
    if n == 0 {
        log::info!("boot: no domain to build");
        return 0;
    }
    // Build them all, then start them together: no domain gets a head start on the others
    // while they are still being built.
    let mut built = Vec::new();
    for plan in plans.iter().flatten().take(n) {
        match build_one(plan) {
            Ok(d) => built.push(d),
            Err(e) => log::error!("boot: cannot build the domain of module {}: {e}", plan.kernel),
        }
    }
    let input = built.iter().find(|d| d.id == 0).or(built.first());
    crate::console::set_input_target(input.map(|d| d.id));
    for d in &built {
        d.unpause();
        d.vcpus[0].start();
    }
    built.len()
}

fn build_one(plan: &BootDomain<'_>) -> Result<Arc<Domain>, BuildError> {
    let t0 = time::now_ns();
    let opts = crate::options();
    let kernel_module =
        module_bytes(plan.kernel).ok_or(BuildError::BadModule("its kernel module is missing or empty"))?;
    let initrd = match plan.initrd {
        Some(i) => Some(module_bytes(i).ok_or(BuildError::BadModule("its initrd module is missing or empty"))?),
        None => None,
    };
    let elf = keel_loader::kernel_elf(kernel_module, MAX_KERNEL).map_err(BuildError::Load)?;
    let kernel = keel_loader::parse_pvh_kernel(&elf).map_err(BuildError::Load)?;
    let t_unpacked = time::now_ns();
    let free = mm::free_frame_count() * 4096;
    let ram = match plan.mem {
        Some(m) => m,
        None => opts.dom0_mem.initial_bytes(free),
    }
    .max(keel_loader::min_ram_for(&kernel))
    .next_multiple_of(4096);
    let online = percpu::all().filter(|c| c.online.load(core::sync::atomic::Ordering::Acquire)).count() as u32;
    let vcpus = match plan.vcpus {
        Some(v) => v,
        None => {
            let (min, max) = opts.dom0_max_vcpus.unwrap_or((1, u32::MAX));
            online.clamp(min, max.max(min))
        }
    };
    let spec = DomainSpec {
        ram_bytes: ram,
        vcpus,
        kernel: &kernel,
        initrd,
        cmdline: plan.cmdline,
        flags: if plan.dom0 { xen_abi::start_info::SIF_PRIVILEGED | xen_abi::start_info::SIF_INITDOMAIN } else { 0 },
    };
    let layout = keel_loader::plan(&spec).map_err(BuildError::Load)?;
    let pages: u64 = layout.populate.iter().map(|&(_, n)| n).sum();
    let cfg = DomainConfig {
        name: plan.name.map(str::to_string).unwrap_or_default(),
        privileged: plan.dom0,
        vcpus,
        max_pages: pages,
        weight: plan.weight,
        cap: plan.cap,
        cpus: plan.cpus,
    };
    let d = super::create(if plan.dom0 { Some(0) } else { None }, &cfg).map_err(BuildError::Create)?;
    let result = (|| {
        for &(gfn, count) in &layout.populate {
            d.with_mem(|m| m.populate(gfn, count))
                .ok_or(BuildError::BadModule("domain vanished"))?
                .map_err(BuildError::Memory)?;
        }
        keel_loader::build(&spec, &layout, &mut Writer(&d)).map_err(BuildError::Load)?;
        d.vcpus[0].with_hw(|hw| hw.cpu.reset_pvh(layout.entry, layout.start_info.as_u64() as u32));
        Ok(())
    })();
    if let Err(e) = result {
        d.shutdown(super::ShutdownReason::Crash);
        return Err(e);
    }
    d.set_special_pages(layout.special_pfn_base);
    // Xen's toolstack gives a domU its console ring in a special page; dom0 uses console_io.
    if !plan.dom0 {
        let gfn = layout.special_gfn(keel_loader::SPECIAL_PAGE_CONSOLE);
        match gfn.map(|gfn| super::console::attach(&d, gfn)) {
            Some(Ok(())) => {}
            Some(Err(e)) => log::warn!("d{}: no PV console: {e:?}", d.id),
            None => log::warn!("d{}: no PV console: no special page for it", d.id),
        }
    }
    d.set_memory_map(
        layout
            .memmap
            .iter()
            .map(|e| xen_abi::memory::E820Entry { addr: e.addr, size: e.size, type_: e.type_ })
            .collect(),
    );
    let t1 = time::now_ns();
    log::info!(
        "d{} ({}): built: {} MiB, {} vCPU{}, kernel at {:#x}-{:#x}, entry {:#x}{}, command line '{}'",
        d.id,
        d.display_name(),
        ram >> 20,
        vcpus,
        if vcpus == 1 { "" } else { "s" },
        layout.kernel_start.as_u64(),
        layout.kernel_end.as_u64(),
        layout.entry,
        layout
            .initrd
            .map_or(alloc::string::String::new(), |(a, l)| alloc::format!(", initrd {l} bytes at {:#x}", a.as_u64())),
        plan.cmdline
    );
    log::info!("d{}: build took {} us ({} us unpacking the kernel)", d.id, (t1 - t0) / 1000, (t_unpacked - t0) / 1000);
    Ok(d)
}
