//! Opcode maps: for every opcode, which operand bytes follow it.
//!
//! The length of an x86 instruction is fixed once the decoder knows, per opcode, whether a ModRM
//! byte follows and what kind of immediate (whose size may depend on the operand or address
//! size). That is all these tables record; they were written from the opcode maps in the Intel
//! SDM (Vol. 2, Appendix A) and the AMD APM (Vol. 3, Appendix A).
//!
//! The one-byte and `0F` maps mark undefined opcodes [`Form::Invalid`]. The `0F 38` and `0F 3A`
//! maps, and the VEX, EVEX and XOP maps, are regular enough to be described by a rule (every
//! opcode has a ModRM byte; `0F 3A` always adds an 8-bit immediate); unassigned opcodes in them
//! decode to the length an assigned one would have. That is harmless: keel only asks for the
//! length of an instruction the processor has just executed or intercepted.

/// The immediate (or other trailing operand bytes) after the opcode and any ModRM/SIB/displacement.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub(crate) enum Imm {
    /// Nothing.
    None,
    /// 8 bits: `Ib`, `Jb`, and the 3DNow! suffix opcode.
    B,
    /// 16 bits: `Iw` (`RET imm16`).
    W,
    /// 16 + 8 bits: `ENTER imm16, imm8`.
    WB,
    /// 8 + 8 bits: SSE4a `EXTRQ`/`INSERTQ` with two immediates.
    BB,
    /// 16 or 32 bits by operand size (32 also for 64-bit operands): `Iz`, `Jz`.
    Z,
    /// 16, 32 or 64 bits by operand size: `Iv` (`MOV r, imm` only).
    V,
    /// Far pointer `Ap`: a 16- or 32-bit offset by operand size, then a 16-bit selector.
    Ap,
    /// Memory offset `moffs`: 2, 4 or 8 bytes by address size (`MOV AL/eAX, [moffs]` and back).
    Moffs,
    /// 32 bits regardless of operand size (XOP map 0Ah).
    D,
}

/// What follows an opcode byte.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub(crate) enum Form {
    /// Not an instruction in this map: undefined, or a byte the decoder handles before looking
    /// here (prefixes, escapes).
    Invalid,
    /// No ModRM; then the immediate.
    Plain(Imm),
    /// A ModRM byte (with SIB and displacement as it asks), then the immediate.
    ModRm(Imm),
    /// A ModRM byte whose mod field is ignored and treated as register form (`MOV` to and from
    /// control and debug registers): never a SIB byte or displacement.
    ModRmReg,
    /// A group: the ModRM reg field selects the instruction. Only the `/r` values whose bit is set
    /// in `valid` exist; those whose bit is set in `imm_regs` are followed by `imm`.
    Group { valid: u8, imm_regs: u8, imm: Imm },
    /// Group 11 (`C6`/`C7`): `/0` is `MOV Eb/Ev, imm`; with ModRM `F8` exactly, `XABORT imm8` /
    /// `XBEGIN rel16/32`. Both take `imm`.
    Group11(Imm),
    /// `0F 78`: `VMREAD` without a mandatory prefix, SSE4a `EXTRQ`/`INSERTQ` with two 8-bit
    /// immediates after `66`/`F2`, undefined after `F3`.
    Op0f78,
    /// `0F B8`: `POPCNT` after `F3`; otherwise undefined (`JMPE` exists only on Itanium).
    Op0fb8,
}

use Form::{Group, Group11, Invalid, ModRm, ModRmReg, Plain};

const X: Form = Invalid;
/// A prefix byte; the prefix scanner consumes these before the table is consulted.
const PFX: Form = Invalid;
/// An escape to another map; handled before the table is consulted.
const ESC: Form = Invalid;
const N: Form = Plain(Imm::None);
const IB: Form = Plain(Imm::B);
const IW: Form = Plain(Imm::W);
const IZ: Form = Plain(Imm::Z);
const IV: Form = Plain(Imm::V);
const AP: Form = Plain(Imm::Ap);
const MOF: Form = Plain(Imm::Moffs);
const M: Form = ModRm(Imm::None);
const MIB: Form = ModRm(Imm::B);
const MIZ: Form = ModRm(Imm::Z);
const CRX: Form = ModRmReg;
const ENTER: Form = Plain(Imm::WB);
const OP78: Form = Form::Op0f78;
const OPB8: Form = Form::Op0fb8;
/// Group 11 (`C6`): `MOV Eb, imm8`, `XABORT imm8`.
const G11B: Form = Group11(Imm::B);
/// Group 11 (`C7`): `MOV Ev, imm16/32`, `XBEGIN rel16/32`.
const G11V: Form = Group11(Imm::Z);
/// Group 1A (`8F`): only `/0` (`POP Ev`); other reg values are XOP (handled before the table).
const G1A: Form = Group { valid: 0b0000_0001, imm_regs: 0, imm: Imm::None };
/// Group 3 (`F6`): `/0` and `/1` (`TEST`) take an imm8.
const G3B: Form = Group { valid: 0xff, imm_regs: 0b0000_0011, imm: Imm::B };
/// Group 3 (`F7`): `/0` and `/1` (`TEST`) take an imm16/32.
const G3V: Form = Group { valid: 0xff, imm_regs: 0b0000_0011, imm: Imm::Z };
/// Group 4 (`FE`): `INC`/`DEC Eb` only.
const G4: Form = Group { valid: 0b0000_0011, imm_regs: 0, imm: Imm::None };
/// Group 5 (`FF`): `/7` is undefined.
const G5: Form = Group { valid: 0b0111_1111, imm_regs: 0, imm: Imm::None };
/// Group 8 (`0F BA`): `BT`/`BTS`/`BTR`/`BTC Ev, imm8` are `/4`..`/7`.
const G8: Form = Group { valid: 0b1111_0000, imm_regs: 0b1111_0000, imm: Imm::B };

/// The one-byte opcode map (legacy and 64-bit mode; see [`invalid_in_64bit`]).
#[rustfmt::skip]
pub(crate) static ONE_BYTE: [Form; 256] = [
    // 0      1      2      3      4      5      6      7      8      9      A      B      C      D      E      F
    M,     M,     M,     M,     IB,    IZ,    N,     N,     M,     M,     M,     M,     IB,    IZ,    N,     ESC,   // 0: ADD OR
    M,     M,     M,     M,     IB,    IZ,    N,     N,     M,     M,     M,     M,     IB,    IZ,    N,     N,     // 1: ADC SBB
    M,     M,     M,     M,     IB,    IZ,    PFX,   N,     M,     M,     M,     M,     IB,    IZ,    PFX,   N,     // 2: AND SUB
    M,     M,     M,     M,     IB,    IZ,    PFX,   N,     M,     M,     M,     M,     IB,    IZ,    PFX,   N,     // 3: XOR CMP
    N,     N,     N,     N,     N,     N,     N,     N,     N,     N,     N,     N,     N,     N,     N,     N,     // 4: INC DEC (REX)
    N,     N,     N,     N,     N,     N,     N,     N,     N,     N,     N,     N,     N,     N,     N,     N,     // 5: PUSH POP
    N,     N,     M,     M,     PFX,   PFX,   PFX,   PFX,   IZ,    MIZ,   IB,    MIB,   N,     N,     N,     N,     // 6: PUSHA BOUND ARPL/MOVSXD PUSH IMUL INS OUTS
    IB,    IB,    IB,    IB,    IB,    IB,    IB,    IB,    IB,    IB,    IB,    IB,    IB,    IB,    IB,    IB,    // 7: Jcc rel8
    MIB,   MIZ,   MIB,   MIB,   M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     G1A,   // 8: group 1, TEST XCHG MOV LEA POP
    N,     N,     N,     N,     N,     N,     N,     N,     N,     N,     AP,    N,     N,     N,     N,     N,     // 9: XCHG CBW CWD CALLF FWAIT PUSHF
    MOF,   MOF,   MOF,   MOF,   N,     N,     N,     N,     IB,    IZ,    N,     N,     N,     N,     N,     N,     // A: MOV moffs, string ops, TEST
    IB,    IB,    IB,    IB,    IB,    IB,    IB,    IB,    IV,    IV,    IV,    IV,    IV,    IV,    IV,    IV,    // B: MOV r, imm
    MIB,   MIB,   IW,    N,     M,     M,     G11B,  G11V,  ENTER, N,     IW,    N,     N,     IB,    N,     N,     // C: shifts RET LES LDS MOV ENTER LEAVE RETF INT
    M,     M,     M,     M,     IB,    IB,    N,     N,     M,     M,     M,     M,     M,     M,     M,     M,     // D: shifts AAM AAD SALC XLAT x87
    IB,    IB,    IB,    IB,    IB,    IB,    IB,    IB,    IZ,    IZ,    AP,    IB,    N,     N,     N,     N,     // E: LOOP JCXZ IN OUT CALL JMP
    PFX,   N,     PFX,   PFX,   N,     N,     G3B,   G3V,   N,     N,     N,     N,     N,     N,     G4,    G5,    // F: LOCK INT1 REP HLT CMC group 3, flags, groups 4/5
];

/// The two-byte map, `0F xx`. `0F A6`/`0F A7` (VIA PadLock) and `0F 24`/`0F 26` (MOV to and
/// from the 486's test registers) do not exist on AMD or Intel processors.
#[rustfmt::skip]
pub(crate) static TWO_BYTE: [Form; 256] = [
    // 0      1      2      3      4      5      6      7      8      9      A      B      C      D      E      F
    M,     M,     M,     M,     X,     N,     N,     N,     N,     N,     X,     N,     X,     M,     N,     MIB,   // 0: grp6 grp7 LAR LSL SYSCALL CLTS SYSRET INVD WBINVD UD2 prefetch FEMMS 3DNow!
    M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     // 1: SSE moves, prefetch/hint NOPs, ENDBR
    CRX,   CRX,   CRX,   CRX,   X,     X,     X,     X,     M,     M,     M,     M,     M,     M,     M,     M,     // 2: MOV CRn/DRn, SSE
    N,     N,     N,     N,     N,     N,     X,     N,     ESC,   X,     ESC,   X,     X,     X,     X,     X,     // 3: WRMSR RDTSC RDMSR RDPMC SYSENTER SYSEXIT GETSEC
    M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     // 4: CMOVcc
    M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     // 5: SSE
    M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     // 6: MMX/SSE2
    MIB,   MIB,   MIB,   MIB,   M,     M,     M,     N,     OP78,  M,     X,     X,     M,     M,     M,     M,     // 7: PSHUF groups 12-14 EMMS VMREAD/EXTRQ VMWRITE
    IZ,    IZ,    IZ,    IZ,    IZ,    IZ,    IZ,    IZ,    IZ,    IZ,    IZ,    IZ,    IZ,    IZ,    IZ,    IZ,    // 8: Jcc rel16/32
    M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     // 9: SETcc
    N,     N,     N,     M,     MIB,   M,     X,     X,     N,     N,     N,     M,     MIB,   M,     M,     M,     // A: PUSH/POP FS CPUID BT SHLD PUSH/POP GS RSM BTS SHRD grp15 IMUL
    M,     M,     M,     M,     M,     M,     M,     M,     OPB8,  M,     G8,    M,     M,     M,     M,     M,     // B: CMPXCHG LSS BTR LFS LGS MOVZX POPCNT UD1 grp8 BTC BSF BSR MOVSX
    M,     M,     MIB,   M,     MIB,   MIB,   MIB,   M,     N,     N,     N,     N,     N,     N,     N,     N,     // C: XADD CMPPS MOVNTI PINSRW PEXTRW SHUFPS grp9 BSWAP
    M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     // D: MMX/SSE2
    M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     // E: MMX/SSE2
    M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     M,     // F: MMX/SSE2, UD0
];

/// One-byte opcodes that do not exist in 64-bit mode (`#UD` there). `40`-`4F` (REX), `62` (EVEX)
/// and `C4`/`C5` (VEX) are reinterpreted rather than invalid and are handled by the decoder.
pub(crate) const fn invalid_in_64bit(opcode: u8) -> bool {
    matches!(
        opcode,
        0x06 | 0x07 // PUSH/POP ES
            | 0x0e // PUSH CS
            | 0x16 | 0x17 // PUSH/POP SS
            | 0x1e | 0x1f // PUSH/POP DS
            | 0x27 | 0x2f | 0x37 | 0x3f // DAA DAS AAA AAS
            | 0x60 | 0x61 // PUSHA POPA
            | 0x82 // group 1 alias of 80
            | 0x9a | 0xea // CALLF/JMPF ptr16:16/32
            | 0xce // INTO
            | 0xd4 | 0xd5 | 0xd6 // AAM AAD SALC
    )
}

/// The `0F 38` map: every opcode has a ModRM byte and no immediate.
pub(crate) const MAP_0F38: Form = M;
/// The `0F 3A` map: every opcode has a ModRM byte and an 8-bit immediate.
pub(crate) const MAP_0F3A: Form = MIB;
/// 3DNow! (`0F 0F`): ModRM, then the real opcode as an 8-bit suffix.
pub(crate) const MAP_3DNOW: Form = MIB;

/// Map-1 (`0F`) opcodes that take an 8-bit immediate when VEX- or EVEX-encoded: the shuffles and
/// shift groups `70`-`73`, `CMPccPS` `C2`, `PINSRW`/`PEXTRW` `C4`/`C5`, `SHUFPS` `C6`.
const fn map1_has_imm8(opcode: u8) -> bool {
    matches!(opcode, 0x70..=0x73 | 0xc2 | 0xc4..=0xc6)
}

/// The operand bytes of a VEX-encoded opcode in VEX map `map` (1 = `0F`, 2 = `0F 38`,
/// 3 = `0F 3A`), or `None` if the map does not exist.
pub(crate) const fn vex_form(map: u8, opcode: u8) -> Option<Form> {
    match map {
        // VZEROUPPER / VZEROALL are the only VEX instructions without ModRM.
        1 if opcode == 0x77 => Some(N),
        1 if map1_has_imm8(opcode) => Some(MIB),
        1 | 2 => Some(M),
        3 => Some(MIB),
        _ => None,
    }
}

/// The operand bytes of an EVEX-encoded opcode in EVEX map `map` (1 = `0F`, 2 = `0F 38`,
/// 3 = `0F 3A`, 5 and 6 = the AVX512-FP16 maps), or `None` if the map does not exist.
pub(crate) const fn evex_form(map: u8, opcode: u8) -> Option<Form> {
    match map {
        1 if map1_has_imm8(opcode) => Some(MIB),
        1 | 2 | 5 | 6 => Some(M),
        3 => Some(MIB),
        _ => None,
    }
}

/// The operand bytes of an XOP-encoded opcode in XOP map `map` (8, 9 or 0Ah), or `None` if the
/// map does not exist.
pub(crate) const fn xop_form(map: u8) -> Option<Form> {
    match map {
        8 => Some(MIB),
        9 => Some(M),
        0xa => Some(ModRm(Imm::D)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_in_64bit_opcodes_are_defined_outside_it() {
        for op in 0..=255u8 {
            if invalid_in_64bit(op) {
                assert_ne!(ONE_BYTE[op as usize], Invalid, "{op:#04x}");
            }
        }
    }

    #[test]
    fn table_spot_checks() {
        assert_eq!(ONE_BYTE[0xf4], N); // HLT
        assert_eq!(ONE_BYTE[0xe8], IZ); // CALL rel
        assert_eq!(ONE_BYTE[0xb8], IV); // MOV eAX, imm
        assert_eq!(ONE_BYTE[0xc8], ENTER); // ENTER
        assert_eq!(ONE_BYTE[0xa1], MOF);
        assert_eq!(TWO_BYTE[0xa2], N); // CPUID
        assert_eq!(TWO_BYTE[0x22], CRX); // MOV CRn, r
        assert_eq!(TWO_BYTE[0x01], M); // group 7
        assert_eq!(TWO_BYTE[0xba], G8);
        assert_eq!(TWO_BYTE[0x0b], N); // UD2
        assert_eq!(TWO_BYTE[0x04], X);
    }

    #[test]
    fn vector_maps() {
        assert_eq!(vex_form(1, 0x77), Some(N));
        assert_eq!(vex_form(1, 0x70), Some(MIB));
        assert_eq!(vex_form(1, 0x58), Some(M));
        assert_eq!(vex_form(2, 0x70), Some(M));
        assert_eq!(vex_form(3, 0x00), Some(MIB));
        assert_eq!(vex_form(0, 0x00), None);
        assert_eq!(vex_form(4, 0x00), None);
        assert_eq!(evex_form(1, 0x77), Some(M));
        assert_eq!(evex_form(5, 0x58), Some(M));
        assert_eq!(evex_form(4, 0x58), None);
        assert_eq!(evex_form(7, 0x58), None);
        assert_eq!(xop_form(8), Some(MIB));
        assert_eq!(xop_form(9), Some(M));
        assert_eq!(xop_form(10), Some(ModRm(Imm::D)));
        assert_eq!(xop_form(11), None);
    }
}
