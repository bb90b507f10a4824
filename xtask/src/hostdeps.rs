//! Host tools the QEMU and ISO commands need, and installing them on Debian.
//!
//! Each requirement is a probe (a program on `PATH` or a directory) plus the Debian package that
//! provides it. Deciding what is missing and what to do about it is pure (and unit-tested); only
//! [`ensure`] touches the system: as root it runs `apt-get install` (with one `apt-get update`
//! retry), otherwise it fails with one message naming every missing package.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// How to tell whether a requirement is present.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Probe {
    /// An executable of this name somewhere on `PATH`.
    Program(&'static str),
    /// A directory that must exist.
    Dir(&'static str),
    /// A regular file that must exist.
    File(&'static str),
}

impl Probe {
    /// What the probe looks for, for messages.
    pub fn what(&self) -> &'static str {
        match self {
            Self::Program(p) | Self::Dir(p) | Self::File(p) => p,
        }
    }
}

/// Something on the host, and the Debian package that provides it.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Requirement {
    /// How to detect it.
    pub probe: Probe,
    /// The Debian package that provides it.
    pub package: &'static str,
}

/// QEMU, for `run`, `test` and `bench`.
pub const QEMU: Requirement = Requirement { probe: Probe::Program("qemu-system-x86_64"), package: "qemu-system-x86" };

/// What `grub-mkrescue` needs to make a BIOS ISO.
pub const ISO_TOOLS: &[Requirement] = &[
    Requirement { probe: Probe::Program("grub-mkrescue"), package: "grub-common" },
    Requirement { probe: Probe::Dir("/usr/lib/grub/i386-pc"), package: "grub-pc-bin" },
    Requirement { probe: Probe::Program("xorriso"), package: "xorriso" },
    Requirement { probe: Probe::Program("mformat"), package: "mtools" },
];

/// What running real Xen as the reference needs besides QEMU and [`ISO_TOOLS`]: GRUB's UEFI
/// platform (for a hybrid BIOS+UEFI ISO), OVMF, and the Debian tools that fetch and unpack
/// Xen's package.
pub const XEN_REFERENCE: &[Requirement] = &[
    Requirement { probe: Probe::Dir(crate::grub::X86_64_EFI_DIR), package: "grub-efi-amd64-bin" },
    Requirement { probe: Probe::File(crate::xen::OVMF_CODE), package: "ovmf" },
    Requirement { probe: Probe::File(crate::xen::OVMF_VARS), package: "ovmf" },
    Requirement { probe: Probe::Program("apt-get"), package: "apt" },
    Requirement { probe: Probe::Program("dpkg-deb"), package: "dpkg" },
];

/// The packages providing the requirements `present` says are missing, deduplicated, in order.
pub fn missing_packages(requirements: &[Requirement], present: impl Fn(&Probe) -> bool) -> Vec<&'static str> {
    let mut missing: Vec<&'static str> = Vec::new();
    for r in requirements {
        if !present(&r.probe) && !missing.contains(&r.package) {
            missing.push(r.package);
        }
    }
    missing
}

/// What to do about missing packages.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Plan {
    /// Everything is there.
    Nothing,
    /// We are root: install these.
    Install(Vec<&'static str>),
    /// We are not root: tell the user (the message names every package).
    AskUser(String),
}

/// The command a user should run to install `packages`.
pub fn install_hint(packages: &[&str]) -> String {
    format!("sudo apt-get install {}", packages.join(" "))
}

/// Decides what to do about `missing` packages.
pub fn plan(missing: Vec<&'static str>, is_root: bool) -> Plan {
    if missing.is_empty() {
        Plan::Nothing
    } else if is_root {
        Plan::Install(missing)
    } else {
        Plan::AskUser(format!("missing host packages; please run: {}", install_hint(&missing)))
    }
}

/// The effective uid from the text of `/proc/self/status` (`Uid: real effective saved fs`).
pub fn effective_uid(proc_status: &str) -> Option<u32> {
    proc_status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
}

/// Whether an executable called `name` is in one of the directories of `path_var`.
fn program_on_path(name: &str, path_var: &OsStr) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path_var).any(|dir| {
        std::fs::metadata(dir.join(name)).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    })
}

/// Whether `probe` is satisfied on this machine.
fn present(probe: &Probe) -> bool {
    match probe {
        Probe::Program(name) => {
            let path = std::env::var_os("PATH").unwrap_or_default();
            program_on_path(name, &path)
        }
        Probe::Dir(dir) => Path::new(dir).is_dir(),
        Probe::File(file) => Path::new(file).is_file(),
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").ok().and_then(|s| effective_uid(&s)) == Some(0)
}

fn apt_get(args: &[&str]) -> Result<bool> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get")?;
    Ok(status.success())
}

/// Makes sure every requirement is present, installing missing packages when running as root.
pub fn ensure(requirements: &[Requirement]) -> Result<()> {
    match plan(missing_packages(requirements, present), running_as_root()) {
        Plan::Nothing => Ok(()),
        Plan::AskUser(message) => bail!("{message}"),
        Plan::Install(packages) => {
            eprintln!("xtask: installing {}", packages.join(" "));
            let mut install = vec!["install", "-y", "--no-install-recommends"];
            install.extend(packages.iter().copied());
            if !apt_get(&install)? {
                eprintln!("xtask: apt-get install failed; running apt-get update and retrying");
                if !apt_get(&["update"])? || !apt_get(&install)? {
                    bail!("cannot install {}", packages.join(" "));
                }
            }
            let still: Vec<&str> = requirements.iter().filter(|r| !present(&r.probe)).map(|r| r.probe.what()).collect();
            if !still.is_empty() {
                bail!("installed, but still missing: {}", still.join(", "));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_requirements() -> Vec<Requirement> {
        let mut r = vec![QEMU];
        r.extend_from_slice(ISO_TOOLS);
        r
    }

    #[test]
    fn nothing_missing_means_nothing_to_do() {
        let missing = missing_packages(&all_requirements(), |_| true);
        assert!(missing.is_empty());
        assert_eq!(plan(missing, false), Plan::Nothing);
    }

    #[test]
    fn every_missing_package_is_named_once_in_order() {
        let mut reqs = all_requirements();
        // Two probes served by one package must not name it twice.
        reqs.push(Requirement { probe: Probe::Program("grub-file"), package: "grub-common" });
        let missing = missing_packages(&reqs, |p| *p == Probe::Program("xorriso"));
        assert_eq!(missing, ["qemu-system-x86", "grub-common", "grub-pc-bin", "mtools"]);
    }

    #[test]
    fn directory_probe_maps_to_grub_pc_bin() {
        let missing = missing_packages(ISO_TOOLS, |p| matches!(p, Probe::Program(_)));
        assert_eq!(missing, ["grub-pc-bin"]);
    }

    #[test]
    fn root_installs_and_others_get_one_message() {
        assert_eq!(plan(vec!["xorriso", "mtools"], true), Plan::Install(vec!["xorriso", "mtools"]));
        let Plan::AskUser(msg) = plan(vec!["qemu-system-x86", "mtools"], false) else {
            panic!("expected a message");
        };
        assert!(msg.ends_with("sudo apt-get install qemu-system-x86 mtools"), "{msg}");
    }

    #[test]
    fn effective_uid_is_the_second_field() {
        let status = "Name:\tcat\nUmask:\t0022\nUid:\t1000\t0\t1000\t1000\nGid:\t0\t0\t0\t0\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t1000\t1001\t1000\t1000\n"), Some(1001));
        assert_eq!(effective_uid("Name:\tx\n"), None);
        assert_eq!(effective_uid("Uid:\tbogus\n"), None);
    }

    #[test]
    fn path_search_finds_sh_but_not_nonsense() {
        let path = OsStr::new("/nonexistent-dir:/bin:/usr/bin");
        assert!(program_on_path("sh", path));
        assert!(!program_on_path("no-such-program-keel-xtask", path));
        assert!(!program_on_path("sh", OsStr::new("")));
    }

    #[test]
    fn xen_reference_adds_uefi_grub_and_ovmf_once() {
        let mut reqs = all_requirements();
        reqs.extend_from_slice(XEN_REFERENCE);
        let missing =
            missing_packages(&reqs, |p| !matches!(p, Probe::File(_) | Probe::Dir(crate::grub::X86_64_EFI_DIR)));
        assert_eq!(missing, ["grub-efi-amd64-bin", "ovmf"]);
    }

    #[test]
    fn probe_names_what_it_checks() {
        assert_eq!(QEMU.probe.what(), "qemu-system-x86_64");
        assert_eq!(ISO_TOOLS[1].probe.what(), "/usr/lib/grub/i386-pc");
    }
}
