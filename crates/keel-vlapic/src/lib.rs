//! The emulated local APIC that every keel guest vCPU sees.
//!
//! This crate is a pure state machine: one [`Vlapic`] per vCPU, no heap, no
//! hardware access, no clock of its own. keel's VM-exit handlers feed it
//!
//! * register accesses: xAPIC MMIO at `0xFEE00000 + offset`
//!   ([`Vlapic::mmio_read`], [`Vlapic::mmio_write`]), x2APIC MSRs
//!   `0x800..=0x8FF` ([`Vlapic::msr_read`], [`Vlapic::msr_write`]) and
//!   `IA32_APIC_BASE` ([`Vlapic::apic_base`], [`Vlapic::write_apic_base`]);
//! * interrupts: [`Vlapic::accept`] for sources wired straight to this vCPU
//!   (the Xen per-vCPU upcall vector), [`Vlapic::deliver`] for IPIs;
//! * the time, as nanoseconds of guest time ([`Ns`]), with every access that
//!   can observe or change the timer;
//!
//! and the state machine tells keel what to do:
//!
//! * inject a vector: [`Vlapic::pending`], then [`Vlapic::ack`] once injected;
//! * send an IPI: [`Actions::ipi`], matched against each vCPU's vLAPIC with
//!   [`Ipi::targets`] and handed to it with [`Vlapic::deliver`];
//! * arm the timer: [`Vlapic::timer_deadline`] (re-read it whenever
//!   [`Actions::timer_changed`] says so), then call [`Vlapic::on_timer`];
//! * start a vCPU: [`Received::Startup`] after INIT and STARTUP IPIs;
//! * re-assert level-like sources: [`Actions::became_enabled`];
//! * notify an interrupt controller of an EOI: [`Actions::eoi`].
//!
//! The model follows the Intel SDM vol. 3 ch. 11 and AMD APM vol. 2 ch. 16,
//! with the choices Xen makes for HVM/PVH guests (reset state, version
//! `0x50014`, APIC ID `2 × vcpu_id`, the xAPIC window fixed at
//! `0xFEE00000`). See the [`vlapic`] module for what is and is not modelled.

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod ipi;
pub mod regs;
pub mod timer;
mod vectors;
pub mod vlapic;

pub use ipi::{Delivery, Dest, Ipi};
pub use timer::{BUS_CYCLE_NS, BUS_FREQUENCY_HZ};
pub use vlapic::{Actions, Eoi, Fault, Mode, Received, Vlapic};

/// A point in guest time, in nanoseconds, on whatever monotonic clock keel
/// keeps for the domain. Only differences matter to this crate.
pub type Ns = u64;
