//! The 16550 UART behind keel's serial console (`console=com1`, `com1=<baud>,8n1,<io>`).
//!
//! Hand-written rather than the `uart_16550` crate: keel must program an arbitrary baud
//! rate, line setting and I/O base from Xen's `com1=` syntax, keep the firmware's setting for
//! `com1=auto`, and tell an absent UART (reads of all-ones) from a present one, none of which
//! that crate offers. The driver is a few port writes; transmission is polled, so it works in
//! any context (exception handlers, panics, early boot).

use x86_64::instructions::port::Port;

/// The UART's base clock (1.8432 MHz / 16).
const BASE_BAUD: u32 = 115_200;

const THR: u16 = 0; // transmit holding (DLAB = 0)
const RBR: u16 = 0; // receive buffer (DLAB = 0)
const DLL: u16 = 0; // divisor latch low (DLAB = 1)
const IER: u16 = 1; // interrupt enable (DLAB = 0)
const DLM: u16 = 1; // divisor latch high (DLAB = 1)
const FCR: u16 = 2; // FIFO control
const LCR: u16 = 3; // line control
const MCR: u16 = 4; // modem control
const LSR: u16 = 5; // line status
const SCR: u16 = 7; // scratch

const LCR_DLAB: u8 = 0x80;
const LSR_DATA_READY: u8 = 0x01;
const LSR_THR_EMPTY: u8 = 0x20;

/// Parity setting of the line.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Parity {
    /// No parity bit.
    None,
    /// Odd parity.
    Odd,
    /// Even parity.
    Even,
    /// Parity bit always 1.
    Mark,
    /// Parity bit always 0.
    Space,
}

/// How to program the UART.
#[derive(Clone, Copy, Debug)]
pub struct LineConfig {
    /// Baud rate; `None` keeps what the firmware programmed (`com1=auto`).
    pub baud: Option<u32>,
    /// Data bits, 5 to 8.
    pub data_bits: u8,
    /// Parity.
    pub parity: Parity,
    /// Stop bits, 1 or 2.
    pub stop_bits: u8,
}

/// One 16550-compatible UART at an I/O port base.
pub struct Uart {
    base: u16,
}

impl Uart {
    /// A UART at `base` (0x3f8 for COM1). Nothing is touched until `init`.
    pub const fn new(base: u16) -> Self {
        Uart { base }
    }

    /// The I/O base.
    pub fn base(&self) -> u16 {
        self.base
    }

    fn read(&self, reg: u16) -> u8 {
        // SAFETY: port I/O on the UART's own registers; reads have no side effects beyond the
        // UART (RBR pops a received byte, which only this driver consumes).
        unsafe { Port::<u8>::new(self.base + reg).read() }
    }

    fn write(&self, reg: u16, value: u8) {
        // SAFETY: port I/O on the UART's own registers, which keel owns exclusively.
        unsafe { Port::<u8>::new(self.base + reg).write(value) }
    }

    /// Whether a UART answers at this base: its scratch register holds what was written.
    pub fn present(&self) -> bool {
        self.write(SCR, 0x5a);
        let a = self.read(SCR);
        self.write(SCR, 0xa5);
        let b = self.read(SCR);
        a == 0x5a && b == 0xa5
    }

    /// Program line settings, enable and clear the FIFOs, keep interrupts off (keel polls).
    pub fn init(&self, cfg: &LineConfig) {
        self.write(IER, 0);
        let mut lcr = (cfg.data_bits.clamp(5, 8) - 5) & 3;
        if cfg.stop_bits >= 2 {
            lcr |= 1 << 2;
        }
        lcr |= match cfg.parity {
            Parity::None => 0,
            Parity::Odd => 0b001 << 3,
            Parity::Even => 0b011 << 3,
            Parity::Mark => 0b101 << 3,
            Parity::Space => 0b111 << 3,
        };
        if let Some(baud) = cfg.baud {
            let divisor = (BASE_BAUD / baud.clamp(1, BASE_BAUD)).clamp(1, u16::MAX as u32) as u16;
            self.write(LCR, LCR_DLAB);
            self.write(DLL, divisor as u8);
            self.write(DLM, (divisor >> 8) as u8);
        }
        self.write(LCR, lcr);
        self.write(FCR, 0x07); // enable + clear both FIFOs
        self.write(MCR, 0x03); // DTR, RTS
    }

    /// Send one byte, waiting (bounded) for the transmitter. A UART that never becomes ready
    /// (absent or wedged) drops the byte instead of hanging keel.
    pub fn put(&self, byte: u8) {
        for _ in 0..100_000 {
            if self.read(LSR) & LSR_THR_EMPTY != 0 {
                self.write(THR, byte);
                return;
            }
            core::hint::spin_loop();
        }
    }

    /// A received byte, if one is waiting.
    pub fn try_get(&self) -> Option<u8> {
        let lsr = self.read(LSR);
        // All-ones: nothing decodes these ports.
        if lsr != 0xff && lsr & LSR_DATA_READY != 0 {
            Some(self.read(RBR))
        } else {
            None
        }
    }

    /// Send a string, turning `\n` into `\r\n` for terminals.
    pub fn write_str(&self, s: &str) {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
    }
}
