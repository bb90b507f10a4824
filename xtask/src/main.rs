//! `cargo xtask`: keel's developer tasks (build, run, iso, test, conformance, bench).
//!
//! This binary owns everything that happens *around* the hypervisor on the developer's machine:
//! building the freestanding ELF, wrapping it in a GRUB rescue ISO, booting it in QEMU
//! (interactively, as table-driven integration tests, or as a benchmark) and checking what keel
//! prints on its serial console, and running the probe guest on real Xen 4.17 as the reference
//! keel's results are compared with. It runs on the host with `std`; keel itself never links it.
//!
//! Conventions: progress and diagnostics go to stderr; a command that produces a file prints its
//! absolute path as the last line of stdout, so scripts can use `$(cargo xtask build | tail -1)`.

mod bench;
mod cargo;
mod conformance;
mod console;
mod debian;
mod grub;
mod hostdeps;
mod itests;
mod mb1;
mod qemu;
mod symbols;
mod tap;
mod xen;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::cargo::Profile;
use crate::qemu::{Boot, Machine, MemSize};

/// keel's developer tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Build, run, package, test and benchmark keel")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build keel and copy the ELF to build/keel (prints its absolute path last).
    Build {
        /// Build the dev profile instead of release.
        #[arg(long)]
        debug: bool,
    },
    /// Build keel and boot it in QEMU on this terminal (Ctrl-A X quits).
    Run {
        /// Number of virtual CPUs.
        #[arg(long, default_value_t = 2)]
        smp: u32,
        /// Guest RAM, e.g. 512M, 1G (plain numbers are MiB, as for QEMU).
        #[arg(long, default_value = "1G")]
        mem: MemSize,
        /// QEMU CPU model, e.g. max or qemu64,+svm,+npt.
        #[arg(long, default_value = "max")]
        cpu: String,
        /// Build the dev profile instead of release.
        #[arg(long)]
        debug: bool,
        /// keel command-line options, appended after `console=com1 com1=115200`.
        #[arg(last = true)]
        keel_options: Vec<String>,
    },
    /// Build keel and make a BIOS GRUB rescue ISO that boots it (prints the ISO path last).
    Iso {
        /// keel's command line in grub.cfg.
        #[arg(long, default_value = qemu::CONSOLE_OPTIONS)]
        append: String,
        /// A boot module: "<file> <args>" (repeatable; modules keep their order).
        #[arg(long = "module", value_name = "FILE ARGS")]
        modules: Vec<grub::ModuleSpec>,
        /// Output path (default build/keel.iso).
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Build the dev profile instead of release.
        #[arg(long)]
        debug: bool,
    },
    /// Run host unit tests and QEMU integration tests (both unless one is chosen).
    Test {
        /// Run the host unit tests (`cargo test --workspace --exclude keel`).
        #[arg(long)]
        host: bool,
        /// Run the QEMU integration tests.
        #[arg(long)]
        qemu: bool,
        /// Echo keel's serial output while the tests run.
        #[arg(long, short)]
        verbose: bool,
        /// List the QEMU integration tests and exit.
        #[arg(long)]
        list: bool,
        /// Only run QEMU integration tests whose name contains this text.
        filter: Option<String>,
    },
    /// Run the probe's ABI suite as PVH dom0 on real Xen 4.17 and on keel and compare the
    /// results check by check (plus keel's two-domain checks).
    Conformance {
        /// The reference hypervisor.
        #[arg(long, value_enum, default_value_t = conformance::Reference::Xen)]
        reference: conformance::Reference,
        /// dom0's vCPU count (and the machine's CPUs); repeatable.
        #[arg(long = "smp", value_name = "N", default_values_t = conformance::DEFAULT_SMP.to_vec(),
              value_parser = clap::value_parser!(u32).range(1..=64))]
        smp: Vec<u32>,
        /// Echo the serial output while the runs go.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Measure boot time and image size, and the probe's benchmarks on keel and on Xen.
    Bench {
        /// Number of boots to measure.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Echo keel's serial output.
        #[arg(long, short)]
        verbose: bool,
    },
}

/// Where things live in the cargo workspace.
#[derive(Clone, Debug)]
pub struct Workspace {
    /// The workspace root (the directory holding the workspace Cargo.toml).
    pub root: PathBuf,
}

impl Workspace {
    /// The workspace containing this xtask crate.
    fn locate() -> Result<Self> {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir.parent().context("xtask's manifest directory has no parent")?.to_path_buf();
        Ok(Self { root })
    }

    /// `build/`: everything xtask produces (images, ISOs, test files, logs).
    pub fn build_dir(&self) -> PathBuf {
        self.root.join("build")
    }

    /// cargo's target directory for the keel build (always the workspace's own).
    pub fn target_dir(&self) -> PathBuf {
        self.root.join("target")
    }

    /// `build/keel`: the hypervisor ELF that every other command boots.
    pub fn keel_image(&self) -> PathBuf {
        self.build_dir().join("keel")
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command; `Ok(false)` means "ran, but something failed" (tests).
fn run(command: Command) -> Result<bool> {
    let ws = Workspace::locate()?;
    match command {
        Command::Build { debug } => {
            let image = cargo::build_keel(&ws, Profile::from_debug_flag(debug))?;
            println!("{}", image.display());
            Ok(true)
        }
        Command::Run { smp, mem, cpu, debug, keel_options } => {
            hostdeps::ensure(&[hostdeps::QEMU])?;
            let image = cargo::build_keel(&ws, Profile::from_debug_flag(debug))?;
            let machine = Machine::bios(&cpu, smp, mem);
            let boot = Boot::Kernel {
                image,
                append: qemu::join_options(&[qemu::CONSOLE_OPTIONS, &keel_options.join(" ")]),
                initrd: Vec::new(),
            };
            // Only returns if QEMU could not be started.
            Err(qemu::exec_interactive(&machine, &boot))
        }
        Command::Iso { append, modules, output, debug } => {
            hostdeps::ensure(hostdeps::ISO_TOOLS)?;
            let image = cargo::build_keel(&ws, Profile::from_debug_flag(debug))?;
            let output = output.unwrap_or_else(|| ws.build_dir().join("keel.iso"));
            let output =
                std::path::absolute(&output).with_context(|| format!("cannot make {} absolute", output.display()))?;
            let staging = ws.build_dir().join("iso-staging").join("keel");
            let iso = grub::IsoImage {
                kernel: &image,
                kernel_name: "keel",
                options: &append,
                modules: &modules,
                platforms: grub::Platforms::Bios,
            };
            grub::make_iso(&iso, &staging, &output)?;
            println!("{}", output.display());
            Ok(true)
        }
        Command::Test { host, qemu, verbose, list, filter } => {
            if list {
                for name in itests::test_names(&ws) {
                    println!("{name}");
                }
                return Ok(true);
            }
            // Neither flag means both.
            let (host, qemu) = if host || qemu { (host, qemu) } else { (true, true) };
            itests::run_all(&ws, &itests::Options { host, qemu, verbose, filter })
        }
        Command::Conformance { reference, smp, verbose } => {
            conformance::run(&ws, &conformance::Options { reference, smp, verbose })
        }
        Command::Bench { runs, verbose } => {
            bench::run(&ws, runs, verbose)?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults_match_the_brief() {
        let cli = Cli::try_parse_from(["xtask", "run"]).unwrap();
        let Command::Run { smp, mem, cpu, keel_options, .. } = cli.command else {
            panic!("not a run command");
        };
        assert_eq!(smp, 2);
        assert_eq!(mem.mib(), 1024);
        assert_eq!(cpu, "max");
        assert!(keel_options.is_empty());
    }

    #[test]
    fn run_passes_options_after_double_dash() {
        let cli = Cli::try_parse_from(["xtask", "run", "--smp", "4", "--mem", "512M", "--", "loglvl=all", "noreboot"])
            .unwrap();
        let Command::Run { smp, mem, keel_options, .. } = cli.command else {
            panic!("not a run command");
        };
        assert_eq!(smp, 4);
        assert_eq!(mem.mib(), 512);
        assert_eq!(keel_options, ["loglvl=all", "noreboot"]);
    }

    #[test]
    fn iso_collects_repeated_modules_in_order() {
        let cli =
            Cli::try_parse_from(["xtask", "iso", "--module", "a.bin alpha beta", "--module", "b.bin", "-o", "x.iso"])
                .unwrap();
        let Command::Iso { append, modules, output, .. } = cli.command else {
            panic!("not an iso command");
        };
        assert_eq!(append, qemu::CONSOLE_OPTIONS);
        assert_eq!(modules.len(), 2);
        assert_eq!(modules[0].args, "alpha beta");
        assert_eq!(modules[1].file, PathBuf::from("b.bin"));
        assert_eq!(output, Some(PathBuf::from("x.iso")));
    }

    #[test]
    fn bad_memory_size_is_rejected() {
        assert!(Cli::try_parse_from(["xtask", "run", "--mem", "lots"]).is_err());
    }

    #[test]
    fn conformance_defaults_to_xen_at_one_and_two_vcpus() {
        let cli = Cli::try_parse_from(["xtask", "conformance"]).unwrap();
        let Command::Conformance { reference, smp, verbose } = cli.command else {
            panic!("not a conformance command");
        };
        assert_eq!(reference, conformance::Reference::Xen);
        assert_eq!(smp, [1, 2]);
        assert!(!verbose);
        let cli = Cli::try_parse_from(["xtask", "conformance", "--reference", "xen", "--smp", "4", "--smp", "1", "-v"])
            .unwrap();
        let Command::Conformance { smp, verbose, .. } = cli.command else {
            panic!("not a conformance command");
        };
        assert_eq!(smp, [4, 1]);
        assert!(verbose);
        assert!(Cli::try_parse_from(["xtask", "conformance", "--smp", "0"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "conformance", "--reference", "kvm"]).is_err());
    }

    #[test]
    fn test_takes_an_optional_filter() {
        let cli = Cli::try_parse_from(["xtask", "test", "--qemu", "smp"]).unwrap();
        let Command::Test { host, qemu, filter, .. } = cli.command else {
            panic!("not a test command");
        };
        assert!(!host && qemu);
        assert_eq!(filter.as_deref(), Some("smp"));
    }
}
