//! What a guest instruction that touched emulated MMIO does: load or store, width, register or
//! immediate.
//!
//! When a guest touches a page keel emulates (the xAPIC page at `0xFEE00000`), the nested page
//! fault tells keel the guest-physical address and whether it was a write, but not the width or
//! the register: QEMU's SVM has no decode assists. [`decode_mmio`] decodes the faulting instruction
//! from the bytes at the guest's RIP into an [`MmioInsn`]; keel then performs the device access and
//! completes the instruction with [`MmioOp::store_data`] / [`MmioOp::load_result`] and advances
//! RIP by [`MmioInsn::len`]. The effective address is not decoded: the fault already gave it.
//!
//! Supported are the moves compilers and kernels use for device registers: `MOV` (`88`, `89`,
//! `8A`, `8B`, `C6 /0`, `C7 /0`, `A0`-`A3` with a memory offset), `MOVZX`/`MOVSX` (`0F B6`/`B7`/
//! `BE`/`BF`) and `MOVNTI` (`0F C3`), in every operand size `66`/REX.W allow, with `AH`..`BH`
//! (no REX) and `SPL`..`DIL`, `R8B`..`R15B` (with REX) as byte registers. Read-modify-write
//! instructions (`OR`, `AND`, `XCHG` ... to memory), string moves and vector moves are not
//! supported and decode to [`DecodeError::Invalid`], as do register-operand forms (which cannot
//! fault on memory) and `LOCK`-prefixed moves (which raise `#UD`).
//!
//! Register writeback follows the processor: an 8- or 16-bit destination keeps the rest of its
//! 64-bit register (merge); a 32-bit destination is zero-extended to 64 bits (keel applies this in
//! compatibility and legacy modes too, where the upper half is architecturally undefined); a 64-bit
//! destination is replaced.

use crate::decode::{self, DecodeError, Insn, Map, ModRm};
use crate::mode::CpuMode;

/// A general-purpose register operand. The 64-bit registers are listed in encoding order; the
/// operand's width comes from the instruction (`Rax` with size 1 is `AL`, with size 4 `EAX`).
#[derive(Copy, Clone, Debug, Eq, PartialEq, Hash)]
#[allow(missing_docs)] // The names are the registers'.
pub enum Reg {
    Rax,
    Rcx,
    Rdx,
    Rbx,
    Rsp,
    Rbp,
    Rsi,
    Rdi,
    R8,
    R9,
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
    /// Bits 15:8 of RAX (byte register 4 without a REX prefix).
    Ah,
    /// Bits 15:8 of RCX.
    Ch,
    /// Bits 15:8 of RDX.
    Dh,
    /// Bits 15:8 of RBX.
    Bh,
}

impl Reg {
    const GPRS: [Reg; 16] = [
        Reg::Rax,
        Reg::Rcx,
        Reg::Rdx,
        Reg::Rbx,
        Reg::Rsp,
        Reg::Rbp,
        Reg::Rsi,
        Reg::Rdi,
        Reg::R8,
        Reg::R9,
        Reg::R10,
        Reg::R11,
        Reg::R12,
        Reg::R13,
        Reg::R14,
        Reg::R15,
    ];

    /// The 64-bit register with encoding number `n` (only the low four bits are used): the
    /// inverse of [`Reg::index`] for the 64-bit registers.
    pub const fn gpr(n: u8) -> Reg {
        Self::GPRS[(n & 15) as usize]
    }

    /// The byte register with encoding number `n`: without a REX prefix 4..=7 are `AH`..`BH`,
    /// with one they are `SPL`..`DIL`.
    const fn byte(n: u8, rex: bool) -> Reg {
        match (rex, n & 15) {
            (false, 4) => Reg::Ah,
            (false, 5) => Reg::Ch,
            (false, 6) => Reg::Dh,
            (false, 7) => Reg::Bh,
            (_, n) => Self::gpr(n),
        }
    }

    /// Index (0..16, RAX = 0 … R15 = 15) of the 64-bit register holding this operand; `AH`..`BH`
    /// live in RAX..RBX.
    pub const fn index(self) -> usize {
        match self {
            Reg::Ah => 0,
            Reg::Ch => 1,
            Reg::Dh => 2,
            Reg::Bh => 3,
            r => r as usize,
        }
    }

    /// True for `AH`, `CH`, `DH` and `BH`, which are bits 15:8 of their register.
    pub const fn is_high_byte(self) -> bool {
        matches!(self, Reg::Ah | Reg::Ch | Reg::Dh | Reg::Bh)
    }
}

/// How the bytes read from the device are widened to the destination register's operand size.
#[derive(Copy, Clone, Debug, Eq, PartialEq, Hash)]
pub enum Extend {
    /// No widening: the access is as wide as the destination (`MOV`).
    None,
    /// Zero-extended (`MOVZX`).
    Zero,
    /// Sign-extended (`MOVSX`).
    Sign,
}

/// The source of a store.
#[derive(Copy, Clone, Debug, Eq, PartialEq, Hash)]
pub enum Operand {
    /// A register, at the store's size.
    Reg(Reg),
    /// An immediate, already sign-extended to the store's size and truncated to it.
    Imm(u64),
}

/// The device access an MMIO instruction performs.
#[derive(Copy, Clone, Debug, Eq, PartialEq, Hash)]
pub enum MmioOp {
    /// Read `size` bytes from the device into `dest`.
    Load {
        /// The destination register.
        dest: Reg,
        /// Bytes read from the device: 1, 2, 4 or 8.
        size: u8,
        /// Width of the destination operand in bytes (1, 2, 4 or 8); larger than `size` only for
        /// `MOVZX`/`MOVSX`. See [`MmioOp::load_result`] for how it is written back.
        dest_size: u8,
        /// How `size` bytes become `dest_size` bytes.
        extend: Extend,
    },
    /// Write `size` bytes from `src` to the device.
    Store {
        /// The data's source.
        src: Operand,
        /// Bytes written: 1, 2, 4 or 8.
        size: u8,
    },
}

impl MmioOp {
    /// Bytes accessed on the device.
    pub const fn size(&self) -> u8 {
        match *self {
            MmioOp::Load { size, .. } | MmioOp::Store { size, .. } => size,
        }
    }

    /// True for a store.
    pub const fn is_store(&self) -> bool {
        matches!(self, MmioOp::Store { .. })
    }

    /// For a store, the data to write to the device (in the low [`size`](Self::size) bytes).
    /// `read_gpr(i)` must return the 64-bit register with index `i` (see [`Reg::index`]); it is
    /// called at most once. `None` for a load.
    pub fn store_data(&self, read_gpr: impl FnOnce(usize) -> u64) -> Option<u64> {
        match *self {
            MmioOp::Store { src: Operand::Imm(v), size } => Some(v & mask(size)),
            MmioOp::Store { src: Operand::Reg(r), size } => {
                let full = read_gpr(r.index());
                let v = if r.is_high_byte() { full >> 8 } else { full };
                Some(v & mask(size))
            }
            MmioOp::Load { .. } => None,
        }
    }

    /// For a load, the new 64-bit value of register [`dest.index()`](Reg::index), given its `old`
    /// value and the `data` read from the device (only the low `size` bytes are used). `None` for
    /// a store.
    ///
    /// The data is widened to `dest_size` as `extend` says, then written back as the processor
    /// does: `AH`..`BH` replace bits 15:8; 1- and 2-byte destinations replace the low bits and
    /// keep the rest; a 4-byte destination is zero-extended to 64 bits; 8 bytes replace it all.
    pub fn load_result(&self, old: u64, data: u64) -> Option<u64> {
        let MmioOp::Load { dest, size, dest_size, extend } = *self else {
            return None;
        };
        let widened = match extend {
            Extend::Sign => sign_extend(data, size),
            Extend::None | Extend::Zero => data & mask(size),
        };
        let value = widened & mask(dest_size);
        Some(if dest.is_high_byte() {
            (old & !0xff00) | ((value & 0xff) << 8)
        } else {
            match dest_size {
                1 | 2 => (old & !mask(dest_size)) | value,
                _ => value,
            }
        })
    }
}

/// A decoded MMIO instruction.
#[derive(Copy, Clone, Debug, Eq, PartialEq, Hash)]
pub struct MmioInsn {
    /// What it does to the device and the registers.
    pub op: MmioOp,
    /// Its length in bytes: advance RIP by this much after emulating it.
    pub len: usize,
}

/// Decodes the instruction at the start of `bytes`, executed in `mode`, that faulted on emulated
/// MMIO.
///
/// Returns [`DecodeError::Invalid`] for anything but the supported moves to and from memory (see
/// the module documentation), [`DecodeError::Truncated`] if more bytes are needed.
pub fn decode_mmio(bytes: &[u8], mode: CpuMode) -> Result<MmioInsn, DecodeError> {
    let insn = decode::decode(bytes, mode)?;
    let op = interpret(&insn, bytes).ok_or(DecodeError::Invalid)?;
    Ok(MmioInsn { op, len: insn.len })
}

/// The MMIO operation `insn` performs, if it is one of the supported moves with a memory operand.
fn interpret(insn: &Insn, bytes: &[u8]) -> Option<MmioOp> {
    if insn.prefixes.lock {
        return None;
    }
    let rex = insn.prefixes.rex;
    let rex_r = if rex.is_some_and(decode::Rex::r) { 8 } else { 0 };
    let osz = insn.operand_size;
    // The register named by ModRM.reg, for instructions whose r/m operand must be memory.
    let memory = |m: Option<ModRm>| m.filter(|m| !m.is_register());
    let reg = |m: ModRm| m.reg() | rex_r;

    let load = |dest, size, dest_size: u8| {
        let extend = if size == dest_size { Extend::None } else { Extend::Zero };
        MmioOp::Load { dest, size, dest_size, extend }
    };
    let op = match (insn.map, insn.opcode) {
        (Map::OneByte, 0x88) => {
            let m = memory(insn.modrm)?;
            MmioOp::Store { src: Operand::Reg(Reg::byte(reg(m), rex.is_some())), size: 1 }
        }
        (Map::OneByte, 0x89) => MmioOp::Store { src: Operand::Reg(Reg::gpr(reg(memory(insn.modrm)?))), size: osz },
        (Map::OneByte, 0x8a) => load(Reg::byte(reg(memory(insn.modrm)?), rex.is_some()), 1, 1),
        (Map::OneByte, 0x8b) => load(Reg::gpr(reg(memory(insn.modrm)?)), osz, osz),
        (Map::OneByte, 0xa0) => load(Reg::Rax, 1, 1),
        (Map::OneByte, 0xa1) => load(Reg::Rax, osz, osz),
        (Map::OneByte, 0xa2) => MmioOp::Store { src: Operand::Reg(Reg::Rax), size: 1 },
        (Map::OneByte, 0xa3) => MmioOp::Store { src: Operand::Reg(Reg::Rax), size: osz },
        (Map::OneByte, 0xc6 | 0xc7) => {
            let m = memory(insn.modrm)?;
            if m.reg() != 0 {
                return None;
            }
            let size = if insn.opcode == 0xc6 { 1 } else { osz };
            // The immediate (imm8, imm16 or imm32) is sign-extended to the operand size.
            let imm_bytes = u8::try_from(insn.imm_len).ok()?;
            let value = sign_extend(insn.imm(bytes), imm_bytes) & mask(size);
            MmioOp::Store { src: Operand::Imm(value), size }
        }
        (Map::TwoByte, op @ (0xb6 | 0xb7 | 0xbe | 0xbf)) => {
            let dest = Reg::gpr(reg(memory(insn.modrm)?));
            let size = if op & 1 == 0 { 1 } else { 2 };
            let extend = match (size == osz, op >= 0xbe) {
                (true, _) => Extend::None,
                (false, false) => Extend::Zero,
                (false, true) => Extend::Sign,
            };
            MmioOp::Load { dest, size, dest_size: osz, extend }
        }
        (Map::TwoByte, 0xc3) => {
            // MOVNTI m32/m64, r32/r64: no 66, F2 or F3 form.
            if insn.prefixes.opsize || insn.prefixes.rep.is_some() {
                return None;
            }
            let size = if rex.is_some_and(decode::Rex::w) { 8 } else { 4 };
            MmioOp::Store { src: Operand::Reg(Reg::gpr(reg(memory(insn.modrm)?))), size }
        }
        _ => return None,
    };
    Some(op)
}

/// All-ones in the low `size` bytes.
const fn mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size as u32 * 8)) - 1
    }
}

/// `value`'s low `size` bytes, sign-extended to 64 bits.
const fn sign_extend(value: u64, size: u8) -> u64 {
    if size == 0 || size >= 8 {
        return value;
    }
    let shift = 64 - size as u32 * 8;
    (((value << shift) as i64) >> shift) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::instruction_length;
    use proptest::prelude::*;
    use std::vec::Vec;
    use CpuMode::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace().map(|b| u8::from_str_radix(b, 16).expect("test vector is hex")).collect()
    }

    fn mmio(mode: CpuMode, bytes: &str) -> Result<MmioInsn, DecodeError> {
        decode_mmio(&hex(bytes), mode)
    }

    fn load(dest: Reg, size: u8, dest_size: u8, extend: Extend) -> MmioOp {
        MmioOp::Load { dest, size, dest_size, extend }
    }

    fn store(src: Operand, size: u8) -> MmioOp {
        MmioOp::Store { src, size }
    }

    /// Asserts the decoding, and that the length matches the byte string and the length decoder.
    fn check(mode: CpuMode, bytes: &str, op: MmioOp) {
        let b = hex(bytes);
        assert_eq!(decode_mmio(&b, mode), Ok(MmioInsn { op, len: b.len() }), "`{bytes}` in {mode:?}");
        assert_eq!(instruction_length(&b, mode), Ok(b.len()));
    }

    #[test]
    fn mov_store_register_all_widths() {
        use Operand::Reg as R;
        check(Long64, "88 07", store(R(Reg::Rax), 1)); // MOV [rdi], al
        check(Long64, "88 27", store(R(Reg::Ah), 1)); // MOV [rdi], ah
        check(Long64, "88 3f", store(R(Reg::Bh), 1));
        check(Long64, "40 88 27", store(R(Reg::Rsp), 1)); // MOV [rdi], spl
        check(Long64, "40 88 3f", store(R(Reg::Rdi), 1)); // dil
        check(Long64, "44 88 07", store(R(Reg::R8), 1)); // r8b
        check(Long64, "66 89 07", store(R(Reg::Rax), 2));
        check(Long64, "89 07", store(R(Reg::Rax), 4));
        check(Long64, "48 89 07", store(R(Reg::Rax), 8));
        check(Long64, "89 87 00 03 00 00", store(R(Reg::Rax), 4));
        check(Long64, "89 04 25 00 03 e0 fe", store(R(Reg::Rax), 4));
        check(Long64, "44 89 3c 24", store(R(Reg::R15), 4));
        check(Long64, "4c 89 6f 08", store(R(Reg::R13), 8));
        check(Long64, "89 0d 00 10 00 00", store(R(Reg::Rcx), 4)); // RIP-relative
        check(Protected32, "89 15 00 03 e0 fe", store(R(Reg::Rdx), 4));
        check(Protected32, "66 89 15 00 03 e0 fe", store(R(Reg::Rdx), 2));
        check(Protected32, "88 35 00 03 e0 fe", store(R(Reg::Dh), 1));
        check(Compat32, "89 1e", store(R(Reg::Rbx), 4));
        check(Real, "89 07", store(R(Reg::Rax), 2)); // MOV [bx], ax
        check(Real, "66 89 07", store(R(Reg::Rax), 4));
        check(Protected16, "88 2e 00 03", store(R(Reg::Ch), 1));
    }

    #[test]
    fn mov_load_register_all_widths() {
        check(Long64, "8a 07", load(Reg::Rax, 1, 1, Extend::None));
        check(Long64, "8a 2f", load(Reg::Ch, 1, 1, Extend::None)); // MOV ch, [rdi]
        check(Long64, "40 8a 2f", load(Reg::Rbp, 1, 1, Extend::None)); // MOV bpl, [rdi]
        check(Long64, "44 8a 3f", load(Reg::R15, 1, 1, Extend::None));
        check(Long64, "66 8b 07", load(Reg::Rax, 2, 2, Extend::None));
        check(Long64, "8b 07", load(Reg::Rax, 4, 4, Extend::None));
        check(Long64, "48 8b 07", load(Reg::Rax, 8, 8, Extend::None));
        check(Long64, "4c 8b 57 20", load(Reg::R10, 8, 8, Extend::None));
        check(Long64, "8b 04 25 30 03 e0 fe", load(Reg::Rax, 4, 4, Extend::None));
        check(Long64, "64 8b 04 25 30 00 00 00", load(Reg::Rax, 4, 4, Extend::None)); // fs:
        check(Protected32, "8b 0d 20 00 e0 fe", load(Reg::Rcx, 4, 4, Extend::None));
        check(Protected32, "67 8b 0e 20 00", load(Reg::Rcx, 4, 4, Extend::None)); // 16-bit addressing
        check(Real, "8b 1e 20 00", load(Reg::Rbx, 2, 2, Extend::None));
        check(Compat16, "66 8b 1e 20 00", load(Reg::Rbx, 4, 4, Extend::None));
    }

    #[test]
    fn mov_store_immediate() {
        use Operand::Imm;
        check(Long64, "c6 07 12", store(Imm(0x12), 1));
        check(Long64, "c6 07 ff", store(Imm(0xff), 1));
        check(Long64, "66 c7 07 34 12", store(Imm(0x1234), 2));
        check(Long64, "66 c7 07 34 f2", store(Imm(0xf234), 2));
        check(Long64, "c7 07 78 56 34 12", store(Imm(0x1234_5678), 4));
        check(Long64, "c7 07 ff ff ff ff", store(Imm(0xffff_ffff), 4));
        // REX.W: the imm32 is sign-extended to 64 bits.
        check(Long64, "48 c7 07 78 56 34 12", store(Imm(0x1234_5678), 8));
        check(Long64, "48 c7 07 00 00 00 80", store(Imm(0xffff_ffff_8000_0000), 8));
        check(Long64, "c7 80 b0 00 00 00 00 00 00 00", store(Imm(0), 4)); // the EOI write
        check(Long64, "c7 04 25 b0 00 e0 fe 00 00 00 00", store(Imm(0), 4));
        check(Long64, "41 c7 45 00 01 00 00 00", store(Imm(1), 4));
        check(Protected32, "c7 05 b0 00 e0 fe 00 00 00 00", store(Imm(0), 4));
        check(Real, "c7 06 b0 00 34 12", store(Imm(0x1234), 2));
        check(Real, "66 c7 06 b0 00 78 56 34 12", store(Imm(0x1234_5678), 4));
        // XRELEASE MOV is still a store.
        check(Long64, "f3 c7 07 01 00 00 00", store(Imm(1), 4));
    }

    #[test]
    fn mov_moffs() {
        use Operand::Reg as R;
        check(Long64, "a0 00 03 e0 fe 00 00 00 00", load(Reg::Rax, 1, 1, Extend::None));
        check(Long64, "a1 00 03 e0 fe 00 00 00 00", load(Reg::Rax, 4, 4, Extend::None));
        check(Long64, "48 a1 00 03 e0 fe 00 00 00 00", load(Reg::Rax, 8, 8, Extend::None));
        check(Long64, "66 a1 00 03 e0 fe 00 00 00 00", load(Reg::Rax, 2, 2, Extend::None));
        check(Long64, "67 a1 00 03 e0 fe", load(Reg::Rax, 4, 4, Extend::None));
        check(Long64, "a2 00 03 e0 fe 00 00 00 00", store(R(Reg::Rax), 1));
        check(Long64, "48 a3 00 03 e0 fe 00 00 00 00", store(R(Reg::Rax), 8));
        check(Protected32, "a3 00 03 e0 fe", store(R(Reg::Rax), 4));
        check(Protected32, "66 a3 00 03 e0 fe", store(R(Reg::Rax), 2));
        check(Real, "a1 00 03", load(Reg::Rax, 2, 2, Extend::None));
    }

    #[test]
    fn movzx_movsx() {
        check(Long64, "0f b6 07", load(Reg::Rax, 1, 4, Extend::Zero));
        check(Long64, "66 0f b6 07", load(Reg::Rax, 1, 2, Extend::Zero));
        check(Long64, "48 0f b6 07", load(Reg::Rax, 1, 8, Extend::Zero));
        check(Long64, "0f b7 07", load(Reg::Rax, 2, 4, Extend::Zero));
        check(Long64, "66 0f b7 07", load(Reg::Rax, 2, 2, Extend::None));
        check(Long64, "4c 0f b7 0f", load(Reg::R9, 2, 8, Extend::Zero));
        check(Long64, "0f be 07", load(Reg::Rax, 1, 4, Extend::Sign));
        check(Long64, "48 0f be 07", load(Reg::Rax, 1, 8, Extend::Sign));
        check(Long64, "66 0f be 07", load(Reg::Rax, 1, 2, Extend::Sign));
        check(Long64, "0f bf 47 10", load(Reg::Rax, 2, 4, Extend::Sign));
        check(Long64, "48 0f bf 07", load(Reg::Rax, 2, 8, Extend::Sign));
        // The destination is never a high-byte register, with or without REX.
        check(Long64, "0f b6 27", load(Reg::Rsp, 1, 4, Extend::Zero));
        check(Real, "0f b6 07", load(Reg::Rax, 1, 2, Extend::Zero));
        check(Protected32, "0f bf 05 00 03 e0 fe", load(Reg::Rax, 2, 4, Extend::Sign));
    }

    #[test]
    fn movnti() {
        use Operand::Reg as R;
        check(Long64, "0f c3 07", store(R(Reg::Rax), 4));
        check(Long64, "48 0f c3 07", store(R(Reg::Rax), 8));
        check(Long64, "4c 0f c3 07", store(R(Reg::R8), 8));
        check(Protected32, "0f c3 0d 00 03 e0 fe", store(R(Reg::Rcx), 4));
        assert_eq!(mmio(Long64, "66 0f c3 07"), Err(DecodeError::Invalid));
        assert_eq!(mmio(Long64, "f3 0f c3 07"), Err(DecodeError::Invalid));
    }

    #[test]
    fn unsupported_and_malformed() {
        let invalid = Err(DecodeError::Invalid);
        // Register forms cannot touch memory.
        assert_eq!(mmio(Long64, "89 c0"), invalid);
        assert_eq!(mmio(Long64, "8b c1"), invalid);
        assert_eq!(mmio(Long64, "88 e0"), invalid);
        assert_eq!(mmio(Long64, "c7 c0 01 00 00 00"), invalid);
        assert_eq!(mmio(Long64, "0f b6 c0"), invalid);
        assert_eq!(mmio(Long64, "0f c3 c0"), invalid);
        assert_eq!(mmio(Long64, "c7 f8 00 00 00 00"), invalid); // XBEGIN
                                                                // LOCK MOV raises #UD.
        assert_eq!(mmio(Long64, "f0 89 07"), invalid);
        // Read-modify-write, string and vector instructions are not emulated.
        assert_eq!(mmio(Long64, "01 07"), invalid); // ADD [rdi], eax
        assert_eq!(mmio(Long64, "87 07"), invalid); // XCHG
        assert_eq!(mmio(Long64, "83 0f 01"), invalid); // OR [rdi], 1
        assert_eq!(mmio(Long64, "ff 07"), invalid); // INC
        assert_eq!(mmio(Long64, "a5"), invalid); // MOVSD
        assert_eq!(mmio(Long64, "f3 ab"), invalid); // REP STOSD
        assert_eq!(mmio(Long64, "c5 f9 7e 07"), invalid); // VMOVD [rdi], xmm0
        assert_eq!(mmio(Long64, "0f 38 f1 07"), invalid); // MOVBE
        assert_eq!(mmio(Long64, "8d 07"), invalid); // LEA does not access memory
                                                    // Errors from the length decoder come through.
        assert_eq!(mmio(Long64, "89"), Err(DecodeError::Truncated));
        assert_eq!(mmio(Long64, "c7 07 00 00"), Err(DecodeError::Truncated));
        assert_eq!(mmio(Long64, "06"), invalid);
        assert_eq!(decode_mmio(&[0x66; 16], Long64), Err(DecodeError::TooLong));
    }

    #[test]
    fn load_writeback_merges_or_extends_as_x86_does() {
        let old = 0x1111_2222_3333_4444;
        let r = |op: MmioOp, data| op.load_result(old, data).unwrap();
        // 8- and 16-bit loads keep the rest of the register.
        assert_eq!(r(load(Reg::Rax, 1, 1, Extend::None), 0xabcd), 0x1111_2222_3333_44cd);
        assert_eq!(r(load(Reg::Ah, 1, 1, Extend::None), 0xabcd), 0x1111_2222_3333_cd44);
        assert_eq!(r(load(Reg::Rax, 2, 2, Extend::None), 0x9999_abcd), 0x1111_2222_3333_abcd);
        // 32-bit loads zero-extend to 64 bits.
        assert_eq!(r(load(Reg::Rax, 4, 4, Extend::None), 0x5555_6666_8765_4321), 0x8765_4321);
        assert_eq!(r(load(Reg::Rax, 8, 8, Extend::None), 0x5555_6666_8765_4321), 0x5555_6666_8765_4321);
        // MOVZX/MOVSX widen to the destination, then the same rules apply.
        assert_eq!(r(load(Reg::Rax, 1, 2, Extend::Zero), 0x80), 0x1111_2222_3333_0080);
        assert_eq!(r(load(Reg::Rax, 1, 2, Extend::Sign), 0x80), 0x1111_2222_3333_ff80);
        assert_eq!(r(load(Reg::Rax, 1, 4, Extend::Sign), 0x80), 0xffff_ff80);
        assert_eq!(r(load(Reg::Rax, 2, 4, Extend::Zero), 0xffff_8000), 0x8000);
        assert_eq!(r(load(Reg::Rax, 2, 8, Extend::Sign), 0x8000), 0xffff_ffff_ffff_8000);
        assert_eq!(r(load(Reg::Rax, 1, 8, Extend::Zero), 0xff), 0xff);
        assert_eq!(r(load(Reg::Rax, 1, 8, Extend::Sign), 0x7f), 0x7f);
        assert_eq!(store(Operand::Imm(1), 4).load_result(old, 0), None);
    }

    #[test]
    fn store_data_reads_the_right_bits() {
        let gprs: [u64; 16] = core::array::from_fn(|i| 0x0102_0304_0506_0700 + i as u64 * 0x11);
        let read = |i: usize| gprs[i];
        assert_eq!(store(Operand::Reg(Reg::Rcx), 1).store_data(read), Some(0x11));
        assert_eq!(store(Operand::Reg(Reg::Ch), 1).store_data(read), Some(0x07));
        assert_eq!(store(Operand::Reg(Reg::Bh), 1).store_data(read), Some(0x07));
        assert_eq!(store(Operand::Reg(Reg::R15), 2).store_data(read), Some(0x07ff));
        assert_eq!(store(Operand::Reg(Reg::Rdx), 4).store_data(read), Some(0x0506_0722));
        assert_eq!(store(Operand::Reg(Reg::Rax), 8).store_data(read), Some(0x0102_0304_0506_0700));
        assert_eq!(store(Operand::Imm(0x1234), 1).store_data(read), Some(0x34));
        assert_eq!(load(Reg::Rax, 4, 4, Extend::None).store_data(read), None);
        // Decoded end to end: MOV [rdi], ch.
        let insn = mmio(Long64, "88 2f").unwrap();
        assert_eq!(insn.op.size(), 1);
        assert!(insn.op.is_store());
        assert_eq!(insn.op.store_data(read), Some(0x07));
    }

    #[test]
    fn register_helpers() {
        assert_eq!(Reg::Rax.index(), 0);
        assert_eq!(Reg::R15.index(), 15);
        assert_eq!(Reg::Bh.index(), 3);
        assert!(Reg::Ah.is_high_byte());
        assert!(!Reg::Rsp.is_high_byte());
        for n in 0..16 {
            assert_eq!(Reg::gpr(n).index(), usize::from(n));
            assert_eq!(Reg::byte(n, true).index(), usize::from(n));
        }
        assert_eq!(Reg::byte(4, false), Reg::Ah);
        assert_eq!(Reg::byte(3, false), Reg::Rbx);
        assert_eq!(Reg::byte(12, false), Reg::R12);
    }

    #[test]
    fn helpers() {
        assert_eq!(mask(1), 0xff);
        assert_eq!(mask(4), 0xffff_ffff);
        assert_eq!(mask(8), u64::MAX);
        assert_eq!(sign_extend(0x80, 1), u64::MAX - 0x7f);
        assert_eq!(sign_extend(0x7fff, 2), 0x7fff);
        assert_eq!(sign_extend(0x8000_0000, 4), 0xffff_ffff_8000_0000);
        assert_eq!(sign_extend(0x8000_0000, 8), 0x8000_0000);
        assert_eq!(sign_extend(0x8000_0000, 0), 0x8000_0000);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn never_panics_and_agrees_with_the_length_decoder(
            bytes in prop::collection::vec(prop_oneof![
                any::<u8>(),
                prop::sample::select(&[0x88u8, 0x89, 0x8a, 0x8b, 0xc6, 0xc7, 0xa1, 0x0f, 0xb6, 0xbf, 0x66, 0x48, 0x40][..]),
            ], 0..20),
            mode in prop::sample::select(&[Real, Protected16, Protected32, Long64, Compat32, Compat16][..]),
        ) {
            if let Ok(insn) = decode_mmio(&bytes, mode) {
                prop_assert_eq!(instruction_length(&bytes, mode), Ok(insn.len));
                prop_assert!(matches!(insn.op.size(), 1 | 2 | 4 | 8));
                if let MmioOp::Load { size, dest_size, extend, .. } = insn.op {
                    prop_assert!(size <= dest_size);
                    prop_assert_eq!(size == dest_size, extend == Extend::None);
                }
            }
        }

        #[test]
        fn loads_only_change_the_destination_bits(old in any::<u64>(), data in any::<u64>(), size_idx in 0usize..4) {
            let size = [1u8, 2, 4, 8][size_idx];
            let new = load(Reg::Rbx, size, size, Extend::None).load_result(old, data).unwrap();
            let m = mask(size);
            prop_assert_eq!(new & m, data & m);
            if size < 4 {
                prop_assert_eq!(new & !m, old & !m);
            } else {
                prop_assert_eq!(new & !m, 0);
            }
        }
    }
}
