//! [`Vlapic`]: the local APIC state of one guest vCPU, and every guest-visible
//! rule about it.
//!
//! What is modelled:
//!
//! * `IA32_APIC_BASE` and the disabled / xAPIC / x2APIC modes with the
//!   architectural transitions (SDM vol. 3 §11.12.5); disabling and
//!   re-enabling resets the APIC.
//! * Every register of a 6-LVT local APIC, through xAPIC MMIO and x2APIC
//!   MSRs, with each interface's access rules: in xAPIC mode reserved bits
//!   and read-only registers ignore writes and unknown offsets read 0; in
//!   x2APIC mode those raise #GP (SDM §11.12.1.2-3).
//! * Interrupt acceptance and priority: IRR, ISR, TMR, TPR, PPR, EOI.
//! * IPIs (ICR, x2APIC `SELF_IPI`), INIT and STARTUP.
//! * ESR with its write-then-read latch, and the LVT error interrupt for
//!   illegal vectors.
//! * The timer in one-shot and periodic mode ([`crate::timer`]).
//!
//! What is not: TSC-deadline mode, EOI-broadcast suppression, a CMCI LVT,
//! thermal and performance-counter interrupt sources, LINT0/LINT1 inputs
//! (PVH has no 8259 or I/O APIC), SMIs, and a movable xAPIC window. The APIC
//! ID is read-only in both modes (SDM §11.4.6 lets it be), which keeps every
//! vLAPIC's identity fixed for IPI routing. APR and RRD read 0, as on Xen and
//! KVM.

use crate::ipi::{x2apic_ldr, Delivery, Dest, Ipi};
use crate::regs::{self, Lvt, Reg};
use crate::timer::Timer;
use crate::vectors::VectorSet;
use crate::Ns;

/// Which interface the local APIC presents (`IA32_APIC_BASE` EN and EXTD).
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub enum Mode {
    /// EN = 0: the vCPU behaves as if it had no APIC.
    Disabled,
    /// EN = 1, EXTD = 0: registers in the MMIO window at `0xFEE00000`.
    XApic,
    /// EN = 1, EXTD = 1: registers in MSRs `0x800..=0x8FF`.
    X2Apic,
}

/// The exception a guest access must raise.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub enum Fault {
    /// General protection fault, error code 0.
    Gp,
}

/// An EOI that retired an in-service vector.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub struct Eoi {
    /// The vector that left the ISR.
    pub vector: u8,
    /// Whether it was accepted level-triggered (its TMR bit is set): an I/O
    /// APIC that sent it would need to hear about the EOI.
    pub level_triggered: bool,
}

/// What keel must do after a register write.
#[must_use]
#[derive(Copy, Clone, Debug, Default, Eq, PartialEq)]
pub struct Actions {
    /// An IPI to route: see [`Ipi::targets`] and [`Vlapic::deliver`].
    pub ipi: Option<Ipi>,
    /// An EOI retired this vector.
    pub eoi: Option<Eoi>,
    /// [`Vlapic::timer_deadline`] may have changed: re-arm keel's timer.
    pub timer_changed: bool,
    /// The APIC went from not accepting interrupts to accepting them
    /// (software enable in the SVR). keel re-asserts sources that are still
    /// pending, such as the Xen upcall vector (xen-abi.md §3.4).
    pub became_enabled: bool,
}

/// What a vLAPIC made of an IPI handed to [`Vlapic::deliver`].
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub enum Received {
    /// Nothing happened (APIC disabled, illegal vector, INIT de-assert,
    /// STARTUP to a running vCPU, SMI, ExtINT).
    Ignored,
    /// The vector is in the IRR: kick the vCPU if it is halted or running
    /// elsewhere, so it checks [`Vlapic::pending`].
    Interrupt,
    /// Inject an NMI into the vCPU.
    Nmi,
    /// The APIC took an INIT reset: reset the vCPU, keep it from running
    /// until a STARTUP arrives, and re-read [`Vlapic::timer_deadline`].
    Init,
    /// Start the vCPU in real mode at `vector << 12` (CS selector
    /// `vector << 8`, IP 0), per xen-abi.md §3.8.
    Startup(u8),
}

/// The local APIC of one guest vCPU.
///
/// Deliberately not `Copy`: it is per-vCPU state that must not be duplicated
/// by accident.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Vlapic {
    /// The APIC ID (xAPIC mode shows its low 8 bits in ID bits 31:24).
    apic_id: u32,
    /// `IA32_APIC_BASE`.
    base: u64,
    tpr: u8,
    /// xAPIC LDR; x2APIC mode derives the LDR from the ID instead.
    ldr: u32,
    dfr: u32,
    svr: u32,
    irr: VectorSet,
    isr: VectorSet,
    tmr: VectorSet,
    /// ESR as the guest reads it: errors latched by the last ESR write.
    esr: u32,
    /// Errors detected since the last ESR write.
    esr_pending: u32,
    icr_low: u32,
    icr_high: u32,
    lvt: [u32; Lvt::COUNT],
    timer: Timer,
    /// The vCPU is held after INIT (or at power-on, for an AP) until a STARTUP.
    waiting_for_sipi: bool,
}

impl Vlapic {
    /// The power-on state of an APIC with ID `apic_id` (xen-abi.md §1.2):
    /// xAPIC mode at `0xFEE00000`, `IA32_APIC_BASE` `0xFEE00900` on the
    /// bootstrap processor (`bsp`) and `0xFEE00800` on the others, software
    /// disabled, every LVT masked. An AP waits for INIT/STARTUP.
    ///
    /// To start in x2APIC mode (xen-abi.md §1.2's simplification), follow
    /// with `write_apic_base(apic_base() | regs::BASE_EXTD)`.
    pub fn new(apic_id: u32, bsp: bool) -> Self {
        let mut base = regs::XAPIC_BASE | regs::BASE_EN;
        if bsp {
            base |= regs::BASE_BSP;
        }
        let mut vlapic = Self {
            apic_id,
            base,
            tpr: 0,
            ldr: 0,
            dfr: regs::DFR_FLAT,
            svr: regs::SVR_RESET,
            irr: VectorSet::new(),
            isr: VectorSet::new(),
            tmr: VectorSet::new(),
            esr: 0,
            esr_pending: 0,
            icr_low: 0,
            icr_high: 0,
            lvt: [regs::LVT_MASKED; Lvt::COUNT],
            timer: Timer::new(),
            waiting_for_sipi: !bsp,
        };
        vlapic.init();
        vlapic
    }

    /// The vLAPIC of vCPU `vcpu_id` with Xen's numbering: APIC ID
    /// `2 × vcpu_id`, vCPU 0 the bootstrap processor.
    pub fn for_vcpu(vcpu_id: u16) -> Self {
        Self::new(u32::from(vcpu_id) * 2, vcpu_id == 0)
    }

    /// The APIC ID.
    pub fn apic_id(&self) -> u32 {
        self.apic_id
    }

    /// The `IA32_APIC_BASE` MSR value.
    pub fn apic_base(&self) -> u64 {
        self.base
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        match (self.base & regs::BASE_EN != 0, self.base & regs::BASE_EXTD != 0) {
            (false, _) => Mode::Disabled,
            (true, false) => Mode::XApic,
            (true, true) => Mode::X2Apic,
        }
    }

    /// Whether the APIC accepts interrupts: hardware-enabled in
    /// `IA32_APIC_BASE` and software-enabled in the SVR.
    pub fn is_enabled(&self) -> bool {
        self.mode() != Mode::Disabled && self.svr & regs::SVR_ENABLE != 0
    }

    /// Whether the vCPU is held until a STARTUP IPI (after INIT, or an AP
    /// that was never started).
    pub fn waiting_for_sipi(&self) -> bool {
        self.waiting_for_sipi
    }

    /// The task priority register.
    pub fn tpr(&self) -> u8 {
        self.tpr
    }

    /// Sets the task priority register, for keel to mirror a CR8 write the
    /// hardware handled (SVM's V_TPR holds `TPR[7:4]`, i.e. CR8).
    pub fn set_tpr(&mut self, tpr: u8) {
        self.tpr = tpr;
    }

    /// The processor priority (SDM §11.8.3.1): the TPR, or the class of the
    /// highest in-service vector if that is higher.
    pub fn ppr(&self) -> u8 {
        let isrv = self.isr.highest().unwrap_or(0);
        if self.tpr & 0xF0 >= isrv & 0xF0 {
            self.tpr
        } else {
            isrv & 0xF0
        }
    }

    /// The LDR as the guest reads it.
    pub(crate) fn ldr(&self) -> u32 {
        if self.mode() == Mode::X2Apic {
            x2apic_ldr(self.apic_id)
        } else {
            self.ldr
        }
    }

    /// The DFR (meaningful in xAPIC mode only).
    pub(crate) fn dfr(&self) -> u32 {
        self.dfr
    }

    fn timer_periodic(&self) -> bool {
        self.lvt[Lvt::Timer.index()] & regs::LVT_TIMER_PERIODIC != 0
    }

    // ----- IA32_APIC_BASE -------------------------------------------------

    /// A guest write to `IA32_APIC_BASE`.
    ///
    /// #GP for reserved bits (bit 9, bits 7:0, bits 63:52), for EXTD without
    /// EN, for the illegal transitions x2APIC → xAPIC and disabled → x2APIC
    /// (SDM §11.12.5), and for moving the xAPIC window away from
    /// `0xFEE00000` (keel, like Xen, does not support that). Disabling resets
    /// the APIC; enabling from disabled starts from the reset state; xAPIC →
    /// x2APIC keeps every register, the ID and LDR now reading in their
    /// x2APIC forms.
    pub fn write_apic_base(&mut self, value: u64) -> Result<Actions, Fault> {
        let valid = regs::BASE_ADDR_MASK | regs::BASE_EN | regs::BASE_EXTD | regs::BASE_BSP;
        if value & !valid != 0 {
            return Err(Fault::Gp);
        }
        let new = match (value & regs::BASE_EN != 0, value & regs::BASE_EXTD != 0) {
            (false, false) => Mode::Disabled,
            (true, false) => Mode::XApic,
            (true, true) => Mode::X2Apic,
            (false, true) => return Err(Fault::Gp),
        };
        if new == Mode::XApic && value & regs::BASE_ADDR_MASK != regs::XAPIC_BASE {
            return Err(Fault::Gp);
        }
        let old = self.mode();
        match (old, new) {
            (Mode::X2Apic, Mode::XApic) | (Mode::Disabled, Mode::X2Apic) => return Err(Fault::Gp),
            _ => {}
        }
        let before = self.timer_deadline();
        if old != new && (old == Mode::Disabled || new == Mode::Disabled) {
            self.init();
        }
        self.base = value;
        Ok(Actions { timer_changed: self.timer_deadline() != before, ..Actions::default() })
    }

    // ----- register access -------------------------------------------------

    /// A 32-bit guest read of xAPIC register `offset` (from the window
    /// base) at `now`.
    ///
    /// Registers are 16-byte aligned; any other offset, a reserved register
    /// or a write-only one reads 0. Outside xAPIC mode the window is not the
    /// APIC's and this reads 0: keel should check [`Vlapic::mode`] and treat
    /// such accesses like any unbacked MMIO. Narrower accesses are keel's to
    /// emulate from the containing register.
    pub fn mmio_read(&self, offset: u32, now: Ns) -> u32 {
        if self.mode() != Mode::XApic {
            return 0;
        }
        match Reg::from_offset(offset) {
            Some(reg) if reg.in_xapic() => self.read(reg, now),
            _ => 0,
        }
    }

    /// A 32-bit guest write of `value` to xAPIC register `offset` at `now`.
    /// Writes to read-only, reserved or unaligned locations, and any write
    /// outside xAPIC mode, are ignored.
    pub fn mmio_write(&mut self, offset: u32, value: u32, now: Ns) -> Actions {
        if self.mode() != Mode::XApic {
            return Actions::default();
        }
        match Reg::from_offset(offset) {
            Some(reg) if reg.xapic_writable() => self.write(reg, value, now),
            _ => Actions::default(),
        }
    }

    /// RDMSR of x2APIC register `msr` at `now`.
    ///
    /// #GP outside x2APIC mode, for MSRs that are not x2APIC registers, and
    /// for write-only registers (EOI, SELF_IPI). The ICR reads as one 64-bit
    /// value; every other register has bits 63:32 clear.
    pub fn msr_read(&self, msr: u32, now: Ns) -> Result<u64, Fault> {
        if self.mode() != Mode::X2Apic {
            return Err(Fault::Gp);
        }
        match Reg::from_msr(msr) {
            Some(Reg::IcrLow) => Ok(u64::from(self.icr_high) << 32 | u64::from(self.icr_low)),
            Some(reg) if reg.x2apic_readable() => Ok(u64::from(self.read(reg, now))),
            _ => Err(Fault::Gp),
        }
    }

    /// WRMSR of `value` to x2APIC register `msr` at `now`.
    ///
    /// #GP outside x2APIC mode, for MSRs that are not writable x2APIC
    /// registers (read-only ones included), and for any reserved bit set,
    /// bits 63:32 included except in the ICR. EOI and ESR accept only 0.
    /// One ICR write sends the IPI; `SELF_IPI` sends a fixed IPI to self.
    pub fn msr_write(&mut self, msr: u32, value: u64, now: Ns) -> Result<Actions, Fault> {
        if self.mode() != Mode::X2Apic {
            return Err(Fault::Gp);
        }
        let reg = Reg::from_msr(msr).ok_or(Fault::Gp)?;
        let mask = reg.x2apic_write_mask().ok_or(Fault::Gp)?;
        if value & !mask != 0 {
            return Err(Fault::Gp);
        }
        if reg == Reg::IcrLow {
            self.icr_high = (value >> 32) as u32;
        }
        Ok(self.write(reg, value as u32, now))
    }

    /// A register's value as the guest reads it in the current mode.
    fn read(&self, reg: Reg, now: Ns) -> u32 {
        let x2apic = self.mode() == Mode::X2Apic;
        match reg {
            Reg::Id if x2apic => self.apic_id,
            Reg::Id => self.apic_id << 24,
            Reg::Version => regs::VERSION,
            Reg::Tpr => u32::from(self.tpr),
            Reg::Ppr => u32::from(self.ppr()),
            Reg::Apr | Reg::Rrd | Reg::Eoi | Reg::SelfIpi => 0,
            Reg::Ldr => self.ldr(),
            Reg::Dfr => self.dfr,
            Reg::Svr => self.svr,
            Reg::Isr(word) => self.isr.word(word),
            Reg::Tmr(word) => self.tmr.word(word),
            Reg::Irr(word) => self.irr.word(word),
            Reg::Esr => self.esr,
            Reg::IcrLow => self.icr_low,
            Reg::IcrHigh => self.icr_high,
            Reg::Lvt(lvt) => self.lvt[lvt.index()],
            Reg::TimerInitial => self.timer.initial(),
            Reg::TimerCurrent => self.timer.current(now, self.timer_periodic()),
            Reg::TimerDivide => self.timer.divide(),
        }
    }

    /// A write the current mode's access rules allowed.
    fn write(&mut self, reg: Reg, value: u32, now: Ns) -> Actions {
        let before = self.timer_deadline();
        // Let the timer catch up first, so the write applies to the state at
        // `now` (a masked timer's missed expiries are dropped here too).
        self.on_timer(now);
        let mut actions = Actions::default();
        match reg {
            Reg::Tpr => self.tpr = value as u8,
            Reg::Eoi => actions.eoi = self.eoi(),
            Reg::Ldr => self.ldr = value & regs::LDR_XAPIC_MASK,
            Reg::Dfr => self.dfr = value | !regs::DFR_MODEL_MASK,
            Reg::Svr => actions.became_enabled = self.write_svr(value),
            Reg::Esr => {
                self.esr = self.esr_pending;
                self.esr_pending = 0;
            }
            Reg::IcrLow => {
                self.icr_low = value & regs::ICR_VALID;
                actions.ipi = self.send();
            }
            Reg::IcrHigh => self.icr_high = value & regs::ICR_HIGH_XAPIC_MASK,
            Reg::Lvt(lvt) => {
                let mut value = value & lvt.writable();
                if self.svr & regs::SVR_ENABLE == 0 {
                    value |= regs::LVT_MASKED;
                }
                self.lvt[lvt.index()] = value;
            }
            Reg::TimerInitial => self.timer.write_initial(value, now),
            Reg::TimerDivide => self.timer.write_divide(value, now, self.timer_periodic()),
            Reg::SelfIpi => {
                actions.ipi = self.checked_ipi(Ipi {
                    vector: value as u8,
                    delivery: Delivery::Fixed,
                    dest: Dest::Self_,
                    level: true,
                    trigger_level: false,
                })
            }
            // Read-only registers: the access rules filtered them out.
            Reg::Id
            | Reg::Version
            | Reg::Apr
            | Reg::Ppr
            | Reg::Rrd
            | Reg::Isr(_)
            | Reg::Tmr(_)
            | Reg::Irr(_)
            | Reg::TimerCurrent => {}
        }
        actions.timer_changed = self.timer_deadline() != before;
        actions
    }

    /// An SVR write; returns whether the APIC became software-enabled.
    /// Software disable masks every LVT (SDM §11.4.7.2).
    fn write_svr(&mut self, value: u32) -> bool {
        let was_enabled = self.svr & regs::SVR_ENABLE != 0;
        self.svr = value & regs::SVR_VALID;
        let enabled = self.svr & regs::SVR_ENABLE != 0;
        if !enabled {
            for lvt in &mut self.lvt {
                *lvt |= regs::LVT_MASKED;
            }
        }
        enabled && !was_enabled
    }

    /// The IPI the current ICR describes, if it is one to send.
    fn send(&mut self) -> Option<Ipi> {
        let dest = if self.mode() == Mode::X2Apic { self.icr_high } else { self.icr_high >> 24 };
        self.checked_ipi(Ipi::from_icr(self.icr_low, dest)?)
    }

    /// `ipi`, unless it carries an illegal vector: then the send fails with
    /// a send-illegal-vector error instead (SDM §11.5.3).
    fn checked_ipi(&mut self, ipi: Ipi) -> Option<Ipi> {
        if ipi.delivery.carries_vector() && ipi.vector < 16 {
            self.error(regs::ESR_SEND_ILLEGAL_VECTOR);
            return None;
        }
        Some(ipi)
    }

    /// Records errors in the ESR and raises the LVT error interrupt if
    /// these are new errors and it is unmasked.
    fn error(&mut self, bits: u32) {
        if self.esr_pending & bits == bits {
            return;
        }
        self.esr_pending |= bits;
        let lvt = self.lvt[Lvt::Error.index()];
        if lvt & regs::LVT_MASKED == 0 {
            let vector = lvt as u8;
            if vector < 16 {
                // The error interrupt's own vector is illegal.
                self.esr_pending |= regs::ESR_RECEIVE_ILLEGAL_VECTOR;
            } else {
                self.raise(vector, false);
            }
        }
    }

    /// Retires the highest in-service vector.
    fn eoi(&mut self) -> Option<Eoi> {
        let vector = self.isr.highest()?;
        self.isr.remove(vector);
        Some(Eoi { vector, level_triggered: self.tmr.contains(vector) })
    }

    // ----- interrupts ------------------------------------------------------

    /// Makes `vector` pending (IRR), with its trigger mode in the TMR, for a
    /// source wired to this vCPU (the Xen upcall vector is fixed and edge).
    ///
    /// Returns whether it was accepted: not when the APIC is hardware- or
    /// software-disabled, and not for vectors 0-15, which set the
    /// received-illegal-vector error instead.
    pub fn accept(&mut self, vector: u8, level_triggered: bool) -> bool {
        if !self.is_enabled() {
            return false;
        }
        if vector < 16 {
            self.error(regs::ESR_RECEIVE_ILLEGAL_VECTOR);
            return false;
        }
        self.raise(vector, level_triggered);
        true
    }

    fn raise(&mut self, vector: u8, level_triggered: bool) {
        self.irr.insert(vector);
        if level_triggered {
            self.tmr.insert(vector);
        } else {
            self.tmr.remove(vector);
        }
    }

    /// The vector keel should inject next: the highest pending one, if its
    /// priority class is above the PPR's and the APIC is enabled.
    pub fn pending(&self) -> Option<u8> {
        if !self.is_enabled() {
            return None;
        }
        let vector = self.irr.highest()?;
        (vector >> 4 > self.ppr() >> 4).then_some(vector)
    }

    /// keel injected `vector` (as returned by [`Vlapic::pending`]): it moves
    /// from the IRR to the ISR, which raises the PPR. A vector that is not
    /// pending is ignored.
    pub fn ack(&mut self, vector: u8) {
        if self.irr.remove(vector) {
            self.isr.insert(vector);
        }
    }

    /// Hands this vLAPIC an IPI that [`Ipi::targets`] it, and says what
    /// keel must do about it.
    ///
    /// Fixed and lowest-priority messages are accepted like
    /// [`Vlapic::accept`] (a software-disabled APIC drops them). NMI, INIT
    /// and STARTUP reach a software-disabled APIC too. INIT resets the APIC
    /// ([`Vlapic::init`]) and holds the vCPU for a STARTUP; a level-triggered
    /// INIT de-assert does nothing. STARTUP starts a held vCPU, once.
    pub fn deliver(&mut self, ipi: &Ipi) -> Received {
        if self.mode() == Mode::Disabled {
            return Received::Ignored;
        }
        match ipi.delivery {
            Delivery::Fixed | Delivery::LowestPrio => {
                if self.accept(ipi.vector, ipi.trigger_level) {
                    Received::Interrupt
                } else {
                    Received::Ignored
                }
            }
            Delivery::Nmi => Received::Nmi,
            Delivery::Init if ipi.trigger_level && !ipi.level => Received::Ignored,
            Delivery::Init => {
                self.init();
                self.waiting_for_sipi = true;
                Received::Init
            }
            Delivery::Startup if self.waiting_for_sipi => {
                self.waiting_for_sipi = false;
                Received::Startup(ipi.vector)
            }
            Delivery::Startup | Delivery::Smi | Delivery::ExtInt => Received::Ignored,
        }
    }

    /// INIT reset (SDM §11.4.7.3): every register to its power-on value
    /// except the APIC ID and `IA32_APIC_BASE`, so an x2APIC stays in x2APIC
    /// mode with its derived LDR. The timer stops.
    pub fn init(&mut self) {
        self.tpr = 0;
        self.ldr = 0;
        self.dfr = regs::DFR_FLAT;
        self.svr = regs::SVR_RESET;
        self.irr = VectorSet::new();
        self.isr = VectorSet::new();
        self.tmr = VectorSet::new();
        self.esr = 0;
        self.esr_pending = 0;
        self.icr_low = 0;
        self.icr_high = 0;
        self.lvt = [regs::LVT_MASKED; Lvt::COUNT];
        self.timer = Timer::new();
    }

    // ----- timer -----------------------------------------------------------

    /// When keel must call [`Vlapic::on_timer`]: the next timer expiry, if
    /// the timer is counting and its LVT entry is unmasked. (A masked timer
    /// keeps counting, but nothing observable happens when it expires.)
    pub fn timer_deadline(&self) -> Option<Ns> {
        if self.lvt[Lvt::Timer.index()] & regs::LVT_MASKED != 0 {
            return None;
        }
        self.timer.deadline()
    }

    /// Runs the timer up to `now`. If it expired, a one-shot timer stops and
    /// a periodic one reloads (expiries keel was late for count once), and
    /// the LVT timer vector becomes pending unless the entry is masked.
    /// Returns whether an interrupt was accepted. Re-read
    /// [`Vlapic::timer_deadline`] afterwards.
    pub fn on_timer(&mut self, now: Ns) -> bool {
        if !self.timer.expire(now, self.timer_periodic()) {
            return false;
        }
        let lvt = self.lvt[Lvt::Timer.index()];
        lvt & regs::LVT_MASKED == 0 && self.accept(lvt as u8, false)
    }
}

#[cfg(test)]
mod tests;
