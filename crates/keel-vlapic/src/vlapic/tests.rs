//! Tests of the vLAPIC's guest-visible behaviour, through its public
//! interface: reset state, both register interfaces, priority, EOI, the
//! timer, IPIs, INIT/STARTUP and `IA32_APIC_BASE`; then a property test
//! that random guest activity never panics and keeps the invariants.

use super::*;
use crate::regs::{offset, x2apic_msr, BASE_BSP, BASE_EN, BASE_EXTD, XAPIC_BASE};
use crate::BUS_CYCLE_NS;
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

const SVR_ON: u32 = 0x1FF;

/// A software-enabled xAPIC.
fn xapic(apic_id: u32) -> Vlapic {
    let mut v = Vlapic::new(apic_id, apic_id == 0);
    let _ = v.mmio_write(offset::SVR, SVR_ON, 0);
    v
}

/// A software-enabled x2APIC.
fn x2apic(apic_id: u32) -> Vlapic {
    let mut v = xapic(apic_id);
    let _ = v.write_apic_base(v.apic_base() | BASE_EXTD).expect("xAPIC to x2APIC");
    v
}

fn msr(off: u32) -> u32 {
    x2apic_msr(off)
}

fn isr_vectors(v: &Vlapic) -> Vec<u8> {
    (0..=255u8).filter(|&x| v.mmio_read(offset::ISR + u32::from(x / 32) * 16, 0) & (1 << (x % 32)) != 0).collect()
}

fn irr_has(v: &Vlapic, x: u8) -> bool {
    v.mmio_read(offset::IRR + u32::from(x / 32) * 16, 0) & (1 << (x % 32)) != 0
}

fn tmr_has(v: &Vlapic, x: u8) -> bool {
    v.mmio_read(offset::TMR + u32::from(x / 32) * 16, 0) & (1 << (x % 32)) != 0
}

/// Accepts, injects and acknowledges `vector`.
fn take(v: &mut Vlapic, vector: u8) {
    assert!(v.accept(vector, false));
    assert_eq!(v.pending(), Some(vector));
    v.ack(vector);
}

/// Sends an ICR write (xAPIC) and returns the IPI.
fn send(v: &mut Vlapic, high: u32, low: u32) -> Option<Ipi> {
    let _ = v.mmio_write(offset::ICR_HIGH, high, 0);
    v.mmio_write(offset::ICR_LOW, low, 0).ipi
}

// ----- reset -------------------------------------------------------------

#[test]
fn reset_state_matches_xen_pvh() {
    let bsp = Vlapic::for_vcpu(0);
    assert_eq!(bsp.apic_base(), 0xFEE0_0900);
    assert_eq!(bsp.mode(), Mode::XApic);
    assert_eq!(bsp.apic_id(), 0);
    assert!(!bsp.waiting_for_sipi());
    assert!(!bsp.is_enabled());
    let expect = [
        (offset::ID, 0),
        (offset::VERSION, 0x0005_0014),
        (offset::TPR, 0),
        (offset::APR, 0),
        (offset::PPR, 0),
        (offset::LDR, 0),
        (offset::DFR, 0xFFFF_FFFF),
        (offset::SVR, 0xFF),
        (offset::ESR, 0),
        (offset::ICR_LOW, 0),
        (offset::ICR_HIGH, 0),
        (offset::LVT_TIMER, 0x1_0000),
        (offset::LVT_THERMAL, 0x1_0000),
        (offset::LVT_PERF, 0x1_0000),
        (offset::LVT_LINT0, 0x1_0000),
        (offset::LVT_LINT1, 0x1_0000),
        (offset::LVT_ERROR, 0x1_0000),
        (offset::TIMER_INITIAL, 0),
        (offset::TIMER_CURRENT, 0),
        (offset::TIMER_DIVIDE, 0),
    ];
    for (off, value) in expect {
        assert_eq!(bsp.mmio_read(off, 0), value, "offset {off:#x}");
    }
    for word in 0..24 {
        assert_eq!(bsp.mmio_read(offset::ISR + word * 16, 0), 0);
    }
    assert_eq!(bsp.pending(), None);
    assert_eq!(bsp.timer_deadline(), None);

    let ap = Vlapic::for_vcpu(3);
    assert_eq!(ap.apic_base(), 0xFEE0_0800);
    assert_eq!(ap.apic_id(), 6);
    assert_eq!(ap.mmio_read(offset::ID, 0), 0x0600_0000);
    assert!(ap.waiting_for_sipi());
    assert_eq!(Vlapic::for_vcpu(u16::MAX).apic_id(), 0x1_FFFE);
}

// ----- xAPIC register semantics --------------------------------------------

#[test]
fn xapic_read_only_registers_ignore_writes() {
    let mut v = xapic(4);
    take(&mut v, 0x51);
    assert!(v.accept(0x62, true));
    let read_only = [
        offset::ID,
        offset::VERSION,
        offset::APR,
        offset::PPR,
        offset::RRD,
        offset::ISR + 0x20,
        offset::TMR + 0x30,
        offset::IRR + 0x30,
        offset::TIMER_CURRENT,
    ];
    let before: Vec<u32> = read_only.iter().map(|&o| v.mmio_read(o, 0)).collect();
    for &off in &read_only {
        assert_eq!(v.mmio_write(off, 0xFFFF_FFFF, 0), Actions::default());
    }
    let after: Vec<u32> = read_only.iter().map(|&o| v.mmio_read(o, 0)).collect();
    assert_eq!(before, after);
    assert_eq!(v.mmio_read(offset::ID, 0), 0x0400_0000);
    assert_eq!(v.mmio_read(offset::PPR, 0), 0x50);
    assert_eq!(v.mmio_read(offset::ISR + 0x20, 0), 1 << 17);
    assert_eq!(v.mmio_read(offset::IRR + 0x30, 0), 1 << 2);
    assert_eq!(v.mmio_read(offset::TMR + 0x30, 0), 1 << 2);
}

#[test]
fn xapic_reserved_bits_are_dropped() {
    let mut v = xapic(0);
    let cases = [
        (offset::TPR, 0xFFFF_FF45, 0x45),
        (offset::LDR, 0xFFFF_FFFF, 0xFF00_0000),
        (offset::DFR, 0, 0x0FFF_FFFF),
        (offset::DFR, 0x1234_5678, 0x1FFF_FFFF),
        (offset::SVR, 0xFFFF_FFFF, 0x3FF),
        (offset::ICR_HIGH, 0xFFFF_FFFF, 0xFF00_0000),
        (offset::LVT_TIMER, 0xFFFF_FFFF, 0x0003_00FF),
        (offset::LVT_THERMAL, 0xFFFF_FFFF, 0x0001_07FF),
        (offset::LVT_PERF, 0xFFFF_FFFF, 0x0001_07FF),
        (offset::LVT_LINT0, 0xFFFF_FFFF, 0x0001_A7FF),
        (offset::LVT_LINT1, 0xFFFF_FFFF, 0x0001_A7FF),
        (offset::LVT_ERROR, 0xFFFF_FFFF, 0x0001_00FF),
        (offset::TIMER_DIVIDE, 0xFFFF_FFFF, 0xB),
        (offset::TIMER_INITIAL, 0xFFFF_FFFF, 0xFFFF_FFFF),
    ];
    for (off, written, read) in cases {
        let _ = v.mmio_write(off, written, 0);
        assert_eq!(v.mmio_read(off, 0), read, "offset {off:#x}");
    }
    // The ICR keeps its defined fields; delivery status always reads idle.
    let _ = v.mmio_write(offset::ICR_LOW, 0xFFFF_F6F0, 0);
    assert_eq!(v.mmio_read(offset::ICR_LOW, 0), 0x000C_C6F0);
}

#[test]
fn xapic_unknown_and_unaligned_offsets_read_zero_and_ignore_writes() {
    let mut v = xapic(0);
    let reference = v.clone();
    for off in [0x000, 0x010, 0x040, 0x2F0, 0x3A0, 0x3F0, 0x400, 0xFF0, 0x024, 0x081, 0x30C, u32::MAX] {
        assert_eq!(v.mmio_read(off, 0), 0, "offset {off:#x}");
        assert_eq!(v.mmio_write(off, 0x0004_00F6, 0), Actions::default(), "offset {off:#x}");
    }
    assert_eq!(v, reference);
    // EOI is write-only.
    assert_eq!(v.mmio_read(offset::EOI, 0), 0);
}

#[test]
fn mmio_is_inert_outside_xapic_mode() {
    let mut v = x2apic(2);
    assert_eq!(v.mmio_read(offset::ID, 0), 0);
    assert_eq!(v.mmio_read(offset::VERSION, 0), 0);
    let _ = v.mmio_write(offset::TPR, 0x20, 0);
    assert_eq!(v.tpr(), 0);
    let _ = v.write_apic_base(XAPIC_BASE).expect("disable");
    assert_eq!(v.mmio_read(offset::VERSION, 0), 0);
    assert_eq!(v.mmio_write(offset::ICR_LOW, 0x4_00F6, 0), Actions::default());
}

// ----- x2APIC register semantics ------------------------------------------

#[test]
fn x2apic_registers_read_in_their_x2apic_form() {
    let mut v = x2apic(0x1234);
    assert_eq!(v.msr_read(0x802, 0), Ok(0x1234));
    assert_eq!(v.msr_read(0x803, 0), Ok(0x0005_0014));
    assert_eq!(v.msr_read(0x80D, 0), Ok(0x0123_0010));
    assert_eq!(v.msr_read(0x80F, 0), Ok(0x1FF));
    assert_eq!(v.msr_read(0x832, 0), Ok(0x1_0000));
    let _ = v.msr_write(0x830, 0x0000_0042_0000_4030, 0).expect("ICR");
    assert_eq!(v.msr_read(0x830, 0), Ok(0x0000_0042_0000_4030));
    // The read-only LINT remote IRR bit may be written, and is dropped.
    let _ = v.msr_write(msr(offset::LVT_LINT0), 0x0000_C700, 0).expect("LINT0");
    assert_eq!(v.msr_read(msr(offset::LVT_LINT0), 0), Ok(0x0000_8700));
    let _ = v.msr_write(msr(offset::TIMER_INITIAL), 0xFFFF_FFFF, 0).expect("TMICT");
    assert_eq!(v.msr_read(msr(offset::TIMER_INITIAL), 0), Ok(0xFFFF_FFFF));
}

#[test]
fn x2apic_faults_where_the_architecture_says() {
    let mut v = x2apic(2);
    take(&mut v, 0x40);
    let reference = v.clone();
    // Write-only, xAPIC-only, absent and out-of-range MSRs.
    for m in [0x80B, 0x83F, 0x809, 0x80C, 0x80E, 0x831, 0x82F, 0x800, 0x801, 0x804, 0x840, 0x8FF, 0x1B, 0x7FF, 0x900] {
        assert_eq!(v.msr_read(m, 0), Err(Fault::Gp), "read {m:#x}");
    }
    // Read-only registers and absent ones.
    for m in [0x802, 0x803, 0x80A, 0x80D, 0x80C, 0x80E, 0x810, 0x817, 0x818, 0x820, 0x827, 0x831, 0x839, 0x82F, 0x840] {
        assert_eq!(v.msr_write(m, 0, 0), Err(Fault::Gp), "write {m:#x}");
    }
    // Reserved bits.
    let reserved: [(u32, u64); 14] = [
        (0x808, 0x100),   // TPR
        (0x80B, 1),       // EOI must be 0
        (0x828, 1),       // ESR must be 0
        (0x80F, 0x1000),  // SVR: no EOI-broadcast suppression
        (0x832, 1 << 18), // LVT timer: no TSC-deadline mode
        (0x832, 0x400),   // LVT timer has no delivery mode
        (0x837, 0x400),   // LVT error has no delivery mode
        (0x835, 1 << 17), // LINT0
        (0x83E, 0x4),     // divide configuration bit 2
        (0x830, 1 << 12), // ICR delivery status
        (0x830, 1 << 13), // ICR bit 13
        (0x830, 1 << 16), // ICR bit 16
        (0x83F, 0x100),   // SELF_IPI vector only
        (0x838, 1 << 32), // bits 63:32 of a 32-bit register
    ];
    for (m, value) in reserved {
        assert_eq!(v.msr_write(m, value, 0), Err(Fault::Gp), "write {m:#x} = {value:#x}");
    }
    assert_eq!(v, reference, "a faulting access changes nothing");
    // EOI and ESR take 0.
    assert_eq!(v.msr_write(0x80B, 0, 0).map(|a| a.eoi), Ok(Some(Eoi { vector: 0x40, level_triggered: false })));
    assert!(v.msr_write(0x828, 0, 0).is_ok());
}

#[test]
fn x2apic_msrs_fault_outside_x2apic_mode() {
    let mut v = xapic(2);
    assert_eq!(v.msr_read(0x802, 0), Err(Fault::Gp));
    assert_eq!(v.msr_write(0x808, 0x20, 0), Err(Fault::Gp));
    assert_eq!(v.tpr(), 0);
    let _ = v.write_apic_base(XAPIC_BASE).expect("disable");
    assert_eq!(v.msr_read(0x803, 0), Err(Fault::Gp));
}

// ----- priority, ISR, EOI -------------------------------------------------

#[test]
fn a_vector_is_pending_only_if_its_class_is_above_ppr() {
    let mut v = xapic(0);
    assert!(v.accept(0x45, false));
    assert_eq!(v.pending(), Some(0x45));
    let _ = v.mmio_write(offset::TPR, 0x40, 0);
    assert_eq!(v.pending(), None, "same class as TPR");
    let _ = v.mmio_write(offset::TPR, 0x3F, 0);
    assert_eq!(v.pending(), Some(0x45));
    let _ = v.mmio_write(offset::TPR, 0x50, 0);
    assert_eq!(v.pending(), None);
    v.set_tpr(0x30); // CR8 = 3
    assert_eq!(v.mmio_read(offset::TPR, 0), 0x30);
    assert_eq!(v.pending(), Some(0x45));
}

#[test]
fn nested_interrupts_and_eoi_order() {
    let mut v = xapic(0);
    take(&mut v, 0x30);
    assert_eq!(v.ppr(), 0x30);
    assert!(v.accept(0x35, false));
    assert_eq!(v.pending(), None, "same class as the one in service");
    assert!(v.accept(0x50, false));
    assert_eq!(v.pending(), Some(0x50), "a higher class nests");
    v.ack(0x50);
    assert_eq!(isr_vectors(&v), [0x30, 0x50]);
    assert_eq!(v.mmio_read(offset::PPR, 0), 0x50);
    assert_eq!(v.pending(), None);

    // EOI retires the highest in-service vector first.
    let a = v.mmio_write(offset::EOI, 0xDEAD_BEEF, 0);
    assert_eq!(a.eoi, Some(Eoi { vector: 0x50, level_triggered: false }));
    assert_eq!(v.ppr(), 0x30);
    assert_eq!(v.pending(), None);
    let a = v.mmio_write(offset::EOI, 0, 0);
    assert_eq!(a.eoi, Some(Eoi { vector: 0x30, level_triggered: false }));
    assert_eq!(v.ppr(), 0);
    assert_eq!(v.pending(), Some(0x35));
    v.ack(0x35);
    let _ = v.mmio_write(offset::EOI, 0, 0);
    // An EOI with nothing in service does nothing.
    assert_eq!(v.mmio_write(offset::EOI, 0, 0).eoi, None);
    assert!(isr_vectors(&v).is_empty());
}

#[test]
fn ppr_is_the_tpr_or_the_in_service_class() {
    let mut v = xapic(0);
    take(&mut v, 0x57);
    let _ = v.mmio_write(offset::TPR, 0x67, 0);
    assert_eq!(v.ppr(), 0x67);
    let _ = v.mmio_write(offset::TPR, 0x5F, 0);
    assert_eq!(v.ppr(), 0x5F);
    let _ = v.mmio_write(offset::TPR, 0x47, 0);
    assert_eq!(v.ppr(), 0x50);
}

#[test]
fn ack_of_a_vector_that_is_not_pending_is_ignored() {
    let mut v = xapic(0);
    v.ack(0x80);
    assert!(isr_vectors(&v).is_empty());
    assert_eq!(v.ppr(), 0);
}

#[test]
fn level_triggered_interrupts_set_tmr_and_report_their_eoi() {
    let mut v = xapic(0);
    assert!(v.accept(0x60, true));
    assert!(tmr_has(&v, 0x60));
    v.ack(0x60);
    let a = v.mmio_write(offset::EOI, 0, 0);
    assert_eq!(a.eoi, Some(Eoi { vector: 0x60, level_triggered: true }));
    // Acceptance as edge clears the TMR bit.
    assert!(v.accept(0x60, false));
    assert!(!tmr_has(&v, 0x60));
    v.ack(0x60);
    assert_eq!(v.mmio_write(offset::EOI, 0, 0).eoi, Some(Eoi { vector: 0x60, level_triggered: false }));
}

#[test]
fn a_disabled_apic_accepts_nothing() {
    let mut v = xapic(0);
    assert!(v.accept(0x40, false));
    let a = v.mmio_write(offset::SVR, 0xFF, 0);
    assert!(!a.became_enabled);
    assert!(!v.is_enabled());
    assert!(!v.accept(0x41, false));
    assert!(!irr_has(&v, 0x41));
    // What was pending stays in the IRR but is not delivered...
    assert!(irr_has(&v, 0x40));
    assert_eq!(v.pending(), None);
    // ...until the APIC is software-enabled again.
    let a = v.mmio_write(offset::SVR, SVR_ON, 0);
    assert!(a.became_enabled);
    assert_eq!(v.pending(), Some(0x40));
    assert!(!v.mmio_write(offset::SVR, SVR_ON, 0).became_enabled);
    // Hardware disable drops everything.
    let _ = v.write_apic_base(XAPIC_BASE).expect("disable");
    assert!(!v.accept(0x42, false));
    assert_eq!(v.pending(), None);
}

#[test]
fn software_disable_masks_every_lvt_and_keeps_them_masked() {
    let mut v = xapic(0);
    for off in [offset::LVT_TIMER, offset::LVT_LINT0, offset::LVT_ERROR] {
        let _ = v.mmio_write(off, 0x20, 0);
        assert_eq!(v.mmio_read(off, 0), 0x20);
    }
    let _ = v.mmio_write(offset::SVR, 0x0FF, 0);
    for off in (offset::LVT_TIMER..=offset::LVT_ERROR).step_by(16) {
        assert_ne!(v.mmio_read(off, 0) & 0x1_0000, 0, "offset {off:#x}");
    }
    let _ = v.mmio_write(offset::LVT_TIMER, 0x20, 0);
    assert_eq!(v.mmio_read(offset::LVT_TIMER, 0), 0x1_0020);
    // Re-enabling does not unmask them; the guest must.
    let _ = v.mmio_write(offset::SVR, SVR_ON, 0);
    assert_eq!(v.mmio_read(offset::LVT_TIMER, 0), 0x1_0020);
    let _ = v.mmio_write(offset::LVT_TIMER, 0x20, 0);
    assert_eq!(v.mmio_read(offset::LVT_TIMER, 0), 0x20);
}

// ----- ESR ------------------------------------------------------------------

#[test]
fn esr_latches_errors_on_write() {
    let mut v = xapic(0);
    assert!(!v.accept(0x05, false));
    assert!(!irr_has(&v, 0x05));
    assert_eq!(v.mmio_read(offset::ESR, 0), 0, "not visible before an ESR write");
    let _ = v.mmio_write(offset::ESR, 0, 0);
    assert_eq!(v.mmio_read(offset::ESR, 0), 0x40, "received illegal vector");
    let _ = v.mmio_write(offset::ESR, 0xFFFF_FFFF, 0);
    assert_eq!(v.mmio_read(offset::ESR, 0), 0, "the write cleared it");

    // Sending a fixed IPI with an illegal vector fails.
    assert_eq!(send(&mut v, 0, 0x0000_000F), None);
    let _ = v.mmio_write(offset::ESR, 0, 0);
    assert_eq!(v.mmio_read(offset::ESR, 0), 0x20, "send illegal vector");
}

#[test]
fn errors_raise_the_lvt_error_interrupt() {
    let mut v = xapic(0);
    let _ = v.mmio_write(offset::LVT_ERROR, 0xE0, 0);
    assert!(!v.accept(0x01, false));
    assert_eq!(v.pending(), Some(0xE0));
    // The same error again, not yet cleared by an ESR write: no new interrupt.
    v.ack(0xE0);
    let _ = v.mmio_write(offset::EOI, 0, 0);
    assert!(!v.accept(0x02, false));
    assert_eq!(v.pending(), None);
    // An illegal error vector only records itself.
    let _ = v.mmio_write(offset::ESR, 0, 0);
    let _ = v.mmio_write(offset::ESR, 0, 0);
    let _ = v.mmio_write(offset::LVT_ERROR, 0x03, 0);
    assert_eq!(send(&mut v, 0, 0x0000_0004), None);
    let _ = v.mmio_write(offset::ESR, 0, 0);
    assert_eq!(v.mmio_read(offset::ESR, 0), 0x60);
    assert_eq!(v.pending(), None);
}

#[test]
fn x2apic_self_ipi_with_an_illegal_vector_is_a_send_error() {
    let mut v = x2apic(0);
    assert_eq!(v.msr_write(0x83F, 0x0E, 0).map(|a| a.ipi), Ok(None));
    let _ = v.msr_write(0x828, 0, 0).expect("ESR");
    assert_eq!(v.msr_read(0x828, 0), Ok(0x20));
}

// ----- timer ----------------------------------------------------------------

#[test]
fn one_shot_timer() {
    let mut v = xapic(0);
    let _ = v.mmio_write(offset::TIMER_DIVIDE, 0xB, 0); // divide by 1: 10 ns per tick
    let a = v.mmio_write(offset::LVT_TIMER, 0x40, 0);
    assert!(!a.timer_changed, "no count yet");
    let a = v.mmio_write(offset::TIMER_INITIAL, 1000, 100);
    assert!(a.timer_changed);
    assert_eq!(v.timer_deadline(), Some(100 + 1000 * BUS_CYCLE_NS));
    assert_eq!(v.mmio_read(offset::TIMER_CURRENT, 100), 1000);
    assert_eq!(v.mmio_read(offset::TIMER_CURRENT, 5100), 500);
    assert!(!v.on_timer(10_099));
    assert_eq!(v.pending(), None);
    assert!(v.on_timer(10_100));
    assert_eq!(v.pending(), Some(0x40));
    assert_eq!(v.timer_deadline(), None);
    assert_eq!(v.mmio_read(offset::TIMER_CURRENT, 20_000), 0);
    assert_eq!(v.mmio_read(offset::TIMER_INITIAL, 20_000), 1000);
}

#[test]
fn periodic_timer_with_every_divide_value() {
    let table = [(0x0, 2), (0x1, 4), (0x2, 8), (0x3, 16), (0x8, 32), (0x9, 64), (0xA, 128), (0xB, 1)];
    for (config, divisor) in table {
        let mut v = xapic(0);
        let _ = v.mmio_write(offset::TIMER_DIVIDE, config, 0);
        let _ = v.mmio_write(offset::LVT_TIMER, 0x2_0050, 0);
        let t0 = 1_000;
        let _ = v.mmio_write(offset::TIMER_INITIAL, 100, t0);
        let period = 100 * divisor * BUS_CYCLE_NS;
        assert_eq!(v.timer_deadline(), Some(t0 + period), "divide {config:#x}");
        assert_eq!(v.mmio_read(offset::TIMER_CURRENT, t0 + period / 2), 50);
        for n in 1..=3 {
            assert!(v.on_timer(t0 + n * period));
            assert_eq!(v.pending(), Some(0x50));
            v.ack(0x50);
            let _ = v.mmio_write(offset::EOI, 0, t0 + n * period);
            assert_eq!(v.timer_deadline(), Some(t0 + (n + 1) * period));
            assert_eq!(v.mmio_read(offset::TIMER_CURRENT, t0 + n * period), 100);
        }
    }
}

#[test]
fn current_count_decreases_with_time() {
    let mut v = xapic(0);
    let _ = v.mmio_write(offset::TIMER_INITIAL, 1_000_000, 0);
    let mut last = u32::MAX;
    for now in (0..=21_000_000).step_by(333_333) {
        let count = v.mmio_read(offset::TIMER_CURRENT, now);
        assert!(count <= last, "count went up at {now}");
        last = count;
    }
    assert_eq!(last, 0, "a one-shot count stops at 0");
}

#[test]
fn masked_timer_counts_but_does_not_deliver() {
    let mut v = xapic(0);
    let _ = v.mmio_write(offset::TIMER_DIVIDE, 0xB, 0);
    let _ = v.mmio_write(offset::LVT_TIMER, 0x1_0040, 0);
    let a = v.mmio_write(offset::TIMER_INITIAL, 10, 0);
    assert!(!a.timer_changed, "nothing to arm for a masked timer");
    assert_eq!(v.timer_deadline(), None);
    assert_eq!(v.mmio_read(offset::TIMER_CURRENT, 50), 5);
    assert!(!v.on_timer(1_000));
    assert_eq!(v.pending(), None);
    assert_eq!(v.mmio_read(offset::TIMER_CURRENT, 1_000), 0);

    // A periodic timer that expired while masked does not fire on unmask.
    let _ = v.mmio_write(offset::LVT_TIMER, 0x3_0040, 0);
    let _ = v.mmio_write(offset::TIMER_INITIAL, 100, 0); // 1000 ns period
    let a = v.mmio_write(offset::LVT_TIMER, 0x2_0040, 5_500);
    assert!(a.timer_changed);
    assert_eq!(v.timer_deadline(), Some(6_000));
    assert_eq!(v.pending(), None);
    assert!(v.on_timer(6_000));
    assert_eq!(v.pending(), Some(0x40));
}

#[test]
fn late_register_writes_see_the_expired_timer() {
    let mut v = xapic(0);
    let _ = v.mmio_write(offset::TIMER_DIVIDE, 0xB, 0);
    let _ = v.mmio_write(offset::LVT_TIMER, 0x40, 0);
    let _ = v.mmio_write(offset::TIMER_INITIAL, 10, 0);
    // keel has not called on_timer yet when the guest touches the TPR.
    let a = v.mmio_write(offset::TPR, 0, 500);
    assert!(a.timer_changed);
    assert_eq!(v.timer_deadline(), None);
    assert_eq!(v.pending(), Some(0x40));
}

#[test]
fn zero_initial_count_stops_the_timer() {
    let mut v = xapic(0);
    let _ = v.mmio_write(offset::LVT_TIMER, 0x2_0040, 0);
    let _ = v.mmio_write(offset::TIMER_INITIAL, 10, 0);
    assert!(v.timer_deadline().is_some());
    let a = v.mmio_write(offset::TIMER_INITIAL, 0, 10);
    assert!(a.timer_changed);
    assert_eq!(v.timer_deadline(), None);
    assert!(!v.on_timer(u64::MAX));
}

#[test]
fn tsc_deadline_mode_is_not_offered() {
    let mut v = xapic(0);
    let _ = v.mmio_write(offset::LVT_TIMER, 0x4_0040, 0);
    assert_eq!(v.mmio_read(offset::LVT_TIMER, 0), 0x40);
    let mut v = x2apic(0);
    assert_eq!(v.msr_write(0x832, 0x4_0040, 0), Err(Fault::Gp));
}

// ----- IPIs -------------------------------------------------------------------

fn ipi(vector: u8, delivery: Delivery, dest: Dest, level: bool, trigger_level: bool) -> Ipi {
    Ipi { vector, delivery, dest, level, trigger_level }
}

#[test]
fn xapic_icr_encodes_every_delivery_mode_and_shorthand() {
    let mut v = xapic(0);
    let cases = [
        (0x0400_0000, 0x0000_C500, Some(ipi(0, Delivery::Init, Dest::Physical(4), true, true))),
        (0x0400_0000, 0x0000_8500, Some(ipi(0, Delivery::Init, Dest::Physical(4), false, true))),
        (0x0400_0000, 0x0000_069A, Some(ipi(0x9A, Delivery::Startup, Dest::Physical(4), false, false))),
        (0x0400_0000, 0x0000_0400, Some(ipi(0, Delivery::Nmi, Dest::Physical(4), false, false))),
        (0x0400_0000, 0x0000_0200, Some(ipi(0, Delivery::Smi, Dest::Physical(4), false, false))),
        (0x0400_0000, 0x0000_0131, Some(ipi(0x31, Delivery::LowestPrio, Dest::Physical(4), false, false))),
        (0x0300_0000, 0x0000_0830, Some(ipi(0x30, Delivery::Fixed, Dest::Logical(3), false, false))),
        (0xFF00_0000, 0x0000_0030, Some(ipi(0x30, Delivery::Fixed, Dest::Physical(0xFF), false, false))),
        (0, 0x0004_40F6, Some(ipi(0xF6, Delivery::Fixed, Dest::Self_, true, false))),
        (0, 0x0008_4030, Some(ipi(0x30, Delivery::Fixed, Dest::AllIncludingSelf, true, false))),
        (0, 0x000C_00F8, Some(ipi(0xF8, Delivery::Fixed, Dest::AllButSelf, false, false))),
        (0, 0x000C_0400, Some(ipi(0, Delivery::Nmi, Dest::AllButSelf, false, false))),
        (0x0400_0000, 0x0000_0330, None),
        (0x0400_0000, 0x0000_0730, None),
    ];
    for (high, low, expected) in cases {
        assert_eq!(send(&mut v, high, low), expected, "ICR {high:#010x}:{low:#010x}");
    }
    let _ = v.mmio_write(offset::ESR, 0, 0);
    assert_eq!(v.mmio_read(offset::ESR, 0), 0, "reserved modes are not send errors");
}

#[test]
fn x2apic_icr_is_one_64_bit_write() {
    let mut v = x2apic(0);
    let a = v.msr_write(0x830, 0x0000_0102_0000_4030, 0).expect("ICR");
    assert_eq!(a.ipi, Some(ipi(0x30, Delivery::Fixed, Dest::Physical(0x102), true, false)));
    let a = v.msr_write(0x830, 0xFFFF_FFFF_0000_00F8, 0).expect("ICR");
    assert_eq!(a.ipi, Some(ipi(0xF8, Delivery::Fixed, Dest::Physical(u32::MAX), false, false)));
    let a = v.msr_write(0x830, 0x0001_0004_0000_0830, 0).expect("ICR");
    assert_eq!(a.ipi, Some(ipi(0x30, Delivery::Fixed, Dest::Logical(0x0001_0004), false, false)));
    let a = v.msr_write(0x830, 0x0000_0006_0000_4500, 0).expect("ICR");
    assert_eq!(a.ipi, Some(ipi(0, Delivery::Init, Dest::Physical(6), true, false)));
    let a = v.msr_write(0x83F, 0xF6, 0).expect("SELF_IPI");
    assert_eq!(a.ipi, Some(ipi(0xF6, Delivery::Fixed, Dest::Self_, true, false)));
}

/// A small domain: routes an IPI from vCPU `from` like keel would.
fn route(cpus: &mut [Vlapic], from: usize, ipi: &Ipi) -> Vec<(usize, Received)> {
    let sender = cpus[from].apic_id();
    let mut out = Vec::new();
    for (i, cpu) in cpus.iter_mut().enumerate() {
        if ipi.targets(sender, cpu) {
            out.push((i, cpu.deliver(ipi)));
        }
    }
    out
}

#[test]
fn fixed_ipis_reach_their_destinations() {
    let mut cpus = [xapic(0), xapic(2), xapic(4)];
    let ipi = send(&mut cpus[0], 0, 0x000C_00F8).expect("all-but-self");
    assert_eq!(route(&mut cpus, 0, &ipi), [(1, Received::Interrupt), (2, Received::Interrupt)]);
    assert_eq!(cpus[1].pending(), Some(0xF8));
    assert_eq!(cpus[0].pending(), None);

    let ipi = send(&mut cpus[0], 0, 0x0004_00F6).expect("self");
    assert_eq!(route(&mut cpus, 0, &ipi), [(0, Received::Interrupt)]);
    assert_eq!(cpus[0].pending(), Some(0xF6));

    // A software-disabled destination drops fixed IPIs but still takes NMIs.
    let _ = cpus[2].mmio_write(offset::SVR, 0xFF, 0);
    let ipi = send(&mut cpus[0], 0x0400_0000, 0x0000_0031).expect("fixed");
    assert_eq!(route(&mut cpus, 0, &ipi), [(2, Received::Ignored)]);
    let ipi = send(&mut cpus[0], 0x0400_0000, 0x0000_0400).expect("NMI");
    assert_eq!(route(&mut cpus, 0, &ipi), [(2, Received::Nmi)]);
    let ipi = send(&mut cpus[0], 0x0400_0000, 0x0000_0200).expect("SMI");
    assert_eq!(route(&mut cpus, 0, &ipi), [(2, Received::Ignored)]);
}

#[test]
fn a_level_triggered_fixed_message_sets_the_tmr() {
    let mut v = xapic(0);
    let m = ipi(0x70, Delivery::Fixed, Dest::Physical(0), true, true);
    assert_eq!(v.deliver(&m), Received::Interrupt);
    assert!(tmr_has(&v, 0x70));
    let m = ipi(0x71, Delivery::ExtInt, Dest::Physical(0), true, false);
    assert_eq!(v.deliver(&m), Received::Ignored);
}

// ----- INIT and STARTUP -------------------------------------------------------

#[test]
fn init_sipi_sipi_starts_an_ap_once() {
    let mut cpus = [xapic(0), Vlapic::for_vcpu(1)];
    assert!(cpus[1].waiting_for_sipi());
    // Linux's wakeup_secondary_cpu_via_init: INIT assert, INIT de-assert,
    // then two STARTUPs.
    let init = send(&mut cpus[0], 0x0200_0000, 0x0000_C500).expect("INIT");
    assert_eq!(route(&mut cpus, 0, &init), [(1, Received::Init)]);
    let deassert = send(&mut cpus[0], 0x0200_0000, 0x0000_8500).expect("INIT de-assert");
    assert_eq!(route(&mut cpus, 0, &deassert), [(1, Received::Ignored)]);
    let sipi = send(&mut cpus[0], 0x0200_0000, 0x0000_069A).expect("STARTUP");
    assert_eq!(route(&mut cpus, 0, &sipi), [(1, Received::Startup(0x9A))]);
    assert!(!cpus[1].waiting_for_sipi());
    assert_eq!(route(&mut cpus, 0, &sipi), [(1, Received::Ignored)], "second STARTUP");
    // A never-INITed AP (Xen starts these on the first STARTUP too).
    let mut fresh = Vlapic::for_vcpu(5);
    assert_eq!(fresh.deliver(&sipi), Received::Startup(0x9A));
}

#[test]
fn init_resets_registers_but_not_the_id_or_base() {
    let mut v = xapic(6);
    let base = v.apic_base();
    let _ = v.mmio_write(offset::TPR, 0x20, 0);
    let _ = v.mmio_write(offset::LDR, 0x0100_0000, 0);
    let _ = v.mmio_write(offset::DFR, 0x0FFF_FFFF, 0);
    let _ = v.mmio_write(offset::LVT_TIMER, 0x40, 0);
    let _ = v.mmio_write(offset::TIMER_INITIAL, 1000, 0);
    take(&mut v, 0x80);
    assert!(v.accept(0x90, true));
    let init = ipi(0, Delivery::Init, Dest::Physical(6), true, true);
    assert_eq!(v.deliver(&init), Received::Init);
    assert!(v.waiting_for_sipi());
    let fresh = Vlapic::new(6, false);
    assert_eq!(v, fresh);
    assert_eq!(v.apic_base(), base);
    assert_eq!(v.mmio_read(offset::ID, 0), 0x0600_0000);
    assert_eq!(v.timer_deadline(), None);
}

#[test]
fn init_keeps_x2apic_mode_and_its_ldr() {
    let mut v = x2apic(0x21);
    v.init();
    assert_eq!(v.mode(), Mode::X2Apic);
    assert_eq!(v.msr_read(0x802, 0), Ok(0x21));
    assert_eq!(v.msr_read(0x80D, 0), Ok(0x0002_0002));
    assert_eq!(v.msr_read(0x80F, 0), Ok(0xFF));
}

#[test]
fn a_hardware_disabled_apic_ignores_even_init() {
    let mut v = xapic(2);
    let _ = v.write_apic_base(XAPIC_BASE).expect("disable");
    let init = ipi(0, Delivery::Init, Dest::Physical(2), true, true);
    assert_eq!(v.deliver(&init), Received::Ignored);
    assert_eq!(v.deliver(&ipi(0, Delivery::Nmi, Dest::Physical(2), true, false)), Received::Ignored);
}

// ----- IA32_APIC_BASE ---------------------------------------------------------

#[test]
fn xapic_to_x2apic_keeps_registers() {
    let mut v = xapic(0x10);
    let _ = v.mmio_write(offset::TPR, 0x20, 0);
    take(&mut v, 0x44);
    let a = v.write_apic_base(XAPIC_BASE | BASE_EN | BASE_EXTD).expect("to x2APIC");
    assert_eq!(a, Actions::default());
    assert_eq!(v.mode(), Mode::X2Apic);
    assert_eq!(v.msr_read(0x802, 0), Ok(0x10));
    assert_eq!(v.msr_read(0x80D, 0), Ok(0x0001_0001));
    assert_eq!(v.msr_read(0x808, 0), Ok(0x20));
    assert_eq!(v.msr_read(0x80A, 0), Ok(0x40));
    assert_eq!(v.msr_read(0x80F, 0), Ok(0x1FF));
}

#[test]
fn illegal_apic_base_writes_fault_and_change_nothing() {
    let x2 = x2apic(0);
    let mut v = x2.clone();
    // x2APIC -> xAPIC.
    assert_eq!(v.write_apic_base(XAPIC_BASE | BASE_EN), Err(Fault::Gp));
    // EXTD without EN.
    assert_eq!(v.write_apic_base(XAPIC_BASE | BASE_EXTD), Err(Fault::Gp));
    assert_eq!(v, x2);

    let xa = xapic(0);
    let mut v = xa.clone();
    for bad in [
        XAPIC_BASE | BASE_EN | 1 << 9,
        XAPIC_BASE | BASE_EN | 1,
        XAPIC_BASE | BASE_EN | 1 << 52,
        XAPIC_BASE | BASE_EN | 1 << 63,
        0xFED0_0000 | BASE_EN,
    ] {
        assert_eq!(v.write_apic_base(bad), Err(Fault::Gp), "{bad:#x}");
    }
    assert_eq!(v, xa);

    // Disabled -> x2APIC.
    let _ = v.write_apic_base(XAPIC_BASE).expect("disable");
    assert_eq!(v.write_apic_base(XAPIC_BASE | BASE_EN | BASE_EXTD), Err(Fault::Gp));
    assert_eq!(v.mode(), Mode::Disabled);
}

#[test]
fn disable_and_re_enable_resets() {
    let mut v = x2apic(4);
    let _ = v.msr_write(0x808, 0x30, 0).expect("TPR");
    let _ = v.msr_write(0x832, 0x40, 0).expect("LVT timer");
    let _ = v.msr_write(0x838, 1000, 0).expect("TMICT");
    assert!(v.accept(0x80, false));
    assert!(v.timer_deadline().is_some());

    let a = v.write_apic_base(XAPIC_BASE | BASE_BSP).expect("disable");
    assert!(a.timer_changed);
    assert_eq!(v.mode(), Mode::Disabled);
    assert_eq!(v.apic_base(), XAPIC_BASE | BASE_BSP);
    assert_eq!(v.timer_deadline(), None);
    assert_eq!(v.pending(), None);

    let _ = v.write_apic_base(XAPIC_BASE | BASE_EN | BASE_BSP).expect("enable");
    assert_eq!(v.mode(), Mode::XApic);
    assert!(!v.is_enabled());
    let _ = v.mmio_write(offset::SVR, SVR_ON, 0);
    assert_eq!(v.tpr(), 0);
    assert_eq!(v.pending(), None);
    assert_eq!(v.mmio_read(offset::LVT_TIMER, 0), 0x1_0000);
    assert_eq!(v.mmio_read(offset::ID, 0), 0x0400_0000);
    // Now x2APIC is reachable again.
    assert!(v.write_apic_base(XAPIC_BASE | BASE_EN | BASE_BSP | BASE_EXTD).is_ok());
}

#[test]
fn rewriting_the_same_mode_keeps_state() {
    let mut v = xapic(0);
    assert!(v.accept(0x40, false));
    let _ = v.write_apic_base(XAPIC_BASE | BASE_EN).expect("drop BSP");
    assert_eq!(v.apic_base(), XAPIC_BASE | BASE_EN);
    assert_eq!(v.pending(), Some(0x40));
    let mut v = x2apic(0);
    assert!(v.accept(0x40, false));
    // In x2APIC mode the window address is not checked.
    let _ = v.write_apic_base(0x1234_5000 | BASE_EN | BASE_EXTD).expect("x2APIC");
    assert_eq!(v.pending(), Some(0x40));
}

// ----- property tests ---------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    MmioRead(u32),
    MmioWrite(u32, u32),
    MsrRead(u32),
    MsrWrite(u32, u64),
    /// A write through the current mode's interface (or, if the flag is set,
    /// the other one): xAPIC offset, value, ICR destination for x2APIC.
    Write(u32, u32, u32, bool),
    ApicBase(u64),
    Accept(u8, bool),
    Inject,
    Ack(u8),
    Timer,
    Wait(u64),
    SetTpr(u8),
    Deliver(u32, u32),
    Init,
}

/// A register write a guest would plausibly make: (xAPIC offset, value).
fn meaningful_write() -> impl Strategy<Value = (u32, u32)> {
    prop_oneof![
        3 => Just((offset::SVR, SVR_ON)),
        1 => any::<u32>().prop_map(|v| (offset::SVR, v)),
        1 => any::<u8>().prop_map(|v| (offset::TPR, u32::from(v))),
        3 => Just((offset::EOI, 0)),
        1 => Just((offset::ESR, 0)),
        3 => (any::<u8>(), any::<bool>(), 0u32..8).prop_map(|(vector, periodic, masked)| {
            // Mostly unmasked, one-shot or periodic.
            let mode = if periodic { 1 << 17 } else { 0 };
            let mask = if masked == 0 { 1 << 16 } else { 0 };
            (offset::LVT_TIMER, mode | mask | u32::from(vector))
        }),
        3 => (1u32..20_000).prop_map(|v| (offset::TIMER_INITIAL, v)),
        1 => Just((offset::TIMER_INITIAL, 0)),
        1 => (0u32..16).prop_map(|v| (offset::TIMER_DIVIDE, v)),
        1 => any::<u8>().prop_map(|v| (offset::LVT_ERROR, u32::from(v))),
        1 => any::<u32>().prop_map(|v| (offset::LDR, v)),
        1 => prop_oneof![Just(0u32), Just(u32::MAX), any::<u32>()].prop_map(|v| (offset::DFR, v)),
        2 => any::<u32>().prop_map(|v| (offset::ICR_HIGH, v)),
        3 => any::<u32>().prop_map(|v| (offset::ICR_LOW, v & regs::ICR_VALID)),
        1 => any::<u8>().prop_map(|v| (offset::SELF_IPI, u32::from(v))),
        // Anything at all.
        2 => ((0u32..0x40).prop_map(|i| i * 16), any::<u32>()),
        1 => (any::<u32>(), any::<u32>()),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let bases = prop_oneof![
        Just(XAPIC_BASE | BASE_EN),
        Just(XAPIC_BASE | BASE_EN | BASE_EXTD),
        Just(XAPIC_BASE),
        Just(XAPIC_BASE | BASE_EN | BASE_BSP),
        any::<u64>(),
    ];
    prop_oneof![
        1 => (0u32..0x41).prop_map(|i| Op::MmioRead(i * 16)),
        1 => (0x7F0u32..0x850).prop_map(Op::MsrRead),
        12 => (meaningful_write(), any::<u32>(), 0u32..8)
            .prop_map(|((off, value), dest, wrong)| Op::Write(off, value, dest, wrong == 0)),
        1 => (any::<u32>(), any::<u32>()).prop_map(|(off, value)| Op::MmioWrite(off, value)),
        1 => (0x7F0u32..0x850, any::<u64>()).prop_map(|(m, v)| Op::MsrWrite(m, v)),
        1 => bases.prop_map(Op::ApicBase),
        4 => (any::<u8>(), any::<bool>()).prop_map(|(v, l)| Op::Accept(v, l)),
        4 => Just(Op::Inject),
        1 => any::<u8>().prop_map(Op::Ack),
        4 => Just(Op::Timer),
        3 => prop_oneof![0u64..1_000, 0u64..1_000_000, 0u64..50_000_000].prop_map(Op::Wait),
        1 => any::<u8>().prop_map(Op::SetTpr),
        1 => (any::<u32>(), any::<u32>()).prop_map(|(l, d)| Op::Deliver(l, d)),
        1 => Just(Op::Init),
    ]
}

/// The invariants that hold after any sequence of guest and keel activity.
fn check(v: &Vlapic, now: Ns) -> Result<(), TestCaseError> {
    let ppr = v.ppr();
    let tpr = v.tpr();
    let isrv = v.isr.highest();
    // PPR is the TPR, or the class of the highest in-service vector when
    // that class is above the TPR's.
    match isrv {
        Some(isrv) if isrv & 0xF0 > tpr & 0xF0 => prop_assert_eq!(ppr, isrv & 0xF0),
        _ => prop_assert_eq!(ppr, tpr),
    }
    prop_assert!(ppr >= tpr);
    // pending() is the highest IRR vector, above the PPR's class, or nothing.
    match v.pending() {
        Some(vector) => {
            prop_assert!(v.is_enabled());
            prop_assert_eq!(Some(vector), v.irr.highest());
            prop_assert!(vector >> 4 > ppr >> 4);
        }
        None => prop_assert!(!v.is_enabled() || v.irr.highest().is_none_or(|h| h >> 4 <= ppr >> 4)),
    }
    // Vectors 0-15 never become pending, in service or level-triggered.
    for set in [&v.irr, &v.isr, &v.tmr] {
        prop_assert_eq!(set.word(0) & 0xFFFF, 0);
    }
    // Register shapes.
    prop_assert_eq!(v.dfr | regs::DFR_MODEL_MASK, u32::MAX);
    prop_assert_eq!(v.icr_low & !regs::ICR_VALID, 0);
    prop_assert_eq!(v.svr & !regs::SVR_VALID, 0);
    if v.svr & regs::SVR_ENABLE == 0 {
        prop_assert!(v.lvt.iter().all(|l| l & regs::LVT_MASKED != 0));
    }
    // Mode.
    prop_assert!(v.apic_base() & BASE_EXTD == 0 || v.apic_base() & BASE_EN != 0);
    match v.mode() {
        Mode::Disabled => {
            prop_assert!(v.irr.is_empty() && v.isr.is_empty());
            prop_assert_eq!(v.timer_deadline(), None);
            prop_assert_eq!(v.mmio_read(offset::VERSION, now), 0);
            prop_assert_eq!(v.msr_read(0x803, now), Err(Fault::Gp));
        }
        Mode::XApic => {
            prop_assert_eq!(v.apic_base() & regs::BASE_ADDR_MASK, XAPIC_BASE);
            prop_assert_eq!(v.mmio_read(offset::PPR, now), u32::from(ppr));
            prop_assert_eq!(v.msr_read(0x803, now), Err(Fault::Gp));
        }
        Mode::X2Apic => {
            prop_assert_eq!(v.msr_read(0x80D, now), Ok(u64::from(x2apic_ldr(v.apic_id()))));
            prop_assert_eq!(v.msr_read(0x80A, now), Ok(u64::from(ppr)));
            prop_assert_eq!(v.mmio_read(offset::VERSION, now), 0);
        }
    }
    // Timer.
    prop_assert!(v.timer.current(now, v.timer_periodic()) <= v.timer.initial());
    if v.timer.deadline().is_some() {
        prop_assert_ne!(v.timer.initial(), 0);
    }
    if v.timer_deadline().is_some() {
        prop_assert_eq!(v.lvt[Lvt::Timer.index()] & regs::LVT_MASKED, 0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn random_activity_keeps_the_invariants(
        apic_id in prop_oneof![0u32..16, any::<u32>()],
        bsp in any::<bool>(),
        enable in prop_oneof![3 => Just(true), 1 => Just(false)],
        x2 in any::<bool>(),
        ops in proptest::collection::vec(op(), 0..120),
    ) {
        let mut v = Vlapic::new(apic_id, bsp);
        if enable {
            let _ = v.mmio_write(offset::SVR, SVR_ON, 0);
        }
        if x2 {
            let _ = v.write_apic_base(v.apic_base() | BASE_EXTD).expect("xAPIC to x2APIC");
        }
        let mut now: Ns = 0;
        check(&v, now)?;
        for op in ops {
            let deadline = v.timer_deadline();
            let actions = match op {
                Op::MmioRead(off) => {
                    let _ = v.mmio_read(off, now);
                    None
                }
                Op::MmioWrite(off, value) => Some(v.mmio_write(off, value, now)),
                Op::MsrRead(msr) => {
                    let _ = v.msr_read(msr, now);
                    None
                }
                Op::Write(off, value, _, wrong) if (v.mode() == Mode::X2Apic) == wrong => {
                    Some(v.mmio_write(off, value, now))
                }
                Op::Write(off, value, dest, _) => {
                    let msr = x2apic_msr(off & 0xFF0);
                    let value = if msr == 0x830 { u64::from(dest) << 32 | u64::from(value) } else { u64::from(value) };
                    let before = v.clone();
                    match v.msr_write(msr, value, now) {
                        Ok(actions) => Some(actions),
                        Err(Fault::Gp) => {
                            prop_assert_eq!(&v, &before, "a #GP changes nothing");
                            None
                        }
                    }
                }
                Op::MsrWrite(msr, value) => {
                    let before = v.clone();
                    match v.msr_write(msr, value, now) {
                        Ok(actions) => Some(actions),
                        Err(Fault::Gp) => {
                            prop_assert_eq!(&v, &before, "a #GP changes nothing");
                            None
                        }
                    }
                }
                Op::ApicBase(value) => {
                    let before = v.clone();
                    match v.write_apic_base(value) {
                        Ok(actions) => Some(actions),
                        Err(Fault::Gp) => {
                            prop_assert_eq!(&v, &before, "a #GP changes nothing");
                            None
                        }
                    }
                }
                Op::Accept(vector, level) => {
                    let accepted = v.accept(vector, level);
                    prop_assert_eq!(accepted, v.is_enabled() && vector >= 16);
                    if accepted {
                        prop_assert!(v.irr.contains(vector));
                        prop_assert_eq!(v.tmr.contains(vector), level);
                    }
                    None
                }
                Op::Inject => {
                    if let Some(vector) = v.pending() {
                        v.ack(vector);
                        prop_assert!(v.isr.contains(vector));
                        prop_assert!(v.ppr() >> 4 >= vector >> 4);
                    }
                    None
                }
                Op::Ack(vector) => {
                    v.ack(vector);
                    None
                }
                Op::Timer => {
                    if let Some(deadline) = deadline {
                        now = now.max(deadline);
                        let _ = v.on_timer(now);
                        prop_assert!(v.timer_deadline().is_none_or(|d| d > now));
                    }
                    None
                }
                Op::Wait(ns) => {
                    now += ns;
                    None
                }
                Op::SetTpr(tpr) => {
                    v.set_tpr(tpr);
                    None
                }
                Op::Deliver(low, dest) => {
                    if let Some(ipi) = Ipi::from_icr(low & regs::ICR_VALID, dest) {
                        let received = v.deliver(&ipi);
                        if received == Received::Init {
                            prop_assert!(v.waiting_for_sipi());
                            prop_assert_eq!(v.timer_deadline(), None);
                        }
                        if let Received::Startup(vector) = received {
                            prop_assert_eq!(vector, ipi.vector);
                            prop_assert!(!v.waiting_for_sipi());
                        }
                    }
                    None
                }
                Op::Init => {
                    v.init();
                    None
                }
            };
            if let Some(actions) = actions {
                prop_assert_eq!(actions.timer_changed, v.timer_deadline() != deadline);
                if actions.became_enabled {
                    prop_assert!(v.is_enabled());
                }
                if let Some(ipi) = actions.ipi {
                    if ipi.delivery.carries_vector() {
                        prop_assert!(ipi.vector >= 16);
                    }
                }
            }
            check(&v, now)?;
        }
    }

    #[test]
    fn destination_matching_is_consistent(
        ids in proptest::collection::vec(0u32..64, 1..8),
        sender in 0usize..8,
        x2 in any::<bool>(),
    ) {
        let cpus: Vec<Vlapic> = ids.iter().map(|&id| if x2 { x2apic(id) } else { xapic(id) }).collect();
        let sender_id = cpus[sender % cpus.len()].apic_id();
        let to = |dest| ipi(0x40, Delivery::Fixed, dest, true, false);
        let broadcast = if x2 { u32::MAX } else { 0xFF };
        for cpu in &cpus {
            let me = cpu.apic_id() == sender_id;
            prop_assert!(to(Dest::Physical(cpu.apic_id())).targets(sender_id, cpu));
            prop_assert!(to(Dest::Physical(broadcast)).targets(sender_id, cpu));
            prop_assert!(to(Dest::AllIncludingSelf).targets(sender_id, cpu));
            prop_assert_eq!(to(Dest::Self_).targets(sender_id, cpu), me);
            prop_assert_eq!(to(Dest::AllButSelf).targets(sender_id, cpu), !me);
            if x2 {
                prop_assert!(to(Dest::Logical(cpu.ldr())).targets(sender_id, cpu));
            }
        }
    }
}
