//! The keel hypervisor command line, in Xen's syntax.
//!
//! keel is booted exactly as Xen is, so it reads Xen's options the way Xen
//! does: space-separated `name`, `name=value` and `no-name` words, without
//! quoting; booleans accept `yes|on|true|enable|1` and
//! `no|off|false|disable|0`; everything is case sensitive. keel additionally
//! treats tabs and newlines as separators.
//!
//! Parsing never fails and never panics: an unknown option, a bad value or a
//! value keel does not support is reported through the `warn` callback as a
//! [`CmdlineWarning`] borrowing the offending text, and then ignored. A
//! repeated option takes its last good value.

mod com;
mod dom0_mem;
mod number;

use core::fmt;

pub use com::{Baud, ComConfig, Parity};
pub use dom0_mem::{Dom0Mem, MemSize};

/// A log verbosity threshold, from quietest to most verbose: a message of
/// level `L` passes threshold `T` when `L <= T` (so [`LogLevel::None`] passes
/// nothing and [`LogLevel::All`] passes everything).
#[derive(Clone, Copy, Debug, Eq, PartialEq, Ord, PartialOrd)]
pub enum LogLevel {
    /// `none`: nothing.
    None,
    /// `error`.
    Error,
    /// `warning`.
    Warning,
    /// `info`.
    Info,
    /// `debug`.
    Debug,
    /// `all`.
    All,
}

impl LogLevel {
    /// The spelling used on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            LogLevel::None => "none",
            LogLevel::Error => "error",
            LogLevel::Warning => "warning",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::All => "all",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => LogLevel::None,
            "error" => LogLevel::Error,
            "warning" => LogLevel::Warning,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "all" => LogLevel::All,
            _ => return None,
        })
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Xen's `<level>[/<rate-limited level>]`: messages up to `level` are always
/// printed; messages above it and up to `rate_limited` are printed subject to
/// rate limiting.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct LogLevels {
    /// The always-printed threshold.
    pub level: LogLevel,
    /// The rate-limited threshold, if given after the `/`.
    pub rate_limited: Option<LogLevel>,
}

impl LogLevels {
    fn parse(s: &str) -> Result<Self, &'static str> {
        const WHY: &str = "expected none, error, warning, info, debug or all, optionally /<level>";
        let (level, rate_limited) = match s.split_once('/') {
            Some((level, rate)) => (level, Some(LogLevel::parse(rate).ok_or(WHY)?)),
            None => (s, None),
        };
        Ok(Self { level: LogLevel::parse(level).ok_or(WHY)?, rate_limited })
    }
}

/// Where keel's console output goes (`console=`).
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub enum ConsoleSelect {
    /// `com1`: the first serial port, configured by [`Options::com1`].
    #[default]
    Com1,
    /// `none`: no console output at all.
    None,
}

/// What keel does once no domain is left, or none was started
/// (`when_idle=`, keel-specific).
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub enum WhenIdle {
    /// `stay`: halt and keep the console alive.
    #[default]
    Stay,
    /// `poweroff`: switch the machine off.
    PowerOff,
    /// `reboot`: reset the machine.
    Reboot,
}

/// Test-only actions (`test=`), used by keel's own boot tests.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum TestAction {
    /// `pagefault`: provoke a page fault after boot, to exercise the
    /// exception path.
    PageFault,
    /// `panic`: panic after boot, to exercise the panic path.
    Panic,
}

/// Every option keel understands, with its default when absent.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Options {
    /// `console=com1|none` (default com1).
    pub console: ConsoleSelect,
    /// `com1=...` (default 115200 8n1, I/O port 0x3f8, IRQ 4).
    pub com1: ComConfig,
    /// `loglvl=<level>[/<level>]` (default info).
    pub loglvl: LogLevels,
    /// `guest_loglvl=<level>[/<level>]` (default Xen's `none/warning`).
    pub guest_loglvl: LogLevels,
    /// `maxcpus=<n>`, n >= 1: bring up at most this many CPUs.
    pub maxcpus: Option<u32>,
    /// `dom0_max_vcpus=<n>` or `<min>-<max>` (Xen syntax; either end may be omitted): dom0's
    /// vCPU count, clamped to [min, max]; by default dom0 gets one vCPU per physical CPU.
    pub dom0_max_vcpus: Option<(u32, u32)>,
    /// `dom0_mem=...`: dom0's memory, resolved later against real RAM.
    pub dom0_mem: Dom0Mem,
    /// `noreboot`: on a fatal error stay halted instead of rebooting.
    pub noreboot: bool,
    /// `when_idle=stay|poweroff|reboot` (default stay).
    pub when_idle: WhenIdle,
    /// `test=pagefault` (test builds of the boot path only).
    pub test: Option<TestAction>,
}

impl Options {
    /// The options of an empty command line.
    pub const DEFAULT: Self = Self {
        console: ConsoleSelect::Com1,
        com1: ComConfig::DEFAULT,
        loglvl: LogLevels { level: LogLevel::Info, rate_limited: None },
        guest_loglvl: LogLevels { level: LogLevel::None, rate_limited: Some(LogLevel::Warning) },
        maxcpus: None,
        dom0_max_vcpus: None,
        dom0_mem: Dom0Mem { initial: None, min: None, max: None },
        noreboot: false,
        when_idle: WhenIdle::Stay,
        test: None,
    };
}

impl Default for Options {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A problem with one command-line word. The borrowed strings are slices of
/// the parsed command line.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum CmdlineWarning<'a> {
    /// An option keel does not know; `option` is the whole word.
    Unknown {
        /// The whole word, e.g. `frobnicate=7`.
        option: &'a str,
    },
    /// A known option with a value that does not parse; the option keeps
    /// the value it had before this word.
    BadValue {
        /// The option as written, including any `no-` prefix.
        option: &'a str,
        /// The offending value (empty if the value was missing).
        value: &'a str,
        /// Why it was rejected.
        why: &'static str,
    },
    /// A valid Xen setting that keel does not implement; it is ignored.
    Unsupported {
        /// The option name.
        option: &'a str,
        /// The unsupported part of the value.
        value: &'a str,
        /// What keel supports instead.
        why: &'static str,
    },
}

impl fmt::Display for CmdlineWarning<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineWarning::Unknown { option } => write!(f, "unknown option '{option}' ignored"),
            CmdlineWarning::BadValue { option, value: "", why } => {
                write!(f, "no value for '{option}': {why}; option left unchanged")
            }
            CmdlineWarning::BadValue { option, value, why } => {
                write!(f, "bad value '{value}' for '{option}': {why}; option left unchanged")
            }
            CmdlineWarning::Unsupported { option, value, why } => {
                write!(f, "unsupported '{value}' in '{option}' ignored: {why}")
            }
        }
    }
}

/// Parses a hypervisor command line. Never fails: problems go to `warn` and
/// the affected option keeps its previous value (its default unless set
/// earlier on the line).
pub fn parse<'a>(cmdline: &'a str, warn: &mut dyn FnMut(CmdlineWarning<'a>)) -> Options {
    let mut options = Options::DEFAULT;
    for word in words(cmdline) {
        apply(&mut options, word, warn);
    }
    options
}

/// Splits a module's command line into (image name, arguments): GRUB and
/// QEMU put the file name first.
/// `"/boot/vmlinuz root=/dev/xvda ro"` gives `("/boot/vmlinuz", "root=/dev/xvda ro")`.
/// Surrounding whitespace is dropped from both parts.
pub fn split_image_name(s: &str) -> (&str, &str) {
    let s = s.trim_ascii();
    match s.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (&s[..i], s[i..].trim_ascii_start()),
        None => (s, ""),
    }
}

/// The words of a command line: maximal runs of non-whitespace characters.
fn words(cmdline: &str) -> impl Iterator<Item = &str> {
    cmdline.split(|c: char| c.is_ascii_whitespace()).filter(|w| !w.is_empty())
}

/// The options keel knows.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Known {
    Console,
    Com1,
    Loglvl,
    GuestLoglvl,
    Maxcpus,
    Dom0MaxVcpus,
    Dom0Mem,
    Noreboot,
    WhenIdle,
    Test,
}

impl Known {
    fn lookup(name: &str) -> Option<Self> {
        Some(match name {
            "console" => Known::Console,
            "com1" => Known::Com1,
            "loglvl" => Known::Loglvl,
            "guest_loglvl" => Known::GuestLoglvl,
            "maxcpus" => Known::Maxcpus,
            "dom0_max_vcpus" => Known::Dom0MaxVcpus,
            "dom0_mem" => Known::Dom0Mem,
            "noreboot" => Known::Noreboot,
            "when_idle" => Known::WhenIdle,
            "test" => Known::Test,
            _ => return None,
        })
    }
}

/// Applies one word to `o`.
fn apply<'a>(o: &mut Options, word: &'a str, warn: &mut dyn FnMut(CmdlineWarning<'a>)) {
    let (key, value) = match word.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (word, None),
    };
    let negated = key.strip_prefix("no-").and_then(Known::lookup);
    let (option, negated) = match (negated, Known::lookup(key)) {
        (Some(option), _) => (option, true),
        (None, Some(option)) => (option, false),
        (None, None) => {
            warn(CmdlineWarning::Unknown { option: word });
            return;
        }
    };
    // An empty slice inside `word`, for reporting a missing value.
    let missing = &word[word.len()..];
    let mut bad = |value: &'a str, why: &'static str| warn(CmdlineWarning::BadValue { option: key, value, why });

    if option == Known::Noreboot {
        let flag = match (negated, value) {
            (false, None) => true,
            (true, None) => false,
            (false, Some(v)) => match number::parse_bool(v) {
                Some(flag) => flag,
                None => return bad(v, "expected yes, on, true, enable, 1, no, off, false, disable or 0"),
            },
            (true, Some(v)) => return bad(v, "a 'no-' option takes no value"),
        };
        o.noreboot = flag;
        return;
    }
    if negated {
        return bad(value.unwrap_or(missing), "only boolean options take a 'no-' prefix");
    }
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return bad(value.unwrap_or(missing), "a value is required");
    };

    let result = match option {
        Known::Console => {
            parse_console(value, &mut |part, why| warn(CmdlineWarning::Unsupported { option: key, value: part, why }))
                .map(|c| {
                    if let Some(c) = c {
                        o.console = c;
                    }
                })
        }
        Known::Com1 => {
            com::parse_com(value, &mut |part, why| warn(CmdlineWarning::Unsupported { option: key, value: part, why }))
                .map(|c| o.com1 = c)
        }
        Known::Loglvl => LogLevels::parse(value).map(|l| o.loglvl = l),
        Known::GuestLoglvl => LogLevels::parse(value).map(|l| o.guest_loglvl = l),
        Known::Maxcpus => parse_maxcpus(value).map(|n| o.maxcpus = Some(n)),
        Known::Dom0MaxVcpus => parse_vcpu_range(value).map(|r| o.dom0_max_vcpus = Some(r)),
        Known::Dom0Mem => dom0_mem::parse_dom0_mem(value).map(|d| o.dom0_mem = d),
        Known::WhenIdle => parse_when_idle(value).map(|w| o.when_idle = w),
        Known::Test => match value {
            "pagefault" => {
                o.test = Some(TestAction::PageFault);
                Ok(())
            }
            "panic" => {
                o.test = Some(TestAction::Panic);
                Ok(())
            }
            _ => Err("test actions are pagefault and panic"),
        },
        // Handled above as the only boolean.
        Known::Noreboot => Ok(()),
    };
    if let Err(why) = result {
        warn(CmdlineWarning::BadValue { option: key, value, why });
    }
}

/// Parses the comma list of `console=`. Returns `None` when the list named
/// only consoles keel does not have (each reported as unsupported), in which
/// case the console setting is left as it was rather than silenced.
fn parse_console<'a>(
    value: &'a str,
    unsupported: &mut dyn FnMut(&'a str, &'static str),
) -> Result<Option<ConsoleSelect>, &'static str> {
    let (mut com1, mut none, mut others) = (false, false, false);
    for item in value.split(',') {
        match item {
            "com1" => com1 = true,
            "none" => none = true,
            "vga" | "com2" | "com1H" | "com1L" | "com2H" | "com2L" | "dbgp" | "ehci" | "xhci" | "pv" => {
                unsupported(item, "keel's consoles are com1 and none");
                others = true;
            }
            _ => return Err("expected a comma list of com1 or none"),
        }
    }
    if none && (com1 || others) {
        return Err("'none' must be used on its own");
    }
    Ok(if com1 {
        Some(ConsoleSelect::Com1)
    } else if none {
        Some(ConsoleSelect::None)
    } else {
        None
    })
}

fn parse_maxcpus(value: &str) -> Result<u32, &'static str> {
    match number::parse_uint(value)? {
        0 => Err("must be at least 1"),
        n => u32::try_from(n).map_err(|_| "must be at most 4294967295"),
    }
}

fn parse_vcpu_range(value: &str) -> Result<(u32, u32), &'static str> {
    let one = |s: &str, default: u32| -> Result<u32, &'static str> {
        if s.is_empty() {
            return Ok(default);
        }
        u32::try_from(number::parse_uint(s)?).map_err(|_| "number too large")
    };
    let (min, max) = match value.split_once('-') {
        Some((a, b)) => (one(a, 1)?, one(b, u32::MAX)?),
        None => {
            let n = one(value, 0)?;
            (n, n)
        }
    };
    if min == 0 || max < min {
        return Err("expected <n> or <min>-<max> with 1 <= min <= max");
    }
    Ok((min, max))
}

fn parse_when_idle(value: &str) -> Result<WhenIdle, &'static str> {
    match value {
        "stay" => Ok(WhenIdle::Stay),
        "poweroff" => Ok(WhenIdle::PowerOff),
        "reboot" => Ok(WhenIdle::Reboot),
        _ => Err("expected stay, poweroff or reboot"),
    }
}

#[cfg(test)]
mod tests;
