//! `cargo xtask bench`: keel's benchmarks.
//!
//! * Boot time: wall time from spawning QEMU to the arrival of the `keel: ready:` line.
//! * Image size: the file size of `build/keel` and the sum of its PT_LOAD `p_memsz`.
//! * With the probe as dom0 (`probe.bench`): wall time from keel's first line and from QEMU's
//!   start to the probe's first line, the domain build time keel reports (boot module to first
//!   guest instruction), and the cost of a null hypercall measured inside the probe (TSC
//!   cycles, median of 100 000 calls).
//! * keel against Xen 4.17: every benchmark the probe prints with `probe.bench` (parsed by
//!   name, so new ones appear without changes here), keel's median, Xen's and the ratio, from
//!   one run of each hypervisor in the same QEMU machine (see `conformance.rs`).
//!
//! Each figure is the median/min/max over several runs. Benchmarks report; they never fail on
//! time. A run that does not produce its figure is an error, though: the numbers would mean
//! nothing.

use std::fs;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cargo::{self, Profile};
use crate::console::{Console, Event};
use crate::itests::{describe_ending, DEFAULT_OPTIONS, KERNEL_TIMEOUT};
use crate::qemu::{self, Boot, Machine, MemSize, RunSpec, Stop};
use crate::symbols;
use crate::{hostdeps, Workspace};

/// Median, minimum and maximum of some samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// The middle sample (mean of the two middle ones for an even count).
    pub median: Duration,
    /// The smallest sample.
    pub min: Duration,
    /// The largest sample.
    pub max: Duration,
}

/// Statistics of `samples`; `None` if there are none.
pub fn stats(samples: &[Duration]) -> Option<Stats> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let (&min, &max) = (sorted.first()?, sorted.last()?);
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        // (a + b) / 2 without overflow: a + (b - a) / 2, with b >= a.
        sorted[mid - 1] + (sorted[mid] - sorted[mid - 1]) / 2
    };
    Some(Stats { median, min, max })
}

/// The benchmark table.
pub fn render(runs: usize, boot: &Stats, file_bytes: u64, load_bytes: u64) -> String {
    let s = |d: Duration| format!("{:.3}", d.as_secs_f64());
    let mut out = String::new();
    out += &format!("keel bench: {runs} boots, -smp 2 -m 1G, TCG\n");
    out += &format!("{:<34} {:>10} {:>10} {:>10}\n", "metric", "median", "min", "max");
    out += &format!(
        "{:<34} {:>10} {:>10} {:>10}\n",
        "boot: QEMU spawn to ready (s)",
        s(boot.median),
        s(boot.min),
        s(boot.max)
    );
    out += &format!("{:<34} {:>10}\n", "image: file size (bytes)", file_bytes);
    out += &format!("{:<34} {:>10}\n", "image: PT_LOAD p_memsz (bytes)", load_bytes);
    out
}

/// When the ready line arrived in a run, if it did.
fn ready_time(run: &qemu::RunResult) -> Option<Duration> {
    let console = Console::parse(run.texts());
    let (line, ()) = console.select(|e| matches!(e, Event::Ready { .. }).then_some(())).next()?;
    run.lines.get(line).map(|l| l.at)
}

/// Figures from one boot of keel with the probe as dom0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestFigures {
    /// keel's first line to the probe's first line.
    pub keel_to_probe: Duration,
    /// QEMU's start to the probe's first line.
    pub qemu_to_probe: Duration,
    /// Domain build time keel reported.
    pub build: Duration,
    /// Median null-hypercall cost in TSC cycles.
    pub hypercall_cycles: u64,
}

/// The guest figures of a run, or what is missing.
pub fn guest_figures(run: &qemu::RunResult) -> Result<GuestFigures, &'static str> {
    let first_keel = run.lines.iter().find(|l| l.text.contains("(keel) keel ")).ok_or("no keel start line")?;
    let first_probe =
        run.lines.iter().find(|l| l.text.contains("(d0) probe: starting")).ok_or("no probe start line")?;
    let build_us = run
        .lines
        .iter()
        .find_map(|l| l.text.split_once("d0: build took ")?.1.split_once(" us")?.0.parse::<u64>().ok())
        .ok_or("no 'build took' line")?;
    let cycles = run
        .lines
        .iter()
        .find_map(|l| l.text.split_once("bench null-hypercall median ")?.1.split_once(" cycles")?.0.parse::<u64>().ok())
        .ok_or("no null-hypercall figure")?;
    Ok(GuestFigures {
        keel_to_probe: first_probe.at.saturating_sub(first_keel.at),
        qemu_to_probe: first_probe.at,
        build: Duration::from_micros(build_us),
        hypercall_cycles: cycles,
    })
}

/// Runs the benchmarks and prints the table.
pub fn run(ws: &Workspace, runs: usize, verbose: bool) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    hostdeps::ensure(&[hostdeps::QEMU])?;
    let image_path = cargo::build_keel(ws, Profile::Release)?;
    let image = fs::read(&image_path).with_context(|| format!("cannot read {}", image_path.display()))?;
    let load_bytes = symbols::loaded_size(&image).context("reading build/keel")?;

    let machine = Machine::bios("max", 2, MemSize::from_gib(1));
    let boot = Boot::Kernel { image: image_path.clone(), append: DEFAULT_OPTIONS.into(), initrd: Vec::new() };
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        let dir = ws.build_dir().join("bench").join(format!("boot-{i}"));
        let mut spec = RunSpec::qemu(&machine, &boot, &dir, Stop::Exit, KERNEL_TIMEOUT)?;
        spec.echo = verbose;
        let run = qemu::run(&spec)?;
        let Some(at) = ready_time(&run) else {
            bail!(
                "boot {} never printed 'keel: ready:' ({}); last lines: {}",
                i + 1,
                describe_ending(run.ending),
                run.tail(10)
            );
        };
        eprintln!("xtask: boot {}: ready after {:.3}s", i + 1, at.as_secs_f64());
        samples.push(at);
    }
    let boot_stats = stats(&samples).context("no samples")?;
    print!("{}", render(runs, &boot_stats, image.len() as u64, load_bytes));

    let probe = ws.build_dir().join("probe");
    let boot = Boot::Kernel {
        image: image_path.clone(),
        append: format!("{DEFAULT_OPTIONS} dom0_mem=32M"),
        initrd: vec![qemu::InitrdModule { path: probe, args: "probe.bench".into() }],
    };
    let mut figures = Vec::with_capacity(runs);
    for i in 0..runs {
        let dir = ws.build_dir().join("bench").join(format!("probe-{i}"));
        let mut spec = RunSpec::qemu(&machine, &boot, &dir, Stop::Exit, KERNEL_TIMEOUT)?;
        spec.echo = verbose;
        let run = qemu::run(&spec)?;
        let f = guest_figures(&run).map_err(|why| {
            anyhow::anyhow!(
                "probe run {}: {why} ({}); last lines: {}",
                i + 1,
                describe_ending(run.ending),
                run.tail(10)
            )
        })?;
        eprintln!(
            "xtask: probe run {}: first line {:.3}s after keel's, build {} us, null hypercall {} cycles",
            i + 1,
            f.keel_to_probe.as_secs_f64(),
            f.build.as_micros(),
            f.hypercall_cycles
        );
        figures.push(f);
    }
    print!("{}", render_guest(runs, &figures));
    print!("{}", crate::conformance::bench_versus_xen(ws, verbose)?);
    Ok(())
}

/// The guest rows of the benchmark table.
pub fn render_guest(runs: usize, figures: &[GuestFigures]) -> String {
    let row = |name: &str, samples: Vec<Duration>, scale: f64, digits: usize| {
        let s = stats(&samples).unwrap_or(Stats { median: Duration::ZERO, min: Duration::ZERO, max: Duration::ZERO });
        let f = |d: Duration| format!("{:.*}", digits, d.as_secs_f64() * scale);
        format!("{:<40} {:>10} {:>10} {:>10}\n", name, f(s.median), f(s.min), f(s.max))
    };
    let mut out = format!("keel bench: {runs} boots with the probe as dom0 (-smp 2 -m 1G, TCG)\n");
    out += &format!("{:<40} {:>10} {:>10} {:>10}\n", "metric", "median", "min", "max");
    out +=
        &row("guest: keel start to probe's first line (s)", figures.iter().map(|f| f.keel_to_probe).collect(), 1.0, 3);
    out +=
        &row("guest: QEMU start to probe's first line (s)", figures.iter().map(|f| f.qemu_to_probe).collect(), 1.0, 3);
    out += &row("guest: domain build time (ms)", figures.iter().map(|f| f.build).collect(), 1000.0, 1);
    // Cycles ride in Duration's nanoseconds so the same statistics apply.
    out += &row(
        "guest: null hypercall (TSC cycles)",
        figures.iter().map(|f| Duration::from_nanos(f.hypercall_cycles)).collect(),
        1e9,
        0,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::{Ending, Line, RunResult};

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn stats_of_odd_and_even_counts() {
        let s = stats(&ms(&[300, 100, 200, 500, 400])).unwrap();
        assert_eq!(
            (s.median, s.min, s.max),
            (Duration::from_millis(300), Duration::from_millis(100), Duration::from_millis(500))
        );
        let s = stats(&ms(&[400, 100, 200, 900])).unwrap();
        assert_eq!(s.median, Duration::from_millis(300));
        let s = stats(&ms(&[7])).unwrap();
        assert_eq!((s.median, s.min, s.max), (ms(&[7])[0], ms(&[7])[0], ms(&[7])[0]));
        assert_eq!(stats(&[]), None);
    }

    #[test]
    fn median_of_huge_durations_does_not_overflow() {
        let s = stats(&[Duration::MAX, Duration::MAX]).unwrap();
        assert_eq!(s.median, Duration::MAX);
    }

    #[test]
    fn table_has_every_metric() {
        let s = stats(&ms(&[1200, 1250, 1300])).unwrap();
        let table = render(3, &s, 123456, 234567);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].contains("3 boots"));
        assert!(lines[2].starts_with("boot: QEMU spawn to ready (s)"));
        assert!(lines[2].ends_with("1.250      1.200      1.300"), "{}", lines[2]);
        assert!(lines[3].ends_with("123456"));
        assert!(lines[4].ends_with("234567"));
    }

    #[test]
    fn guest_figures_come_from_keel_and_probe_lines() {
        let line = |ms: u64, t: &str| Line { at: Duration::from_millis(ms), text: t.into() };
        let mut run = RunResult {
            lines: vec![
                line(100, "(keel) keel 0.1.0 (x86_64) starting"),
                line(300, "(keel) d0: build took 105950 us (1662 us unpacking the kernel)"),
                line(420, "(d0) probe: starting (command line 'probe.bench')"),
                line(
                    900,
                    "(d0) probe: bench null-hypercall median 87441 cycles, min 71638, max 3678896 (100000 calls)",
                ),
            ],
            ending: Ending::Exited(Some(0)),
            triple_fault: false,
            stderr: String::new(),
            log: String::new(),
            elapsed: Duration::from_secs(1),
        };
        let f = guest_figures(&run).unwrap();
        assert_eq!(f.keel_to_probe, Duration::from_millis(320));
        assert_eq!(f.qemu_to_probe, Duration::from_millis(420));
        assert_eq!(f.build, Duration::from_micros(105950));
        assert_eq!(f.hypercall_cycles, 87441);
        let table = render_guest(1, &[f]);
        assert!(table.contains("guest: null hypercall (TSC cycles)"), "{table}");
        assert!(table.lines().last().unwrap().contains("87441"), "{table}");
        run.lines.pop();
        assert_eq!(guest_figures(&run), Err("no null-hypercall figure"));
    }

    #[test]
    fn ready_time_is_the_arrival_of_the_ready_line() {
        let line = |ms: u64, t: &str| Line { at: Duration::from_millis(ms), text: t.into() };
        let mut run = RunResult {
            lines: vec![
                line(100, "(keel) boot: no boot modules"),
                line(850, "keel: ready: 2 cpus, 1000 MiB free"),
                line(900, "(keel) powering off"),
            ],
            ending: Ending::Exited(Some(0)),
            triple_fault: false,
            stderr: String::new(),
            log: String::new(),
            elapsed: Duration::from_secs(1),
        };
        assert_eq!(ready_time(&run), Some(Duration::from_millis(850)));
        run.lines.remove(1);
        assert_eq!(ready_time(&run), None);
    }
}
