//! `cargo xtask test`: host unit tests, then keel's QEMU integration tests.
//!
//! The integration tests are a table ([`cases`]): each names a machine, a way to boot keel, when
//! to stop QEMU, a timeout, the files it needs and a list of [`Expect`]ations about what keel
//! prints. Checking is pure (console text and run outcome in, list of problems out), so every
//! expectation is unit-tested against synthetic logs; only [`run_all`] builds and boots.
//! Later issues add rows (bad memory maps via a test boot loader, guests) and expectations.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cargo::{self, Profile};
use crate::console::{Console, Event, ModuleLine, Protocol};
use crate::qemu::{self, Boot, Ending, InitrdModule, Machine, MemSize, RunResult, RunSpec, Stop};
use crate::symbols::SymbolTable;
use crate::{grub, hostdeps, mb1, Workspace};

/// keel options every test boots with unless it says otherwise.
pub const DEFAULT_OPTIONS: &str = "console=com1 com1=115200 when_idle=poweroff";
/// Timeout for boots with QEMU's `-kernel`.
pub const KERNEL_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout for boots from the GRUB ISO (BIOS and GRUB are slow under TCG).
pub const ISO_TIMEOUT: Duration = Duration::from_secs(120);
/// How long keel must stay halted after `halted (noreboot)`.
pub const NOREBOOT_GRACE: Duration = Duration::from_secs(2);
/// Size of the first test module.
pub const MOD1_LEN: usize = 4096;
/// Size of the second test module (deliberately not a multiple of the page size).
pub const MOD2_LEN: usize = 10000;
/// Arguments of the first test module (the second has none).
pub const MOD1_ARGS: &str = "alpha beta";
/// The address `test=pagefault` reads.
pub const PAGEFAULT_ADDRESS: u64 = 0x0000_0bad_c0de_0000;
/// The function that must contain the faulting instruction.
pub const PAGEFAULT_FUNCTION: &str = "provoke_page_fault";
/// The function `test=panic` panics in.
pub const PANIC_FUNCTION: &str = "provoke_panic";
/// The content of the test boot loader's good module (guests/badloader).
pub const BADLOADER_GOOD_MODULE: &[u8] = b"keel badloader test module\n";

/// Whether `cargo xtask test` also runs the conformance comparison (the probe's ABI suite on
/// Xen 4.17 and on keel, see `conformance.rs`) as integration tests. `false` for now: keel does
/// not pass the ABI suite yet. The lead flips it to `true` once it does. `cargo xtask
/// conformance` runs the comparison regardless of this constant.
pub const CONFORMANCE_IN_XTASK_TEST: bool = false;

/// The conformance tests `cargo xtask test` runs (none unless [`CONFORMANCE_IN_XTASK_TEST`]).
fn conformance_test_names() -> Vec<String> {
    if CONFORMANCE_IN_XTASK_TEST {
        crate::conformance::test_names()
    } else {
        Vec::new()
    }
}

/// What `cargo xtask test` should do.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Run the host unit tests.
    pub host: bool,
    /// Run the QEMU integration tests.
    pub qemu: bool,
    /// Echo serial output.
    pub verbose: bool,
    /// Only QEMU tests whose name contains this.
    pub filter: Option<String>,
}

/// The files the tests boot, all under `build/`.
#[derive(Clone, Debug)]
pub struct Files {
    /// `build/keel`.
    pub keel: PathBuf,
    /// `build/keel-pvh`: keel with its multiboot(1) header disabled.
    pub keel_pvh: PathBuf,
    /// `build/badloader`: the test boot loader with hostile boot information.
    pub badloader: PathBuf,
    /// `build/probe`: the probe guest.
    pub probe: PathBuf,
    /// The first test module.
    pub mod1: PathBuf,
    /// The second test module.
    pub mod2: PathBuf,
    /// The GRUB test ISO.
    pub iso: PathBuf,
    /// Where the ISO is staged.
    pub iso_staging: PathBuf,
    /// Per-test run directories (QEMU logs).
    pub runs: PathBuf,
}

impl Files {
    /// The standard locations in `ws`.
    pub fn new(ws: &Workspace) -> Self {
        let build = ws.build_dir();
        let test = build.join("test");
        Self {
            keel: ws.keel_image(),
            keel_pvh: build.join("keel-pvh"),
            badloader: build.join("badloader"),
            probe: build.join("probe"),
            mod1: test.join("mod1.bin"),
            mod2: test.join("mod2.bin"),
            iso: test.join("grub-iso.iso"),
            iso_staging: build.join("iso-staging").join("test"),
            runs: test.join("runs"),
        }
    }
}

/// Deterministic content for test module `seed`: a text header naming it, then a byte pattern.
pub fn module_content(seed: u8, len: usize) -> Vec<u8> {
    let header = format!("keel test module {seed}, {len} bytes\n");
    let mut content: Vec<u8> = header.into_bytes();
    let pattern = (0..).map(|i: usize| (i.wrapping_mul(31) as u8) ^ seed);
    content.extend(pattern.take(len.saturating_sub(content.len())));
    content.truncate(len);
    content
}

/// A file a test needs besides `build/keel`.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Artifact {
    /// The two module files.
    Modules,
    /// `build/keel-pvh`.
    PvhImage,
    /// The GRUB ISO (implies the modules).
    GrubIso,
}

/// A boot module a test expects keel to report.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ExpectedModule {
    /// The image name keel prints; `None` when the loader passes none (GRUB2 and PVH do not
    /// put the file name in the module string).
    pub name: Option<String>,
    /// Exact size.
    pub bytes: u64,
    /// Exact arguments.
    pub args: String,
}

/// A fatal exception dump a test expects.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ExpectedFatal {
    /// What kind of fatal error.
    pub kind: FatalKind,
    /// The number in `all <n> CPUs stopped`.
    pub cpus: u64,
    /// What keel does at the end: [`Event::Rebooting`] or [`Event::HaltedNoreboot`].
    pub ending: Event,
}

/// The fatal error a test provokes.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum FatalKind {
    /// A CPU exception in keel.
    Exception {
        /// Exception vector.
        vector: u64,
        /// The faulting address line's value, if one is expected.
        faulting_address: Option<u64>,
        /// A text the demangled name of the function containing rip must contain.
        rip_in: &'static str,
    },
    /// A Rust panic in keel.
    Panic {
        /// Text the FATAL line must contain (the panic message).
        message: &'static str,
        /// The source file the `at <file>:<line>:<col>` line must name.
        file: &'static str,
        /// A text the demangled name of some call-trace frame's function must contain.
        frame_in: &'static str,
    },
}

/// Something a test requires of a run.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Expect {
    /// QEMU exited by itself with status 0.
    CleanExit,
    /// QEMU was still running after the stop pattern's grace period (the harness killed it).
    StillRunning,
    /// The ready line exactly once, with this many CPUs.
    Ready {
        /// CPUs in the ready line.
        cpus: u64,
    },
    /// One "answered a cross-CPU call" line for each CPU 1..cpus, and no others.
    CrossCpuCalls {
        /// Total CPUs (the boot CPU does not answer).
        cpus: u64,
    },
    /// Usable RAM within [mem - 4 MiB, mem]; free memory within 8 MiB below usable minus frame
    /// table.
    Memory {
        /// The machine's RAM.
        mem: MemSize,
    },
    /// The boot protocol and (a prefix of) the loader name.
    BootedVia {
        /// Protocol.
        protocol: Protocol,
        /// The loader name must start with this, if given.
        loader_prefix: Option<&'static str>,
    },
    /// Exactly these modules, in this order.
    Modules(Vec<ExpectedModule>),
    /// `no boot modules`, and no module lines.
    NoModules,
    /// An unknown-option warning for each of these.
    UnknownOptions(Vec<&'static str>),
    /// A fatal exception dump.
    Fatal(ExpectedFatal),
    /// This event somewhere after the ready line.
    AfterReady(Event),
    /// keel's usable RAM equals what the test boot loader predicted.
    LoaderPredictionMet,
    /// For each text, a memory-map problem report containing it.
    MapProblems(Vec<&'static str>),
    /// An "ignored" warning for exactly these modules.
    ModulesIgnored(Vec<u64>),
    /// For each (module index, content), keel's content hash of that module matches the
    /// content: the module is intact after keel's boot-time allocations.
    ModuleHashes(Vec<(u64, Vec<u8>)>),
    /// Domain `dom`'s probe printed exactly one summary, with no failures and at least
    /// `min_passed` passes.
    ProbePassed {
        /// The domain.
        dom: u64,
        /// Fewest passed checks accepted.
        min_passed: u64,
    },
    /// Domain `dom`'s probe printed `ok <n> - <name>` for this check.
    ProbeCheck {
        /// The domain.
        dom: u64,
        /// The check's name.
        name: &'static str,
    },
    /// keel reported that domain `dom` shut down for `reason`.
    Shutdown {
        /// The domain.
        dom: u64,
        /// Xen's reason name.
        reason: &'static str,
    },
    /// keel reported that domain `dom` crashed, with a message containing `why`.
    Crashed {
        /// The domain.
        dom: u64,
        /// Text the message must contain.
        why: &'static str,
    },
    /// Once every domain was destroyed, free memory equals what it was before the first.
    MemoryBalanced,
    /// Domain `dom` had between `min_ms` and `max_ms` of CPU time.
    RuntimeBetween {
        /// The domain.
        dom: u64,
        /// Least CPU time.
        min_ms: u64,
        /// Most CPU time.
        max_ms: u64,
    },
    /// CPU time of domain `a` divided by that of `b` is `ratio` within `tolerance` (relative).
    RuntimeRatio {
        /// Numerator domain.
        a: u64,
        /// Denominator domain.
        b: u64,
        /// Expected ratio, in thousandths (2000 = 2.0).
        ratio_milli: u64,
        /// Allowed relative error in percent.
        tolerance_percent: u64,
    },
}

/// One QEMU integration test.
#[derive(Clone, Debug)]
pub struct TestCase {
    /// Name (what FILTER matches).
    pub name: String,
    /// The machine.
    pub machine: Machine,
    /// How keel is booted.
    pub boot: Boot,
    /// When the harness stops QEMU.
    pub stop: Stop,
    /// When the test gives up.
    pub timeout: Duration,
    /// Files to prepare first.
    pub needs: Vec<Artifact>,
    /// What must hold.
    pub expect: Vec<Expect>,
}

fn machine(cpu: &str, smp: u32, mem: MemSize) -> Machine {
    Machine::bios(cpu, smp, mem)
}

fn kernel(image: &Path, options: &str, initrd: Vec<InitrdModule>) -> Boot {
    Boot::Kernel { image: image.to_path_buf(), append: options.to_string(), initrd }
}

/// A plain `-kernel` boot that must reach the ready line and power off.
fn plain_boot(name: &str, files: &Files, machine: Machine, options: &str) -> TestCase {
    TestCase {
        name: name.to_string(),
        boot: kernel(&files.keel, options, Vec::new()),
        stop: Stop::Exit,
        timeout: KERNEL_TIMEOUT,
        needs: Vec::new(),
        expect: vec![Expect::CleanExit, Expect::Ready { cpus: machine.smp.into() }],
        machine,
    }
}

/// The full check of an SMP boot: CPUs, cross-CPU calls, memory accounting.
fn smp_boot(name: &str, files: &Files, machine: Machine) -> TestCase {
    let mut case = plain_boot(name, files, machine, DEFAULT_OPTIONS);
    case.expect.push(Expect::CrossCpuCalls { cpus: case.machine.smp.into() });
    case.expect.push(Expect::Memory { mem: case.machine.mem });
    case
}

fn pagefault(name: &str, files: &Files, noreboot: bool) -> TestCase {
    let cpus = 4;
    let mut options = format!("{DEFAULT_OPTIONS} test=pagefault");
    if noreboot {
        options.push_str(" noreboot");
    }
    let (stop, end, ending) = if noreboot {
        let stop = Stop::kill_after("(keel) halted (noreboot)", NOREBOOT_GRACE);
        (stop, Expect::StillRunning, Event::HaltedNoreboot)
    } else {
        (Stop::Exit, Expect::CleanExit, Event::Rebooting)
    };
    TestCase {
        name: name.to_string(),
        machine: machine("max", cpus, MemSize::from_gib(1)),
        boot: kernel(&files.keel, &options, Vec::new()),
        stop,
        timeout: KERNEL_TIMEOUT,
        needs: Vec::new(),
        expect: vec![
            end,
            Expect::Fatal(ExpectedFatal {
                kind: FatalKind::Exception {
                    vector: 14,
                    faulting_address: Some(PAGEFAULT_ADDRESS),
                    rip_in: PAGEFAULT_FUNCTION,
                },
                cpus: cpus.into(),
                ending,
            }),
        ],
    }
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The integration tests of the issue "keel boots on bare x86_64".
pub fn cases(files: &Files) -> Vec<TestCase> {
    let gib = MemSize::from_gib;
    let (mod1_content, mod2_content) = (module_content(1, MOD1_LEN), module_content(2, MOD2_LEN));
    let mod1 = ExpectedModule { name: None, bytes: MOD1_LEN as u64, args: MOD1_ARGS.into() };
    let mod2 = ExpectedModule { name: None, bytes: MOD2_LEN as u64, args: String::new() };
    let mut cases = vec![
        smp_boot("smp1-128M", files, machine("max", 1, MemSize::from_mib(128))),
        smp_boot("smp2-1G", files, machine("max", 2, gib(1))),
        smp_boot("smp4-4G", files, machine("max", 4, gib(4))),
        smp_boot("smp8-1G", files, machine("max", 8, gib(1))),
        smp_boot("smp2-1G-qemu64", files, machine("qemu64,+svm,+npt", 2, gib(1))),
        TestCase {
            name: "grub-iso".into(),
            machine: machine("max", 2, gib(1)),
            boot: Boot::Cdrom(files.iso.clone()),
            stop: Stop::Exit,
            timeout: ISO_TIMEOUT,
            needs: vec![Artifact::Modules, Artifact::GrubIso],
            expect: vec![
                Expect::CleanExit,
                Expect::BootedVia { protocol: Protocol::Multiboot2, loader_prefix: Some("GRUB") },
                Expect::Modules(vec![mod1.clone(), mod2.clone()]),
                Expect::ModuleHashes(vec![(0, mod1_content.clone()), (1, mod2_content.clone())]),
                Expect::Ready { cpus: 2 },
            ],
        },
        TestCase {
            name: "kernel-multiboot1-modules".into(),
            machine: machine("max", 2, gib(1)),
            boot: kernel(
                &files.keel,
                DEFAULT_OPTIONS,
                vec![
                    InitrdModule { path: files.mod1.clone(), args: MOD1_ARGS.into() },
                    InitrdModule { path: files.mod2.clone(), args: String::new() },
                ],
            ),
            stop: Stop::Exit,
            timeout: KERNEL_TIMEOUT,
            needs: vec![Artifact::Modules],
            expect: vec![
                Expect::CleanExit,
                Expect::BootedVia { protocol: Protocol::Multiboot1, loader_prefix: Some("qemu") },
                // QEMU puts the file name first in a multiboot module's string.
                Expect::Modules(vec![
                    ExpectedModule { name: Some(path_string(&files.mod1)), ..mod1.clone() },
                    ExpectedModule { name: Some(path_string(&files.mod2)), ..mod2 },
                ]),
                Expect::Ready { cpus: 2 },
            ],
        },
        TestCase {
            name: "kernel-pvh".into(),
            machine: machine("max", 2, gib(1)),
            boot: kernel(
                &files.keel_pvh,
                DEFAULT_OPTIONS,
                vec![InitrdModule { path: files.mod1.clone(), args: String::new() }],
            ),
            stop: Stop::Exit,
            timeout: KERNEL_TIMEOUT,
            needs: vec![Artifact::Modules, Artifact::PvhImage],
            expect: vec![
                Expect::CleanExit,
                Expect::BootedVia { protocol: Protocol::Pvh, loader_prefix: None },
                // QEMU's PVH loader gives the initrd no command line.
                Expect::Modules(vec![ExpectedModule { args: String::new(), ..mod1 }]),
                Expect::Ready { cpus: 2 },
            ],
        },
    ];

    let mut unknown = plain_boot(
        "unknown-option",
        files,
        machine("max", 2, gib(1)),
        &format!("{DEFAULT_OPTIONS} frobnicate=7 no-such-flag"),
    );
    unknown.expect.push(Expect::UnknownOptions(vec!["frobnicate=7", "no-such-flag"]));
    cases.push(unknown);

    let mut no_modules = plain_boot("no-modules", files, machine("max", 2, gib(1)), DEFAULT_OPTIONS);
    no_modules.expect.push(Expect::NoModules);
    cases.push(no_modules);

    cases.push(pagefault("pagefault", files, false));
    cases.push(pagefault("pagefault-noreboot", files, true));
    cases.push(TestCase {
        name: "panic".into(),
        machine: machine("max", 2, gib(1)),
        boot: kernel(&files.keel, &format!("{DEFAULT_OPTIONS} test=panic"), Vec::new()),
        stop: Stop::Exit,
        timeout: KERNEL_TIMEOUT,
        needs: Vec::new(),
        expect: vec![
            Expect::CleanExit,
            Expect::Fatal(ExpectedFatal {
                kind: FatalKind::Panic {
                    message: "test=panic asked for a panic",
                    file: "crates/keel/src/selftest.rs",
                    frame_in: PANIC_FUNCTION,
                },
                cpus: 2,
                ending: Event::Rebooting,
            }),
        ],
    });

    let mut reboot =
        plain_boot("reboot", files, machine("max", 2, gib(1)), "console=com1 com1=115200 when_idle=reboot");
    reboot.expect.push(Expect::AfterReady(Event::Rebooting));
    cases.push(reboot);

    cases.push(hostile_boot(files));
    cases.extend(guest_cases(files));
    cases
}

/// Memory of each probe domain in the guest tests.
const PROBE_MEM: &str = "mem=32M";
/// Fewest checks a probe must pass (issue 3's set).
pub const PROBE_MIN_PASSED: u64 = 25;

fn probe_module(files: &Files, args: &str) -> InitrdModule {
    InitrdModule { path: files.probe.clone(), args: args.to_string() }
}

/// A -kernel boot of keel with probe domains that must end with every domain gone, the
/// memory balance even, and QEMU powered off.
fn guest_case(
    name: &str,
    files: &Files,
    smp: u32,
    options: &str,
    modules: Vec<InitrdModule>,
    expect: Vec<Expect>,
) -> TestCase {
    let mut all = vec![Expect::CleanExit, Expect::Ready { cpus: smp.into() }, Expect::MemoryBalanced];
    all.extend(expect);
    TestCase {
        name: name.into(),
        machine: machine("max", smp, MemSize::from_gib(1)),
        boot: kernel(&files.keel, &format!("{DEFAULT_OPTIONS} {options}"), modules),
        stop: Stop::Exit,
        timeout: KERNEL_TIMEOUT,
        needs: vec![],
        expect: all,
    }
}

/// The integration tests of the issue "Run guests".
pub fn guest_cases(files: &Files) -> Vec<TestCase> {
    let passed = |dom| Expect::ProbePassed { dom, min_passed: PROBE_MIN_PASSED };
    let poweroff = |dom| Expect::Shutdown { dom, reason: "poweroff" };
    let domain =
        |settings: &str, cmdline: &str| probe_module(files, &format!("domain {PROBE_MEM} {settings} -- {cmdline}"));
    let mut cases = vec![guest_case(
        "probe-dom0",
        files,
        2,
        "dom0_mem=32M",
        vec![probe_module(files, "")],
        vec![passed(0), poweroff(0)],
    )];
    for smp in [1, 2] {
        cases.push(guest_case(
            &format!("probe-dom0less-smp{smp}"),
            files,
            smp,
            "",
            vec![domain("name=probe-a", ""), domain("name=probe-b", "")],
            vec![passed(1), passed(2), poweroff(1), poweroff(2)],
        ));
    }
    cases.push(guest_case(
        "probe-smp-init-sipi-halt",
        files,
        2,
        "",
        vec![domain("vcpus=3", "probe.exit=halt")],
        vec![
            Expect::ProbePassed { dom: 1, min_passed: PROBE_MIN_PASSED + 2 },
            Expect::ProbeCheck { dom: 1, name: "smp-start-aps-init-sipi" },
            Expect::ProbeCheck { dom: 1, name: "smp-nmi-ipi" },
            Expect::ProbeCheck { dom: 1, name: "x2apic-mode" },
            // Every vCPU halted with interrupts off: power-off, by Xen's rule.
            poweroff(1),
        ],
    ));
    cases.push(guest_case(
        "crash-triple-fault",
        files,
        2,
        "",
        vec![domain("", "probe.crash=triple-fault"), domain("", "")],
        vec![
            passed(1),
            Expect::Crashed { dom: 1, why: "triple fault" },
            Expect::Shutdown { dom: 1, reason: "crash" },
            passed(2),
            poweroff(2),
        ],
    ));
    cases.push(guest_case(
        "crash-outside-ram",
        files,
        2,
        "",
        vec![domain("", "probe.crash=outside-ram"), domain("", "")],
        vec![
            passed(1),
            Expect::Crashed { dom: 1, why: "which is not the domain's memory" },
            Expect::Shutdown { dom: 1, reason: "crash" },
            passed(2),
            poweroff(2),
        ],
    ));
    cases.push(guest_case(
        "sched-weights-1-2",
        files,
        1,
        "",
        vec![domain("weight=256", "probe.spin=3000"), domain("weight=512", "probe.spin=3000")],
        vec![passed(1), passed(2), Expect::RuntimeRatio { a: 2, b: 1, ratio_milli: 2000, tolerance_percent: 10 }],
    ));
    // Two spinners pinned to CPU 1 of 2 share that CPU by weight (unpinned, each would have
    // a CPU of its own and they would run 1:1).
    cases.push(guest_case(
        "sched-affinity",
        files,
        2,
        "",
        vec![domain("cpus=1 weight=256", "probe.spin=2000"), domain("cpus=1 weight=512", "probe.spin=2000")],
        vec![passed(1), passed(2), Expect::RuntimeRatio { a: 2, b: 1, ratio_milli: 2000, tolerance_percent: 10 }],
    ));
    // A spinner capped at 25 % of a CPU for 2 s of wall time gets about 0.5 s (plus its checks,
    // also capped); uncapped it would get all 2 s.
    cases.push(guest_case(
        "sched-cap-25",
        files,
        1,
        "",
        vec![domain("cap=25", "probe.spin=2000")],
        vec![passed(1), Expect::RuntimeBetween { dom: 1, min_ms: 400, max_ms: 800 }],
    ));
    cases
}

/// keel started by the test boot loader with an overlapping, wrapping, out-of-range memory
/// map and missing, empty and good modules: every problem is reported, the map is sanitised
/// to exactly the RAM the loader predicts, and keel comes up.
fn hostile_boot(files: &Files) -> TestCase {
    let module = |bytes: u64, args: &str| ExpectedModule { name: None, bytes, args: args.into() };
    TestCase {
        name: "hostile-boot-info".into(),
        machine: machine("max", 2, MemSize::from_gib(1)),
        boot: kernel(
            &files.badloader,
            DEFAULT_OPTIONS,
            vec![InitrdModule { path: files.keel.clone(), args: String::new() }],
        ),
        stop: Stop::Exit,
        timeout: KERNEL_TIMEOUT,
        needs: Vec::new(),
        expect: vec![
            Expect::CleanExit,
            Expect::BootedVia { protocol: Protocol::Pvh, loader_prefix: None },
            Expect::MapProblems(vec![
                "overlap on",
                "has zero length",
                "runs past the end of the address space",
                "above the physical address limit",
            ]),
            Expect::LoaderPredictionMet,
            Expect::Modules(vec![
                module(4096, "missing-module"),
                module(0, "empty-module"),
                module(27, "good-module args"),
            ]),
            // 0: outside RAM, 1: empty, 2: by Xen's rules only modules 0 and 1 (dom0's kernel and
            // initrd) have a role.
            Expect::ModulesIgnored(vec![0, 1, 2]),
            Expect::ModuleHashes(vec![(2, BADLOADER_GOOD_MODULE.to_vec())]),
            Expect::Ready { cpus: 2 },
            Expect::Memory { mem: MemSize::from_gib(1) },
        ],
    }
}

/// Names of all integration tests.
pub fn test_names(ws: &Workspace) -> Vec<String> {
    let mut names: Vec<String> = cases(&Files::new(ws)).into_iter().map(|c| c.name).collect();
    names.extend(conformance_test_names());
    names
}

/// What a check sees: the run, its parsed console and keel's symbols.
pub struct Observed<'a> {
    /// The harness result.
    pub run: &'a RunResult,
    /// The console events.
    pub console: &'a Console,
    /// keel's symbols, or why they could not be read.
    pub symbols: Result<&'a SymbolTable, &'a str>,
}

/// How a run ended, as a phrase.
pub fn describe_ending(ending: Ending) -> String {
    match ending {
        Ending::Exited(Some(code)) => format!("QEMU exited with status {code}"),
        Ending::Exited(None) => "QEMU was killed by a signal".into(),
        Ending::KilledAfterPattern => "QEMU was still running (killed by the harness)".into(),
        Ending::TimedOut => "QEMU timed out".into(),
    }
}

impl Expect {
    /// Appends what is wrong with `obs` to `problems`.
    pub fn check(&self, obs: &Observed<'_>, problems: &mut Vec<String>) {
        let console = obs.console;
        match self {
            Self::CleanExit => {
                if obs.run.ending != Ending::Exited(Some(0)) {
                    problems.push(format!(
                        "expected QEMU to exit by itself with status 0, but {}",
                        describe_ending(obs.run.ending)
                    ));
                }
            }
            Self::StillRunning => {
                if obs.run.ending != Ending::KilledAfterPattern {
                    problems.push(format!(
                        "expected keel to stay halted (QEMU still running after the stop line), \
                         but {}",
                        describe_ending(obs.run.ending)
                    ));
                }
            }
            Self::Ready { cpus } => {
                let ready: Vec<u64> = console
                    .select(|e| match e {
                        Event::Ready { cpus, .. } => Some(*cpus),
                        _ => None,
                    })
                    .map(|(_, c)| c)
                    .collect();
                match ready.as_slice() {
                    [] => problems.push("no 'keel: ready:' line".into()),
                    [n] if n == cpus => {}
                    [n] => problems.push(format!("ready line says {n} cpus, expected {cpus}")),
                    more => problems.push(format!("'keel: ready:' printed {} times, expected once", more.len())),
                }
            }
            Self::CrossCpuCalls { cpus } => check_cross_cpu_calls(console, *cpus, problems),
            Self::Memory { mem } => check_memory(console, *mem, problems),
            Self::BootedVia { protocol, loader_prefix } => {
                let booted: Vec<(Protocol, &str)> = console
                    .select(|e| match e {
                        Event::Booted { protocol, loader } => Some((*protocol, loader.as_str())),
                        _ => None,
                    })
                    .map(|(_, b)| b)
                    .collect();
                match booted.as_slice() {
                    [] => problems.push("no 'boot: booted via' line".into()),
                    [(p, loader)] => {
                        if p != protocol {
                            problems.push(format!("booted via {p}, expected {protocol}"));
                        }
                        if let Some(prefix) = loader_prefix {
                            if !loader.starts_with(prefix) {
                                problems.push(format!("boot loader is '{loader}', expected '{prefix}...'"));
                            }
                        }
                    }
                    more => problems.push(format!("'boot: booted via' printed {} times, expected once", more.len())),
                }
            }
            Self::Modules(expected) => check_modules(console, expected, problems),
            Self::NoModules => {
                if !console.entries.iter().any(|e| e.event == Event::NoModules) {
                    problems.push("no '(keel) boot: no boot modules' line".into());
                }
                let n = console.select(module).count();
                if n > 0 {
                    problems.push(format!("{n} module line(s) printed, expected none"));
                }
            }
            Self::UnknownOptions(options) => {
                let warned: Vec<&str> = console
                    .select(|e| match e {
                        Event::UnknownOption(o) => Some(o.as_str()),
                        _ => None,
                    })
                    .map(|(_, o)| o)
                    .collect();
                for option in options {
                    if !warned.contains(option) {
                        problems.push(format!("no unknown-option warning for '{option}'"));
                    }
                }
            }
            Self::Fatal(expected) => check_fatal(obs, expected, problems),
            Self::LoaderPredictionMet => {
                let expected = console
                    .select(|e| match e {
                        Event::LoaderExpectsUsable { kib } => Some(*kib),
                        _ => None,
                    })
                    .map(|(_, k)| k)
                    .next();
                let usable = console
                    .select(|e| match e {
                        Event::UsableRam { kib } => Some(*kib),
                        _ => None,
                    })
                    .map(|(_, k)| k)
                    .next();
                match (expected, usable) {
                    (None, _) => problems.push("no 'badloader: expect <K> KiB usable RAM' line".into()),
                    (_, None) => problems.push("no 'mm: memory map: <K> KiB usable RAM' line".into()),
                    (Some(e), Some(u)) if e != u => {
                        problems.push(format!("keel counts {u} KiB usable RAM; the boot loader's map has {e} KiB"))
                    }
                    _ => {}
                }
            }
            Self::MapProblems(texts) => {
                let reported: Vec<&str> = console
                    .select(|e| match e {
                        Event::MapProblem(p) => Some(p.as_str()),
                        _ => None,
                    })
                    .map(|(_, p)| p)
                    .collect();
                for text in texts {
                    if !reported.iter().any(|p| p.contains(text)) {
                        problems.push(format!("no memory-map problem reported containing '{text}'"));
                    }
                }
            }
            Self::ProbePassed { dom, min_passed } => {
                let summaries: Vec<&str> = console
                    .select(|e| match e {
                        Event::Guest { dom: d, text }
                            if d == dom && text.starts_with("probe: ") && text.contains(" passed, ") =>
                        {
                            Some(text.as_str())
                        }
                        _ => None,
                    })
                    .map(|(_, t)| t)
                    .collect();
                match summaries.as_slice() {
                    [] => problems.push(format!("d{dom}: no 'probe: <N> passed, <M> failed' line")),
                    [one] => {
                        let counts =
                            one.strip_prefix("probe: ").and_then(|r| r.split_once(" passed, ")).and_then(|(p, f)| {
                                Some((p.parse::<u64>().ok()?, f.strip_suffix(" failed")?.parse::<u64>().ok()?))
                            });
                        match counts {
                            Some((p, 0)) if p >= *min_passed => {}
                            Some((p, f)) => problems.push(format!(
                                "d{dom}: probe says {p} passed, {f} failed (want 0 failed, at least {min_passed} passed)"
                            )),
                            None => problems.push(format!("d{dom}: cannot read the probe summary '{one}'")),
                        }
                    }
                    more => problems.push(format!("d{dom}: {} probe summaries, expected one", more.len())),
                }
            }
            Self::ProbeCheck { dom, name } => {
                let passed = console.entries.iter().any(|e| match &e.event {
                    Event::Guest { dom: d, text } => {
                        d == dom && text.starts_with("ok ") && text.split_once(" - ").is_some_and(|(_, n)| n == *name)
                    }
                    _ => false,
                });
                if !passed {
                    problems.push(format!("d{dom}: no 'ok <n> - {name}' line"));
                }
            }
            Self::Shutdown { dom, reason } => {
                let reasons: Vec<&str> = console
                    .select(|e| match e {
                        Event::DomainShutdown { dom: d, reason } if d == dom => Some(reason.as_str()),
                        _ => None,
                    })
                    .map(|(_, r)| r)
                    .collect();
                if reasons != [*reason] {
                    problems.push(format!("d{dom}: shut down {reasons:?}, expected exactly [\"{reason}\"]"));
                }
            }
            Self::Crashed { dom, why } => {
                let crashes: Vec<&str> = console
                    .select(|e| match e {
                        Event::DomainCrashed { dom: d, why } if d == dom => Some(why.as_str()),
                        _ => None,
                    })
                    .map(|(_, w)| w)
                    .collect();
                if !crashes.iter().any(|w| w.contains(why)) {
                    problems.push(format!("d{dom}: no crash report containing '{why}' (reports: {crashes:?})"));
                }
            }
            Self::MemoryBalanced => {
                let balance = console
                    .select(|e| match e {
                        Event::MemoryBalance { after_kib, before_kib } => Some((*after_kib, *before_kib)),
                        _ => None,
                    })
                    .map(|(_, b)| b)
                    .next();
                match balance {
                    None => problems.push("no 'mm: all domains destroyed' line".into()),
                    Some((after, before)) if after != before => problems.push(format!(
                        "{after} KiB free after every domain was destroyed, {before} KiB before the first: {} KiB leaked",
                        before as i64 - after as i64
                    )),
                    Some(_) => {}
                }
            }
            Self::RuntimeBetween { dom, min_ms, max_ms } => {
                let runtime = console
                    .select(|e| match e {
                        Event::DomainDestroyed { dom: d, runtime_ms } if d == dom => Some(*runtime_ms),
                        _ => None,
                    })
                    .map(|(_, r)| r)
                    .next();
                match runtime {
                    Some(r) if (*min_ms..=*max_ms).contains(&r) => {}
                    Some(r) => {
                        problems.push(format!("d{dom} ran {r} ms of CPU time, expected {min_ms} to {max_ms} ms"))
                    }
                    None => problems.push(format!("no CPU time reported for d{dom}")),
                }
            }
            Self::RuntimeRatio { a, b, ratio_milli, tolerance_percent } => {
                let (ratio, tolerance) = (*ratio_milli as f64 / 1000.0, *tolerance_percent as f64 / 100.0);
                let runtime = |dom: u64| {
                    console
                        .select(|e| match e {
                            Event::DomainDestroyed { dom: d, runtime_ms } if *d == dom => Some(*runtime_ms),
                            _ => None,
                        })
                        .map(|(_, r)| r)
                        .next()
                };
                match (runtime(*a), runtime(*b)) {
                    (Some(ra), Some(rb)) if rb > 0 => {
                        let got = ra as f64 / rb as f64;
                        if (got / ratio - 1.0).abs() > tolerance {
                            problems.push(format!(
                                "d{a} ran {ra} ms, d{b} {rb} ms: ratio {got:.3}, expected {ratio} within {:.0} %",
                                tolerance * 100.0
                            ));
                        }
                    }
                    (ra, rb) => problems.push(format!("no CPU time for d{a} ({ra:?} ms) or d{b} ({rb:?} ms)")),
                }
            }
            Self::ModuleHashes(expected) => {
                for (index, content) in expected {
                    let want = keel_boot::bootinfo::content_hash(content);
                    let got: Vec<u64> = console
                        .select(|e| match e {
                            Event::ModuleHash { index: i, hash } if i == index => Some(*hash),
                            _ => None,
                        })
                        .map(|(_, h)| h)
                        .collect();
                    match got.as_slice() {
                        [] => problems.push(format!("no content hash for module {index}")),
                        [h] if *h == want => {}
                        [h] => problems.push(format!(
                            "module {index} content hash {h:#018x}, expected {want:#018x}: keel's module is not the file"
                        )),
                        more => problems.push(format!("{} content hashes for module {index}", more.len())),
                    }
                }
            }
            Self::ModulesIgnored(expected) => {
                let mut ignored: Vec<u64> = console
                    .select(|e| match e {
                        Event::ModuleIgnored { index } => Some(*index),
                        _ => None,
                    })
                    .map(|(_, i)| i)
                    .collect();
                ignored.sort_unstable();
                if ignored != *expected {
                    problems.push(format!("modules reported as ignored: {ignored:?}, expected {expected:?}"));
                }
            }
            Self::AfterReady(event) => {
                let ready =
                    console.select(|e| matches!(e, Event::Ready { .. }).then_some(())).map(|(line, ())| line).next();
                match ready {
                    None => problems.push(format!("no ready line (expected {event:?} after it)")),
                    Some(line) => {
                        if console.position_from(line + 1, event).is_none() {
                            problems.push(format!("no {event:?} line after the ready line"));
                        }
                    }
                }
            }
        }
    }
}

fn module(e: &Event) -> Option<&ModuleLine> {
    match e {
        Event::Module(m) => Some(m),
        _ => None,
    }
}

fn check_cross_cpu_calls(console: &Console, cpus: u64, problems: &mut Vec<String>) {
    let mut seen: Vec<u64> = console
        .select(|e| match e {
            Event::CpuAnswered { cpu, .. } => Some(*cpu),
            _ => None,
        })
        .map(|(_, c)| c)
        .collect();
    seen.sort_unstable();
    let expected: Vec<u64> = (1..cpus).collect();
    if seen != expected {
        let missing: Vec<u64> = expected.iter().filter(|c| !seen.contains(c)).copied().collect();
        let mut extra = seen.clone();
        for c in &expected {
            if let Some(i) = extra.iter().position(|x| x == c) {
                extra.remove(i);
            }
        }
        problems.push(format!(
            "cross-CPU call answers: expected one from each of cpus {expected:?}, missing \
             {missing:?}, unexpected or repeated {extra:?}"
        ));
    }
}

/// The single value of a kind of event, or a problem.
fn single<T: Copy>(
    console: &Console,
    what: &str,
    f: impl Fn(&Event) -> Option<T>,
    problems: &mut Vec<String>,
) -> Option<T> {
    let values: Vec<T> = console.select(f).map(|(_, v)| v).collect();
    match values.as_slice() {
        [v] => Some(*v),
        [] => {
            problems.push(format!("no '{what}' line"));
            None
        }
        more => {
            problems.push(format!("'{what}' printed {} times, expected once", more.len()));
            None
        }
    }
}

fn check_memory(console: &Console, mem: MemSize, problems: &mut Vec<String>) {
    let usable = single(
        console,
        "mm: memory map",
        |e| match e {
            Event::UsableRam { kib } => Some(*kib),
            _ => None,
        },
        problems,
    );
    let frame_table = single(
        console,
        "mm: frame table",
        |e| match e {
            Event::FrameTable { kib } => Some(*kib),
            _ => None,
        },
        problems,
    );
    let free = console
        .select(|e| match e {
            Event::Ready { free_mib, .. } => Some(*free_mib),
            _ => None,
        })
        .map(|(_, f)| f)
        .next();

    let Some(usable) = usable else { return };
    let hi = mem.mib() * 1024;
    let lo = hi.saturating_sub(4 * 1024);
    if !(lo..=hi).contains(&usable) {
        problems.push(format!("usable RAM {usable} KiB is outside [{lo}, {hi}] KiB for -m {mem}"));
    }
    let (Some(frame_table), Some(free)) = (frame_table, free) else {
        return;
    };
    let Some(available) = usable.checked_sub(frame_table).map(|k| k / 1024) else {
        problems.push(format!("frame table ({frame_table} KiB) is larger than usable RAM ({usable} KiB)"));
        return;
    };
    if free > available || free + 8 < available {
        problems.push(format!(
            "{free} MiB free is outside [{}, {available}] MiB ((usable {usable} KiB - frame \
             table {frame_table} KiB) / 1024, minus at most 8 MiB)",
            available.saturating_sub(8)
        ));
    }
}

fn check_modules(console: &Console, expected: &[ExpectedModule], problems: &mut Vec<String>) {
    let printed: Vec<&ModuleLine> = console.select(module).map(|(_, m)| m).collect();
    if printed.len() != expected.len() {
        problems.push(format!("{} module line(s) printed, expected {}", printed.len(), expected.len()));
    }
    if printed.windows(2).any(|w| w[1].index <= w[0].index) {
        problems.push("module indices are not increasing".into());
    }
    for (i, (got, want)) in printed.iter().zip(expected).enumerate() {
        if got.bytes != want.bytes {
            problems.push(format!("module {i}: {} bytes, expected {}", got.bytes, want.bytes));
        }
        if got.end.checked_sub(got.start) != Some(got.bytes) {
            problems.push(format!(
                "module {i}: range {:#x}-{:#x} does not hold {} bytes (end is exclusive)",
                got.start, got.end, got.bytes
            ));
        }
        if got.args != want.args {
            problems.push(format!("module {i}: args '{}', expected '{}'", got.args, want.args));
        }
        if let Some(name) = &want.name {
            if got.name != *name {
                problems.push(format!("module {i}: name '{}', expected '{name}'", got.name));
            }
        }
    }
}

fn check_fatal(obs: &Observed<'_>, want: &ExpectedFatal, problems: &mut Vec<String>) {
    let console = obs.console;
    let fatals: Vec<(usize, (&str, Option<u64>))> = console
        .select(|e| match e {
            Event::Fatal { name, vector, .. } => Some((name.as_str(), *vector)),
            _ => None,
        })
        .collect();
    let Some(&(fatal_line, (name, vector))) = fatals.first() else {
        problems.push("no '(keel) FATAL:' line".into());
        return;
    };
    if fatals.len() > 1 {
        problems.push(format!("{} FATAL lines, expected one", fatals.len()));
    }
    // The first event of a kind after the FATAL line.
    let after = |from: usize, f: &dyn Fn(&Event) -> Option<u64>| {
        console.entries.iter().filter(|e| e.line > from).find_map(|e| f(&e.event).map(|v| (e.line, v)))
    };
    // The function containing `addr`; Err(Some(why)) without symbols, Err(None) outside every function.
    let resolve = |addr: u64| -> Result<String, Option<&str>> {
        let symbols = obs.symbols.map_err(Some)?;
        symbols.lookup(addr).map(|s| s.name.clone()).ok_or(None)
    };

    match &want.kind {
        FatalKind::Exception { vector: want_vector, faulting_address, rip_in } => {
            match vector {
                Some(v) if v == *want_vector => {}
                Some(v) => problems.push(format!("FATAL line has vector {v}, expected {want_vector}")),
                None => problems.push(format!("FATAL line has no vector, expected {want_vector}")),
            }
            if let Some(address) = faulting_address {
                match after(fatal_line, &|e| match e {
                    Event::FaultingAddress(a) => Some(*a),
                    _ => None,
                }) {
                    None => problems.push("no 'faulting address:' line after FATAL".into()),
                    Some((_, a)) if a != *address => {
                        problems.push(format!("faulting address {a:#018x}, expected {address:#018x}"))
                    }
                    Some(_) => {}
                }
            }
            match after(fatal_line, &|e| match e {
                Event::Rip(r) => Some(*r),
                _ => None,
            }) {
                None => problems.push("no 'rip:' line after FATAL".into()),
                Some((_, rip)) => match resolve(rip) {
                    Err(Some(why)) => problems.push(format!("cannot resolve rip {rip:#x}: {why}")),
                    Err(None) => problems.push(format!("rip {rip:#x} is in no function of build/keel")),
                    Ok(f) if !f.contains(rip_in) => {
                        problems.push(format!("rip {rip:#x} is in {f}, expected a function named like '{rip_in}'"))
                    }
                    Ok(_) => {}
                },
            }
        }
        FatalKind::Panic { message, file, frame_in } => {
            if !name.starts_with("panic on cpu ") || !name.contains(message) {
                problems.push(format!("FATAL line '{name}' is not a panic with message '{message}'"));
            }
            let location = console.entries.iter().filter(|e| e.line > fatal_line).find_map(|e| match &e.event {
                Event::Location(l) => Some(l.as_str()),
                _ => None,
            });
            match location {
                None => problems.push("no 'at <file>:<line>:<col>' line after FATAL".into()),
                Some(l) if !l.starts_with(&format!("{file}:")) => {
                    problems.push(format!("panic location '{l}', expected one in {file}"))
                }
                Some(_) => {}
            }
            let frames: Vec<u64> = console
                .entries
                .iter()
                .filter(|e| e.line > fatal_line)
                .filter_map(|e| match e.event {
                    Event::TraceEntry(a) => Some(a),
                    _ => None,
                })
                .collect();
            // Frames after the first are return addresses: the call that made them can be the
            // last instruction of its function (a call to something that never returns), so
            // look up the byte before each one, as symbolizers do.
            let in_frame = |(i, &a): (usize, &u64)| {
                let a = if i == 0 { a } else { a.saturating_sub(1) };
                resolve(a).is_ok_and(|f| f.contains(frame_in))
            };
            if !frames.iter().enumerate().any(in_frame) {
                problems.push(format!("no call-trace frame is in a function named like '{frame_in}'"));
            }
        }
    }

    match after(fatal_line, &|e| (*e == Event::CallTrace).then_some(0)) {
        None => problems.push("no 'call trace:' line after FATAL".into()),
        Some((trace_line, _)) => {
            let frames = after(trace_line, &|e| match e {
                Event::TraceEntry(a) => Some(*a),
                _ => None,
            });
            if frames.is_none() {
                problems.push("no call-trace frame after 'call trace:'".into());
            }
        }
    }

    let stopped_line = match after(fatal_line, &|e| match e {
        Event::AllCpusStopped(n) => Some(*n),
        _ => None,
    }) {
        None => {
            problems.push("no 'all <n> CPUs stopped' line after FATAL".into());
            fatal_line
        }
        Some((line, n)) => {
            if n != want.cpus {
                problems.push(format!("all {n} CPUs stopped, expected {}", want.cpus));
            }
            line
        }
    };
    if console.position_from(stopped_line + 1, &want.ending).is_none() {
        problems.push(format!("no {:?} line after the CPUs were stopped", want.ending));
    }
}

/// Everything wrong with a run of `case`; empty means PASS.
pub fn problems(case: &TestCase, obs: &Observed<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    if obs.run.triple_fault {
        problems.push("QEMU log records a triple fault".into());
    }
    if obs.run.ending == Ending::TimedOut {
        problems.push(format!("timed out after {}s; last lines: {}", case.timeout.as_secs(), obs.run.tail(5)));
        return problems;
    }
    for m in &obs.console.malformed {
        problems.push(format!("malformed line {}: '{}' (expected '{}')", m.line + 1, m.text, m.expected));
    }
    let expects_fatal = case.expect.iter().any(|e| matches!(e, Expect::Fatal(_)));
    if !expects_fatal {
        for (_, name) in obs.console.select(|e| match e {
            Event::Fatal { name, .. } => Some(name),
            _ => None,
        }) {
            problems.push(format!("keel reported a fatal error: {name}"));
        }
    }
    for expect in &case.expect {
        expect.check(obs, &mut problems);
    }
    problems
}

/// Writes the files `cases` need (after keel was built).
fn prepare(files: &Files, cases: &[TestCase]) -> Result<()> {
    let needs = |a: Artifact| cases.iter().any(|c| c.needs.contains(&a));
    if needs(Artifact::Modules) || needs(Artifact::GrubIso) {
        for (path, seed, len) in [(&files.mod1, 1, MOD1_LEN), (&files.mod2, 2, MOD2_LEN)] {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            fs::write(path, module_content(seed, len)).with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    if needs(Artifact::PvhImage) {
        mb1::write_pvh_copy(&files.keel, &files.keel_pvh)?;
    }
    if needs(Artifact::GrubIso) {
        let modules = [
            grub::ModuleSpec { file: files.mod1.clone(), args: MOD1_ARGS.into() },
            grub::ModuleSpec { file: files.mod2.clone(), args: String::new() },
        ];
        let iso = grub::IsoImage {
            kernel: &files.keel,
            kernel_name: "keel",
            options: DEFAULT_OPTIONS,
            modules: &modules,
            platforms: grub::Platforms::Bios,
        };
        grub::make_iso(&iso, &files.iso_staging, &files.iso).context("making the test ISO")?;
    }
    Ok(())
}

fn print_failure_details(run: &RunResult, log_path: &Path) {
    println!("    ---- serial log ({} lines) ----", run.lines.len());
    for line in &run.lines {
        println!("    [{:8.3}s] {}", line.at.as_secs_f64(), line.text);
    }
    println!("    ---- QEMU stderr ----");
    for line in run.stderr.lines() {
        println!("    {line}");
    }
    println!("    ---- QEMU log ({}) ----", log_path.display());
    for line in run.log.lines() {
        println!("    {line}");
    }
    println!("    ---- end ----");
}

/// Runs one test; returns whether it passed. Harness errors count as failures.
fn run_case(case: &TestCase, files: &Files, symbols: Result<&SymbolTable, &str>, verbose: bool) -> bool {
    let dir = files.runs.join(&case.name);
    let spec = RunSpec::qemu(&case.machine, &case.boot, &dir, case.stop.clone(), case.timeout);
    let run = spec.and_then(|mut spec| {
        spec.echo = verbose;
        let log = spec.log_file.clone();
        qemu::run(&spec).map(|r| (r, log))
    });
    let (run, log_path) = match run {
        Ok(r) => r,
        Err(e) => {
            println!("FAIL {}: {e:#}", case.name);
            return false;
        }
    };
    let console = Console::parse(run.texts());
    let obs = Observed { run: &run, console: &console, symbols };
    let problems = problems(case, &obs);
    if problems.is_empty() {
        println!("PASS {} ({:.1}s)", case.name, run.elapsed.as_secs_f64());
        true
    } else {
        println!("FAIL {}: {}", case.name, problems.join("; "));
        print_failure_details(&run, &log_path);
        false
    }
}

/// Selects the cases whose name contains `filter`; it must match one of them or one of the
/// `other` tests (run elsewhere).
pub fn select(cases: Vec<TestCase>, filter: Option<&str>, other: &[String]) -> Result<Vec<TestCase>> {
    let Some(filter) = filter else {
        return Ok(cases);
    };
    let mut names: Vec<String> = cases.iter().map(|c| c.name.clone()).collect();
    let selected: Vec<TestCase> = cases.into_iter().filter(|c| c.name.contains(filter)).collect();
    if selected.is_empty() && !other.iter().any(|n| n.contains(filter)) {
        names.extend(other.iter().cloned());
        bail!("no QEMU test matches '{filter}'; the tests are: {}", names.join(", "));
    }
    Ok(selected)
}

/// The closing line: "summary: N passed, M failed".
pub fn summary_line(passed: usize, failed: usize) -> String {
    format!("summary: {passed} passed, {failed} failed")
}

/// `cargo xtask test`: returns whether everything passed.
pub fn run_all(ws: &Workspace, opts: &Options) -> Result<bool> {
    let started = Instant::now();
    let mut passed = 0;
    let mut failed: Vec<String> = Vec::new();

    if opts.host {
        let t = Instant::now();
        println!("xtask: host unit tests: cargo test --workspace --exclude keel");
        if cargo::host_tests(ws)? {
            println!("PASS host-unit-tests ({:.1}s)", t.elapsed().as_secs_f64());
            passed += 1;
        } else {
            println!("FAIL host-unit-tests: cargo test failed (see above)");
            failed.push("host-unit-tests".into());
        }
    }

    if opts.qemu {
        let files = Files::new(ws);
        let selected = select(cases(&files), opts.filter.as_deref(), &conformance_test_names())?;
        let mut requirements = vec![hostdeps::QEMU];
        if selected.iter().any(|c| c.needs.contains(&Artifact::GrubIso)) {
            requirements.extend_from_slice(hostdeps::ISO_TOOLS);
        }
        hostdeps::ensure(&requirements)?;
        cargo::build_keel(ws, Profile::Release)?;
        prepare(&files, &selected)?;
        let symbols = fs::read(&files.keel)
            .map_err(anyhow::Error::from)
            .and_then(|image| SymbolTable::from_elf(&image))
            .and_then(|t| {
                if t.len() == 0 {
                    bail!("build/keel has no function symbols (stripped?)");
                }
                Ok(t)
            })
            .map_err(|e| format!("{e:#}"));
        println!("xtask: running {} QEMU test(s)", selected.len());
        for case in &selected {
            if run_case(case, &files, symbols.as_ref().map_err(String::as_str), opts.verbose) {
                passed += 1;
            } else {
                failed.push(case.name.clone());
            }
        }
        if CONFORMANCE_IN_XTASK_TEST {
            let (ok, bad) = crate::conformance::run_as_tests(ws, opts.verbose, opts.filter.as_deref())?;
            passed += ok.len();
            failed.extend(bad);
        }
    }

    if !failed.is_empty() {
        println!("failed: {}", failed.join(", "));
    }
    println!("xtask: finished in {:.1}s", started.elapsed().as_secs_f64());
    // Last, alone on its line: CI reads it.
    println!("{}", summary_line(passed, failed.len()));
    Ok(failed.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::Line;
    use crate::symbols::Symbol;

    fn files() -> Files {
        Files::new(&Workspace { root: "/ws".into() })
    }

    fn case(name: &str) -> TestCase {
        cases(&files()).into_iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no test {name}"))
    }

    fn run_result(log: &str, ending: Ending) -> RunResult {
        RunResult {
            lines: log
                .lines()
                .enumerate()
                .map(|(i, t)| Line { at: Duration::from_millis(100 * i as u64), text: t.trim_start().to_string() })
                .collect(),
            ending,
            triple_fault: false,
            stderr: String::new(),
            log: String::new(),
            elapsed: Duration::from_secs(1),
        }
    }

    fn symbols() -> SymbolTable {
        SymbolTable::new(vec![
            Symbol { address: 0xffff_8000_0010_0000, size: 0x100, name: "keel::selftest::provoke_page_fault".into() },
            Symbol { address: 0xffff_8000_0010_0100, size: 0x100, name: "keel::main".into() },
            Symbol { address: 0xffff_8000_0010_0200, size: 0x100, name: "keel::selftest::provoke_panic".into() },
        ])
    }

    fn check_with(case: &TestCase, run: &RunResult) -> Vec<String> {
        let console = Console::parse(run.texts());
        let table = symbols();
        problems(case, &Observed { run, console: &console, symbols: Ok(&table) })
    }

    fn check(name: &str, log: &str, ending: Ending) -> Vec<String> {
        check_with(&case(name), &run_result(log, ending))
    }

    const EXIT0: Ending = Ending::Exited(Some(0));

    fn smp_log(cpus: u64, usable_kib: u64, frame_kib: u64, free_mib: u64) -> String {
        let mut log = String::from("SeaBIOS\n(keel) boot: booted via multiboot1 by qemu\n");
        log += "(keel) boot: no boot modules\n";
        log += &format!("(keel) mm: memory map: {usable_kib} KiB usable RAM\n");
        log += &format!("(keel) mm: frame table: {frame_kib} KiB\n");
        for cpu in 1..cpus {
            log += &format!("(keel) smp: cpu {cpu} (apic {cpu}) answered a cross-CPU call\n");
        }
        log += &format!("keel: ready: {cpus} cpus, {free_mib} MiB free\n(keel) powering off\n");
        log
    }

    #[test]
    fn the_issue_tests_are_all_there() {
        let names: Vec<String> = cases(&files()).into_iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "smp1-128M",
                "smp2-1G",
                "smp4-4G",
                "smp8-1G",
                "smp2-1G-qemu64",
                "grub-iso",
                "kernel-multiboot1-modules",
                "kernel-pvh",
                "unknown-option",
                "no-modules",
                "pagefault",
                "pagefault-noreboot",
                "panic",
                "reboot",
                "hostile-boot-info",
                "probe-dom0",
                "probe-dom0less-smp1",
                "probe-dom0less-smp2",
                "probe-smp-init-sipi-halt",
                "crash-triple-fault",
                "crash-outside-ram",
                "sched-weights-1-2",
                "sched-affinity",
                "sched-cap-25"
            ]
        );
    }

    #[test]
    fn test_machines_and_timeouts() {
        let c = case("smp4-4G");
        assert_eq!((c.machine.smp, c.machine.mem.mib()), (4, 4096));
        assert_eq!(c.timeout, KERNEL_TIMEOUT);
        assert_eq!(case("smp2-1G-qemu64").machine.cpu, "qemu64,+svm,+npt");
        assert_eq!(case("grub-iso").timeout, ISO_TIMEOUT);
        assert_eq!(case("grub-iso").boot, Boot::Cdrom("/ws/build/test/grub-iso.iso".into()));
        let Boot::Kernel { image, append, .. } = case("kernel-pvh").boot else {
            panic!("kernel-pvh boots with -kernel");
        };
        assert_eq!(image, Path::new("/ws/build/keel-pvh"));
        assert_eq!(append, DEFAULT_OPTIONS);
        let Boot::Kernel { append, .. } = case("pagefault-noreboot").boot else {
            panic!("pagefault boots with -kernel");
        };
        assert!(append.ends_with("when_idle=poweroff test=pagefault noreboot"));
        assert_eq!(case("pagefault").machine.smp, 4);
        let Boot::Kernel { append, .. } = case("reboot").boot else {
            panic!("reboot boots with -kernel");
        };
        assert!(append.contains("when_idle=reboot") && !append.contains("poweroff"));
    }

    #[test]
    fn multiboot1_modules_go_through_initrd() {
        let Boot::Kernel { initrd, .. } = case("kernel-multiboot1-modules").boot else {
            panic!("-kernel boot");
        };
        assert_eq!(qemu::initrd_arg(&initrd).unwrap(), "/ws/build/test/mod1.bin alpha beta,/ws/build/test/mod2.bin");
    }

    #[test]
    fn smp_boot_passes_on_a_good_log() {
        // 1 GiB minus the usual holes; frame table 4 MiB; 1012 MiB free.
        let log = smp_log(2, 1048180, 4096, 1012);
        assert_eq!(check("smp2-1G", &log, EXIT0), Vec::<String>::new());
        assert!(check("smp8-1G", &smp_log(8, 1048180, 4096, 1016), EXIT0).is_empty());
    }

    #[test]
    fn smp_boot_catches_cpu_problems() {
        let log = smp_log(4, 4194000, 4096, 4090).replace("cpu 2 (apic 2)", "cpu 3 (apic 3)");
        let p = check("smp4-4G", &log, EXIT0);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("missing [2]") && p[0].contains("repeated [3]"), "{p:?}");

        let log = smp_log(2, 1048180, 4096, 1012).replace("2 cpus", "1 cpus");
        let p = check("smp2-1G", &log, EXIT0);
        assert!(p.iter().any(|p| p.contains("ready line says 1 cpus")), "{p:?}");

        let log = smp_log(2, 1048180, 4096, 1012) + "keel: ready: 2 cpus, 1012 MiB free\n";
        assert!(check("smp2-1G", &log, EXIT0).iter().any(|p| p.contains("2 times")));
    }

    #[test]
    fn memory_accounting_bounds() {
        let case = "smp1-128M";
        // 128 MiB: usable must be within [124, 128] MiB; (usable - table) / 1024 = 124, so
        // free must be within [116, 124] MiB.
        let good = smp_log(1, 127 * 1024, 3 * 1024, 118);
        assert!(check(case, &good, EXIT0).is_empty());
        assert!(check(case, &smp_log(1, 127 * 1024, 3 * 1024, 115), EXIT0)
            .iter()
            .any(|p| p.contains("MiB free is outside")));
        assert!(check(case, &smp_log(1, 127 * 1024, 3 * 1024, 125), EXIT0)
            .iter()
            .any(|p| p.contains("MiB free is outside")));
        assert!(check(case, &smp_log(1, 123 * 1024, 1024, 120), EXIT0).iter().any(|p| p.contains("usable RAM")));
        assert!(check(case, &smp_log(1, 128 * 1024 + 1, 1024, 120), EXIT0).iter().any(|p| p.contains("usable RAM")));
        assert!(check(case, &smp_log(1, 4 * 1024, 1024 * 1024, 0), EXIT0)
            .iter()
            .any(|p| p.contains("larger than usable")));
        let no_mm = smp_log(1, 127 * 1024, 3 * 1024, 118).replace("(keel) mm: ", "(keel) xx: ");
        let p = check(case, &no_mm, EXIT0);
        assert!(p.iter().any(|p| p == "no 'mm: memory map' line"), "{p:?}");
        assert!(p.iter().any(|p| p == "no 'mm: frame table' line"), "{p:?}");
    }

    #[test]
    fn exit_triple_fault_timeout_and_malformed_lines_fail() {
        let log = smp_log(2, 1048180, 4096, 1012);
        let p = check("smp2-1G", &log, Ending::Exited(Some(1)));
        assert_eq!(p, ["expected QEMU to exit by itself with status 0, but QEMU exited with status 1"]);

        let mut run = run_result(&log, EXIT0);
        run.triple_fault = true;
        assert_eq!(check_with(&case("smp2-1G"), &run), ["QEMU log records a triple fault"]);

        let p = check("smp2-1G", "(keel) boot: no boot modules\n(keel) stuck", Ending::TimedOut);
        assert_eq!(p, ["timed out after 60s; last lines: (keel) boot: no boot modules | (keel) stuck"]);

        let bad = log.replace("1012 MiB free", "lots MiB free");
        let p = check("smp2-1G", &bad, EXIT0);
        assert!(p.iter().any(|p| p.starts_with("malformed line")), "{p:?}");

        let fatal = log + "(keel) FATAL: general protection (vector 13) on cpu 0\n";
        let p = check("smp2-1G", &fatal, EXIT0);
        assert_eq!(p, ["keel reported a fatal error: general protection"]);
    }

    #[test]
    fn grub_iso_expectations() {
        let hash = |seed, len| keel_boot::bootinfo::content_hash(&module_content(seed, len));
        let log = format!(
            "\x1b[Hbooting\n\
            (keel) boot: booted via multiboot2 by GRUB 2.06-13+deb12u2\n\
            (keel) boot: module 0: alpha at 0x200000-0x201000 (4096 bytes) args 'alpha beta'\n\
            (keel) boot: module 1:  at 0x202000-0x204710 (10000 bytes) args ''\n\
            (keel) boot: module 0 content hash {:#018x}\n\
            (keel) boot: module 1 content hash {:#018x}\n\
            keel: ready: 2 cpus, 1000 MiB free\n",
            hash(1, MOD1_LEN),
            hash(2, MOD2_LEN)
        );
        let log = log.as_str();
        assert_eq!(check("grub-iso", log, EXIT0), Vec::<String>::new());
        let corrupt = log.replace(&format!("{:#018x}", hash(2, MOD2_LEN)), "0x0000000000000001");
        let p = check("grub-iso", &corrupt, EXIT0);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("module 1 content hash 0x0000000000000001, expected"), "{p:?}");
        let p = check("grub-iso", &log.replace("(keel) boot: module 0 content hash", "(keel) something"), EXIT0);
        assert_eq!(p, ["no content hash for module 0"]);

        let wrong = log
            .replace("multiboot2 by GRUB", "multiboot1 by qemu")
            .replace("(10000 bytes)", "(9999 bytes)")
            .replace("args 'alpha beta'", "args 'beta'");
        let p = check("grub-iso", &wrong, EXIT0);
        assert!(p.contains(&"booted via multiboot1, expected multiboot2".to_string()), "{p:?}");
        assert!(p.contains(&"boot loader is 'qemu 2.06-13+deb12u2', expected 'GRUB...'".to_string()), "{p:?}");
        assert!(p.contains(&"module 1: 9999 bytes, expected 10000".to_string()), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("module 1: range")), "{p:?}");
        assert!(p.contains(&"module 0: args 'beta', expected 'alpha beta'".to_string()), "{p:?}");

        let one = log.replace("(keel) boot: module 1", "(keel) something");
        let p = check("grub-iso", &one, EXIT0);
        assert!(p.contains(&"1 module line(s) printed, expected 2".to_string()), "{p:?}");
    }

    #[test]
    fn multiboot1_modules_check_names() {
        let log = "(keel) boot: booted via multiboot1 by qemu\n\
            (keel) boot: module 0: /ws/build/test/mod1.bin at 0x1000-0x2000 (4096 bytes) args 'alpha beta'\n\
            (keel) boot: module 1: /ws/build/test/mod2.bin at 0x3000-0x5710 (10000 bytes) args ''\n\
            keel: ready: 2 cpus, 1000 MiB free\n";
        assert!(check("kernel-multiboot1-modules", log, EXIT0).is_empty());
        let unnamed = log.replace(": /ws/build/test/mod2.bin at", ": mod2.bin at");
        assert_eq!(
            check("kernel-multiboot1-modules", &unnamed, EXIT0),
            ["module 1: name 'mod2.bin', expected '/ws/build/test/mod2.bin'"]
        );
    }

    #[test]
    fn pvh_expectations() {
        let log = "(keel) boot: booted via PVH by\n\
            (keel) boot: module 0:  at 0x1000-0x2000 (4096 bytes) args ''\n\
            keel: ready: 2 cpus, 1000 MiB free\n";
        assert!(check("kernel-pvh", log, EXIT0).is_empty());
        let p = check("kernel-pvh", &log.replace("PVH", "multiboot1"), EXIT0);
        assert_eq!(p, ["booted via multiboot1, expected PVH"]);
    }

    #[test]
    fn unknown_option_and_no_modules() {
        let log = "(keel) warning: cmdline: unknown option 'frobnicate=7' ignored\n\
            (keel) warning: cmdline: unknown option 'no-such-flag' ignored\n\
            keel: ready: 2 cpus, 1000 MiB free\n";
        assert!(check("unknown-option", log, EXIT0).is_empty());
        let p = check("unknown-option", &log.replace("'no-such-flag'", "'other'"), EXIT0);
        assert_eq!(p, ["no unknown-option warning for 'no-such-flag'"]);

        let log = "(keel) boot: no boot modules\nkeel: ready: 2 cpus, 1000 MiB free\n";
        assert!(check("no-modules", log, EXIT0).is_empty());
        let p = check("no-modules", "keel: ready: 2 cpus, 1000 MiB free\n", EXIT0);
        assert_eq!(p, ["no '(keel) boot: no boot modules' line"]);
    }

    const HOSTILE_LOG: &str = "badloader: expect 1047036 KiB usable RAM\n\
        (keel) warning: boot: module 1 at 0x3001000 is empty; ignored\n\
        (keel) boot: booted via PVH by PVH start info\n\
        (keel) boot: module 0: (unnamed) at 0xfd00000000-0xfd00001000 (4096 bytes) args 'missing-module'\n\
        (keel) boot: module 1: (unnamed) at 0x3001000-0x3001000 (0 bytes) args 'empty-module'\n\
        (keel) boot: module 2: (unnamed) at 0x3000000-0x300001b (27 bytes) args 'good-module args'\n\
        (keel) warning: mm: memory map: memory map entry 0 (base 0xfffffffffffff000, length 0x2000) runs past the end of the address space; ignored it\n\
        (keel) warning: mm: memory map: memory map entry 1 [0x4000000000000000, 0x4000000000100000) lies above the physical address limit 0x10000000000; ignored it\n\
        (keel) warning: mm: memory map: memory map entry 13 has zero length; ignored it\n\
        (keel) warning: mm: memory map: memory map entries 2 and 6 overlap on [0x3fee0000, 0x3ffe0000); treated it as RAM\n\
        (keel) mm: memory map: 1047036 KiB usable RAM\n\
        (keel) warning: boot: module 0 at 0xfd00000000-0xfd00001000 is not in RAM (missing or misreported); ignored\n\
        (keel) warning: boot: module 2 is neither a domain's kernel nor its initrd; ignored\n\
        (keel) mm: frame table: 4095 KiB\n\
        (keel) boot: module 2 content hash 0x31428b8046b3e2ae\n\
        keel: ready: 2 cpus, 1016 MiB free\n";

    #[test]
    fn hostile_boot_info() {
        assert_eq!(keel_boot::bootinfo::content_hash(BADLOADER_GOOD_MODULE), 0x3142_8b80_46b3_e2ae);
        assert_eq!(check("hostile-boot-info", HOSTILE_LOG, EXIT0), Vec::<String>::new());
        let p = check("hostile-boot-info", &HOSTILE_LOG.replace("memory map: 1047036", "memory map: 1048060"), EXIT0);
        assert_eq!(p, ["keel counts 1048060 KiB usable RAM; the boot loader's map has 1047036 KiB"]);
        let p = check("hostile-boot-info", &HOSTILE_LOG.replace("has zero length", "is odd"), EXIT0);
        assert_eq!(p, ["no memory-map problem reported containing 'has zero length'"]);
        let p = check(
            "hostile-boot-info",
            &HOSTILE_LOG.replace("is not in RAM (missing or misreported); ignored", "is fine"),
            EXIT0,
        );
        assert_eq!(p, ["modules reported as ignored: [1, 2], expected [0, 1, 2]"]);
        let p = check("hostile-boot-info", &HOSTILE_LOG.replace("badloader: expect", "badloader: guess"), EXIT0);
        assert_eq!(p, ["no 'badloader: expect <K> KiB usable RAM' line"]);
    }

    fn pagefault_log(ending: &str) -> String {
        format!(
            "keel: ready: 4 cpus, 1000 MiB free\n\
             (keel) FATAL: page fault (vector 14) on cpu 0\n\
             (keel) faulting address: 0x00000badc0de0000\n\
             (keel) rip: 0xffff800000100042\n\
             (keel) rsp: 0xffff800000200000\n\
             (keel) call trace:\n\
             (keel)   [<0xffff800000100142>]\n\
             (keel)   [<0xffff800000100150>]\n\
             (keel) all 4 CPUs stopped\n\
             (keel) {ending}\n"
        )
    }

    #[test]
    fn pagefault_passes_on_a_good_dump() {
        assert_eq!(check("pagefault", &pagefault_log("rebooting"), EXIT0), Vec::<String>::new());
        assert!(check("pagefault-noreboot", &pagefault_log("halted (noreboot)"), Ending::KilledAfterPattern).is_empty());
    }

    #[test]
    fn pagefault_catches_dump_problems() {
        let good = pagefault_log("rebooting");
        let p = check("pagefault", &good.replace("vector 14", "vector 13"), EXIT0);
        assert_eq!(p, ["FATAL line has vector 13, expected 14"]);
        let p = check("pagefault", &good.replace("0x00000badc0de0000", "0x0000000000000000"), EXIT0);
        assert_eq!(p, ["faulting address 0x0000000000000000, expected 0x00000badc0de0000"]);
        let p = check("pagefault", &good.replace("rip: 0xffff800000100042", "rip: 0xffff800000100142"), EXIT0);
        assert_eq!(p, ["rip 0xffff800000100142 is in keel::main, expected a function named like 'provoke_page_fault'"]);
        let p = check("pagefault", &good.replace("rip: 0xffff800000100042", "rip: 0x1"), EXIT0);
        assert_eq!(p, ["rip 0x1 is in no function of build/keel"]);
        let p = check("pagefault", &good.replace("(keel)   [<", "(keel) xx"), EXIT0);
        assert_eq!(p, ["no call-trace frame after 'call trace:'"]);
        let p = check("pagefault", &good.replace("all 4 CPUs", "all 3 CPUs"), EXIT0);
        assert_eq!(p, ["all 3 CPUs stopped, expected 4"]);
        let p = check("pagefault", &pagefault_log("halted (noreboot)"), EXIT0);
        assert_eq!(p, ["no Rebooting line after the CPUs were stopped"]);
        let p = check("pagefault", "keel: ready: 4 cpus, 1 MiB free\n", EXIT0);
        assert_eq!(p, ["no '(keel) FATAL:' line"]);
        let p = check("pagefault", &good, Ending::Exited(None));
        assert_eq!(p, ["expected QEMU to exit by itself with status 0, but QEMU was killed by a signal"]);
    }

    #[test]
    fn noreboot_must_stay_halted() {
        let log = pagefault_log("halted (noreboot)");
        let p = check("pagefault-noreboot", &log, EXIT0);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("expected keel to stay halted"), "{p:?}");
        let stop = case("pagefault-noreboot").stop;
        assert_eq!(stop, Stop::kill_after("(keel) halted (noreboot)", NOREBOOT_GRACE));
        assert_eq!(log.lines().find_map(|l| stop.grace_after(l)), Some(NOREBOOT_GRACE));
    }

    #[test]
    fn unresolvable_symbols_fail_the_rip_check() {
        let run = run_result(&pagefault_log("rebooting"), EXIT0);
        let console = Console::parse(run.texts());
        let p = problems(&case("pagefault"), &Observed { run: &run, console: &console, symbols: Err("no ELF") });
        assert_eq!(p, ["cannot resolve rip 0xffff800000100042: no ELF"]);
    }

    const PANIC_LOG: &str = "keel: ready: 2 cpus, 1000 MiB free\n\
        (keel) FATAL: panic on cpu 0: test=panic asked for a panic\n\
        (keel) at crates/keel/src/selftest.rs:76:5\n\
        (keel) call trace:\n\
        (keel)   [<0xffff800000100142>]\n\
        (keel)   [<0xffff800000100300>]\n\
        (keel) all 2 CPUs stopped\n\
        (keel) rebooting\n";

    #[test]
    fn panic_expectations() {
        // The synthetic symbol table has keel::main at 0x100100 and provoke_panic at 0x100200..0x100300.
        assert_eq!(check("panic", PANIC_LOG, EXIT0), Vec::<String>::new());
        // 0x100300 is a return address just past provoke_panic (a call that never returns).
        let p = check("panic", &PANIC_LOG.replace("[<0xffff800000100300>]", "[<0xffff800000100142>]"), EXIT0);
        assert_eq!(p, ["no call-trace frame is in a function named like 'provoke_panic'"]);
        let p = check("panic", &PANIC_LOG.replace("selftest.rs", "main.rs"), EXIT0);
        assert_eq!(p, ["panic location 'crates/keel/src/main.rs:76:5', expected one in crates/keel/src/selftest.rs"]);
        let p = check("panic", &PANIC_LOG.replace("asked for a panic", "went wrong"), EXIT0);
        assert_eq!(p, ["FATAL line 'panic on cpu 0: test=panic went wrong' is not a panic with message 'test=panic asked for a panic'"]);
        let p = check("panic", &PANIC_LOG.replace("(keel) at crates", "(keel) near crates"), EXIT0);
        assert_eq!(p, ["no 'at <file>:<line>:<col>' line after FATAL"]);
    }

    #[test]
    fn reboot_must_follow_ready() {
        let log = "keel: ready: 2 cpus, 1000 MiB free\n(keel) rebooting\n";
        assert!(check("reboot", log, EXIT0).is_empty());
        let early = "(keel) rebooting\nkeel: ready: 2 cpus, 1000 MiB free\n";
        assert_eq!(check("reboot", early, EXIT0), ["no Rebooting line after the ready line"]);
    }

    #[test]
    fn filter_selects_by_substring() {
        let all = cases(&files());
        let n = all.len();
        assert_eq!(select(all.clone(), None, &[]).unwrap().len(), n);
        let pf: Vec<String> =
            select(all.clone(), Some("pagefault"), &[]).unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(pf, ["pagefault", "pagefault-noreboot"]);
        let err = select(all.clone(), Some("nope"), &[]).unwrap_err().to_string();
        assert!(err.contains("smp2-1G"), "{err}");
        // A filter that only matches a test run elsewhere selects no case, without error.
        let other = ["conformance-keel-2dom".to_string()];
        assert!(select(all.clone(), Some("2dom"), &other).unwrap().is_empty());
        let err = select(all, Some("nope"), &other).unwrap_err().to_string();
        assert!(err.ends_with(", conformance-keel-2dom"), "{err}");
    }

    #[test]
    fn module_content_is_deterministic_and_exact() {
        let a = module_content(1, MOD1_LEN);
        assert_eq!(a.len(), MOD1_LEN);
        assert_eq!(a, module_content(1, MOD1_LEN));
        assert_ne!(a, module_content(2, MOD1_LEN));
        assert!(a.starts_with(b"keel test module 1, 4096 bytes\n"));
        assert_eq!(module_content(2, MOD2_LEN).len(), MOD2_LEN);
        assert_eq!(module_content(3, 5).len(), 5);
        assert!(module_content(3, 0).is_empty());
    }

    #[test]
    fn summary_is_a_plain_closing_line() {
        assert_eq!(summary_line(12, 1), "summary: 12 passed, 1 failed");
    }
}
