//! GRUB rescue ISOs that boot a multiboot2 kernel (keel, or Xen as the reference) with boot
//! modules.
//!
//! The ISO holds the kernel as `/boot/<name>`, each module as `/boot/<file name>` and a
//! `grub.cfg` that boots at once on the serial console. Generating the configuration (including
//! GRUB-script quoting) is pure and unit-tested; [`make_iso`] stages the files and runs
//! `grub-mkrescue`, for BIOS (i386-pc) only or as a hybrid BIOS and UEFI (x86_64-efi) image.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

/// GRUB's BIOS platform directory (from grub-pc-bin).
pub const I386_PC_DIR: &str = "/usr/lib/grub/i386-pc";
/// GRUB's UEFI platform directory (from grub-efi-amd64-bin).
pub const X86_64_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";

/// The firmware an ISO boots on.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Platforms {
    /// BIOS only (`grub-mkrescue -d /usr/lib/grub/i386-pc`).
    Bios,
    /// BIOS and UEFI: without `-d`, grub-mkrescue makes a hybrid image for every installed
    /// platform, so both GRUB platform packages must be installed.
    BiosAndUefi,
}

/// What an ISO boots.
#[derive(Clone, Copy, Debug)]
pub struct IsoImage<'a> {
    /// The multiboot2 kernel file.
    pub kernel: &'a Path,
    /// Its name on the ISO (`/boot/<name>`), also the menu entry's title.
    pub kernel_name: &'a str,
    /// The kernel's command line.
    pub options: &'a str,
    /// Boot modules, in order.
    pub modules: &'a [ModuleSpec],
    /// The firmware the ISO must boot on.
    pub platforms: Platforms,
}

/// A module given on the command line: `"<file> <args>"`.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ModuleSpec {
    /// The file to load.
    pub file: PathBuf,
    /// Its command-line arguments (may be empty).
    pub args: String,
}

impl FromStr for ModuleSpec {
    type Err = String;

    /// The first whitespace-separated word is the file, the rest (trimmed) its arguments.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty module: expected \"<file> [args]\"".into());
        }
        let (file, args) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
        Ok(Self { file: PathBuf::from(file), args: args.trim().to_string() })
    }
}

/// A module as it appears on the ISO.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct IsoModule {
    /// File name under `/boot/`.
    pub name: String,
    /// Its arguments.
    pub args: String,
}

/// Names the modules on the ISO after their file names; these must be unique and must not
/// collide with the kernel (`/boot/<kernel_name>`) or `/boot/grub`.
pub fn iso_modules(kernel_name: &str, specs: &[ModuleSpec]) -> Result<Vec<IsoModule>> {
    let mut modules: Vec<IsoModule> = Vec::with_capacity(specs.len());
    for spec in specs {
        let name = spec
            .file
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("module {} has no UTF-8 file name", spec.file.display()))?;
        if name == kernel_name || name == "grub" {
            bail!("module file name '{name}' is reserved on the ISO (/boot/{name}); rename it");
        }
        if modules.iter().any(|m| m.name == name) {
            bail!("two modules are called '{name}'; module file names must be unique");
        }
        modules.push(IsoModule { name: name.to_string(), args: spec.args.clone() });
    }
    Ok(modules)
}

/// Quotes one word for a GRUB script if it contains anything but plainly safe characters.
pub fn quote_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=,:+@%^~".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        // Inside single quotes nothing is special; a quote itself is closed, escaped, reopened.
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Quotes each whitespace-separated word of `text` (GRUB joins the words with single spaces).
fn quote_words(text: &str) -> String {
    text.split_whitespace().map(quote_word).collect::<Vec<_>>().join(" ")
}

/// A command line: the command, then quoted words, without trailing space.
fn command_line(command: &str, path: &str, args: &str) -> String {
    let args = quote_words(args);
    let mut line = format!("\t{command} {}", quote_word(path));
    if !args.is_empty() {
        line.push(' ');
        line.push_str(&args);
    }
    line
}

/// The grub.cfg that boots `/boot/<kernel_name>` with `options` and `modules` at once on the
/// first serial port.
pub fn grub_cfg(kernel_name: &str, options: &str, modules: &[IsoModule]) -> String {
    let mut cfg = String::from(
        "set timeout=0\n\
         set default=0\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial\n\
         terminal_output serial\n\
         \n",
    );
    let _ = writeln!(cfg, "menuentry {} {{", quote_word(kernel_name));
    let _ = writeln!(cfg, "{}", command_line("multiboot2", &format!("/boot/{kernel_name}"), options));
    for m in modules {
        let _ = writeln!(cfg, "{}", command_line("module2", &format!("/boot/{}", m.name), &m.args));
    }
    cfg.push_str("\tboot\n}\n");
    cfg
}

/// The `grub-mkrescue` arguments that write `output` from `staging` for `platforms`.
pub fn mkrescue_args(platforms: Platforms, staging: &Path, output: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if platforms == Platforms::Bios {
        args.push("-d".into());
        args.push(I386_PC_DIR.into());
    }
    args.extend(["-o".into(), output.into(), staging.into()]);
    args
}

/// Stages the kernel, the modules and grub.cfg in `staging` (emptied first) and runs
/// grub-mkrescue to write `output`.
pub fn make_iso(image: &IsoImage<'_>, staging: &Path, output: &Path) -> Result<()> {
    let (specs, kernel_name) = (image.modules, image.kernel_name);
    if kernel_name.is_empty() || kernel_name.contains('/') || kernel_name == "grub" {
        bail!("'{kernel_name}' cannot be a kernel's file name on the ISO");
    }
    let modules = iso_modules(kernel_name, specs)?;
    match fs::remove_dir_all(staging) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot empty {}", staging.display())),
    }
    let boot = staging.join("boot");
    let grub_dir = boot.join("grub");
    fs::create_dir_all(&grub_dir).with_context(|| format!("cannot create {}", grub_dir.display()))?;
    let copy = |from: &Path, to: &Path| {
        fs::copy(from, to).map(drop).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))
    };
    copy(image.kernel, &boot.join(kernel_name))?;
    for (spec, module) in specs.iter().zip(&modules) {
        copy(&spec.file, &boot.join(&module.name))?;
    }
    let cfg_path = grub_dir.join("grub.cfg");
    fs::write(&cfg_path, grub_cfg(kernel_name, image.options, &modules))
        .with_context(|| format!("cannot write {}", cfg_path.display()))?;

    if let Some(dir) = output.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let result = Command::new("grub-mkrescue")
        .args(mkrescue_args(image.platforms, staging, output))
        .output()
        .context("cannot run grub-mkrescue")?;
    if !result.status.success() {
        bail!(
            "grub-mkrescue failed ({}):\n{}{}",
            result.status,
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> ModuleSpec {
        s.parse().unwrap()
    }

    #[test]
    fn module_specs_split_file_and_args() {
        assert_eq!(
            spec("build/test/mod1.bin alpha beta"),
            ModuleSpec { file: "build/test/mod1.bin".into(), args: "alpha beta".into() }
        );
        assert_eq!(spec("  /x/y  ").args, "");
        assert_eq!(spec("f\targs  with   spaces ").args, "args  with   spaces");
        assert!("".parse::<ModuleSpec>().is_err());
        assert!("   ".parse::<ModuleSpec>().is_err());
    }

    #[test]
    fn iso_names_are_file_names() {
        let m = iso_modules("keel", &[spec("/a/b/vmlinuz root=/dev/xvda1"), spec("initrd.img")]).unwrap();
        assert_eq!(
            m,
            [
                IsoModule { name: "vmlinuz".into(), args: "root=/dev/xvda1".into() },
                IsoModule { name: "initrd.img".into(), args: String::new() }
            ]
        );
    }

    #[test]
    fn clashing_or_reserved_names_are_rejected() {
        assert!(iso_modules("keel", &[spec("/a/m"), spec("/b/m")]).is_err());
        assert!(iso_modules("keel", &[spec("/x/keel")]).is_err());
        assert!(iso_modules("xen.gz", &[spec("/x/xen.gz")]).is_err());
        assert!(iso_modules("xen.gz", &[spec("/x/keel")]).is_ok());
        assert!(iso_modules("keel", &[spec("/x/grub")]).is_err());
        assert!(iso_modules("keel", &[spec("/")]).is_err());
    }

    #[test]
    fn words_are_quoted_only_when_needed() {
        assert_eq!(quote_word("console=com1"), "console=com1");
        assert_eq!(quote_word("dom0_mem=512M,max:1G"), "dom0_mem=512M,max:1G");
        assert_eq!(quote_word("a;b"), "'a;b'");
        assert_eq!(quote_word("$x"), "'$x'");
        assert_eq!(quote_word("it's"), r"'it'\''s'");
        assert_eq!(quote_word(""), "''");
    }

    #[test]
    fn config_matches_the_expected_layout() {
        let modules = iso_modules("keel", &[spec("/t/mod1.bin alpha beta"), spec("/t/mod2.bin")]).unwrap();
        let cfg = grub_cfg("keel", "console=com1 com1=115200 when_idle=poweroff", &modules);
        assert_eq!(
            cfg,
            "set timeout=0\n\
             set default=0\n\
             serial --unit=0 --speed=115200\n\
             terminal_input serial\n\
             terminal_output serial\n\
             \n\
             menuentry keel {\n\
             \tmultiboot2 /boot/keel console=com1 com1=115200 when_idle=poweroff\n\
             \tmodule2 /boot/mod1.bin alpha beta\n\
             \tmodule2 /boot/mod2.bin\n\
             \tboot\n\
             }\n"
        );
    }

    #[test]
    fn config_for_xen_names_its_image() {
        let modules = iso_modules("xen.gz", &[spec("/b/probe probe.abi")]).unwrap();
        let cfg = grub_cfg("xen.gz", "console=com1 dom0=pvh", &modules);
        assert!(
            cfg.ends_with(
                "menuentry xen.gz {\n\
                 \tmultiboot2 /boot/xen.gz console=com1 dom0=pvh\n\
                 \tmodule2 /boot/probe probe.abi\n\
                 \tboot\n\
                 }\n"
            ),
            "{cfg}"
        );
    }

    #[test]
    fn mkrescue_restricts_to_bios_only_when_asked() {
        let words = |p| {
            mkrescue_args(p, Path::new("/s"), Path::new("/o.iso"))
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(words(Platforms::Bios), "-d /usr/lib/grub/i386-pc -o /o.iso /s");
        assert_eq!(words(Platforms::BiosAndUefi), "-o /o.iso /s");
    }

    #[test]
    fn bad_kernel_names_are_refused_before_any_file_is_touched() {
        for name in ["", "a/b", "grub"] {
            let image = IsoImage {
                kernel: Path::new("/nonexistent/kernel"),
                kernel_name: name,
                options: "",
                modules: &[],
                platforms: Platforms::Bios,
            };
            let err = make_iso(&image, Path::new("/nonexistent/staging"), Path::new("/nonexistent/o.iso"));
            assert!(err.unwrap_err().to_string().contains("cannot be a kernel's file name"), "{name}");
        }
    }

    #[test]
    fn config_without_options_or_modules() {
        let cfg = grub_cfg("keel", "  ", &[]);
        assert!(cfg.contains("\tmultiboot2 /boot/keel\n\tboot\n}"), "{cfg}");
        assert!(!cfg.contains("module2"));
    }

    #[test]
    fn config_quotes_special_arguments() {
        let modules = [IsoModule { name: "my mod".into(), args: "a|b c".into() }];
        let cfg = grub_cfg("keel", "x=\"1\"", &modules);
        assert!(cfg.contains("\tmultiboot2 /boot/keel 'x=\"1\"'\n"), "{cfg}");
        assert!(cfg.contains("\tmodule2 '/boot/my mod' 'a|b' c\n"), "{cfg}");
    }
}
