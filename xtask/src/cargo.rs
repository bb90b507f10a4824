//! Driving cargo: building the freestanding keel ELF and running the host unit tests.
//!
//! keel only builds for `x86_64-unknown-none`, so it is excluded from host test runs and built
//! here with an explicit `--target`. The build always goes to the workspace's own `target/`
//! (whatever `CARGO_TARGET_DIR` says), and the result is copied to `build/keel`, the single
//! path every other command boots.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;

use anyhow::{bail, Context, Result};

use crate::Workspace;

/// The freestanding target keel is built for.
pub const KEEL_TARGET: &str = "x86_64-unknown-none";

/// Which cargo profile to build keel with.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Profile {
    /// `--release` (optimised, LTO, with symbols).
    Release,
    /// The dev profile.
    Debug,
}

impl Profile {
    /// `--debug` on the command line selects the dev profile.
    pub fn from_debug_flag(debug: bool) -> Self {
        if debug {
            Self::Debug
        } else {
            Self::Release
        }
    }

    /// The directory cargo puts this profile's artifacts in.
    pub fn dir_name(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Debug => "debug",
        }
    }
}

/// The cargo executable: the one that runs us (`$CARGO`), else `cargo` from `PATH`.
fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// The freestanding binaries (built for [`KEEL_TARGET`] and copied to `build/`): keel and
/// the test kernels.
pub const FREESTANDING_BINS: &[&str] = &["keel", "badloader", "probe"];
/// Workspace packages that only build for [`KEEL_TARGET`] (excluded from host tests).
pub const FREESTANDING_PACKAGES: &[&str] = &["keel", "pvh-rt", "badloader", "probe"];

/// The arguments of the build of keel and the test kernels.
pub fn keel_build_args(profile: Profile, target_dir: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["build".into()];
    for bin in FREESTANDING_BINS {
        args.push("-p".into());
        args.push((*bin).into());
    }
    if profile == Profile::Release {
        args.push("--release".into());
    }
    args.push("--target".into());
    args.push(KEEL_TARGET.into());
    args.push("--target-dir".into());
    args.push(target_dir.into());
    args
}

/// Where cargo leaves the ELF of `bin` for `profile`.
pub fn artifact(target_dir: &Path, profile: Profile, bin: &str) -> PathBuf {
    target_dir.join(KEEL_TARGET).join(profile.dir_name()).join(bin)
}

/// Whether a failed build's stderr says the Rust target is not installed.
pub fn is_missing_target_error(stderr: &str) -> bool {
    stderr.contains("target may not be installed")
        || stderr.contains("can't find crate for `core`")
        || stderr.contains("can't find crate for `compiler_builtins`")
}

/// Runs a command with stderr both shown live and captured (returned). Stdout is inherited.
fn run_teeing_stderr(cmd: &mut Command) -> Result<(bool, String)> {
    let mut child = cmd.stderr(Stdio::piped()).spawn().with_context(|| format!("cannot start {cmd:?}"))?;
    let stderr = child.stderr.take().context("child has no stderr pipe")?;
    let tee = thread::spawn(move || {
        let mut captured = String::new();
        let mut out = std::io::stderr();
        for line in BufReader::new(stderr).split(b'\n') {
            let Ok(line) = line else { break };
            let _ = out.write_all(&line);
            let _ = out.write_all(b"\n");
            captured.push_str(&String::from_utf8_lossy(&line));
            captured.push('\n');
        }
        captured
    });
    let status = child.wait().with_context(|| format!("waiting for {cmd:?}"))?;
    let captured = tee.join().unwrap_or_default();
    Ok((status.success(), captured))
}

/// Builds keel and copies it to `build/keel`; returns that absolute path.
pub fn build_keel(ws: &Workspace, profile: Profile) -> Result<PathBuf> {
    let target_dir = ws.target_dir();
    let build = || -> Result<(bool, String)> {
        let mut cmd = Command::new(cargo_program());
        cmd.current_dir(&ws.root).args(keel_build_args(profile, &target_dir));
        if std::io::stderr().is_terminal() {
            cmd.arg("--color=always");
        }
        run_teeing_stderr(&mut cmd)
    };
    let (mut ok, stderr) = build()?;
    if !ok && is_missing_target_error(&stderr) {
        eprintln!("xtask: the {KEEL_TARGET} target seems missing; running rustup target add");
        let status = Command::new("rustup")
            .current_dir(&ws.root)
            .args(["target", "add", KEEL_TARGET])
            .status()
            .context("cannot run rustup")?;
        if !status.success() {
            bail!("rustup target add {KEEL_TARGET} failed ({status})");
        }
        ok = build()?.0;
    }
    if !ok {
        bail!("building keel failed");
    }

    fs::create_dir_all(ws.build_dir()).with_context(|| format!("cannot create {}", ws.build_dir().display()))?;
    for bin in FREESTANDING_BINS {
        let from = artifact(&target_dir, profile, bin);
        let to = ws.build_dir().join(bin);
        fs::copy(&from, &to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    }
    Ok(ws.keel_image())
}

/// The arguments of the host unit tests: every package but the freestanding ones.
pub fn host_test_args() -> Vec<&'static str> {
    let mut args = vec!["test", "--workspace"];
    for p in FREESTANDING_PACKAGES {
        args.extend(["--exclude", p]);
    }
    args
}

/// Runs the host unit tests with inherited output, then keel-loader's tests against Debian's
/// real kernels (fetched first); returns success.
pub fn host_tests(ws: &Workspace) -> Result<bool> {
    let status = Command::new(cargo_program())
        .current_dir(&ws.root)
        .args(host_test_args())
        .status()
        .context("cannot run cargo test")?;
    if !status.success() {
        return Ok(false);
    }
    let kernels = crate::debian::kernels(ws).context("fetching Debian's kernels for keel-loader's tests")?;
    let status = Command::new(cargo_program())
        .current_dir(&ws.root)
        .args(["test", "--release", "-p", "keel-loader", "--features", "debian-kernels", "--", "debian"])
        .env("KEEL_DEBIAN_KERNELS", &kernels)
        .status()
        .context("cannot run cargo test")?;
    Ok(status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_build_arguments() {
        let args = keel_build_args(Profile::Release, Path::new("/ws/target"));
        assert_eq!(
            args,
            [
                "build",
                "-p",
                "keel",
                "-p",
                "badloader",
                "-p",
                "probe",
                "--release",
                "--target",
                "x86_64-unknown-none",
                "--target-dir",
                "/ws/target"
            ]
        );
    }

    #[test]
    fn debug_build_has_no_release_flag() {
        let args = keel_build_args(Profile::Debug, Path::new("t"));
        assert!(!args.iter().any(|a| a == "--release"));
        assert!(args.iter().any(|a| a == "x86_64-unknown-none"));
    }

    #[test]
    fn artifact_path_follows_profile() {
        let t = Path::new("/ws/target");
        assert_eq!(artifact(t, Profile::Release, "keel"), Path::new("/ws/target/x86_64-unknown-none/release/keel"));
        assert_eq!(
            artifact(t, Profile::Debug, "badloader"),
            Path::new("/ws/target/x86_64-unknown-none/debug/badloader")
        );
        assert_eq!(Profile::from_debug_flag(true), Profile::Debug);
        assert_eq!(Profile::from_debug_flag(false), Profile::Release);
    }

    #[test]
    fn host_tests_exclude_every_freestanding_package() {
        let args = host_test_args();
        for p in FREESTANDING_PACKAGES {
            assert!(args.windows(2).any(|w| w == ["--exclude", *p]), "{p} not excluded");
        }
        assert!(FREESTANDING_BINS.iter().all(|b| FREESTANDING_PACKAGES.contains(b)));
    }

    #[test]
    fn missing_target_is_recognised() {
        let e = "error[E0463]: can't find crate for `core`\n  |\n  = note: the \
                 `x86_64-unknown-none` target may not be installed\n";
        assert!(is_missing_target_error(e));
        assert!(!is_missing_target_error("error[E0308]: mismatched types\nerror: could not compile `keel`"));
    }
}
