//! Hand-written encodings with known lengths, across every opcode map, prefix combination and
//! mode, plus property tests over random bytes.

use super::*;
use proptest::prelude::*;
use std::vec::Vec;
use CpuMode::*;

/// Parses space-separated hex bytes.
fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace().map(|b| u8::from_str_radix(b, 16).expect("test vector is hex")).collect()
}

/// Asserts that `bytes` (hex) decodes to `len` bytes in each of `modes`.
fn check(modes: &[CpuMode], bytes: &str, len: usize) {
    let b = hex(bytes);
    assert_eq!(b.len(), len, "test vector `{bytes}` should be exactly the instruction");
    for &m in modes {
        assert_eq!(instruction_length(&b, m), Ok(len), "`{bytes}` in {m:?}");
        // Trailing bytes never change the answer.
        let mut longer = b.clone();
        longer.extend_from_slice(&[0x90, 0x0f, 0xff, 0x66]);
        assert_eq!(instruction_length(&longer, m), Ok(len), "`{bytes}` + trailing bytes in {m:?}");
        // Every proper prefix is truncated.
        for cut in 0..len {
            assert_eq!(instruction_length(&b[..cut], m), Err(DecodeError::Truncated), "`{bytes}`[..{cut}] in {m:?}");
        }
    }
}

fn check_err(modes: &[CpuMode], bytes: &str, err: DecodeError) {
    let b = hex(bytes);
    for &m in modes {
        assert_eq!(instruction_length(&b, m), Err(err), "`{bytes}` in {m:?}");
    }
}

const L64: &[CpuMode] = &[Long64];
const M32: &[CpuMode] = &[Protected32, Compat32];
const M16: &[CpuMode] = &[Real, Protected16, Compat16];
const PM16: &[CpuMode] = &[Protected16, Compat16];
const ALL: &[CpuMode] = &[Real, Protected16, Protected32, Long64, Compat32, Compat16];
/// Modes whose default address size is 32 or 64 bits (same ModRM forms without `67`).
const WIDE: &[CpuMode] = &[Protected32, Compat32, Long64];
const NOT64: &[CpuMode] = &[Real, Protected16, Protected32, Compat32, Compat16];

#[test]
fn intercepted_instructions() {
    check(ALL, "0f a2", 2); // CPUID
    check(ALL, "0f 32", 2); // RDMSR
    check(ALL, "0f 30", 2); // WRMSR
    check(ALL, "f4", 1); // HLT
    check(ALL, "0f 01 d9", 3); // VMMCALL
    check(ALL, "0f 01 c1", 3); // VMCALL
    check(ALL, "0f 01 d1", 3); // XSETBV
    check(ALL, "0f 01 d0", 3); // XGETBV
    check(ALL, "0f 31", 2); // RDTSC
    check(ALL, "0f 01 f9", 3); // RDTSCP
    check(ALL, "f3 90", 2); // PAUSE
    check(ALL, "cc", 1); // INT3
    check(ALL, "cd 80", 2); // INT imm8
    check(ALL, "f1", 1); // INT1
    check(ALL, "0f 0b", 2); // UD2
    check(ALL, "0f 09", 2); // WBINVD
    check(ALL, "0f 08", 2); // INVD
    check(ALL, "0f 33", 2); // RDPMC
    check(ALL, "0f 06", 2); // CLTS
    check(ALL, "0f 01 df", 3); // INVLPGA
    check(ALL, "0f 01 d8", 3); // VMRUN
    check(ALL, "0f 01 dc", 3); // STGI
    check(ALL, "0f 01 de", 3); // SKINIT
    check(ALL, "0f 01 c8", 3); // MONITOR
    check(ALL, "0f 01 c9", 3); // MWAIT
    check(L64, "0f 01 f8", 3); // SWAPGS
    check(ALL, "0f 05", 2); // SYSCALL
    check(ALL, "0f 07", 2); // SYSRET
    check(L64, "48 0f 07", 3); // SYSRETQ
    check(ALL, "0f aa", 2); // RSM
    check(NOT64, "ce", 1); // INTO
    check(ALL, "cf", 1); // IRET
    check(L64, "48 cf", 2); // IRETQ
}

#[test]
fn port_io_all_forms() {
    check(ALL, "e4 12", 2); // IN AL, imm8
    check(ALL, "e5 12", 2); // IN eAX, imm8
    check(ALL, "66 e5 12", 3); // IN AX/EAX, imm8 (the immediate is always a byte)
    check(ALL, "e6 70", 2); // OUT imm8, AL
    check(ALL, "e7 70", 2);
    check(ALL, "66 e7 70", 3);
    check(ALL, "ec", 1); // IN AL, DX
    check(ALL, "ed", 1);
    check(ALL, "66 ed", 2);
    check(ALL, "ee", 1); // OUT DX, AL
    check(ALL, "ef", 1);
    check(ALL, "66 ef", 2);
    check(ALL, "6c", 1); // INSB
    check(ALL, "6d", 1); // INSW/D
    check(ALL, "6e", 1); // OUTSB
    check(ALL, "6f", 1); // OUTSW/D
    check(ALL, "f3 6c", 2); // REP INSB
    check(ALL, "f3 6d", 2);
    check(ALL, "f3 6e", 2); // REP OUTSB
    check(ALL, "f3 6f", 2);
    check(ALL, "66 f3 6d", 3);
    check(ALL, "f3 66 6f", 3);
    check(ALL, "67 f3 6c", 3); // other address size: (E)CX/(E)DI
    check(ALL, "2e f3 6e", 3); // segment override on the source
    check(L64, "f3 48 6f", 3); // REX.W is ignored but counts
    check(L64, "67 66 f3 48 6d", 5);
}

#[test]
fn control_and_debug_registers_ignore_mod() {
    check(ALL, "0f 20 c0", 3); // MOV eAX, CR0
    check(ALL, "0f 22 d8", 3); // MOV CR3, eAX
    check(ALL, "0f 22 e0", 3); // MOV CR4, eAX
    check(ALL, "0f 21 f8", 3); // MOV eAX, DR7
    check(ALL, "0f 23 f8", 3); // MOV DR7, eAX
    check(L64, "44 0f 20 c0", 4); // MOV RAX, CR8
    check(L64, "44 0f 22 c0", 4); // MOV CR8, RAX
    check(ALL, "f0 0f 20 c0", 4); // AMD's LOCK MOV CR0 = MOV CR8
                                  // The mod field is ignored: no SIB, no displacement, whatever it says.
    check(ALL, "0f 22 18", 3);
    check(ALL, "0f 20 04", 3);
    check(ALL, "0f 20 05", 3);
    check(ALL, "0f 20 45", 3);
    check(ALL, "0f 22 9c", 3);
    check(M32, "67 0f 20 06", 4);
    check_err(ALL, "0f 24 c0", DecodeError::Invalid); // MOV from TRn: gone since the Pentium
    check_err(ALL, "0f 26 c0", DecodeError::Invalid);
}

#[test]
fn invlpg_and_system_groups() {
    check(WIDE, "0f 01 38", 3); // INVLPG [eAX]
    check(WIDE, "0f 01 3c 24", 4); // INVLPG [eSP] (SIB)
    check(WIDE, "0f 01 7d 08", 4); // INVLPG [eBP+8]
    check(WIDE, "0f 01 3d 00 10 00 00", 7); // INVLPG [rip+disp32] / [disp32]
    check(WIDE, "0f 01 b8 00 10 00 00", 7); // INVLPG [eAX+disp32]
    check(M16, "0f 01 3f", 3); // INVLPG [BX]
    check(M16, "0f 01 3e 00 10", 5); // INVLPG [disp16]
    check(WIDE, "0f 01 10", 3); // LGDT
    check(WIDE, "0f 01 18", 3); // LIDT
    check(WIDE, "0f 01 e0", 3); // SMSW eAX
    check(WIDE, "0f 01 f0", 3); // LMSW AX
    check(WIDE, "0f 00 d8", 3); // LTR AX
    check(WIDE, "0f 00 10", 3); // LLDT [eAX]
    check(WIDE, "0f 02 c1", 3); // LAR
    check(WIDE, "0f 03 c1", 3); // LSL
    check(L64, "66 0f 38 82 07", 5); // INVPCID
    check(WIDE, "0f c7 f0", 3); // RDRAND eAX
    check(WIDE, "0f c7 f8", 3); // RDSEED eAX
    check(WIDE, "f3 0f c7 f8", 4); // RDPID
    check(L64, "48 0f c7 0f", 4); // CMPXCHG16B [rdi]
    check(WIDE, "0f c7 0f", 3); // CMPXCHG8B [eDI]
    check(WIDE, "0f ae e8", 3); // LFENCE
    check(WIDE, "0f ae f0", 3); // MFENCE
    check(WIDE, "0f ae f8", 3); // SFENCE
    check(WIDE, "0f ae 38", 3); // CLFLUSH [eAX]
    check(WIDE, "0f ae 27", 3); // XSAVE [eDI]
    check(L64, "48 0f ae 2f", 4); // XRSTOR64 [rdi]
    check(L64, "f3 48 0f ae c0", 5); // RDFSBASE rax
}

#[test]
fn memory_moves_all_widths() {
    // MOV store/load, 8/16/32/64 bits.
    check(L64, "88 07", 2);
    check(L64, "66 89 07", 3);
    check(L64, "89 07", 2);
    check(L64, "48 89 07", 3);
    check(L64, "8a 07", 2);
    check(L64, "66 8b 07", 3);
    check(L64, "8b 07", 2);
    check(L64, "48 8b 07", 3);
    check(L64, "40 88 37", 3); // MOV [rdi], sil
    check(L64, "44 89 3c 24", 4); // MOV [rsp], r15d
    check(L64, "89 87 00 03 00 00", 6); // MOV [rdi+0x300], eax
    check(L64, "89 04 25 00 03 e0 fe", 7); // MOV [0xfee00300], eax (SIB, no base)
    check(L64, "8b 05 f0 ff ff ff", 6); // MOV eax, [rip-16]
    check(L64, "c6 07 12", 3); // MOV byte [rdi], imm8
    check(L64, "66 c7 07 34 12", 5); // MOV word [rdi], imm16
    check(L64, "c7 07 78 56 34 12", 6); // MOV dword [rdi], imm32
    check(L64, "48 c7 07 78 56 34 12", 7); // MOV qword [rdi], simm32
    check(L64, "c7 84 24 00 01 00 00 78 56 34 12", 11); // MOV dword [rsp+0x100], imm32
    check(L64, "c7 80 b0 00 00 00 00 00 00 00", 10); // MOV dword [rax+0xb0], 0
    check(L64, "0f b6 07", 3); // MOVZX eax, byte [rdi]
    check(L64, "0f b7 07", 3); // MOVZX eax, word [rdi]
    check(L64, "48 0f be 07", 4); // MOVSX rax, byte [rdi]
    check(L64, "0f bf 47 10", 4); // MOVSX eax, word [rdi+16]
    check(L64, "0f c3 07", 3); // MOVNTI [rdi], eax
    check(L64, "48 0f c3 07", 4); // MOVNTI [rdi], rax
    check(L64, "0f 38 f0 07", 4); // MOVBE eax, [rdi]
                                  // moffs: the offset is as wide as the address size.
    check(L64, "a0 00 03 e0 fe 00 00 00 00", 9);
    check(L64, "48 a1 00 03 e0 fe 00 00 00 00", 10);
    check(L64, "66 a3 00 03 e0 fe 00 00 00 00", 10);
    check(L64, "67 a1 00 03 e0 fe", 6);
    check(M32, "a1 00 03 e0 fe", 5);
    check(M32, "67 a2 00 03", 4);
    check(M16, "a0 00 03", 3);
    check(M16, "67 a3 00 03 e0 fe", 6);
    check(M16, "66 a1 00 03", 4);
    // Same forms in 32- and 16-bit code.
    check(M32, "89 07", 2);
    check(M32, "66 89 07", 3);
    check(M32, "c7 05 00 03 e0 fe 01 00 00 00", 10); // MOV dword [disp32], imm32
    check(M32, "66 c7 05 00 03 e0 fe 01 00", 9);
    check(M16, "89 07", 2); // MOV [BX], AX
    check(M16, "c7 06 34 12 78 56", 6); // MOV word [0x1234], imm16
    check(M16, "66 c7 06 34 12 78 56 34 12", 9); // MOV dword [0x1234], imm32
    check(M16, "c6 47 10 01", 4); // MOV byte [BX+16], 1
}

#[test]
fn immediates_by_operand_size() {
    // MOV r, imm: Iv is the only 64-bit immediate.
    check(L64, "48 b8 88 77 66 55 44 33 22 11", 10);
    check(L64, "49 bf 88 77 66 55 44 33 22 11", 10);
    check(L64, "b8 44 33 22 11", 5);
    check(L64, "66 b8 22 11", 4);
    check(L64, "66 48 b8 88 77 66 55 44 33 22 11", 11); // REX.W wins over 66
    check(L64, "48 66 b8 22 11", 5); // REX before a legacy prefix is ignored
    check(L64, "41 b0 01", 3); // MOV r8b, imm8
    check(M32, "b8 44 33 22 11", 5);
    check(M32, "66 b8 22 11", 4);
    check(M16, "b8 22 11", 3);
    check(M16, "66 b8 44 33 22 11", 6);
    // Iz: 16 or 32 bits, never 64.
    check(L64, "05 44 33 22 11", 5);
    check(L64, "48 05 44 33 22 11", 6);
    check(L64, "66 05 22 11", 4);
    check(L64, "04 01", 2);
    check(L64, "a8 01", 2);
    check(L64, "a9 44 33 22 11", 5);
    check(L64, "68 44 33 22 11", 5); // PUSH imm32
    check(L64, "66 68 22 11", 4); // PUSH imm16
    check(L64, "6a 10", 2);
    check(L64, "69 c0 44 33 22 11", 6); // IMUL eax, eax, imm32
    check(L64, "66 69 c0 22 11", 5);
    check(L64, "6b c0 10", 3);
    check(M16, "05 22 11", 3);
    check(M16, "66 05 44 33 22 11", 6);
    check(M16, "68 22 11", 3);
    // Group 1 and shifts.
    check(ALL, "80 c0 01", 3);
    check(WIDE, "81 c0 44 33 22 11", 6);
    check(WIDE, "66 81 c0 22 11", 5);
    check(M16, "81 c0 22 11", 4);
    check(ALL, "83 c0 01", 3);
    check(NOT64, "82 c0 01", 3);
    check(ALL, "c0 e0 04", 3);
    check(ALL, "c1 e0 04", 3);
    check(ALL, "d1 e0", 2);
    check(ALL, "d3 e0", 2);
    // RET/ENTER: fixed-size immediates whatever the operand size.
    check(ALL, "c2 08 00", 3);
    check(ALL, "66 c2 08 00", 4);
    check(ALL, "ca 08 00", 3);
    check(ALL, "c8 10 00 01", 4);
    check(ALL, "66 c8 10 00 01", 5);
    check(ALL, "c3", 1);
    check(ALL, "c9", 1);
    // Group 3: only TEST (/0, and its alias /1) has an immediate.
    check(ALL, "f6 c0 01", 3);
    check(ALL, "f6 c8 01", 3);
    check(ALL, "f6 d0", 2); // NOT AL
    check(WIDE, "f6 47 10 01", 4); // TEST byte [eDI+16], 1
    check(WIDE, "f7 c0 44 33 22 11", 6);
    check(WIDE, "66 f7 c0 22 11", 5);
    check(L64, "48 f7 c0 44 33 22 11", 7);
    check(M16, "f7 c0 22 11", 4);
    check(ALL, "f7 d8", 2); // NEG
    check(WIDE, "f7 34 24", 3); // DIV dword [eSP]
    check(ALL, "f7 e1", 2); // MUL
                            // AAM/AAD take an imm8 (and do not exist in 64-bit mode).
    check(NOT64, "d4 0a", 2);
    check(NOT64, "d5 0a", 2);
}

#[test]
fn branches() {
    check(ALL, "70 10", 2);
    check(ALL, "eb fe", 2);
    check(ALL, "e2 10", 2); // LOOP
    check(ALL, "e3 10", 2); // JCXZ
    check(ALL, "3e 74 10", 3); // branch hint
    check(WIDE, "e8 00 00 00 00", 5);
    check(WIDE, "e9 00 00 00 00", 5);
    check(WIDE, "0f 84 00 00 00 00", 6);
    check(M16, "e8 00 00", 3);
    check(M16, "66 e8 00 00 00 00", 6);
    check(M16, "0f 84 00 00", 4);
    check(M32, "66 e8 00 00", 4);
    // 64-bit mode: 66 shortens near branches to rel16 (AMD and QEMU); REX.W overrides it.
    check(L64, "66 e8 00 00", 4);
    check(L64, "66 e9 00 00", 4);
    check(L64, "66 0f 84 00 00", 5);
    check(L64, "66 48 e8 00 00 00 00", 7);
    check(L64, "48 e8 00 00 00 00", 6);
    // Indirect and far.
    check(ALL, "ff d0", 2); // CALL eAX
    check(L64, "ff 25 00 00 00 00", 6); // JMP [rip+0]
    check(L64, "ff 14 25 00 10 00 00", 7); // CALL [0x1000]
    check(L64, "41 ff e3", 3); // JMP r11
    check(M32, "9a 44 33 22 11 08 00", 7); // CALLF ptr16:32
    check(M32, "66 9a 22 11 08 00", 6); // CALLF ptr16:16
    check(M32, "ea 44 33 22 11 08 00", 7);
    check(M16, "ea 22 11 00 f0", 5); // JMPF ptr16:16
    check(M16, "66 ea 44 33 22 11 08 00", 8);
    check(WIDE, "ff 1f", 2); // CALLF m16:32
    check(WIDE, "ff 2f", 2); // JMPF m16:32
                             // RTM.
    check(WIDE, "c7 f8 00 00 00 00", 6); // XBEGIN rel32
    check(WIDE, "66 c7 f8 00 00", 5); // XBEGIN rel16
    check(ALL, "c6 f8 01", 3); // XABORT imm8
    check(ALL, "0f 01 d5", 3); // XEND
}

#[test]
fn modrm_sib_displacement_forms() {
    check(L64, "8b 04 24", 3); // [rsp]
    check(L64, "8b 44 24 08", 4); // [rsp+8]
    check(L64, "8b 84 24 00 01 00 00", 7); // [rsp+0x100]
    check(L64, "8b 04 25 00 10 00 00", 7); // [disp32] via SIB
    check(L64, "8b 04 65 00 10 00 00", 7); // [disp32 + index] (base 101, mod 00)
    check(L64, "8b 44 65 10", 4); // [rbp + index + disp8]
    check(L64, "8b 45 00", 3); // [rbp+0]
    check(L64, "41 8b 45 00", 4); // [r13+0]: REX.B does not make r/m 101 RIP-relative
    check(L64, "41 8b 04 24", 4); // [r12]: still needs the SIB byte
    check(L64, "41 8b 05 00 00 00 00", 7); // RIP-relative, REX.B irrelevant
    check(L64, "4f 8b 84 c8 00 01 00 00", 8); // MOV r8, [r8+r9*8+0x100]
    check(L64, "8d 04 24", 3); // LEA
    check(L64, "8d 05 00 00 00 00", 6);
    check(L64, "67 8b 07", 3); // [edi]
    check(L64, "67 8b 05 00 00 00 00", 7); // [eip+disp32]
    check(L64, "64 48 8b 04 25 28 00 00 00", 9); // MOV rax, fs:[0x28]
    check(L64, "65 48 8b 04 25 00 00 00 00", 9);
    check(M32, "8b 05 00 10 00 00", 6); // [disp32] (no RIP-relative outside 64-bit)
    check(M32, "8b 0c 8d 00 10 00 00", 7); // [ecx*4+disp32]
                                           // 16-bit addressing with 67 in 32-bit code: no SIB, disp16.
    check(M32, "67 8b 07", 3); // [bx]
    check(M32, "67 8b 04", 3); // [si]: r/m 100 is not SIB
    check(M32, "67 8b 06 34 12", 5); // [disp16]
    check(M32, "67 8b 47 10", 4); // [bx+disp8]
    check(M32, "67 8b 87 34 12", 5); // [bx+disp16]
    check(M32, "67 8b 46 00", 4); // [bp+0]
    check(M32, "67 c4 06 34 12", 5); // LES eAX, [disp16]
                                     // 16-bit code.
    check(M16, "8b 07", 2);
    check(M16, "8b 04", 2);
    check(M16, "8b 06 34 12", 4);
    check(M16, "8b 47 10", 3);
    check(M16, "8b 87 34 12", 4);
    check(M16, "67 8b 04 24", 4); // 32-bit addressing: SIB
    check(M16, "67 8b 05 00 10 00 00", 7); // [disp32]
    check(M16, "67 8b 44 24 08", 5);
    check(M16, "26 8b 07", 3); // ES override
}

#[test]
fn legacy_only_opcodes() {
    for op in ["06", "07", "0e", "16", "17", "1e", "1f", "27", "2f", "37", "3f", "60", "61", "d6"] {
        check(NOT64, op, 1);
        check_err(L64, op, DecodeError::Invalid);
    }
    for op in ["d4 0a", "d5 0a", "82 c0 01", "9a 00 00 00 00 00 00", "ea 00 00 00 00 00 00", "ce"] {
        check_err(L64, op, DecodeError::Invalid);
    }
    check(NOT64, "40", 1); // INC eAX
    check(NOT64, "4f", 1); // DEC eDI
    check(M32, "63 c1", 2); // ARPL
    check(L64, "48 63 c1", 3); // MOVSXD
    check(L64, "63 07", 2);
    check(M32, "62 07", 2); // BOUND eAX, [eDI]
    check(M32, "c5 07", 2); // LDS eAX, [eDI]
    check(M32, "c4 05 00 10 00 00", 6); // LES eAX, [disp32]
    check(M16, "c5 07", 2); // LDS AX, [BX]
    check(WIDE, "0f b2 07", 3); // LSS
    check(WIDE, "0f b4 07", 3); // LFS
    check(WIDE, "0f b5 07", 3); // LGS
    check(ALL, "0f a0", 2); // PUSH FS
    check(ALL, "0f a9", 2); // POP GS
}

#[test]
fn rex_prefixes() {
    check(L64, "41 50", 2); // PUSH r8
    check(L64, "48 90", 2);
    check(L64, "40 88 c7", 3); // MOV dil, al
    check(L64, "49 0f c8", 3); // BSWAP r8
    check(L64, "48 48 89 c8", 4); // two REX: only the last counts, both take space
    check(L64, "48 f3 48 a5", 4); // REX, REP, REX, MOVSQ
    check(L64, "0f c8", 2); // BSWAP eax
    check(L64, "4c 8b 3c 24", 4);
}

#[test]
fn sse_and_two_byte_map() {
    check(WIDE, "0f 28 c1", 3); // MOVAPS
    check(WIDE, "66 0f 6f 07", 4); // MOVDQA
    check(WIDE, "f3 0f 6f 07", 4); // MOVDQU
    check(WIDE, "f2 0f 10 07", 4); // MOVSD
    check(WIDE, "0f 70 c1 1b", 4); // PSHUFW
    check(WIDE, "66 0f 70 c1 1b", 5); // PSHUFD
    check(WIDE, "f3 0f 70 c1 1b", 5); // PSHUFHW
    check(WIDE, "66 0f 71 d0 04", 5); // PSRLW xmm, imm8
    check(WIDE, "66 0f 72 e0 04", 5); // PSRAD xmm, imm8
    check(WIDE, "66 0f 73 d8 04", 5); // PSRLDQ
    check(WIDE, "0f c2 c1 00", 4); // CMPEQPS
    check(WIDE, "66 0f c4 c0 01", 5); // PINSRW
    check(WIDE, "66 0f c5 c0 01", 5); // PEXTRW
    check(WIDE, "0f c6 c1 1b", 4); // SHUFPS
    check(WIDE, "0f 77", 2); // EMMS
    check(WIDE, "0f 0e", 2); // FEMMS
    check(WIDE, "0f 18 08", 3); // PREFETCHT0
    check(WIDE, "0f 0d 08", 3); // PREFETCHW
    check(WIDE, "0f 1f 00", 3); // NOP Ev
    check(WIDE, "0f 1f 44 00 00", 5);
    check(L64, "66 0f 1f 84 00 00 00 00 00", 9);
    check(L64, "66 2e 0f 1f 84 00 00 00 00 00", 10);
    check(L64, "f3 0f 1e fa", 4); // ENDBR64
    check(M32, "f3 0f 1e fb", 4); // ENDBR32
    check(WIDE, "0f 44 c1", 3); // CMOVE
    check(WIDE, "0f 94 c0", 3); // SETE
    check(WIDE, "0f a3 c8", 3); // BT
    check(WIDE, "0f a4 c0 04", 4); // SHLD imm8
    check(WIDE, "0f a5 c0", 3); // SHLD CL
    check(WIDE, "0f ac c0 04", 4); // SHRD imm8
    check(WIDE, "0f ba e0 04", 4); // BT eAX, 4
    check(WIDE, "0f ba 20 04", 4); // BT [eAX], 4
    check(WIDE, "0f ba 7c 24 08 04", 6); // BTC [eSP+8], 4
    check(WIDE, "0f af c1", 3); // IMUL
    check(WIDE, "0f b0 0f", 3); // CMPXCHG
    check(L64, "f0 48 0f b1 0f", 5); // LOCK CMPXCHG [rdi], rcx
    check(WIDE, "0f c1 07", 3); // XADD
    check(WIDE, "f3 0f b8 c1", 4); // POPCNT
    check(L64, "66 f3 0f b8 c1", 5);
    check(WIDE, "f3 0f bc c1", 4); // TZCNT
    check(WIDE, "f3 0f bd c1", 4); // LZCNT
    check(WIDE, "0f b9 c0", 3); // UD1
    check(WIDE, "0f ff c0", 3); // UD0
    check(WIDE, "0f 7e c0", 3); // MOVD
    check(L64, "66 48 0f 7e c0", 5); // MOVQ rax, xmm0
    check(WIDE, "0f 78 c0", 3); // VMREAD
    check(WIDE, "0f 79 c0", 3); // VMWRITE
                                // SSE4a: EXTRQ/INSERTQ with two immediates.
    check(WIDE, "66 0f 78 c0 04 08", 6);
    check(WIDE, "f2 0f 78 c1 04 08", 6);
    check(WIDE, "66 f2 0f 78 c1 04 08", 7); // F2 wins over 66
    check(WIDE, "66 0f 79 c1", 4);
    check(WIDE, "f2 0f 79 c1", 4);
    check(WIDE, "f2 0f 2b 07", 4); // MOVNTSD
                                   // 3DNow!: ModRM, then the opcode as a suffix byte.
    check(WIDE, "0f 0f c1 b4", 4); // PFMUL mm0, mm1
    check(WIDE, "0f 0f 40 10 9e", 5); // PFADD mm0, [eAX+16]
    check(L64, "0f 0f 05 00 00 00 00 9e", 8); // RIP-relative
    check(M16, "0f 0f 06 34 12 9e", 6);
}

#[test]
fn three_byte_maps() {
    check(WIDE, "66 0f 38 00 c1", 5); // PSHUFB
    check(WIDE, "0f 38 00 c1", 4); // PSHUFB mm
    check(WIDE, "f2 0f 38 f1 c1", 5); // CRC32
    check(L64, "f2 48 0f 38 f1 c1", 6);
    check(WIDE, "66 0f 38 f6 c1", 5); // ADCX
    check(WIDE, "0f 38 c8 c1", 4); // SHA1NEXTE
    check(L64, "66 0f 38 dc 44 24 10", 7); // AESENC xmm0, [rsp+16]
    check(WIDE, "66 0f 3a 0f c1 08", 6); // PALIGNR
    check(WIDE, "66 0f 3a 16 c0 01", 6); // PEXTRD
    check(L64, "66 48 0f 3a 16 c0 01", 7); // PEXTRQ
    check(WIDE, "66 0f 3a 44 c1 00", 6); // PCLMULQDQ
    check(WIDE, "0f 3a cc c1 00", 5); // SHA1RNDS4
    check(L64, "66 0f 3a 63 05 00 00 00 00 00", 10); // PCMPISTRI xmm0, [rip], 0
    check(M16, "66 0f 3a 0f 06 34 12 08", 8);
}

#[test]
fn x87() {
    check(ALL, "d9 c0", 2); // FLD st0
    check(ALL, "d9 ee", 2); // FLDZ
    check(ALL, "db e3", 2); // FNINIT
    check(ALL, "9b", 1); // FWAIT is its own instruction
    check(WIDE, "dd 45 f8", 3); // FLD qword [eBP-8]
    check(WIDE, "df 2c 24", 3); // FILD qword [eSP]
    check(WIDE, "d9 7d fc", 3); // FNSTCW
    check(L64, "dd 05 00 00 00 00", 6);
}

#[test]
fn vex() {
    let vex_modes: &[CpuMode] = &[Long64, Protected32, Compat32, Protected16, Compat16];
    check(vex_modes, "c5 f8 77", 3); // VZEROUPPER: no ModRM
    check(vex_modes, "c5 fc 77", 3); // VZEROALL
    check(vex_modes, "c5 f9 6f c1", 4); // VMOVDQA xmm0, xmm1
    check(L64, "c5 fd 6f 07", 4); // VMOVDQA ymm0, [rdi]
    check(vex_modes, "c4 e2 79 00 c1", 5); // VPSHUFB
    check(vex_modes, "c4 e3 79 0f c1 08", 6); // VPALIGNR (map 3: imm8)
    check(vex_modes, "c5 f9 70 c1 1b", 5); // VPSHUFD (map 1 imm8)
    check(vex_modes, "c5 f9 73 d0 04", 5); // VPSRLQ imm8
    check(vex_modes, "c5 f8 c2 c1 00", 5); // VCMPPS
    check(vex_modes, "c5 f8 c6 c1 00", 5); // VSHUFPS
    check(L64, "c4 c1 79 6f 44 24 10", 7); // VMOVDQA xmm0, [r12+16]
    check(vex_modes, "c4 e3 71 4a c2 30", 6); // VBLENDVPS (is4 byte)
    check(L64, "c4 e2 7d 18 07", 5); // VBROADCASTSS ymm0, [rdi]
    check(L64, "c5 f8 ae 17", 4); // VLDMXCSR [rdi]
    check(L64, "c4 e2 70 f7 c2", 5); // BEXTR (BMI1, VEX map 2)
    check(L64, "c4 e3 fb f0 c1 05", 6); // RORX rax, rcx, 5
    check(L64, "c4 e2 78 49 c0", 5); // TILERELEASE
    check(L64, "c4 e1 f9 7e c0", 5); // VMOVQ rax, xmm0
    check(L64, "c5 f9 6f 05 00 00 00 00", 8); // RIP-relative
    check(L64, "67 c5 f9 6f 07", 5); // 67 is allowed before VEX
    check(L64, "2e c5 f9 6f 07", 5); // and segment overrides
    check(M32, "67 c5 f9 6f 07", 5); // VEX with 16-bit addressing
    check(M32, "c5 f9 6f 05 00 10 00 00", 8);
    check(PM16, "c5 f9 6f 06 34 12", 6);
    // Prefixes that make VEX #UD.
    check_err(L64, "66 c5 f9 6f c1", DecodeError::Invalid);
    check_err(L64, "f3 c5 f9 6f c1", DecodeError::Invalid);
    check_err(L64, "f2 c5 f9 6f c1", DecodeError::Invalid);
    check_err(L64, "f0 c5 f9 6f c1", DecodeError::Invalid);
    check_err(L64, "48 c5 f9 6f c1", DecodeError::Invalid);
    check(L64, "48 2e c5 f9 6f c1", 6); // the REX is cancelled by the segment prefix
                                        // Maps that do not exist.
    check_err(L64, "c4 e0 79 00 c1", DecodeError::Invalid);
    check_err(L64, "c4 e4 79 00 c1", DecodeError::Invalid);
    // Real mode has no VEX: C4/C5 are LES/LDS, whose register forms do not exist.
    check_err(&[Real], "c5 f9 6f c1", DecodeError::Invalid);
    check(&[Real], "c5 36 34 12", 4); // LDS SI, [0x1234]
}

#[test]
fn evex() {
    let evex_modes: &[CpuMode] = &[Long64, Protected32, Compat32, Protected16, Compat16];
    check(evex_modes, "62 f1 7c 48 28 c1", 6); // VMOVAPS zmm0, zmm1
    check(L64, "62 f1 fd 48 6f 47 01", 7); // VMOVDQA64 zmm0, [rdi+0x40] (disp8*N is still 1 byte)
    check(L64, "62 f1 7c 48 58 87 00 01 00 00", 10); // VADDPS zmm0, [rdi+0x100]
    check(evex_modes, "62 f3 7d 48 0f c1 08", 7); // VPALIGNR zmm (map 3)
    check(evex_modes, "62 f1 7d 48 70 c1 1b", 7); // VPSHUFD zmm (map 1 imm8)
    check(evex_modes, "62 f1 7d 48 72 e0 04", 7); // VPSRAD zmm, imm8
    check(evex_modes, "62 f2 7d 48 00 c1", 6); // VPSHUFB zmm (map 2)
    check(evex_modes, "62 f5 7c 48 58 c1", 6); // VADDPH (map 5)
    check(evex_modes, "62 f6 7d 48 2c c1", 6); // VSCALEFPH (map 6)
    check(L64, "62 d1 7c 48 28 04 24", 7); // VMOVAPS zmm0, [r12]
    check(L64, "62 f1 7c 48 28 05 00 00 00 00", 10); // RIP-relative
    check(L64, "62 f1 7c 48 77 c1", 6); // map 1 opcode 77 has ModRM under EVEX
    check_err(L64, "62 f4 7c 48 28 c1", DecodeError::Invalid); // map 4
    check_err(L64, "62 f7 7c 48 28 c1", DecodeError::Invalid); // map 7
    check_err(L64, "62 f0 7c 48 28 c1", DecodeError::Invalid); // map 0
    check_err(L64, "62 f9 7c 48 28 c1", DecodeError::Invalid); // reserved P0 bit 3
    check_err(L64, "62 f1 78 48 28 c1", DecodeError::Invalid); // fixed P1 bit 2 clear
    check_err(L64, "66 62 f1 7c 48 28 c1", DecodeError::Invalid);
    // Outside 64-bit mode a memory ModRM makes it BOUND.
    check(M32, "62 44 24 08", 4); // BOUND eAX, [eSP+8]
    check(M16, "62 06 34 12", 4); // BOUND AX, [0x1234]
    check_err(&[Real], "62 f1 7c 48 28 c1", DecodeError::Invalid);
}

#[test]
fn xop() {
    let xop_modes: &[CpuMode] = &[Long64, Protected32, Compat32, Protected16, Compat16];
    check(xop_modes, "8f e8 78 c0 c1 08", 6); // VPROTB xmm0, xmm1, 8 (map 8: imm8)
    check(xop_modes, "8f e9 78 90 c1", 5); // VPROTB xmm0, xmm1, xmm0 (map 9)
    check(xop_modes, "8f ea 78 10 c1 04 03 00 00", 9); // BEXTR eax, ecx, imm32 (map 0Ah)
    check(L64, "8f e9 f8 01 0f", 5); // BLCFILL rax, [rdi]
    check(L64, "8f 07", 2); // POP qword [rdi]
    check(L64, "8f c0", 2); // POP rax
    check(M32, "8f 44 24 04", 4);
    check(M16, "8f 06 34 12", 4);
    check_err(L64, "8f e0 78 c0 c1", DecodeError::Invalid); // reg 4, map 0: neither
    check_err(L64, "8f eb 78 c0 c1", DecodeError::Invalid); // map 0Bh
    check_err(L64, "66 8f e8 78 c0 c1 08", DecodeError::Invalid);
    check_err(&[Real], "8f e8 78 c0 c1 08", DecodeError::Invalid);
}

#[test]
fn undefined_opcodes_and_group_members() {
    for op in [
        "0f 04", "0f 0a", "0f 0c", "0f 25", "0f 27", "0f 36", "0f 39", "0f 3b", "0f 3f", "0f 7a", "0f 7b", "0f a6",
        "0f a7",
    ] {
        check_err(ALL, op, DecodeError::Invalid);
    }
    check_err(ALL, "fe d0", DecodeError::Invalid); // FE /2
    check_err(ALL, "fe f8", DecodeError::Invalid); // FE /7
    check(ALL, "fe c0", 2); // INC AL
    check(ALL, "fe c8", 2); // DEC AL
    check_err(ALL, "ff f8", DecodeError::Invalid); // FF /7
    check(ALL, "ff f0", 2); // PUSH eAX (FF /6)
    check_err(ALL, "c6 c8 01", DecodeError::Invalid); // C6 /1
    check_err(ALL, "c6 f9 01", DecodeError::Invalid); // C6 /7 but not F8
    check_err(ALL, "c7 c8 00 00", DecodeError::Invalid);
    check_err(ALL, "0f ba c0 04", DecodeError::Invalid); // 0F BA /0
    check_err(ALL, "0f ba d8 04", DecodeError::Invalid); // 0F BA /3
    check_err(WIDE, "0f b8 c1", DecodeError::Invalid); // JMPE: Itanium only
    check_err(WIDE, "f2 0f b8 c1", DecodeError::Invalid);
    check_err(WIDE, "f3 0f 78 c0", DecodeError::Invalid);
    check_err(L64, "8f cb", DecodeError::Invalid); // 8F /1 (XOP) with map 0Bh
}

#[test]
fn length_limit_and_truncation() {
    // Exactly 15 bytes is fine.
    check(L64, "f0 f0 f0 48 c7 84 24 00 01 00 00 78 56 34 12", 15);
    let mut nops = hex("66 66 66 66 66 66 66 66 66 66 66 66 66 66 90");
    assert_eq!(instruction_length(&nops, Long64), Ok(15));
    // Sixteen: the processor raises #GP.
    nops.insert(0, 0x66);
    assert_eq!(instruction_length(&nops, Long64), Err(DecodeError::TooLong));
    // Too long is reported even when fewer than 16 bytes are given, once the 15th byte is
    // provably not the last.
    check_err(L64, "26 66 67 f2 f3 2e 3e 36 64 65 48 c7 c0 00 00", DecodeError::TooLong);
    check_err(L64, "26 66 67 f2 f3 2e 3e 36 64 65 48 c7 c0 00 00 00 00 00", DecodeError::TooLong);
    // Only 15 bytes are ever looked at.
    let prefixes = [0x2eu8; 40];
    assert_eq!(instruction_length(&prefixes, Long64), Err(DecodeError::TooLong));
    // Truncated input.
    check_err(ALL, "", DecodeError::Truncated);
    check_err(ALL, "0f", DecodeError::Truncated);
    check_err(ALL, "0f 38", DecodeError::Truncated);
    check_err(ALL, "e8 00", DecodeError::Truncated);
    check_err(ALL, "66 66", DecodeError::Truncated);
    check_err(L64, "48", DecodeError::Truncated);
    check_err(ALL, "c5", DecodeError::Truncated);
    check_err(ALL, "62", DecodeError::Truncated);
    check_err(ALL, "8f", DecodeError::Truncated);
    check_err(L64, "c4 e2 79", DecodeError::Truncated);
    check_err(L64, "8b 04", DecodeError::Truncated);
    check_err(L64, "8b 84 24 00", DecodeError::Truncated);
    assert_eq!(instruction_length(&[0x66; 14], Long64), Err(DecodeError::Truncated));
    assert_eq!(instruction_length(&[0x66; 15], Long64), Err(DecodeError::TooLong));
}

#[test]
fn every_one_and_two_byte_opcode_has_a_consistent_length() {
    // For every opcode in the one-byte and 0F maps, with a register ModRM and a generous tail,
    // the length is either an error or at most 15; and it never depends on the bytes after it.
    for mode in ALL {
        for op in 0..=255u8 {
            for escape in [&[][..], &[0x0f][..]] {
                let mut b: Vec<u8> = escape.to_vec();
                b.push(op);
                b.extend_from_slice(&[0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                if let Ok(n) = instruction_length(&b, *mode) {
                    assert!(n <= MAX_INSN_LEN);
                    assert_eq!(instruction_length(&b[..n], *mode), Ok(n), "{b:02x?} in {mode:?}");
                }
            }
        }
    }
}

#[test]
fn immediate_value_is_read_little_endian() {
    let b = hex("48 c7 07 78 56 34 12");
    let insn = decode(&b, Long64).unwrap();
    assert_eq!((insn.imm_offset, insn.imm_len), (3, 4));
    assert_eq!(insn.imm(&b), 0x1234_5678);
    assert_eq!(insn.operand_size, 8);
    let b = hex("a1 00 03 e0 fe 00 00 00 00");
    let insn = decode(&b, Long64).unwrap();
    assert_eq!((insn.imm_len, insn.imm(&b)), (8, 0xfee0_0300));
}

fn any_mode() -> impl Strategy<Value = CpuMode> {
    prop::sample::select(ALL)
}

/// Bytes biased towards the interesting parts of the encoding space.
fn interesting_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => any::<u8>(),
        2 => prop::sample::select(&[0x66u8, 0x67, 0xf0, 0xf2, 0xf3, 0x2e, 0x48, 0x41, 0x4f][..]),
        2 => prop::sample::select(&[0x0fu8, 0x38, 0x3a, 0xc4, 0xc5, 0x62, 0x8f, 0xc0, 0x04, 0x05, 0x24][..]),
    ];
    prop::collection::vec(byte, 0..20)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn never_panics_and_respects_limits(bytes in interesting_bytes(), mode in any_mode()) {
        if let Ok(n) = instruction_length(&bytes, mode) {
            prop_assert!(n >= 1);
            prop_assert!(n <= MAX_INSN_LEN);
            prop_assert!(n <= bytes.len());
        }
    }

    #[test]
    fn length_is_self_delimiting(bytes in interesting_bytes(), tail in prop::collection::vec(any::<u8>(), 0..16), mode in any_mode()) {
        if let Ok(n) = instruction_length(&bytes, mode) {
            // The instruction alone has the same length; any tail is ignored.
            prop_assert_eq!(instruction_length(&bytes[..n], mode), Ok(n));
            let mut longer = bytes[..n].to_vec();
            longer.extend_from_slice(&tail);
            prop_assert_eq!(instruction_length(&longer, mode), Ok(n));
            // Any shorter piece is truncated.
            prop_assert_eq!(instruction_length(&bytes[..n - 1], mode), Err(DecodeError::Truncated));
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..32), mode in any_mode()) {
        match instruction_length(&bytes, mode) {
            Ok(n) => prop_assert!(n <= MAX_INSN_LEN.min(bytes.len())),
            Err(DecodeError::Truncated) => prop_assert!(bytes.len() < MAX_INSN_LEN),
            Err(_) => {}
        }
    }
}
