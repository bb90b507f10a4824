//! SVM exit codes (AMD APM vol. 2, appendix C) and their translation into `virt::Exit`.

use super::vmcb::Vmcb;
use crate::arch::x86::virt::{Exit, IoExit, NpfExit};

/// First exception exit code (0x40 + vector).
pub const EXCP_BASE: u64 = 0x40;
/// Physical interrupt.
pub const INTR: u64 = 0x60;
/// Physical NMI.
pub const NMI: u64 = 0x61;
/// Virtual interrupt window.
pub const VINTR: u64 = 0x64;
/// CPUID.
pub const CPUID: u64 = 0x72;
/// INVD.
pub const INVD: u64 = 0x76;
/// PAUSE.
pub const PAUSE: u64 = 0x77;
/// HLT.
pub const HLT: u64 = 0x78;
/// INVLPGA.
pub const INVLPGA: u64 = 0x7a;
/// IN/OUT.
pub const IOIO: u64 = 0x7b;
/// RDMSR/WRMSR.
pub const MSR: u64 = 0x7c;
/// Task switch.
pub const TASK_SWITCH: u64 = 0x7d;
/// Shutdown (triple fault).
pub const SHUTDOWN: u64 = 0x7f;
/// VMRUN.
pub const VMRUN: u64 = 0x80;
/// VMMCALL.
pub const VMMCALL: u64 = 0x81;
/// VMLOAD.
pub const VMLOAD: u64 = 0x82;
/// VMSAVE.
pub const VMSAVE: u64 = 0x83;
/// STGI.
pub const STGI: u64 = 0x84;
/// CLGI.
pub const CLGI: u64 = 0x85;
/// SKINIT.
pub const SKINIT: u64 = 0x86;
/// MONITOR.
pub const MONITOR: u64 = 0x8a;
/// MWAIT.
pub const MWAIT: u64 = 0x8b;
/// XSETBV.
pub const XSETBV: u64 = 0x8d;
/// Nested page fault.
pub const NPF: u64 = 0x400;
/// VMRUN consistency checks failed.
pub const INVALID: u64 = u64::MAX;

/// Translate the exit recorded in `vmcb` (right after #VMEXIT).
pub fn decode(vmcb: &Vmcb) -> Exit {
    let code = vmcb.exit_code();
    let info1 = vmcb.exit_info1();
    let info2 = vmcb.exit_info2();
    match code {
        c if (EXCP_BASE..EXCP_BASE + 32).contains(&c) => {
            let vector = (c - EXCP_BASE) as u8;
            let has_code = matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30);
            Exit::Exception { vector, error_code: has_code.then_some(info1 as u32) }
        }
        INTR => Exit::ExternalInterrupt,
        NMI => Exit::Nmi,
        VINTR => Exit::InterruptWindow,
        CPUID => Exit::Cpuid,
        PAUSE => Exit::Pause,
        HLT => Exit::Hlt,
        IOIO => Exit::Io(IoExit {
            port: (info1 >> 16) as u16,
            size: match (info1 >> 4) & 7 {
                1 => 1,
                2 => 2,
                _ => 4,
            },
            input: info1 & 1 != 0,
            string: info1 & (1 << 2) != 0,
            rep: info1 & (1 << 3) != 0,
            addr_size: match (info1 >> 7) & 7 {
                1 => 2,
                2 => 4,
                _ => 8,
            },
            next_rip: info2,
        }),
        MSR => {
            if info1 & 1 != 0 {
                Exit::Wrmsr
            } else {
                Exit::Rdmsr
            }
        }
        SHUTDOWN => Exit::Shutdown,
        VMMCALL => Exit::Hypercall,
        XSETBV => Exit::Xsetbv,
        VMRUN | VMLOAD | VMSAVE | STGI | CLGI | SKINIT | INVLPGA | MONITOR | MWAIT => Exit::Forbidden,
        INVD => Exit::Invd,
        NPF => Exit::NestedPageFault(NpfExit {
            gpa: info2,
            present: info1 & 1 != 0,
            write: info1 & 2 != 0,
            fetch: info1 & 16 != 0,
        }),
        INVALID => Exit::InvalidState,
        _ => Exit::Unknown { code, info1, info2 },
    }
}
