//! Debian's own packages, fetched for the tests that run real software no one here wrote: the
//! stock kernels (`linux-image-amd64`, `linux-image-cloud-amd64`) and, for the conformance
//! comparison, the Xen hypervisor itself (see `xen.rs`).
//!
//! Packages come from the machine's apt sources with `apt-get download` (no root needed, no
//! installation) and are unpacked with `dpkg-deb -x` under a cache directory (`build/debian/`,
//! `build/xen/`). What was fetched is kept, so later runs work offline; the kernel
//! meta-package is resolved to the current kernel package with `apt-cache depends` (Debian
//! moves the ABI number with every update).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::Workspace;

/// The kernel flavours the tests use: (meta-package, short name).
pub const KERNELS: &[(&str, &str)] = &[("linux-image-amd64", "generic"), ("linux-image-cloud-amd64", "cloud")];

/// The package a meta-package depends on, from `apt-cache depends` output.
pub fn depends_on(apt_cache_output: &str, prefix: &str) -> Option<String> {
    apt_cache_output.lines().find_map(|l| {
        let dep = l.trim().strip_prefix("Depends: ")?.trim();
        dep.starts_with(prefix).then(|| dep.to_string())
    })
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Download `package` into `dir` (once); returns the .deb's path.
fn download(package: &str, dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let find = || -> Option<PathBuf> {
        fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
        })
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    let attempt = || run(Command::new("apt-get").arg("download").arg(package).current_dir(dir));
    if let Err(first) = attempt() {
        // A fresh machine may have no package lists yet.
        eprintln!("xtask: apt-get download {package} failed ({first}); running apt-get update");
        run(Command::new("apt-get").arg("update").arg("-q"))
            .context("apt-get update (needs root; or run `sudo apt-get update` once)")?;
        attempt()?;
    }
    find().with_context(|| format!("apt-get download {package} left no .deb in {}", dir.display()))
}

/// `package` unpacked under `base/unpacked/<package>/` (its .deb kept in `base/debs/`),
/// fetching and unpacking it once; returns the unpacked tree's root.
pub fn fetch(package: &str, base: &Path) -> Result<PathBuf> {
    let unpacked = base.join("unpacked").join(package);
    if unpacked.exists() {
        return Ok(unpacked);
    }
    let deb = download(package, &base.join("debs"))?;
    // Unpack beside the final name and rename, so an interrupted run leaves no half tree.
    let partial = base.join("unpacked").join(format!(".{package}.partial"));
    match fs::remove_dir_all(&partial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", partial.display())),
    }
    fs::create_dir_all(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    fs::rename(&partial, &unpacked)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), unpacked.display()))?;
    Ok(unpacked)
}

/// The stock Debian kernels (`vmlinuz-*`) in one directory, fetching them if needed.
pub fn kernels(ws: &Workspace) -> Result<PathBuf> {
    let base = ws.build_dir().join("debian");
    let out = base.join("kernels");
    fs::create_dir_all(&out)?;
    for (meta, flavour) in KERNELS {
        let marker = out.join(format!(".{flavour}"));
        if marker.exists() {
            continue;
        }
        let deps = run(Command::new("apt-cache").arg("depends").arg(meta))?;
        let package =
            depends_on(&deps, "linux-image-").with_context(|| format!("{meta} depends on no linux-image package"))?;
        let unpacked = fetch(&package, &base)?;
        let boot = unpacked.join("boot");
        let vmlinuz = fs::read_dir(&boot)
            .with_context(|| format!("{package} has no /boot"))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")))
            .with_context(|| format!("{package} has no vmlinuz"))?;
        let name = vmlinuz.file_name().context("vmlinuz has no name")?;
        fs::copy(&vmlinuz, out.join(name))?;
        fs::write(&marker, package)?;
        eprintln!("xtask: fetched {meta} ({})", name.to_string_lossy());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_package_resolution() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-48-amd64\n  Suggests: firmware\n";
        assert_eq!(depends_on(out, "linux-image-").as_deref(), Some("linux-image-6.1.0-48-amd64"));
        assert_eq!(depends_on("linux-image-amd64\n  Recommends: x\n", "linux-image-"), None);
        let cloud = "linux-image-cloud-amd64\n  Depends: <virtual>\n  Depends: linux-image-6.1.0-48-cloud-amd64\n";
        assert_eq!(depends_on(cloud, "linux-image-").as_deref(), Some("linux-image-6.1.0-48-cloud-amd64"));
    }
}
