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

/// The arguments of the keel build.
pub fn keel_build_args(profile: Profile, target_dir: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["build".into(), "-p".into(), "keel".into()];
    if profile == Profile::Release {
        args.push("--release".into());
    }
    args.push("--target".into());
    args.push(KEEL_TARGET.into());
    args.push("--target-dir".into());
    args.push(target_dir.into());
    args
}

/// Where cargo leaves the keel ELF for `profile`.
pub fn keel_artifact(target_dir: &Path, profile: Profile) -> PathBuf {
    target_dir.join(KEEL_TARGET).join(profile.dir_name()).join("keel")
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

    let artifact = keel_artifact(&target_dir, profile);
    let image = ws.keel_image();
    fs::create_dir_all(ws.build_dir()).with_context(|| format!("cannot create {}", ws.build_dir().display()))?;
    fs::copy(&artifact, &image)
        .with_context(|| format!("cannot copy {} to {}", artifact.display(), image.display()))?;
    Ok(image)
}

/// Runs `cargo test --workspace --exclude keel` with inherited output; returns success.
pub fn host_tests(ws: &Workspace) -> Result<bool> {
    let status = Command::new(cargo_program())
        .current_dir(&ws.root)
        .args(["test", "--workspace", "--exclude", "keel"])
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
            ["build", "-p", "keel", "--release", "--target", "x86_64-unknown-none", "--target-dir", "/ws/target"]
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
        assert_eq!(keel_artifact(t, Profile::Release), Path::new("/ws/target/x86_64-unknown-none/release/keel"));
        assert_eq!(keel_artifact(t, Profile::Debug), Path::new("/ws/target/x86_64-unknown-none/debug/keel"));
        assert_eq!(Profile::from_debug_flag(true), Profile::Debug);
        assert_eq!(Profile::from_debug_flag(false), Profile::Release);
    }

    #[test]
    fn missing_target_is_recognised() {
        let e = "error[E0463]: can't find crate for `core`\n  |\n  = note: the \
                 `x86_64-unknown-none` target may not be installed\n";
        assert!(is_missing_target_error(e));
        assert!(!is_missing_target_error("error[E0308]: mismatched types\nerror: could not compile `keel`"));
    }
}
