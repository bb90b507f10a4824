//! The vendor-neutral face of hardware virtualization: what keel's core sees of a guest vCPU.
//!
//! The vendor layer (`svm`, later `vmx`) turns its exits into `Exit`, and implements `VcpuHw`
//! for register access, event injection and entering the guest. Nothing above this module
//! knows which vendor's CPU it runs on.

/// Why the guest stopped running, in vendor-neutral terms.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Exit {
    /// CPUID (registers in the vCPU).
    Cpuid,
    /// RDMSR of ECX.
    Rdmsr,
    /// WRMSR of ECX with EDX:EAX.
    Wrmsr,
    /// An I/O port access.
    Io(IoExit),
    /// HLT.
    Hlt,
    /// The vendor's hypercall instruction (VMMCALL on AMD).
    Hypercall,
    /// An exception keel intercepts (none today; reflected into the guest if one arrives).
    Exception {
        /// Vector.
        vector: u8,
        /// Error code, if the exception has one.
        error_code: Option<u32>,
    },
    /// A nested page fault: the guest touched a guest-physical address the p2m does not map
    /// (or maps without the needed access).
    NestedPageFault(NpfExit),
    /// The guest triple-faulted (or otherwise shut down).
    Shutdown,
    /// A physical interrupt arrived while the guest ran (keel handles it after the exit).
    ExternalInterrupt,
    /// A physical NMI arrived while the guest ran.
    Nmi,
    /// The guest can now take the interrupt keel asked to be told about.
    InterruptWindow,
    /// XSETBV.
    Xsetbv,
    /// PAUSE (spin loops).
    Pause,
    /// INVD: discarding caches would lose other guests' and keel's data; it is executed as
    /// a no-op (write-back caches stay coherent), as Xen does.
    Invd,
    /// An instruction keel never lets a guest use (virtualization instructions, ...): the
    /// guest gets #UD.
    Forbidden,
    /// The CPU refused to enter the guest: its state was invalid (a keel bug or an impossible
    /// guest state).
    InvalidState,
    /// Anything else: the vendor's raw code, for the crash report.
    Unknown {
        /// Vendor exit code.
        code: u64,
        /// Vendor exit information.
        info1: u64,
        /// More vendor exit information.
        info2: u64,
    },
}

/// An intercepted IN/OUT/INS/OUTS.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct IoExit {
    /// The port.
    pub port: u16,
    /// Operand size in bytes (1, 2, 4).
    pub size: u8,
    /// IN (true) or OUT.
    pub input: bool,
    /// INS/OUTS.
    pub string: bool,
    /// With a REP prefix.
    pub rep: bool,
    /// Address size of a string instruction in bytes (2, 4, 8).
    pub addr_size: u8,
    /// RIP of the next instruction.
    pub next_rip: u64,
}

/// A nested page fault.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct NpfExit {
    /// Faulting guest-physical address.
    pub gpa: u64,
    /// The access was a write.
    pub write: bool,
    /// The access was an instruction fetch.
    pub fetch: bool,
    /// A mapping was present (the access violated its permissions).
    pub present: bool,
}

/// An event keel injects into a guest.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Event {
    /// An external (maskable) interrupt.
    Interrupt(u8),
    /// An NMI.
    Nmi,
    /// A hardware exception, with its error code where it has one.
    Exception(u8, Option<u32>),
}

/// Exception vectors keel injects.
pub mod vector {
    /// Invalid opcode.
    pub const UD: u8 = 6;
    /// General protection.
    pub const GP: u8 = 13;
    /// Page fault.
    pub const PF: u8 = 14;
}

/// A vCPU's segment register (vendor-neutral copy).
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Base.
    pub base: u64,
    /// Limit.
    pub limit: u32,
    /// Long-mode code segment.
    pub long: bool,
    /// Default operation size 32 bits (D/B).
    pub default_big: bool,
}
