//! QEMU: command lines, interactive runs, and the harness that runs keel under test.
//!
//! Every keel boot (interactive, test or benchmark) is described by a [`Machine`] and a
//! [`Boot`], which [`machine_args`] turns into one QEMU command line, so later issues (guests,
//! disks, networks) extend one place. The harness ([`run`]) is generic over the program it
//! spawns: it reads the serial console line by line in a thread, timestamps each line, and stops
//! when the program exits, when a "kill after" pattern has been seen (plus a grace period), or
//! on timeout. Tests drive it with `sh` instead of QEMU.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// keel options that put its console on the first serial port (which QEMU connects to us).
pub const CONSOLE_OPTIONS: &str = "console=com1 com1=115200";

/// How long the harness keeps reading a program's output after it ended.
const PIPE_DRAIN_TIME: Duration = Duration::from_secs(1);

/// What QEMU writes to its `-D` log on a triple fault (with `-d cpu_reset`).
pub const TRIPLE_FAULT_MARKER: &str = "Triple fault";

/// Guest RAM size in MiB (QEMU's `-m` unit).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct MemSize(u64);

impl MemSize {
    /// A size of `mib` MiB.
    pub const fn from_mib(mib: u64) -> Self {
        Self(mib)
    }

    /// A size of `gib` GiB.
    pub const fn from_gib(gib: u64) -> Self {
        Self(gib * 1024)
    }

    /// The size in MiB.
    pub const fn mib(self) -> u64 {
        self.0
    }
}

impl FromStr for MemSize {
    type Err = String;

    /// `<n>`, `<n>M` or `<n>G` (also lower case, and with a trailing `iB`/`B`); plain numbers
    /// are MiB as for QEMU's `-m`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
        let (digits, scale) = match t.char_indices().last() {
            Some((i, 'm' | 'M')) => (&t[..i], 1),
            Some((i, 'g' | 'G')) => (&t[..i], 1024),
            Some((i, 't' | 'T')) => (&t[..i], 1024 * 1024),
            _ => (t, 1),
        };
        let n: u64 = digits.parse().map_err(|_| format!("bad memory size '{s}': expected e.g. 512M or 1G"))?;
        match n.checked_mul(scale) {
            Some(0) => Err(format!("memory size '{s}' is zero")),
            Some(mib) => Ok(Self(mib)),
            None => Err(format!("memory size '{s}' is too large")),
        }
    }
}

impl fmt::Display for MemSize {
    /// In QEMU's syntax: `1G` when a whole number of GiB, else `<n>M`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1024) {
            write!(f, "{}G", self.0 / 1024)
        } else {
            write!(f, "{}M", self.0)
        }
    }
}

/// The board and its firmware.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Firmware {
    /// QEMU's default PC (`-machine pc`, i440FX) with SeaBIOS: what keel's own runs use.
    Bios,
    /// A q35 PC with UEFI firmware (OVMF) in two flash devices: the read-only code and a
    /// writable variable store (a per-run copy of the template, as OVMF writes to it).
    Uefi {
        /// The firmware code, e.g. `/usr/share/OVMF/OVMF_CODE_4M.fd`.
        code: PathBuf,
        /// The run's own copy of the variable store.
        vars: PathBuf,
    },
}

/// The virtual machine keel runs on.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Machine {
    /// `-cpu` model, e.g. `max` or `qemu64,+svm,+npt`.
    pub cpu: String,
    /// `-smp`: number of CPUs.
    pub smp: u32,
    /// `-m`: RAM.
    pub mem: MemSize,
    /// Board and firmware.
    pub firmware: Firmware,
}

impl Machine {
    /// A `-machine pc` with SeaBIOS.
    pub fn bios(cpu: &str, smp: u32, mem: MemSize) -> Self {
        Self { cpu: cpu.to_string(), smp, mem, firmware: Firmware::Bios }
    }
}

/// A multiboot module passed with QEMU's `-initrd` (QEMU gives it the command line
/// `"<path> <args>"`).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct InitrdModule {
    /// The module file.
    pub path: PathBuf,
    /// Its arguments (may be empty).
    pub args: String,
}

/// How keel gets into the machine.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Boot {
    /// QEMU's own loader (`-kernel`, multiboot1 or PVH) with `-append` and `-initrd`.
    Kernel {
        /// The kernel image.
        image: PathBuf,
        /// keel's command line.
        append: String,
        /// Boot modules, in order.
        initrd: Vec<InitrdModule>,
    },
    /// Boot a CD image (`-cdrom`), e.g. a GRUB rescue ISO.
    Cdrom(PathBuf),
}

/// Joins option strings with single spaces, skipping empty ones.
pub fn join_options(parts: &[&str]) -> String {
    parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()).collect::<Vec<_>>().join(" ")
}

/// QEMU's `-initrd` value: modules separated by commas, each `"<path> <args>"`.
pub fn initrd_arg(modules: &[InitrdModule]) -> Result<String> {
    let mut parts = Vec::with_capacity(modules.len());
    for m in modules {
        let path = m.path.to_str().with_context(|| format!("module path {} is not UTF-8", m.path.display()))?;
        if path.contains(',') || m.args.contains(',') || path.contains(' ') {
            bail!("QEMU's -initrd cannot carry a module path with ' ' or ',', or args with ',': {path} {}", m.args);
        }
        parts.push(join_options(&[path, &m.args]));
    }
    Ok(parts.join(","))
}

/// A `-drive` value for a raw flash image (QEMU's option syntax doubles commas in values).
fn pflash_drive(file: &Path, read_only: bool) -> Result<String> {
    let file = file.to_str().with_context(|| format!("firmware path {} is not UTF-8", file.display()))?;
    let read_only = if read_only { "readonly=on," } else { "" };
    Ok(format!("if=pflash,format=raw,{read_only}file={}", file.replace(',', ",,")))
}

/// The QEMU arguments describing `machine` and `boot` (no display or console options).
pub fn machine_args(machine: &Machine, boot: &Boot) -> Result<Vec<OsString>> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |a: &dyn AsRef<OsStr>| args.push(a.as_ref().to_os_string());
    push(&"-machine");
    push(match machine.firmware {
        Firmware::Bios => &"pc",
        Firmware::Uefi { .. } => &"q35",
    });
    push(&"-accel");
    push(&"tcg");
    push(&"-cpu");
    push(&machine.cpu);
    push(&"-smp");
    push(&machine.smp.to_string());
    push(&"-m");
    push(&machine.mem.to_string());
    if let Firmware::Uefi { code, vars } = &machine.firmware {
        push(&"-drive");
        push(&pflash_drive(code, true)?);
        push(&"-drive");
        push(&pflash_drive(vars, false)?);
    }
    match boot {
        Boot::Kernel { image, append, initrd } => {
            push(&"-kernel");
            push(image);
            push(&"-append");
            push(append);
            if !initrd.is_empty() {
                push(&"-initrd");
                push(&initrd_arg(initrd)?);
            }
        }
        Boot::Cdrom(iso) => {
            push(&"-cdrom");
            push(iso);
        }
    }
    Ok(args)
}

/// The harness's extra arguments: no display, no reboot, serial on stdout, reset log in `log`.
pub fn harness_args(log: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> =
        ["-display", "none", "-no-reboot", "-monitor", "none", "-serial", "stdio", "-d", "cpu_reset", "-D"]
            .iter()
            .map(OsString::from)
            .collect();
    args.push(log.into());
    args
}

/// Replaces this process with an interactive QEMU (serial and monitor on the terminal).
/// Returns only on failure.
pub fn exec_interactive(machine: &Machine, boot: &Boot) -> anyhow::Error {
    let args = match machine_args(machine, boot) {
        Ok(a) => a,
        Err(e) => return e,
    };
    eprintln!("xtask: starting QEMU (Ctrl-A X quits, Ctrl-A C toggles the monitor)");
    let err = Command::new(QEMU).args(args).arg("-nographic").exec();
    anyhow::Error::new(err).context(format!("cannot run {QEMU}"))
}

/// When the harness stops the program.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Stop {
    /// Wait for it to exit by itself.
    Exit,
    /// Once a line containing one of `patterns` has arrived, wait `grace` more, then kill it
    /// (for runs where keel, or Xen, deliberately stays halted).
    KillAfter {
        /// Texts to look for in a serial line.
        patterns: Vec<String>,
        /// How long the program must keep running after the first matching line.
        grace: Duration,
    },
}

impl Stop {
    /// Kill after a line containing `pattern`, plus `grace`.
    pub fn kill_after(pattern: &str, grace: Duration) -> Self {
        Self::KillAfter { patterns: vec![pattern.to_string()], grace }
    }

    /// The grace period a console line starts, if it is a stop line.
    pub fn grace_after(&self, line: &str) -> Option<Duration> {
        match self {
            Self::Exit => None,
            Self::KillAfter { patterns, grace } => patterns.iter().any(|p| line.contains(p.as_str())).then_some(*grace),
        }
    }
}

/// One run of the harness.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The program (QEMU, or `sh` in tests).
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// The file the program logs to (QEMU's `-D`); searched for a triple fault afterwards.
    pub log_file: PathBuf,
    /// When to stop.
    pub stop: Stop,
    /// Kill the program after this long.
    pub timeout: Duration,
    /// Echo each console line to stdout as it arrives.
    pub echo: bool,
}

impl RunSpec {
    /// A QEMU run of `machine` booted via `boot`, logging into `dir/qemu.log`.
    pub fn qemu(machine: &Machine, boot: &Boot, dir: &Path, stop: Stop, timeout: Duration) -> Result<Self> {
        let log_file = dir.join("qemu.log");
        let mut args = harness_args(&log_file);
        args.extend(machine_args(machine, boot)?);
        Ok(Self { program: QEMU.into(), args, log_file, stop, timeout, echo: false })
    }
}

/// One line of console output.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Line {
    /// When it arrived, counted from spawning the program.
    pub at: Duration,
    /// Its text, without line terminator, escape sequences or control characters.
    pub text: String,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Ending {
    /// The program exited by itself (exit code; `None` if killed by a signal).
    Exited(Option<i32>),
    /// The harness killed it after the `KillAfter` grace period: it was still running.
    KilledAfterPattern,
    /// The harness killed it on timeout.
    TimedOut,
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// Console lines in arrival order.
    pub lines: Vec<Line>,
    /// How it ended.
    pub ending: Ending,
    /// Whether the log file records a triple fault.
    pub triple_fault: bool,
    /// The program's stderr.
    pub stderr: String,
    /// The log file's contents (empty if it was not written).
    pub log: String,
    /// Wall time from spawn to the end.
    pub elapsed: Duration,
}

impl RunResult {
    /// The console text of every line.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(|l| l.text.as_str())
    }

    /// The last `n` lines joined with " | ", for one-line failure reasons.
    pub fn tail(&self, n: usize) -> String {
        let skip = self.lines.len().saturating_sub(n);
        let tail: Vec<&str> = self.lines[skip..].iter().map(|l| l.text.as_str()).collect();
        if tail.is_empty() {
            "(no output)".to_string()
        } else {
            tail.join(" | ")
        }
    }
}

/// Turns raw console bytes into text: lossy UTF-8, ANSI escape sequences (GRUB draws its menu
/// with them) and control characters other than tab removed.
pub fn clean_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameter and intermediate bytes, then one final byte in 0x40..=0x7e.
                Some('[') => {
                    for n in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&n) {
                            break;
                        }
                    }
                }
                // nF escapes: intermediate bytes, then one final byte in 0x30..=0x7e.
                Some(i) if ('\x20'..='\x2f').contains(&i) => {
                    for n in chars.by_ref() {
                        if ('\x30'..='\x7e').contains(&n) {
                            break;
                        }
                    }
                }
                // Other escapes are two characters long.
                _ => {}
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Kills and reaps `child`, ignoring "already exited".
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `spec` to completion; see the module documentation.
pub fn run(spec: &RunSpec) -> Result<RunResult> {
    if let Some(dir) = spec.log_file.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match fs::remove_file(&spec.log_file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", spec.log_file.display())),
    }

    let start = Instant::now();
    let mut child = Command::new(&spec.program)
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", spec.program.to_string_lossy()))?;
    let stdout = child.stdout.take().context("child has no stdout pipe")?;
    let mut stderr = child.stderr.take().context("child has no stderr pipe")?;

    let (tx, rx) = mpsc::channel::<Line>();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = Line { at: start.elapsed(), text: clean_line(&buf) };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let (stderr_tx, stderr_rx) = mpsc::channel::<String>();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        let _ = stderr_tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });

    let deadline = start + spec.timeout;
    let mut kill_at: Option<Instant> = None;
    let mut lines = Vec::new();
    let mut accept = |line: Line, kill_at: &mut Option<Instant>| {
        if spec.echo {
            println!("    | {}", line.text);
        }
        if kill_at.is_none() {
            *kill_at = spec.stop.grace_after(&line.text).map(|grace| start + line.at + grace);
        }
        lines.push(line);
    };

    let ending = loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(line) => {
                accept(line, &mut kill_at);
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Stdout closed but the program may still be running: poll gently.
            Err(RecvTimeoutError::Disconnected) => thread::sleep(Duration::from_millis(20)),
        }
        if let Some(status) = child.try_wait().context("waiting for the child")? {
            break Ending::Exited(status.code());
        }
        let now = Instant::now();
        if kill_at.is_some_and(|t| now >= t) {
            kill(&mut child);
            break Ending::KilledAfterPattern;
        }
        if now >= deadline {
            kill(&mut child);
            break Ending::TimedOut;
        }
    };
    let elapsed = start.elapsed();

    // The program is gone: collect what is still in the pipes. A grandchild that inherited
    // them could keep them open forever, so wait a bounded time (the readers are detached).
    let drain_until = Instant::now() + PIPE_DRAIN_TIME;
    loop {
        let left = drain_until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => accept(line, &mut kill_at),
            Err(_) => break,
        }
    }
    let left = drain_until.saturating_duration_since(Instant::now());
    let stderr = stderr_rx.recv_timeout(left).unwrap_or_default();
    let log = fs::read(&spec.log_file).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    Ok(RunResult { lines, ending, triple_fault: log.contains(TRIPLE_FAULT_MARKER), stderr, log, elapsed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_like_qemu() {
        for (s, mib) in [
            ("1G", 1024),
            ("1g", 1024),
            ("128M", 128),
            ("4G", 4096),
            ("512", 512),
            ("2GiB", 2048),
            ("64MB", 64),
            ("1T", 1024 * 1024),
            (" 256M ", 256),
        ] {
            assert_eq!(s.parse::<MemSize>().map(MemSize::mib), Ok(mib), "{s}");
        }
        for bad in ["", "G", "0", "0M", "1.5G", "-1G", "lots", "1K", "99999999999999999999T"] {
            assert!(bad.parse::<MemSize>().is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_sizes_print_in_qemu_syntax() {
        assert_eq!(MemSize::from_gib(4).to_string(), "4G");
        assert_eq!(MemSize::from_mib(128).to_string(), "128M");
        assert_eq!(MemSize::from_mib(1536).to_string(), "1536M");
    }

    fn os(args: &[OsString]) -> Vec<String> {
        args.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn kernel_boot_command_line() {
        let machine = Machine::bios("max", 2, MemSize::from_gib(1));
        let boot = Boot::Kernel {
            image: "/ws/build/keel".into(),
            append: "console=com1 com1=115200".into(),
            initrd: vec![
                InitrdModule { path: "/m/one".into(), args: "alpha beta".into() },
                InitrdModule { path: "/m/two".into(), args: String::new() },
            ],
        };
        let args = machine_args(&machine, &boot).unwrap();
        assert_eq!(
            os(&args).join(" "),
            "-machine pc -accel tcg -cpu max -smp 2 -m 1G -kernel /ws/build/keel \
             -append console=com1 com1=115200 -initrd /m/one alpha beta,/m/two"
        );
        // The append string stays one argument.
        assert_eq!(os(&args)[13], "console=com1 com1=115200");
    }

    #[test]
    fn cdrom_boot_and_no_initrd() {
        let machine = Machine::bios("qemu64,+svm,+npt", 1, MemSize::from_mib(128));
        let args = machine_args(&machine, &Boot::Cdrom("/x.iso".into())).unwrap();
        assert_eq!(os(&args).join(" "), "-machine pc -accel tcg -cpu qemu64,+svm,+npt -smp 1 -m 128M -cdrom /x.iso");
        let no_modules = Boot::Kernel { image: "k".into(), append: String::new(), initrd: vec![] };
        assert!(!os(&machine_args(&machine, &no_modules).unwrap()).contains(&"-initrd".into()));
    }

    #[test]
    fn uefi_machine_is_a_q35_with_two_flash_drives() {
        let machine = Machine {
            firmware: Firmware::Uefi { code: "/fw/CODE.fd".into(), vars: "/run/a,b/vars.fd".into() },
            ..Machine::bios("max,-rdtscp", 2, MemSize::from_gib(1))
        };
        let args = os(&machine_args(&machine, &Boot::Cdrom("/x.iso".into())).unwrap());
        assert_eq!(
            args,
            [
                "-machine",
                "q35",
                "-accel",
                "tcg",
                "-cpu",
                "max,-rdtscp",
                "-smp",
                "2",
                "-m",
                "1G",
                "-drive",
                "if=pflash,format=raw,readonly=on,file=/fw/CODE.fd",
                "-drive",
                // A comma in a value is doubled.
                "if=pflash,format=raw,file=/run/a,,b/vars.fd",
                "-cdrom",
                "/x.iso"
            ]
        );
    }

    #[test]
    fn stop_lines_start_the_grace_period() {
        let grace = Duration::from_secs(1);
        let stop = Stop::KillAfter { patterns: vec!["halted".into(), "Manual reset".into()], grace };
        assert_eq!(stop.grace_after("(XEN) Hardware Dom0 halted: halting machine"), Some(grace));
        assert_eq!(stop.grace_after("(XEN) Manual reset required ('noreboot' specified)"), Some(grace));
        assert_eq!(stop.grace_after("(XEN) Brought up 2 CPUs"), None);
        assert_eq!(Stop::Exit.grace_after("halted"), None);
        assert_eq!(Stop::kill_after("x", grace), Stop::KillAfter { patterns: vec!["x".into()], grace });
    }

    #[test]
    fn initrd_rejects_separators() {
        let m = |p: &str, a: &str| InitrdModule { path: p.into(), args: a.into() };
        assert!(initrd_arg(&[m("/a,b", "")]).is_err());
        assert!(initrd_arg(&[m("/a b", "")]).is_err());
        assert!(initrd_arg(&[m("/a", "x,y")]).is_err());
        assert_eq!(initrd_arg(&[m("/a", " x  ")]).unwrap(), "/a x");
    }

    #[test]
    fn harness_arguments() {
        assert_eq!(
            os(&harness_args(Path::new("/t/qemu.log"))).join(" "),
            "-display none -no-reboot -monitor none -serial stdio -d cpu_reset -D /t/qemu.log"
        );
    }

    #[test]
    fn join_options_skips_empty_parts() {
        assert_eq!(join_options(&["a b", "", "  c "]), "a b c");
        assert_eq!(join_options(&["", ""]), "");
    }

    #[test]
    fn clean_line_strips_terminators_escapes_and_controls() {
        assert_eq!(clean_line(b"hello\r\n"), "hello");
        assert_eq!(clean_line(b"\x1b[2J\x1b[1;1H(keel) boot\n"), "(keel) boot");
        assert_eq!(clean_line(b"\x1b[0;37;40ma\x1b[m\tb"), "a\tb");
        assert_eq!(clean_line(b"\x1b(Bx\x07y"), "xy");
        assert_eq!(clean_line(b"bad \xff byte"), "bad \u{fffd} byte");
        assert_eq!(clean_line(b"trailing escape \x1b"), "trailing escape ");
        assert_eq!(clean_line(b"unterminated \x1b[12;"), "unterminated ");
    }

    fn sh(script: &str, dir: &Path, stop: Stop, timeout: Duration) -> RunSpec {
        RunSpec {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            log_file: dir.join("log"),
            stop,
            timeout,
            echo: false,
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-qemu-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn harness_collects_lines_stderr_and_exit_code() {
        let dir = scratch("exit");
        let script = "printf 'one\\r\\ntwo\\n'; echo oops >&2; sleep 0.2; printf 'last'; exit 3";
        let r = run(&sh(script, &dir, Stop::Exit, Duration::from_secs(20))).unwrap();
        assert_eq!(r.ending, Ending::Exited(Some(3)));
        let texts: Vec<&str> = r.texts().collect();
        assert_eq!(texts, ["one", "two", "last"]);
        assert!(r.lines[2].at >= r.lines[1].at + Duration::from_millis(150));
        assert_eq!(r.stderr, "oops\n");
        assert!(!r.triple_fault);
        assert_eq!(r.tail(2), "two | last");
    }

    #[test]
    fn harness_times_out_and_kills() {
        let dir = scratch("timeout");
        // `sleep` outlives the killed shell and keeps the pipes open: no hang either.
        let spec = sh("echo started; sleep 30", &dir, Stop::Exit, Duration::from_millis(500));
        let wall = Instant::now();
        let r = run(&spec).unwrap();
        assert!(wall.elapsed() < Duration::from_secs(10));
        assert_eq!(r.ending, Ending::TimedOut);
        assert!(r.elapsed < Duration::from_secs(10));
        assert_eq!(r.tail(5), "started");
    }

    #[test]
    fn harness_kills_after_pattern_and_grace() {
        let dir = scratch("kill-after");
        let stop = Stop::kill_after("halted", Duration::from_millis(300));
        let r = run(&sh("echo '(keel) halted (noreboot)'; sleep 30", &dir, stop, Duration::from_secs(20))).unwrap();
        assert_eq!(r.ending, Ending::KilledAfterPattern);
        assert!(r.elapsed >= Duration::from_millis(300));
        assert!(r.elapsed < Duration::from_secs(10));
    }

    #[test]
    fn harness_reports_exit_during_grace() {
        let dir = scratch("grace-exit");
        let stop = Stop::kill_after("halted", Duration::from_secs(5));
        let r = run(&sh("echo halted; exit 0", &dir, stop, Duration::from_secs(20))).unwrap();
        assert_eq!(r.ending, Ending::Exited(Some(0)));
    }

    #[test]
    fn harness_detects_triple_fault_in_log() {
        let dir = scratch("triple");
        let log = dir.join("log");
        let script =
            format!("echo 'CPU Reset (CPU 0)' > '{}'; echo Triple fault >> '{}'", log.display(), log.display());
        let r = run(&sh(&script, &dir, Stop::Exit, Duration::from_secs(20))).unwrap();
        assert!(r.triple_fault);
        assert!(r.log.contains("CPU Reset"));
        assert_eq!(r.tail(3), "(no output)");
    }

    #[test]
    fn harness_fails_cleanly_on_missing_program() {
        let dir = scratch("missing");
        let mut spec = sh("", &dir, Stop::Exit, Duration::from_secs(1));
        spec.program = "/nonexistent/qemu".into();
        assert!(run(&spec).is_err());
    }
}
