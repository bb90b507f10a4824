//! Powering the machine off and resetting it.
//!
//! Power-off is ACPI S5: SLP_TYP from the DSDT's `\_S5` into PM1a/PM1b control with SLP_EN.
//! Reset tries, in order, the FADT reset register, the PCI reset control port 0xCF9, the
//! keyboard controller, and finally a triple fault, which resets every x86 machine. Each
//! step names itself on the console so an operator can see which one a machine needed.

use keel_acpi::{AddressSpace, Gas};
use x86_64::instructions::port::Port;

use super::{cpu, platform, time};

const SLP_EN: u16 = 1 << 13;
const SCI_EN: u16 = 1;

fn gas_write(gas: &Gas, value: u64) -> bool {
    match gas.space {
        AddressSpace::SystemIo => {
            let port = gas.address as u16;
            // SAFETY: the port is the platform's own fixed-hardware register, named by the FADT.
            unsafe {
                match gas.bit_width {
                    0..=8 => Port::<u8>::new(port).write(value as u8),
                    9..=16 => Port::<u16>::new(port).write(value as u16),
                    _ => Port::<u32>::new(port).write(value as u32),
                }
            }
            true
        }
        AddressSpace::SystemMemory => {
            let va = super::paging::phys_to_virt(gas.address);
            if super::paging::virt_to_phys(va).is_none() {
                return false;
            }
            // SAFETY: the FADT names this register; the direct map covers it. Fixed-hardware
            // registers tolerate the cacheable alias on the platforms that use memory space.
            unsafe {
                match gas.bit_width {
                    0..=8 => core::ptr::write_volatile(va as *mut u8, value as u8),
                    9..=16 => core::ptr::write_volatile(va as *mut u16, value as u16),
                    _ => core::ptr::write_volatile(va as *mut u32, value as u32),
                }
            }
            true
        }
        _ => false,
    }
}

fn gas_read16(gas: &Gas) -> Option<u16> {
    match gas.space {
        // SAFETY: reading the PM1 control register has no side effects.
        AddressSpace::SystemIo => Some(unsafe { Port::<u16>::new(gas.address as u16).read() }),
        _ => None,
    }
}

/// Turn the machine off (ACPI S5). Halts all CPUs if that is impossible or does not work.
pub fn poweroff() -> ! {
    let _irq = cpu::InterruptGuard::new();
    log::info!("powering off");
    if let Some(p) = platform::get() {
        if let (Some(fadt), Some((typ_a, typ_b))) = (&p.fadt, p.s5) {
            if let Some(cnt_a) = &fadt.pm1a_cnt {
                // Switch to ACPI mode first if the firmware left the machine in legacy mode.
                if gas_read16(cnt_a).is_some_and(|v| v & SCI_EN == 0) && fadt.smi_cmd != 0 && fadt.acpi_enable != 0 {
                    // SAFETY: SMI_CMD and the ACPI_ENABLE value come from the FADT; this is the
                    // documented hand-over from firmware to the OS.
                    unsafe { Port::<u8>::new(fadt.smi_cmd as u16).write(fadt.acpi_enable) };
                    let deadline = time::deadline_after_ms(300);
                    while !time::passed(deadline) && gas_read16(cnt_a).is_some_and(|v| v & SCI_EN == 0) {
                        core::hint::spin_loop();
                    }
                }
                gas_write(cnt_a, (((typ_a as u16) & 7) << 10 | SLP_EN) as u64);
                if let Some(cnt_b) = &fadt.pm1b_cnt {
                    gas_write(cnt_b, (((typ_b as u16) & 7) << 10 | SLP_EN) as u64);
                }
                time::udelay(100_000);
                log::error!("ACPI power-off did not take effect");
            }
        }
    }
    log::error!("cannot power off this machine: halting all CPUs instead");
    super::traps::stop_others_and_halt()
}

/// Reset the machine.
pub fn reboot() -> ! {
    let _irq = cpu::InterruptGuard::new();
    if let Some(fadt) = platform::get().and_then(|p| p.fadt.as_ref()) {
        if let Some(reg) = &fadt.reset_reg {
            crate::kprintln!(
                "reboot: ACPI reset register ({:?} {:#x} <- {:#x})",
                reg.space,
                reg.address,
                fadt.reset_value
            );
            gas_write(reg, fadt.reset_value as u64);
            time::udelay(50_000);
        }
    }
    crate::kprintln!("reboot: PCI reset control (port 0xcf9)");
    // SAFETY: 0xCF9 is the chipset reset control register: "system reset" then "full reset".
    unsafe {
        let mut p = Port::<u8>::new(0xcf9);
        p.write(0x02);
        time::udelay(10);
        p.write(0x06);
    }
    time::udelay(50_000);
    crate::kprintln!("reboot: keyboard controller");
    // SAFETY: pulsing the 8042's reset line; waiting for its input buffer first, bounded.
    unsafe {
        let mut status = Port::<u8>::new(0x64);
        for _ in 0..100_000 {
            if status.read() & 0x02 == 0 {
                break;
            }
        }
        status.write(0xfe);
    }
    time::udelay(50_000);
    crate::kprintln!("reboot: triple fault");
    // SAFETY: an empty IDT makes the next exception a triple fault, which resets the machine;
    // that is the intent.
    unsafe {
        let ptr = x86_64::structures::DescriptorTablePointer { limit: 0, base: x86_64::VirtAddr::new(0) };
        x86_64::instructions::tables::lidt(&ptr);
        core::arch::asm!("int3");
    }
    cpu::halt_forever()
}
