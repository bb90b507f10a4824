//! Cross-check of [`keel_x86::instruction_length`] against GNU objdump on random instruction
//! bytes, in 64-, 32- and 16-bit mode.
//!
//! This is a fuzzing aid, not part of the normal test run: it needs binutils and takes a while.
//! It only runs when asked for:
//!
//! ```text
//! KEEL_X86_FUZZ=1 cargo test -p keel-x86 --test objdump -- --nocapture
//! ```
//!
//! Optional: `KEEL_X86_FUZZ_CASES` (cases per mode, default 20000), `KEEL_X86_FUZZ_SEED`, and
//! `KEEL_X86_FUZZ_VERBOSE=1` to list the bytes keel decodes and objdump calls `(bad)`.
//! Without `KEEL_X86_FUZZ=1` the test returns at once; with it but without `objdump` it fails.
//!
//! It fails if keel and objdump both decode an instruction but disagree on its length. Bytes that
//! keel decodes and objdump calls `(bad)` are counted and not failed: keel decodes unassigned
//! opcodes in the vector and three-byte maps by their map's rule, and objdump marks some valid
//! but unusual forms bad. Bytes keel rejects but objdump decodes are failed too, except for the
//! deliberate differences in `known_difference`: VEX/EVEX/XOP after a `66`, `F2`, `F3`, `F0` or
//! REX prefix (`#UD` on the processor), `MOV` to and from test registers and VIA PadLock (neither
//! exists on AMD or Intel processors). Cases where objdump prints an ignored
//! prefix as an instruction of its own (`rex.W`, `data16`, `ds` ...) or merges `FWAIT` into the
//! next x87 instruction are skipped: that is objdump's presentation, not the processor's
//! decoding.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use keel_x86::{instruction_length, CpuMode, DecodeError};

/// xorshift64*: deterministic, seedable, good enough for fuzzing.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick(&mut self, choices: &[u8]) -> u8 {
        choices[self.below(choices.len() as u64) as usize]
    }
}

/// 15 bytes shaped like an instruction: some prefixes, an escape or vector prefix, then noise.
fn random_instruction(rng: &mut Rng, mode: CpuMode) -> Vec<u8> {
    let mut b = Vec::with_capacity(15);
    for _ in 0..rng.below(4) {
        b.push(rng.pick(&[0x66, 0x67, 0xf2, 0xf3, 0xf0, 0x2e, 0x3e, 0x26, 0x64, 0x65, 0x36, 0x66, 0x66]));
    }
    if mode == CpuMode::Long64 && rng.below(2) == 0 {
        b.push(0x40 | rng.byte() & 0xf);
    }
    match rng.below(10) {
        0..=2 => b.push(rng.byte()),
        3 | 4 => b.extend_from_slice(&[0x0f, rng.byte()]),
        5 => b.extend_from_slice(&[0x0f, 0x38, rng.byte()]),
        6 => b.extend_from_slice(&[0x0f, 0x3a, rng.byte()]),
        7 => {
            // VEX: valid maps most of the time.
            if rng.below(2) == 0 {
                b.extend_from_slice(&[0xc5, rng.byte() | 0xc0]);
            } else {
                let map = if rng.below(8) == 0 { rng.byte() & 0x1f } else { 1 + rng.below(3) as u8 };
                b.extend_from_slice(&[0xc4, (rng.byte() & 0xe0) | 0xc0 | map, rng.byte()]);
            }
        }
        8 => {
            let map = rng.pick(&[1, 2, 3, 5, 6, 1, 2, 3, 4, 7]);
            b.extend_from_slice(&[0x62, (rng.byte() & 0xf0) | 0xc0 | map, rng.byte() | 0x04, rng.byte()]);
        }
        _ => {
            let map = rng.pick(&[8, 9, 10, 8, 9, 10, 11, 0]);
            b.extend_from_slice(&[0x8f, (rng.byte() & 0xe0) | map, rng.byte()]);
        }
    }
    while b.len() < 15 {
        b.push(rng.byte());
    }
    b.truncate(15);
    b
}

/// objdump's reading of one file: length of the first instruction and its text.
struct Objdump {
    len: usize,
    text: String,
}

/// Runs objdump over `files` and returns the first instruction of each.
fn objdump(files: &[PathBuf], machine: &str, options: &str) -> Vec<Option<Objdump>> {
    let out = Command::new("objdump")
        .args(["-D", "-b", "binary", "-m", machine, "-M", options, "--insn-width=16"])
        .args(files)
        .output()
        .expect("objdump runs");
    assert!(out.status.success(), "objdump failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let index: BTreeMap<&Path, usize> = files.iter().enumerate().map(|(i, f)| (f.as_path(), i)).collect();
    let mut result: Vec<Option<Objdump>> = files.iter().map(|_| None).collect();
    let mut current = None;
    for line in stdout.lines() {
        if let Some(path) = line.strip_suffix(":     file format binary") {
            current = index.get(Path::new(path)).copied();
            continue;
        }
        let Some(i) = current else { continue };
        if result[i].is_some() || !line.trim_start().starts_with("0:\t") {
            continue;
        }
        let mut parts = line.split('\t');
        parts.next();
        let len = parts.next().map_or(0, |hex| hex.split_whitespace().count());
        let text = parts.next().unwrap_or("").trim().to_string();
        result[i] = Some(Objdump { len, text });
    }
    result
}

/// True if objdump's "instruction" is only prefixes: it prints prefixes it considers unused (an
/// ignored REX, say) on a line of their own.
fn is_lone_prefix(text: &str) -> bool {
    text.split_whitespace().all(|word| {
        word.starts_with("rex")
            || matches!(
                word,
                "data16"
                    | "data32"
                    | "addr16"
                    | "addr32"
                    | "cs"
                    | "ds"
                    | "es"
                    | "ss"
                    | "fs"
                    | "gs"
                    | "lock"
                    | "rep"
                    | "repz"
                    | "repnz"
                    | "repe"
                    | "repne"
                    | "xacquire"
                    | "xrelease"
                    | "bnd"
                    | "notrack"
            )
    })
}

/// The first byte after the legacy (and, in 64-bit mode, REX) prefixes.
fn opcode_byte(bytes: &[u8], mode: CpuMode) -> Option<u8> {
    let is_prefix = |b: u8| {
        matches!(b, 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3)
            || (mode == CpuMode::Long64 && (0x40..=0x4f).contains(&b))
    };
    bytes.iter().copied().find(|&b| !is_prefix(b))
}

/// Differences from objdump that are deliberate; see the crate documentation.
fn known_difference(bytes: &[u8], mode: CpuMode, theirs: &Objdump) -> bool {
    // The processor raises #UD for VEX, EVEX and XOP after 66, F2, F3, F0 or REX; objdump decodes
    // them.
    let prefixes = &bytes[..bytes.iter().position(|&b| Some(b) == opcode_byte(bytes, mode)).unwrap_or(0)];
    let vector = matches!(opcode_byte(bytes, mode), Some(0xc4 | 0xc5 | 0x62 | 0x8f));
    let ud_prefix = prefixes.iter().any(|b| matches!(b, 0x66 | 0xf0 | 0xf2 | 0xf3))
        || (mode == CpuMode::Long64 && prefixes.last().is_some_and(|b| (0x40..=0x4f).contains(b)));
    (vector && ud_prefix)
        // MOV to and from the 386/486 test registers (0F 24, 0F 26) no longer exists.
        || theirs.text.contains("%tr")
        // VIA PadLock (0F A6, 0F A7) raises #UD on AMD and Intel processors.
        || ["xcrypt", "xsha", "xstore", "montmul"].iter().any(|m| theirs.text.contains(m))
}

#[test]
fn lengths_match_objdump() {
    if std::env::var("KEEL_X86_FUZZ").as_deref() != Ok("1") {
        eprintln!("objdump cross-check skipped; run with KEEL_X86_FUZZ=1 to enable it");
        return;
    }
    let version = Command::new("objdump").arg("--version").output();
    assert!(version.is_ok_and(|o| o.status.success()), "KEEL_X86_FUZZ=1 but objdump is not installed");
    let cases: usize = std::env::var("KEEL_X86_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let seed: u64 = std::env::var("KEEL_X86_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x6b65_656c);
    let mut rng = Rng(seed | 1);
    let dir = std::env::temp_dir().join(format!("keel-x86-objdump-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let verbose = std::env::var("KEEL_X86_FUZZ_VERBOSE").is_ok();
    let mut report = String::new();
    let mut failures = 0;
    for (mode, machine, options) in [
        (CpuMode::Long64, "i386:x86-64", "amd64"),
        (CpuMode::Protected32, "i386", "i386"),
        (CpuMode::Protected16, "i8086", "i8086"),
    ] {
        let (mut agree, mut skipped, mut ours_only, mut known) = (0, 0, 0, 0);
        let mut done = 0;
        while done < cases {
            let batch = (cases - done).min(500);
            let inputs: Vec<Vec<u8>> = (0..batch).map(|_| random_instruction(&mut rng, mode)).collect();
            let files: Vec<PathBuf> = (0..batch).map(|i| dir.join(format!("c{i}.bin"))).collect();
            for (f, b) in files.iter().zip(&inputs) {
                std::fs::write(f, b).expect("write case");
            }
            for (bytes, theirs) in inputs.iter().zip(objdump(&files, machine, options)) {
                let theirs = theirs.expect("objdump printed every file");
                let ours = instruction_length(bytes, mode);
                let hex: String = bytes.iter().map(|b| format!("{b:02x} ")).collect();
                let their_valid = !theirs.text.contains("(bad)") && theirs.len > 0;
                if is_lone_prefix(&theirs.text) || opcode_byte(bytes, mode) == Some(0x9b) {
                    skipped += 1;
                } else if let Ok(n) = ours {
                    if !their_valid {
                        ours_only += 1;
                        if verbose {
                            println!("{mode:?}: {hex}: keel {n}, objdump ({})", theirs.text);
                        }
                    } else if n == theirs.len {
                        agree += 1;
                    } else {
                        failures += 1;
                        let _ = writeln!(report, "{mode:?}: {hex}: keel {n}, objdump {} ({})", theirs.len, theirs.text);
                    }
                } else if their_valid && ours == Err(DecodeError::TooLong) {
                    // keel needs more than 15 bytes where objdump found a shorter instruction.
                    failures += 1;
                    let _ =
                        writeln!(report, "{mode:?}: {hex}: keel {ours:?}, objdump {} ({})", theirs.len, theirs.text);
                } else if their_valid && ours == Err(DecodeError::Invalid) {
                    if known_difference(bytes, mode, &theirs) {
                        known += 1;
                    } else {
                        failures += 1;
                        let _ = writeln!(
                            report,
                            "{mode:?}: {hex}: keel {ours:?}, objdump {} ({})",
                            theirs.len, theirs.text
                        );
                    }
                } else {
                    // Both reject it, or it runs past 15 bytes (which objdump shows as partial).
                    skipped += 1;
                }
            }
            done += batch;
        }
        println!(
            "{mode:?}: {agree} agree, {ours_only} decoded by keel only, {known} known differences, {skipped} skipped"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures == 0, "{failures} disagreements with objdump:\n{report}");
}
