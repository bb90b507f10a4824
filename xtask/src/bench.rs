//! `cargo xtask bench`: keel's benchmarks (for now boot time and image size).
//!
//! Boot time is the wall time from spawning QEMU to the arrival of the `keel: ready:` line,
//! measured over several boots and reported as median/min/max. Image size is the file size of
//! `build/keel` and the sum of its PT_LOAD `p_memsz` (what the loader really places in memory).
//! Benchmarks report; they never fail on time. A boot that does not reach the ready line is an
//! error, though: its numbers would mean nothing.

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

/// Runs the benchmarks and prints the table.
pub fn run(ws: &Workspace, runs: usize, verbose: bool) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    hostdeps::ensure(&[hostdeps::QEMU])?;
    let image_path = cargo::build_keel(ws, Profile::Release)?;
    let image = fs::read(&image_path).with_context(|| format!("cannot read {}", image_path.display()))?;
    let load_bytes = symbols::loaded_size(&image).context("reading build/keel")?;

    let machine = Machine { cpu: "max".into(), smp: 2, mem: MemSize::from_gib(1) };
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
    Ok(())
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
