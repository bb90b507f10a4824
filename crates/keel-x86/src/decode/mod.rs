//! Instruction-length decoding: how many bytes the instruction at a guest's RIP occupies.
//!
//! QEMU's SVM (TCG) has neither NRIP-save nor decode assists, so after intercepting `CPUID`,
//! `RDMSR`, `HLT`, `IN`, `VMMCALL` and the like keel must advance the guest's RIP itself, and for
//! an MMIO exit it must know what the faulting instruction does. Both start here: `decode`
//! walks the prefixes, the opcode (in whichever map and encoding), the ModRM/SIB/displacement
//! bytes and the immediate, and records where each part is. [`instruction_length`] is the public
//! face of it; [`crate::mmio`] interprets the few instructions it supports from the same record.
//!
//! Everything here reads untrusted guest bytes: nothing indexes past the input, nothing panics,
//! and at most [`MAX_INSN_LEN`] bytes are looked at.
//!
//! Behaviour where processors differ, and choices made:
//! - In 64-bit mode an operand-size prefix shortens the displacement of near `CALL`, `JMP`,
//!   `Jcc` and `XBEGIN` to 16 bits, as on AMD processors and in QEMU (Intel ignores the prefix
//!   there). REX.W overrides it.
//! - In protected and compatibility mode `C4`/`C5`/`62` are VEX/EVEX only when the next byte has
//!   both top bits set (it would otherwise be the ModRM of `LES`/`LDS`/`BOUND`); `8F` is XOP when
//!   the next byte's reg field is not 0 (it would otherwise be `POP Ev`). In real mode these
//!   encodings do not exist; the register forms that would have been them are reported as
//!   [`DecodeError::Invalid`] (they raise `#UD`). In 64-bit mode `C4`/`C5`/`62` are always
//!   VEX/EVEX.
//! - A VEX, EVEX or XOP prefix after `66`, `F2`, `F3`, `F0` or REX is [`DecodeError::Invalid`]
//!   (`#UD`). Segment overrides and `67` are allowed before it.
//! - A REX prefix followed by a legacy prefix is ignored (it still counts towards the length);
//!   of several REX prefixes only the last counts.
//! - The `MOV` to and from control and debug registers ignore the ModRM mod field; no SIB or
//!   displacement follows whatever it says.
//! - Instruction forms that exist but raise `#UD` for other reasons (`LOCK` on a non-lockable
//!   instruction, a register operand where memory is required, a CPUID feature the guest lacks)
//!   are decoded to their length; only undefined opcodes, undefined group members (`FE /2`..`/7`,
//!   `FF /7`, `C6`/`C7` other than `/0` and `XABORT`/`XBEGIN`, `0F BA /0`..`/3`) and opcodes
//!   removed in 64-bit mode are [`DecodeError::Invalid`]. The `tables` module
//!   describes how the `0F 38`, `0F 3A` and vector maps are decoded.

mod tables;
#[cfg(test)]
mod tests;

use core::fmt;

use crate::mode::CpuMode;
use tables::{Form, Imm};

/// Longest legal x86 instruction, in bytes. A longer one raises `#GP`.
pub const MAX_INSN_LEN: usize = 15;

/// Why an instruction could not be decoded.
#[derive(Copy, Clone, Debug, Eq, PartialEq, Hash)]
pub enum DecodeError {
    /// The bytes end before the instruction does: fetch more (up to [`MAX_INSN_LEN`]) and retry.
    Truncated,
    /// Not an instruction in this mode (the processor would raise `#UD`), or, for
    /// [`crate::decode_mmio`], an instruction keel does not emulate.
    Invalid,
    /// The instruction would be longer than [`MAX_INSN_LEN`] bytes (the processor raises `#GP`).
    TooLong,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "instruction bytes end before the instruction",
            Self::Invalid => "invalid or unsupported instruction",
            Self::TooLong => "instruction longer than 15 bytes",
        })
    }
}

/// Length in bytes of the instruction at the start of `bytes`, decoded in `mode`.
///
/// At most [`MAX_INSN_LEN`] bytes are looked at; bytes after the instruction are ignored.
pub fn instruction_length(bytes: &[u8], mode: CpuMode) -> Result<usize, DecodeError> {
    decode(bytes, mode).map(|insn| insn.len)
}

/// The opcode map (and encoding) an instruction's opcode byte belongs to.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub(crate) enum Map {
    /// The one-byte map.
    OneByte,
    /// `0F xx`.
    TwoByte,
    /// `0F 38 xx`.
    Escape38,
    /// `0F 3A xx`.
    Escape3A,
    /// 3DNow! `0F 0F modrm … suffix`; the recorded opcode is `0F`.
    Amd3dNow,
    /// VEX (`C4`/`C5`) with its map number.
    Vex(u8),
    /// EVEX (`62`) with its map number.
    Evex(u8),
    /// XOP (`8F`) with its map number.
    Xop(u8),
}

/// A ModRM byte.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub(crate) struct ModRm(pub(crate) u8);

impl ModRm {
    /// The mod field (bits 7:6).
    pub(crate) const fn mode(self) -> u8 {
        self.0 >> 6
    }

    /// The reg field (bits 5:3): a register number or a group's sub-opcode.
    pub(crate) const fn reg(self) -> u8 {
        (self.0 >> 3) & 7
    }

    /// True if the r/m operand is a register (mod = 11b), not memory.
    pub(crate) const fn is_register(self) -> bool {
        self.mode() == 3
    }
}

/// A REX prefix byte (`40`-`4F`).
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub(crate) struct Rex(pub(crate) u8);

impl Rex {
    /// REX.W: 64-bit operand size.
    pub(crate) const fn w(self) -> bool {
        self.0 & 8 != 0
    }

    /// REX.R: extends ModRM.reg.
    pub(crate) const fn r(self) -> bool {
        self.0 & 4 != 0
    }
}

/// The legacy and REX prefixes of an instruction.
#[derive(Copy, Clone, Debug, Default, Eq, PartialEq)]
pub(crate) struct Prefixes {
    /// `66` seen.
    pub(crate) opsize: bool,
    /// `67` seen.
    pub(crate) addrsize: bool,
    /// `F0` seen.
    pub(crate) lock: bool,
    /// The last of `F2`/`F3` seen, if any.
    pub(crate) rep: Option<u8>,
    /// The REX prefix, if one immediately precedes the opcode (64-bit mode only).
    pub(crate) rex: Option<Rex>,
}

/// A decoded instruction: where its parts are and the sizes that govern it.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub(crate) struct Insn {
    /// Total length in bytes.
    pub(crate) len: usize,
    pub(crate) prefixes: Prefixes,
    pub(crate) map: Map,
    /// The opcode byte within `map`.
    pub(crate) opcode: u8,
    pub(crate) modrm: Option<ModRm>,
    /// Effective operand size in bytes for "v"-sized operands (2, 4 or 8).
    pub(crate) operand_size: u8,
    /// Offset of the immediate (or other trailing operand bytes) within the instruction.
    pub(crate) imm_offset: usize,
    /// Length of the immediate in bytes (0 if none).
    pub(crate) imm_len: usize,
}

impl Insn {
    /// The immediate as a little-endian unsigned number, from the bytes the instruction was
    /// decoded from. Only meaningful for immediates of at most 8 bytes.
    pub(crate) fn imm(&self, bytes: &[u8]) -> u64 {
        let end = self.imm_offset.saturating_add(self.imm_len.min(8));
        bytes.get(self.imm_offset..end).unwrap_or(&[]).iter().rev().fold(0, |acc, &b| (acc << 8) | u64::from(b))
    }
}

/// Reads instruction bytes, enforcing the 15-byte limit before the end of the input.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    /// The byte at the current position, without consuming it.
    fn peek(&self) -> Result<u8, DecodeError> {
        if self.pos >= MAX_INSN_LEN {
            return Err(DecodeError::TooLong);
        }
        self.bytes.get(self.pos).copied().ok_or(DecodeError::Truncated)
    }

    /// Consumes and returns the next byte.
    fn next(&mut self) -> Result<u8, DecodeError> {
        let b = self.peek()?;
        self.pos += 1;
        Ok(b)
    }

    /// Consumes `n` bytes.
    fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        for _ in 0..n {
            self.next()?;
        }
        Ok(())
    }

    /// Consumes the SIB byte and displacement that `modrm` asks for under `address_size`.
    fn memory_operand(&mut self, modrm: ModRm, address_size: u8) -> Result<(), DecodeError> {
        let rm = modrm.0 & 7;
        let disp = match (modrm.mode(), address_size) {
            (3, _) => 0,
            // 16-bit addressing: no SIB; mod 00 r/m 110 is a bare disp16.
            (0, 2) => {
                if rm == 6 {
                    2
                } else {
                    0
                }
            }
            (1, 2) => 1,
            (_, 2) => 2,
            // 32/64-bit addressing: r/m 100 adds a SIB byte; mod 00 with r/m 101 (RIP-relative in
            // 64-bit mode) or SIB base 101 is a bare disp32. REX.B does not change any of this.
            (mode, _) => {
                let sib_base = if rm == 4 { Some(self.next()? & 7) } else { None };
                match mode {
                    0 if rm == 5 || sib_base == Some(5) => 4,
                    0 => 0,
                    1 => 1,
                    _ => 4,
                }
            }
        };
        self.skip(disp)
    }
}

/// Decodes the instruction at the start of `bytes` in `mode`.
pub(crate) fn decode(bytes: &[u8], mode: CpuMode) -> Result<Insn, DecodeError> {
    let mut c = Cursor { bytes, pos: 0 };
    let mut p = Prefixes::default();
    let first = loop {
        let b = c.next()?;
        match b {
            // Segment overrides (and branch hints) do not change the encoding.
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
            0x66 => p.opsize = true,
            0x67 => p.addrsize = true,
            0xf0 => p.lock = true,
            0xf2 | 0xf3 => p.rep = Some(b),
            0x40..=0x4f if mode.is_64bit() => {
                p.rex = Some(Rex(b));
                continue;
            }
            _ => break b,
        }
        // A REX prefix only counts if it immediately precedes the opcode.
        p.rex = None;
    };
    let operand_size = mode.operand_size(p.opsize, p.rex.is_some_and(Rex::w));
    let address_size = mode.address_size(p.addrsize);

    let (map, opcode, form) = match first {
        0x0f => match c.next()? {
            0x38 => (Map::Escape38, c.next()?, tables::MAP_0F38),
            0x3a => (Map::Escape3A, c.next()?, tables::MAP_0F3A),
            0x0f => (Map::Amd3dNow, 0x0f, tables::MAP_3DNOW),
            op => (Map::TwoByte, op, tables::TWO_BYTE[usize::from(op)]),
        },
        0xc4 | 0xc5 | 0x62 if mode.is_64bit() || c.peek()? >> 6 == 3 => {
            if !mode.has_vex() {
                // LES/LDS/BOUND with a register operand.
                return Err(DecodeError::Invalid);
            }
            vector_prefix(&mut c, &p, first)?
        }
        0x8f if (c.peek()? >> 3) & 7 != 0 => {
            if !mode.has_vex() {
                // POP Ev only exists as /0.
                return Err(DecodeError::Invalid);
            }
            vector_prefix(&mut c, &p, first)?
        }
        op => {
            if mode.is_64bit() && tables::invalid_in_64bit(op) {
                return Err(DecodeError::Invalid);
            }
            (Map::OneByte, op, tables::ONE_BYTE[usize::from(op)])
        }
    };

    let (modrm, imm) = match form {
        Form::Invalid => return Err(DecodeError::Invalid),
        Form::Plain(imm) => (None, imm),
        Form::ModRm(imm) => (Some(c.next().map(ModRm)?), imm),
        Form::ModRmReg => (Some(ModRm(c.next()? | 0xc0)), Imm::None),
        Form::Group { valid, imm_regs, imm } => {
            let m = ModRm(c.next()?);
            let bit = 1u8 << m.reg();
            if valid & bit == 0 {
                return Err(DecodeError::Invalid);
            }
            (Some(m), if imm_regs & bit != 0 { imm } else { Imm::None })
        }
        Form::Group11(imm) => {
            let m = ModRm(c.next()?);
            if m.reg() != 0 && m.0 != 0xf8 {
                return Err(DecodeError::Invalid);
            }
            (Some(m), imm)
        }
        Form::Op0f78 => {
            let imm = match (p.rep, p.opsize) {
                (Some(0xf3), _) => return Err(DecodeError::Invalid),
                (Some(_), _) | (None, true) => Imm::BB,
                (None, false) => Imm::None,
            };
            (Some(c.next().map(ModRm)?), imm)
        }
        Form::Op0fb8 => {
            if p.rep != Some(0xf3) {
                return Err(DecodeError::Invalid);
            }
            (Some(c.next().map(ModRm)?), Imm::None)
        }
    };
    if let Some(m) = modrm {
        c.memory_operand(m, address_size)?;
    }

    let imm_offset = c.pos;
    let imm_len = match imm {
        Imm::None => 0,
        Imm::B => 1,
        Imm::W | Imm::BB => 2,
        Imm::WB => 3,
        Imm::D => 4,
        Imm::Z => {
            if operand_size == 2 {
                2
            } else {
                4
            }
        }
        Imm::V => usize::from(operand_size),
        Imm::Ap => {
            if operand_size == 2 {
                4
            } else {
                6
            }
        }
        Imm::Moffs => usize::from(address_size),
    };
    c.skip(imm_len)?;

    Ok(Insn { len: c.pos, prefixes: p, map, opcode, modrm, operand_size, imm_offset, imm_len })
}

/// Decodes a VEX (`C4`/`C5`), EVEX (`62`) or XOP (`8F`) prefix whose first byte `first` has been
/// consumed, and the opcode after it.
fn vector_prefix(c: &mut Cursor<'_>, p: &Prefixes, first: u8) -> Result<(Map, u8, Form), DecodeError> {
    if p.opsize || p.rep.is_some() || p.lock || p.rex.is_some() {
        return Err(DecodeError::Invalid);
    }
    let invalid = DecodeError::Invalid;
    match first {
        0xc5 => {
            c.next()?; // R vvvv L pp; the map is 0F.
            let op = c.next()?;
            Ok((Map::Vex(1), op, tables::vex_form(1, op).ok_or(invalid)?))
        }
        0xc4 => {
            let map = c.next()? & 0x1f; // R X B mmmmm
            if tables::vex_form(map, 0).is_none() {
                return Err(invalid);
            }
            c.next()?; // W vvvv L pp
            let op = c.next()?;
            Ok((Map::Vex(map), op, tables::vex_form(map, op).ok_or(invalid)?))
        }
        0x62 => {
            let p0 = c.next()?; // R X B R' 0 mmm
            if p0 & 0x08 != 0 {
                return Err(invalid);
            }
            let map = p0 & 7;
            if tables::evex_form(map, 0).is_none() {
                return Err(invalid);
            }
            if c.next()? & 0x04 == 0 {
                // P1 (W vvvv 1 pp): bit 2 is fixed at 1.
                return Err(invalid);
            }
            c.next()?; // P2: z L'L b V' aaa
            let op = c.next()?;
            Ok((Map::Evex(map), op, tables::evex_form(map, op).ok_or(invalid)?))
        }
        _ => {
            let map = c.next()? & 0x1f; // R X B mmmmm
            let form = tables::xop_form(map).ok_or(invalid)?;
            c.next()?; // W vvvv L pp
            let op = c.next()?;
            Ok((Map::Xop(map), op, form))
        }
    }
}
