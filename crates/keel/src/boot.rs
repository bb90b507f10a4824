//! What the boot loader told keel: protocol, loader, command line, memory map, modules and
//! the ACPI root. Parsed (by the host-tested `keel-boot` crate) into one `BootInfo` before
//! keel allocates anything, so the loader's own structures may be overwritten afterwards.
//!
//! Image names: loaders other than GRUB 2 put the image's file name first on keel's and each
//! module's command line (QEMU's multiboot loader does); GRUB 2 and PVH loaders do not. keel
//! strips it the way Xen does (`cmdline_cook`), and reports module names where it has them.

use keel_boot::bootinfo::{self, AcpiRoot, BootInfo, BootWarning, PhysMemory, Protocol};
use keel_boot::cmdline::{self, CmdlineWarning, ConsoleSelect, LogLevel, Options};

use crate::arch::x86::boot::{MULTIBOOT1_MAGIC, MULTIBOOT2_MAGIC, PVH_MAGIC};
use crate::arch::x86::serial::{LineConfig, Parity};
use crate::console::{self, Level};
use crate::sync::{IrqMutex, IrqMutexGuard};

static BOOT_INFO: IrqMutex<BootInfo> = IrqMutex::new(BootInfo::empty());

/// Boot-loader memory as keel reads it before its own page tables exist: the boot page
/// tables map the first 4 GiB one-to-one, which is where every 32-bit loader puts its data.
struct EarlyPhysMemory;

impl PhysMemory for EarlyPhysMemory {
    fn read(&self, phys: u64, buf: &mut [u8]) -> Result<(), ()> {
        let end = phys.checked_add(buf.len() as u64).ok_or(())?;
        if phys == 0 || end > 1 << 32 {
            return Err(());
        }
        // SAFETY: [phys, end) lies in the first 4 GiB, identity-mapped by the boot page tables
        // (this runs before `paging::activate`); boot structures are plain memory; the
        // address is non-null.
        unsafe { core::ptr::copy_nonoverlapping(phys as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
}

/// Read the boot information, parse the command line, set the console up as it says, and
/// report what keel was given. Returns the options.
pub fn init(magic: u32, info: u32) -> Options {
    static SCRATCH: IrqMutex<[u64; 8192]> = IrqMutex::new([0; 8192]);
    let mut b = BOOT_INFO.lock();
    let mut warn = |w: BootWarning| log::warn!("boot: {w}");
    let mem = EarlyPhysMemory;
    let result = match magic {
        MULTIBOOT2_MAGIC => bootinfo::parse_multiboot2(info, &mem, &mut *SCRATCH.lock(), &mut b, &mut warn),
        MULTIBOOT1_MAGIC => bootinfo::parse_multiboot1(info, &mem, &mut b, &mut warn),
        PVH_MAGIC => bootinfo::parse_pvh(info, &mem, &mut b, &mut warn),
        other => panic!("keel was started by an unknown boot protocol (magic {other:#x}); boot it with multiboot2, multiboot or PVH"),
    };
    if let Err(e) = result {
        panic!("cannot read the boot loader's information at {info:#x}: {e}");
    }

    let line = b.options_cmdline();
    let mut warnings: [Option<CmdlineWarning<'_>>; 16] = [None; 16];
    let mut dropped = 0;
    let opts = cmdline::parse(line, &mut |w| match warnings.iter_mut().find(|s| s.is_none()) {
        Some(slot) => *slot = Some(w),
        None => dropped += 1,
    });
    configure_console(&opts);
    for w in warnings.iter().flatten() {
        log::warn!("cmdline: {w}");
    }
    if dropped > 0 {
        log::warn!("cmdline: {dropped} more problems not shown");
    }
    crate::arch::x86::traps::NOREBOOT.store(opts.noreboot, core::sync::atomic::Ordering::Relaxed);

    let protocol = match b.protocol {
        Protocol::Multiboot1 => "multiboot1",
        Protocol::Multiboot2 => "multiboot2",
        Protocol::Pvh => "PVH",
    };
    let loader = match b.loader_name.as_str() {
        "" => "an unnamed loader",
        name => name,
    };
    log::info!("boot: booted via {protocol} by {loader}");
    log::info!("boot: command line: '{line}'");
    if b.modules().is_empty() {
        log::info!("boot: no boot modules");
    }
    for (i, m) in b.modules().iter().enumerate() {
        let (name, args) = b.module_cmdline(m);
        log::info!(
            "boot: module {i}: {} at {:#x}-{:#x} ({} bytes) args '{args}'",
            name.unwrap_or("(unnamed)"),
            m.start,
            m.end,
            m.end - m.start
        );
    }
    opts
}

fn configure_console(opts: &Options) {
    let threshold = match opts.loglvl.level {
        LogLevel::None => None,
        LogLevel::Error => Some(Level::Error),
        LogLevel::Warning => Some(Level::Warning),
        LogLevel::Info => Some(Level::Info),
        LogLevel::Debug | LogLevel::All => Some(Level::Debug),
    };
    let uart = match opts.console {
        ConsoleSelect::Com1 => {
            let c = &opts.com1;
            let baud = match c.baud {
                cmdline::Baud::Auto => None,
                cmdline::Baud::Rate(r) => Some(r),
            };
            let parity = match c.parity {
                cmdline::Parity::None => Parity::None,
                cmdline::Parity::Odd => Parity::Odd,
                cmdline::Parity::Even => Parity::Even,
                cmdline::Parity::Mark => Parity::Mark,
                cmdline::Parity::Space => Parity::Space,
            };
            Some((c.io_base, LineConfig { baud, data_bits: c.data_bits, parity, stop_bits: c.stop_bits }))
        }
        ConsoleSelect::None => None,
    };
    console::configure(uart, threshold);
}

/// The boot information (locked; keep the guard short).
pub fn info() -> IrqMutexGuard<'static, BootInfo> {
    BOOT_INFO.lock()
}

/// The ACPI root the loader gave, if any.
pub fn acpi_root() -> Option<AcpiRoot> {
    BOOT_INFO.lock().acpi_root()
}
