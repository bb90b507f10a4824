//! Real Xen 4.17 as the reference keel is compared with: Debian 12's hypervisor package, the
//! ISO and QEMU machine that boot it with a PVH dom0, and reading its serial console.
//!
//! Xen comes from `xen-hypervisor-4.17-amd64` (`boot/xen-4.17-amd64.gz`, a gzipped
//! multiboot2 ELF that GRUB unpacks itself), fetched once into `build/xen/`. It boots from a
//! hybrid BIOS+UEFI GRUB ISO with dom0's kernel as its one module.
//!
//! The machine is a q35 PC with UEFI firmware (OVMF), not QEMU's default PC with SeaBIOS:
//! SeaBIOS offers only an ACPI 1.0 RSDT, and Xen 4.17's PVH dom0 builder then writes an XSDT
//! whose header it copied from physical address 0 (garbage), so dom0's ACPI tables are broken
//! (the probe's `acpi-madt` check fails on Xen). OVMF provides an XSDT, and Xen is correct
//! there. The CPU is `max,-rdtscp`: QEMU's TCG has no NRIP-save, and Xen needs RDTSCP off
//! then.
//!
//! On the console, Xen's own lines start with `(XEN) `; dom0's `console_io` writes appear
//! without a prefix, and what dom0 writes to port 0xE9 with `(d0) `. After dom0 powers off,
//! Xen prints `(XEN) Hardware Dom0 halted: halting machine` and, with `noreboot`, stays halted:
//! the harness stops QEMU at that line (see [`stop`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::grub::{self, IsoImage, ModuleSpec, Platforms};
use crate::qemu::{Boot, Ending, Firmware, Machine, MemSize, RunResult, Stop};
use crate::{debian, Workspace};

/// Debian's Xen 4.17 hypervisor package.
pub const PACKAGE: &str = "xen-hypervisor-4.17-amd64";
/// The multiboot2 image inside it.
pub const IMAGE_IN_PACKAGE: &str = "boot/xen-4.17-amd64.gz";
/// OVMF's firmware code (package `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF's variable store template; each run gets a writable copy.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Xen's command line without dom0's vCPU count: console on the first serial port, dom0 as a
/// PVH guest with 32 MiB and no IOMMU (QEMU offers none), stay halted instead of rebooting, and
/// every log line.
pub const OPTIONS: &str = "console=com1 com1=115200 dom0=pvh dom0-iommu=none dom0_mem=32M noreboot \
                           loglvl=all guest_loglvl=all";
/// The prefix of Xen's own console lines.
pub const LINE_PREFIX: &str = "(XEN) ";
/// The prefix Xen gives what dom0 writes to port 0xE9.
pub const DOM0_PORT_PREFIX: &str = "(d0) ";
/// What Xen prints when dom0 powered off: the good ending.
pub const DOM0_HALTED: &str = "(XEN) Hardware Dom0 halted";
/// Lines after which Xen does nothing more: dom0 halted, shut down or crashed (all start like
/// this), or Xen itself panicked and stays halted (`noreboot`).
pub const STOP_PATTERNS: &[&str] = &["(XEN) Hardware Dom0 ", "(XEN) Manual reset required"];
/// How long QEMU keeps running after a stop line (to catch Xen's last words).
pub const STOP_GRACE: Duration = Duration::from_millis(500);

/// Xen's image, fetched into `build/xen/` once; returns `build/xen/xen.gz`.
pub fn fetch(ws: &Workspace) -> Result<PathBuf> {
    let base = ws.build_dir().join("xen");
    let image = base.join("xen.gz");
    if image.is_file() {
        return Ok(image);
    }
    let unpacked = debian::fetch(PACKAGE, &base).with_context(|| format!("fetching {PACKAGE}"))?;
    let from = unpacked.join(IMAGE_IN_PACKAGE);
    fs::copy(&from, &image).with_context(|| format!("cannot copy {} to {}", from.display(), image.display()))?;
    eprintln!("xtask: fetched {PACKAGE} ({})", image.display());
    Ok(image)
}

/// Xen's command line for a dom0 with `vcpus` vCPUs.
pub fn options(vcpus: u32) -> String {
    format!("{OPTIONS} dom0_max_vcpus={vcpus}")
}

/// Makes `dir/xen.iso`, which boots `xen` with `dom0_kernel` (its arguments `dom0_args`) as a
/// PVH dom0 with `vcpus` vCPUs; returns its path.
pub fn make_iso(xen: &Path, dom0_kernel: &Path, dom0_args: &str, vcpus: u32, dir: &Path) -> Result<PathBuf> {
    let iso = dir.join("xen.iso");
    let modules = [ModuleSpec { file: dom0_kernel.to_path_buf(), args: dom0_args.to_string() }];
    let image = IsoImage {
        kernel: xen,
        kernel_name: "xen.gz",
        options: &options(vcpus),
        modules: &modules,
        platforms: Platforms::BiosAndUefi,
    };
    grub::make_iso(&image, &dir.join("iso-staging"), &iso).context("making Xen's ISO")?;
    Ok(iso)
}

/// The QEMU machine Xen runs on (see the module documentation), with its OVMF variable store
/// copied to `dir/vars.fd`, and the boot from `iso`.
pub fn machine(cpu: &str, smp: u32, mem: MemSize, iso: &Path, dir: &Path) -> Result<(Machine, Boot)> {
    let vars = dir.join("vars.fd");
    fs::copy(OVMF_VARS, &vars).with_context(|| format!("cannot copy {OVMF_VARS} to {}", vars.display()))?;
    let firmware = Firmware::Uefi { code: OVMF_CODE.into(), vars };
    Ok((Machine { cpu: cpu.to_string(), smp, mem, firmware }, Boot::Cdrom(iso.to_path_buf())))
}

/// When the harness stops QEMU running Xen.
pub fn stop() -> Stop {
    Stop::KillAfter { patterns: STOP_PATTERNS.iter().map(|p| p.to_string()).collect(), grace: STOP_GRACE }
}

/// dom0's console lines among Xen's serial output, with their indices: every line that is not
/// Xen's own, with the port-0xE9 prefix removed. Firmware and GRUB lines come along; the probe's
/// parser ignores them.
pub fn dom0_lines<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<(usize, &'a str)> {
    texts
        .into_iter()
        .enumerate()
        .filter(|(_, t)| !t.contains(LINE_PREFIX.trim_end()))
        .map(|(i, t)| (i, t.strip_prefix(DOM0_PORT_PREFIX).unwrap_or(t)))
        .collect()
}

/// What is wrong with how a Xen run ended (not with what dom0 reported): a timeout, QEMU exiting
/// (Xen rebooted), a triple fault, or a stop line other than dom0's power-off.
pub fn run_problems(run: &RunResult, timeout: Duration) -> Vec<String> {
    let mut problems = Vec::new();
    if run.triple_fault {
        problems.push("QEMU log records a triple fault".into());
    }
    match run.ending {
        Ending::TimedOut => {
            problems.push(format!("Xen run timed out after {}s; last lines: {}", timeout.as_secs(), run.tail(5)))
        }
        Ending::Exited(status) => problems.push(format!(
            "QEMU exited ({}) before Xen halted: Xen rebooted or QEMU failed; last lines: {}; QEMU stderr: {}",
            status.map_or("killed by a signal".to_string(), |s| format!("status {s}")),
            run.tail(5),
            run.stderr.trim()
        )),
        Ending::KilledAfterPattern => {
            let stop = stop();
            let last = run.texts().find(|t| stop.grace_after(t).is_some()).unwrap_or("");
            if !last.contains(DOM0_HALTED) {
                problems.push(format!("Xen ended with '{last}', expected '{DOM0_HALTED}: halting machine'"));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::Line;

    /// The end of a real transcript (Xen 4.17.7, OVMF, probe as dom0), shortened.
    const TRANSCRIPT: &str = "BdsDxe: starting Boot0001 \"UEFI QEMU DVD-ROM QM00005 \"\n\
        Welcome to GRUB!\n\
        (XEN) Xen version 4.17.7 (Debian 4.17.7+13-g2445b30a44-0+deb12u1)\n\
        (XEN) Command line: console=com1 com1=115200 dom0=pvh dom0_max_vcpus=2\n\
        (XEN) *** Building a PVH Dom0 ***\n\
        probe: starting (command line 'probe.abi')\n\
        ok 1 - start-info-magic\n\
        (XEN) d0v1: upcall vector 00\n\
        (d0) probe: string I/O to port 0xe9 works\n\
        ok 2 - io-unassigned-ports-read-ones\n\
        probe: 2 passed, 0 failed\n\
        (XEN) Hardware Dom0 halted: halting machine\n";

    fn run(text: &str, ending: Ending) -> RunResult {
        RunResult {
            lines: text
                .lines()
                .enumerate()
                .map(|(i, t)| Line { at: Duration::from_millis(100 * i as u64), text: t.into() })
                .collect(),
            ending,
            triple_fault: false,
            stderr: String::new(),
            log: String::new(),
            elapsed: Duration::from_secs(1),
        }
    }

    #[test]
    fn dom0_lines_skip_xen_and_unwrap_port_e9() {
        let lines = dom0_lines(TRANSCRIPT.lines());
        let texts: Vec<&str> = lines.iter().map(|(_, t)| *t).collect();
        assert_eq!(
            texts,
            [
                "BdsDxe: starting Boot0001 \"UEFI QEMU DVD-ROM QM00005 \"",
                "Welcome to GRUB!",
                "probe: starting (command line 'probe.abi')",
                "ok 1 - start-info-magic",
                "probe: string I/O to port 0xe9 works",
                "ok 2 - io-unassigned-ports-read-ones",
                "probe: 2 passed, 0 failed",
            ]
        );
        assert_eq!(lines[6].0, 10);
        let report = crate::tap::parse(texts);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.checks.len(), 2);
    }

    #[test]
    fn dom0_power_off_is_the_good_ending() {
        let timeout = Duration::from_secs(180);
        assert_eq!(run_problems(&run(TRANSCRIPT, Ending::KilledAfterPattern), timeout), Vec::<String>::new());

        let crashed = TRANSCRIPT.replace("halted: halting machine", "crashed: 'noreboot' set - not rebooting.");
        assert_eq!(
            run_problems(&run(&crashed, Ending::KilledAfterPattern), timeout),
            ["Xen ended with '(XEN) Hardware Dom0 crashed: 'noreboot' set - not rebooting.', expected \
              '(XEN) Hardware Dom0 halted: halting machine'"]
        );
        let panicked = "(XEN) Panic on CPU 0:\n(XEN) Manual reset required ('noreboot' specified)\n";
        let p = run_problems(&run(panicked, Ending::KilledAfterPattern), timeout);
        assert!(p[0].starts_with("Xen ended with '(XEN) Manual reset required"), "{p:?}");

        let p = run_problems(&run("(XEN) stuck\n", Ending::TimedOut), timeout);
        assert_eq!(p, ["Xen run timed out after 180s; last lines: (XEN) stuck"]);
        let p = run_problems(&run("(XEN) rebooting\n", Ending::Exited(Some(0))), timeout);
        assert!(p[0].starts_with("QEMU exited (status 0) before Xen halted"), "{p:?}");
        let mut faulted = run(TRANSCRIPT, Ending::KilledAfterPattern);
        faulted.triple_fault = true;
        assert_eq!(run_problems(&faulted, timeout), ["QEMU log records a triple fault"]);
    }

    #[test]
    fn stop_lines_cover_every_dom0_ending_and_xen_panics() {
        let s = stop();
        for line in [
            "(XEN) Hardware Dom0 halted: halting machine",
            "(XEN) Hardware Dom0 shutdown: rebooting machine",
            "(XEN) Hardware Dom0 crashed: 'noreboot' set - not rebooting.",
            "(XEN) Manual reset required ('noreboot' specified)",
        ] {
            assert_eq!(s.grace_after(line), Some(STOP_GRACE), "{line}");
        }
        assert_eq!(s.grace_after("probe: 27 passed, 0 failed"), None);
    }

    #[test]
    fn command_line_asks_for_a_pvh_dom0() {
        let o = options(2);
        for word in ["dom0=pvh", "dom0-iommu=none", "dom0_mem=32M", "noreboot", "console=com1", "dom0_max_vcpus=2"] {
            assert!(o.split_whitespace().any(|w| w == word), "{word} missing from {o}");
        }
    }
}
