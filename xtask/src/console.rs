//! Parsing keel's serial console protocol into typed events.
//!
//! keel's log lines start with `(keel) `; the ready line (`keel: ready: ...`) has no prefix.
//! Both may be preceded by junk on the same line (GRUB does not end its last screen with a
//! newline), so the parser looks for the marker anywhere in the line. A line in one of the known
//! forms whose fields do not parse is reported as malformed rather than silently ignored, so a
//! format drift in keel shows up as a clear test failure. Lines keel prints that tests do not
//! care about are simply not events.

use std::fmt;

/// keel's log line prefix.
pub const PREFIX: &str = "(keel) ";
/// The ready line's marker.
pub const READY: &str = "keel: ready: ";
/// The test boot loader's prediction of keel's usable RAM.
pub const LOADER_EXPECTS: &str = "badloader: expect ";

/// How keel says it was booted.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Protocol {
    /// Multiboot2 (GRUB).
    Multiboot2,
    /// Multiboot (version 1; QEMU's `-kernel`).
    Multiboot1,
    /// Xen's PVH entry (QEMU's `-kernel` without a multiboot header).
    Pvh,
}

impl Protocol {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "multiboot2" => Some(Self::Multiboot2),
            "multiboot1" => Some(Self::Multiboot1),
            "PVH" => Some(Self::Pvh),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Multiboot2 => "multiboot2",
            Self::Multiboot1 => "multiboot1",
            Self::Pvh => "PVH",
        })
    }
}

/// `(keel) boot: module <i>: <name> at 0x<start>-0x<end> (<bytes> bytes) args '<args>'`.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ModuleLine {
    /// The module's index as printed.
    pub index: u64,
    /// The image name (may be empty).
    pub name: String,
    /// First byte.
    pub start: u64,
    /// End address as printed (keel's modules have exclusive ends).
    pub end: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// The module's arguments.
    pub args: String,
}

/// Something keel said that tests look at.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Event {
    /// `keel: ready: <N> cpus, <M> MiB free`.
    Ready {
        /// Number of CPUs up.
        cpus: u64,
        /// Free memory in MiB.
        free_mib: u64,
    },
    /// `(keel) boot: booted via <protocol> by <loader>`.
    Booted {
        /// The boot protocol.
        protocol: Protocol,
        /// The boot loader's name (may be empty).
        loader: String,
    },
    /// A boot module.
    Module(ModuleLine),
    /// `(keel) boot: no boot modules`.
    NoModules,
    /// `(keel) mm: memory map: <K> KiB usable RAM`.
    UsableRam {
        /// Usable RAM in KiB.
        kib: u64,
    },
    /// `(keel) mm: frame table: <K> KiB`.
    FrameTable {
        /// Frame table size in KiB.
        kib: u64,
    },
    /// `(keel) smp: cpu <i> (apic <id>) answered a cross-CPU call`.
    CpuAnswered {
        /// keel's CPU index.
        cpu: u64,
        /// Its local APIC id.
        apic: u64,
    },
    /// `(keel) warning: cmdline: unknown option '<text>' ignored`.
    UnknownOption(String),
    /// `(keel) FATAL: <name> (vector <v>) on cpu <c>`; other FATAL lines keep just the text.
    Fatal {
        /// The exception name, or the whole message for other fatal errors.
        name: String,
        /// The exception vector, if printed.
        vector: Option<u64>,
        /// The CPU, if printed.
        cpu: Option<u64>,
    },
    /// `(keel) faulting address: 0x<hex>`.
    FaultingAddress(u64),
    /// `(keel) rip: 0x<hex>` (possibly followed by more registers).
    Rip(u64),
    /// `(keel) call trace:`.
    CallTrace,
    /// `(keel)   [<0x<hex>>]`: one call-trace frame.
    TraceEntry(u64),
    /// `(keel) all <n> CPUs stopped`.
    AllCpusStopped(u64),
    /// `(keel) rebooting`.
    Rebooting,
    /// `(keel) halted (noreboot)`.
    HaltedNoreboot,
    /// `(keel) powering off`.
    PoweringOff,
    /// `(keel) warning: mm: memory map: <problem>`: a problem keel found in the map.
    MapProblem(String),
    /// `(keel) warning: boot: module <i> ... ignored`.
    ModuleIgnored {
        /// The module's index.
        index: u64,
    },
    /// A guest's console line: `(d<N>) <text>`.
    Guest {
        /// The domain.
        dom: u64,
        /// The text.
        text: String,
    },
    /// `(keel) d<N> (<name>): shut down: <reason>`.
    DomainShutdown {
        /// The domain.
        dom: u64,
        /// Xen's reason name (poweroff, reboot, crash, ...).
        reason: String,
    },
    /// `(keel) error: d<N> (<name>): crashed: <why>`.
    DomainCrashed {
        /// The domain.
        dom: u64,
        /// Why.
        why: String,
    },
    /// `(keel) d<N> (<name>): destroyed: ran <s>.<ms> s of CPU time, returned <K> KiB`.
    DomainDestroyed {
        /// The domain.
        dom: u64,
        /// CPU time in milliseconds.
        runtime_ms: u64,
    },
    /// `(keel) mm: all domains destroyed: <K> KiB free (before the first domain: <K> KiB)`.
    MemoryBalance {
        /// Free KiB after.
        after_kib: u64,
        /// Free KiB before.
        before_kib: u64,
    },
    /// `(keel) at <file>:<line>:<col>`: where a panic happened.
    Location(String),
    /// `(keel) boot: module <i> content hash 0x<hex>`.
    ModuleHash {
        /// The module's index.
        index: u64,
        /// FNV-1a 64 of its bytes.
        hash: u64,
    },
    /// `badloader: expect <K> KiB usable RAM` (the test boot loader's prediction).
    LoaderExpectsUsable {
        /// Usable RAM in KiB.
        kib: u64,
    },
}

/// A line in a known form whose fields did not parse.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Malformed {
    /// Index of the line.
    pub line: usize,
    /// What was expected.
    pub expected: &'static str,
    /// The line's text.
    pub text: String,
}

/// A number in decimal or `0x` hexadecimal.
fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// A `0x` hexadecimal number.
fn hex(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("0x")?;
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

fn parse_ready(rest: &str) -> Option<Event> {
    // "<N> cpus, <M> MiB free"
    let (cpus, rest) = rest.trim().split_once(' ')?;
    let rest = rest.strip_prefix("cpus, ").or_else(|| rest.strip_prefix("cpu, "))?;
    let free = rest.strip_suffix(" MiB free")?;
    Some(Event::Ready { cpus: number(cpus)?, free_mib: number(free)? })
}

fn parse_booted(rest: &str) -> Option<Event> {
    // "<protocol> by <loader>"; the loader name may be empty.
    let (protocol, loader) = match rest.split_once(" by") {
        Some((p, l)) => (p, l.strip_prefix(' ').unwrap_or(l)),
        None => return None,
    };
    Some(Event::Booted { protocol: Protocol::parse(protocol)?, loader: loader.to_string() })
}

fn parse_module(rest: &str) -> Option<Event> {
    // "<i>: <name> at 0x<start>-0x<end> (<bytes> bytes) args '<args>'"
    let (index, rest) = rest.split_once(": ")?;
    let (head, args) = rest.split_once(" bytes) args '")?;
    let args = args.strip_suffix('\'')?;
    let (head, bytes) = head.rsplit_once(" (")?;
    let at = head.rfind("at 0x")?;
    let (name, range) = (head[..at].trim(), &head[at + 3..]);
    let (start, end) = range.split_once('-')?;
    Some(Event::Module(ModuleLine {
        index: number(index)?,
        name: name.to_string(),
        start: hex(start)?,
        end: hex(end)?,
        bytes: number(bytes)?,
        args: args.to_string(),
    }))
}

fn parse_cpu_answered(rest: &str) -> Option<Event> {
    // "<i> (apic <id>) answered a cross-CPU call"
    let rest = rest.strip_suffix(") answered a cross-CPU call")?;
    let (cpu, apic) = rest.split_once(" (apic ")?;
    Some(Event::CpuAnswered { cpu: number(cpu)?, apic: number(apic)? })
}

fn parse_fatal(rest: &str) -> Event {
    // "<name> (vector <v>) on cpu <c>", else free text.
    let structured = rest.rsplit_once(" (vector ").and_then(|(name, tail)| {
        let (vector, cpu) = tail.split_once(") on cpu ")?;
        Some(Event::Fatal { name: name.to_string(), vector: Some(number(vector)?), cpu: Some(number(cpu)?) })
    });
    structured.unwrap_or_else(|| Event::Fatal { name: rest.to_string(), vector: None, cpu: None })
}

/// `(d<N>) <text>`, anywhere in the line (a guest line may follow noise).
fn parse_guest(text: &str) -> Option<Result<Event, &'static str>> {
    let start = text.find("(d")?;
    let rest = &text[start + 2..];
    let close = rest.find(") ")?;
    let dom: u64 = rest[..close].parse().ok()?;
    Some(Ok(Event::Guest { dom, text: rest[close + 2..].trim_end().to_string() }))
}

/// keel's lines about a domain's life, and the memory balance.
fn parse_domain_event(line: &str) -> Option<Result<Event, &'static str>> {
    if let Some(rest) = line.strip_prefix("mm: all domains destroyed: ") {
        let parsed = rest.split_once(" KiB free (before the first domain: ").and_then(|(a, b)| {
            Some(Event::MemoryBalance { after_kib: number(a)?, before_kib: number(b.strip_suffix(" KiB)")?)? })
        });
        return Some(parsed.ok_or("mm: all domains destroyed: <K> KiB free (before the first domain: <K> KiB)"));
    }
    let (is_error, rest) = match line.strip_prefix("error: ") {
        Some(r) => (true, r),
        None => (false, line),
    };
    let rest = rest.strip_prefix('d')?;
    let (dom, rest) = rest.split_once(' ')?;
    let dom: u64 = dom.parse().ok()?;
    // "(<name>): <what>"
    let what = rest.strip_prefix('(')?.split_once("): ")?.1;
    if let Some(reason) = what.strip_prefix("shut down: ") {
        return Some(Ok(Event::DomainShutdown { dom, reason: reason.to_string() }));
    }
    if let Some(why) = what.strip_prefix("crashed: ").filter(|_| is_error) {
        return Some(Ok(Event::DomainCrashed { dom, why: why.to_string() }));
    }
    if let Some(ran) = what.strip_prefix("destroyed: ran ") {
        let ms = ran.split_once(" s of CPU time").and_then(|(t, _)| {
            let (s, ms) = t.split_once('.')?;
            Some(number(s)? * 1000 + number(ms)?)
        });
        return Some(
            ms.map(|runtime_ms| Event::DomainDestroyed { dom, runtime_ms })
                .ok_or("destroyed: ran <s>.<ms> s of CPU time"),
        );
    }
    None
}

/// The first whitespace-separated word of `s`.
fn first_word(s: &str) -> &str {
    s.split_whitespace().next().unwrap_or("")
}

/// Parses one console line: `None` if it is not an event, `Some(Err(expected))` if it is in a
/// known form whose fields do not parse.
pub fn parse_line(text: &str) -> Option<Result<Event, &'static str>> {
    let check = |event: Option<Event>, expected: &'static str| Some(event.ok_or(expected));

    if let Some(i) = text.find(READY) {
        return check(parse_ready(&text[i + READY.len()..]), "keel: ready: <N> cpus, <M> MiB free");
    }
    if let Some(rest) = text.trim_end().strip_prefix(LOADER_EXPECTS) {
        let kib = rest.strip_suffix(" KiB usable RAM").and_then(number);
        return check(kib.map(|kib| Event::LoaderExpectsUsable { kib }), "badloader: expect <K> KiB usable RAM");
    }
    if let Some(guest) = parse_guest(text) {
        return Some(guest);
    }
    let body = &text[text.find(PREFIX)? + PREFIX.len()..];
    let line = body.trim_end();
    if let Some(event) = parse_domain_event(line) {
        return Some(event);
    }

    if let Some(rest) = line.strip_prefix("boot: booted via ") {
        return check(parse_booted(rest), "boot: booted via <protocol> by <loader>");
    }
    if let Some(rest) = line.strip_prefix("boot: module ").filter(|r| !r.contains(" content hash ")) {
        return check(
            parse_module(rest),
            "boot: module <i>: <name> at 0x<start>-0x<end> (<bytes> bytes) args '<args>'",
        );
    }
    if line == "boot: no boot modules" {
        return Some(Ok(Event::NoModules));
    }
    if let Some(rest) = line.strip_prefix("mm: memory map: ") {
        let kib = rest.strip_suffix(" KiB usable RAM")?;
        return check(number(kib).map(|kib| Event::UsableRam { kib }), "mm: memory map: <K> KiB usable RAM");
    }
    if let Some(rest) = line.strip_prefix("mm: frame table: ") {
        let kib = rest.strip_suffix(" KiB")?;
        return check(number(kib).map(|kib| Event::FrameTable { kib }), "mm: frame table: <K> KiB");
    }
    if let Some(rest) = line.strip_prefix("smp: cpu ") {
        if !rest.ends_with("answered a cross-CPU call") {
            return None;
        }
        return check(parse_cpu_answered(rest), "smp: cpu <i> (apic <id>) answered a cross-CPU call");
    }
    if let Some(rest) = line.strip_prefix("warning: cmdline: unknown option '") {
        return check(
            rest.strip_suffix("' ignored").map(|o| Event::UnknownOption(o.to_string())),
            "warning: cmdline: unknown option '<text>' ignored",
        );
    }
    if let Some(rest) = line.strip_prefix("warning: mm: memory map: ") {
        return Some(Ok(Event::MapProblem(rest.to_string())));
    }
    if let Some(rest) = line.strip_prefix("warning: boot: module ") {
        if !rest.ends_with("ignored") {
            return None;
        }
        let index = rest.split_once(' ').and_then(|(i, _)| number(i));
        return check(index.map(|index| Event::ModuleIgnored { index }), "warning: boot: module <i> ... ignored");
    }
    if let Some(rest) = line.strip_prefix("at ") {
        return Some(Ok(Event::Location(rest.to_string())));
    }
    if let Some(rest) = line.strip_prefix("boot: module ") {
        if let Some((index, hash)) = rest.split_once(" content hash ") {
            return check(
                number(index).zip(hex(hash)).map(|(index, hash)| Event::ModuleHash { index, hash }),
                "boot: module <i> content hash 0x<hex>",
            );
        }
    }
    if let Some(rest) = line.strip_prefix("FATAL: ") {
        return Some(Ok(parse_fatal(rest)));
    }
    if let Some(rest) = line.strip_prefix("faulting address: ") {
        return check(hex(first_word(rest)).map(Event::FaultingAddress), "faulting address: 0x<hex>");
    }
    if let Some(rest) = line.strip_prefix("rip: ") {
        return check(hex(first_word(rest)).map(Event::Rip), "rip: 0x<hex>");
    }
    if line == "call trace:" {
        return Some(Ok(Event::CallTrace));
    }
    if let Some(rest) = line.trim_start().strip_prefix("[<") {
        let addr = rest.split_once(">]").and_then(|(a, _)| hex(a));
        return check(addr.map(Event::TraceEntry), "  [<0x<hex>>]");
    }
    if let Some(rest) = line.strip_prefix("all ") {
        let n = rest.strip_suffix(" CPUs stopped")?;
        return check(number(n).map(Event::AllCpusStopped), "all <n> CPUs stopped");
    }
    match line {
        "rebooting" => Some(Ok(Event::Rebooting)),
        "halted (noreboot)" => Some(Ok(Event::HaltedNoreboot)),
        "powering off" => Some(Ok(Event::PoweringOff)),
        _ => None,
    }
}

/// An event and the index of the line it came from.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Entry {
    /// Index of the line.
    pub line: usize,
    /// What it said.
    pub event: Event,
}

/// All events of one console log.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct Console {
    /// Events in line order.
    pub entries: Vec<Entry>,
    /// Lines in a known form that did not parse.
    pub malformed: Vec<Malformed>,
}

impl Console {
    /// Parses every line.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut console = Self::default();
        for (line, text) in lines.into_iter().enumerate() {
            match parse_line(text) {
                None => {}
                Some(Ok(event)) => console.entries.push(Entry { line, event }),
                Some(Err(expected)) => console.malformed.push(Malformed { line, expected, text: text.to_string() }),
            }
        }
        console
    }

    /// The entries for which `f` returns something, with their line index.
    pub fn select<'a, T>(&'a self, f: impl Fn(&'a Event) -> Option<T> + 'a) -> impl Iterator<Item = (usize, T)> + 'a {
        self.entries.iter().filter_map(move |e| f(&e.event).map(|t| (e.line, t)))
    }

    /// Line index of the first event equal to `event` at or after line `from`.
    pub fn position_from(&self, from: usize, event: &Event) -> Option<usize> {
        self.entries.iter().find(|e| e.line >= from && e.event == *event).map(|e| e.line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(text: &str) -> Event {
        match parse_line(text) {
            Some(Ok(e)) => e,
            other => panic!("{text:?} parsed as {other:?}"),
        }
    }

    fn malformed(text: &str) -> bool {
        matches!(parse_line(text), Some(Err(_)))
    }

    #[test]
    fn ready_line() {
        assert_eq!(ok("keel: ready: 4 cpus, 1003 MiB free"), Event::Ready { cpus: 4, free_mib: 1003 });
        assert_eq!(ok("junk\u{1}keel: ready: 1 cpu, 100 MiB free"), Event::Ready { cpus: 1, free_mib: 100 });
        assert_eq!(ok("(keel) keel: ready: 2 cpus, 5 MiB free"), Event::Ready { cpus: 2, free_mib: 5 });
        assert!(malformed("keel: ready: many cpus, 5 MiB free"));
        assert!(malformed("keel: ready: 2 cpus"));
    }

    #[test]
    fn domain_lines() {
        assert_eq!(
            ok("(d1) probe: 18 passed, 0 failed"),
            Event::Guest { dom: 1, text: "probe: 18 passed, 0 failed".into() }
        );
        assert_eq!(
            ok("(keel) d0 (Domain-0): shut down: poweroff"),
            Event::DomainShutdown { dom: 0, reason: "poweroff".into() }
        );
        assert_eq!(
            ok("(keel) error: d2 (d2): crashed: vCPU 0: triple fault"),
            Event::DomainCrashed { dom: 2, why: "vCPU 0: triple fault".into() }
        );
        assert_eq!(
            ok("(keel) d1 (web): destroyed: ran 1.020 s of CPU time, returned 32772 KiB"),
            Event::DomainDestroyed { dom: 1, runtime_ms: 1020 }
        );
        assert_eq!(
            ok("(keel) mm: all domains destroyed: 1041236 KiB free (before the first domain: 1041244 KiB)"),
            Event::MemoryBalance { after_kib: 1041236, before_kib: 1041244 }
        );
        assert!(malformed("(keel) d1 (web): destroyed: ran lots s of CPU time"));
        assert_eq!(parse_line("(keel) d1: build took 5 us"), None);
    }

    #[test]
    fn panic_and_hash_lines() {
        assert_eq!(
            ok("(keel) at crates/keel/src/selftest.rs:76:5"),
            Event::Location("crates/keel/src/selftest.rs:76:5".into())
        );
        assert_eq!(
            ok("(keel) boot: module 2 content hash 0x68f668194ec5a7d2"),
            Event::ModuleHash { index: 2, hash: 0x68f6_6819_4ec5_a7d2 }
        );
        assert!(malformed("(keel) boot: module 2 content hash 68f6"));
    }

    #[test]
    fn hostile_boot_lines() {
        assert_eq!(ok("badloader: expect 1047036 KiB usable RAM"), Event::LoaderExpectsUsable { kib: 1047036 });
        assert!(malformed("badloader: expect lots of KiB usable RAM"));
        assert_eq!(
            ok("(keel) warning: mm: memory map: memory map entry 13 has zero length; ignored it"),
            Event::MapProblem("memory map entry 13 has zero length; ignored it".into())
        );
        assert_eq!(
            ok("(keel) warning: boot: module 0 at 0xfd00000000-0xfd00001000 is not in RAM (missing); ignored"),
            Event::ModuleIgnored { index: 0 }
        );
        assert_eq!(ok("(keel) warning: boot: module 1 is empty; ignored"), Event::ModuleIgnored { index: 1 });
        assert!(malformed("(keel) warning: boot: module x is empty; ignored"));
        assert_eq!(
            ok("(keel) warning: boot: module 1 at 0x3001000 is empty; ignored"),
            Event::ModuleIgnored { index: 1 }
        );
        assert_eq!(parse_line("(keel) warning: boot: module 1 at 0x3001000 is strange"), None);
    }

    #[test]
    fn boot_lines() {
        assert_eq!(
            ok("(keel) boot: booted via multiboot2 by GRUB 2.06-13+deb12u2"),
            Event::Booted { protocol: Protocol::Multiboot2, loader: "GRUB 2.06-13+deb12u2".into() }
        );
        assert_eq!(
            ok("(keel) boot: booted via multiboot1 by qemu"),
            Event::Booted { protocol: Protocol::Multiboot1, loader: "qemu".into() }
        );
        assert_eq!(
            ok("(keel) boot: booted via PVH by "),
            Event::Booted { protocol: Protocol::Pvh, loader: String::new() }
        );
        assert!(malformed("(keel) boot: booted via floppy by hand"));
        assert_eq!(ok("(keel) boot: no boot modules"), Event::NoModules);
    }

    #[test]
    fn module_lines() {
        assert_eq!(
            ok("(keel) boot: module 0: /b/mod1.bin at 0x10f000-0x110000 (4096 bytes) args 'alpha beta'"),
            Event::Module(ModuleLine {
                index: 0,
                name: "/b/mod1.bin".into(),
                start: 0x10f000,
                end: 0x110000,
                bytes: 4096,
                args: "alpha beta".into()
            })
        );
        // Empty name and args, and an args text that looks like the format itself.
        assert_eq!(
            ok("(keel) boot: module 1:  at 0x200000-0x202710 (10000 bytes) args 'x at 0x1-0x2 (3 bytes) args ''"),
            Event::Module(ModuleLine {
                index: 1,
                name: String::new(),
                start: 0x200000,
                end: 0x202710,
                bytes: 10000,
                args: "x at 0x1-0x2 (3 bytes) args '".into()
            })
        );
        assert!(malformed("(keel) boot: module 0: m at 0x1-0x2 (many bytes) args ''"));
        assert!(malformed("(keel) boot: module 0: m at 1-2 (1 bytes) args ''"));
        assert!(malformed("(keel) boot: module 0: m at 0x1-0x2 (1 bytes) args 'unterminated"));
    }

    #[test]
    fn memory_lines() {
        assert_eq!(ok("(keel) mm: memory map: 1048180 KiB usable RAM"), Event::UsableRam { kib: 1048180 });
        assert_eq!(ok("(keel) mm: frame table: 8192 KiB"), Event::FrameTable { kib: 8192 });
        assert!(malformed("(keel) mm: memory map: ? KiB usable RAM"));
        // Other mm lines are not events.
        assert_eq!(parse_line("(keel) mm: memory map: 0x0-0x9fc00 usable"), None);
    }

    #[test]
    fn smp_lines() {
        assert_eq!(ok("(keel) smp: cpu 3 (apic 3) answered a cross-CPU call"), Event::CpuAnswered { cpu: 3, apic: 3 });
        assert_eq!(
            ok("(keel) smp: cpu 1 (apic 0x10) answered a cross-CPU call"),
            Event::CpuAnswered { cpu: 1, apic: 16 }
        );
        assert!(malformed("(keel) smp: cpu x answered a cross-CPU call"));
        assert_eq!(parse_line("(keel) smp: cpu 1 (apic 1) online"), None);
    }

    #[test]
    fn warning_lines() {
        assert_eq!(
            ok("(keel) warning: cmdline: unknown option 'frobnicate=7' ignored"),
            Event::UnknownOption("frobnicate=7".into())
        );
        assert!(malformed("(keel) warning: cmdline: unknown option 'x"));
        assert_eq!(parse_line("(keel) warning: cmdline: bad value"), None);
    }

    #[test]
    fn fatal_dump() {
        assert_eq!(
            ok("(keel) FATAL: page fault (vector 14) on cpu 2"),
            Event::Fatal { name: "page fault".into(), vector: Some(14), cpu: Some(2) }
        );
        assert_eq!(
            ok("(keel) FATAL: panic at src/main.rs:3: oops"),
            Event::Fatal { name: "panic at src/main.rs:3: oops".into(), vector: None, cpu: None }
        );
        assert_eq!(ok("(keel) faulting address: 0x00000badc0de0000"), Event::FaultingAddress(0xbadc0de0000));
        assert_eq!(ok("(keel) rip: 0xffffffff80012345  rsp: 0xffff800000001000"), Event::Rip(0xffffffff80012345));
        assert_eq!(ok("(keel) call trace:"), Event::CallTrace);
        assert_eq!(ok("(keel)   [<0xffffffff80001234>]"), Event::TraceEntry(0xffffffff80001234));
        assert_eq!(ok("(keel)   [<0xffffffff80001234>] keel::main+0x10"), Event::TraceEntry(0xffffffff80001234));
        assert_eq!(ok("(keel) all 4 CPUs stopped"), Event::AllCpusStopped(4));
        assert_eq!(ok("(keel) rebooting"), Event::Rebooting);
        assert_eq!(ok("(keel) halted (noreboot)"), Event::HaltedNoreboot);
        assert_eq!(ok("(keel) powering off  "), Event::PoweringOff);
        assert!(malformed("(keel) rip: ffffffff80012345"));
        assert!(malformed("(keel)   [<0xzz>]"));
        assert!(malformed("(keel) faulting address: 0x"));
    }

    #[test]
    fn unrelated_lines_are_not_events() {
        for text in [
            "",
            "SeaBIOS (version 1.16.2-debian-1.16.2-1)",
            "(keel) acpi: MADT: 4 local APICs",
            "keel: something else",
            "(keel)",
            "(keel) all good",
        ] {
            assert_eq!(parse_line(text), None, "{text:?}");
        }
    }

    #[test]
    fn console_collects_events_and_malformed_lines_with_indices() {
        let log = [
            "GRUB loading",
            "(keel) boot: no boot modules",
            "(keel) smp: cpu one (apic 1) answered a cross-CPU call",
            "keel: ready: 2 cpus, 1000 MiB free",
            "(keel) powering off",
        ];
        let c = Console::parse(log);
        assert_eq!(c.entries.len(), 3);
        assert_eq!(c.entries[1].line, 3);
        assert_eq!(c.malformed.len(), 1);
        assert_eq!(c.malformed[0].line, 2);
        let ready: Vec<_> = c
            .select(|e| match e {
                Event::Ready { cpus, .. } => Some(*cpus),
                _ => None,
            })
            .collect();
        assert_eq!(ready, [(3, 2)]);
        assert_eq!(c.position_from(0, &Event::PoweringOff), Some(4));
        assert_eq!(c.position_from(5, &Event::PoweringOff), None);
    }

    #[test]
    fn protocol_names_round_trip() {
        for p in [Protocol::Multiboot1, Protocol::Multiboot2, Protocol::Pvh] {
            assert_eq!(Protocol::parse(&p.to_string()), Some(p));
        }
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_line(&s);
        }

        #[test]
        fn prefixed_lines_never_panic(
            kind in prop::sample::select(vec![
                "boot: module ", "boot: booted via ", "mm: memory map: ", "mm: frame table: ",
                "smp: cpu ", "warning: cmdline: unknown option '", "FATAL: ",
                "faulting address: ", "rip: ", "  [<", "all ",
            ]),
            rest in "[ -~]{0,60}",
        ) {
            let _ = parse_line(&format!("(keel) {kind}{rest}"));
            let _ = parse_line(&format!("keel: ready: {rest}"));
        }

        #[test]
        fn module_lines_round_trip(
            index in 0u64..64,
            name in "[!-~]{0,20}",
            start in any::<u64>(),
            end in any::<u64>(),
            bytes in any::<u64>(),
            args in "[ -~]{0,40}",
        ) {
            let name = name.trim().to_string();
            let text = format!(
                "(keel) boot: module {index}: {name} at 0x{start:x}-0x{end:x} ({bytes} bytes) args '{args}'"
            );
            let expected = Event::Module(ModuleLine { index, name, start, end, bytes, args });
            prop_assert_eq!(parse_line(&text), Some(Ok(expected)));
        }
    }
}
