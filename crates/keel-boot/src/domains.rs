//! Which domains to build at boot, from the boot modules.
//!
//! **Xen's way** (no module says otherwise): the first module is dom0's kernel and its
//! arguments are dom0's command line; the next module, if any, is dom0's initrd.
//!
//! **keel's dom0less way**: a module whose arguments begin with the word `domain` starts a
//! domain of its own; settings follow, then `--` and the kernel's command line:
//!
//! ```text
//! module2 /boot/vmlinuz domain name=web mem=512M vcpus=2 weight=512 cap=0 -- console=hvc0
//! module2 /boot/initrd.img initrd
//! module2 /boot/probe   domain mem=32M -- probe.crash=triple-fault
//! ```
//!
//! Settings: `name=` (default `d<n>`), `mem=` (size with K/M/G suffix, default 128M),
//! `vcpus=` (default 1), `weight=` (1-65535, default 256), `cap=` (percent of one CPU, 0 =
//! none), `cpus=` (hard affinity of every vCPU: a list of CPUs and ranges below 64, e.g.
//! `cpus=0-1,3`; default all), and `dom0` (make this domain the privileged dom0; at most one). A module whose
//! arguments begin with `initrd` is the initrd of the domain before it. Every other module is
//! reported and ignored. Domains built this way are unprivileged unless marked `dom0`.

use crate::bootinfo::MAX_MODULES;

/// Most domains built at boot.
pub const MAX_BOOT_DOMAINS: usize = MAX_MODULES;
/// Memory of a dom0less domain without `mem=`.
pub const DEFAULT_MEM: u64 = 128 << 20;

/// One domain to build at boot.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct BootDomain<'a> {
    /// Whether it is dom0 (privileged, domain id 0).
    pub dom0: bool,
    /// Its name (`None`: keel names it).
    pub name: Option<&'a str>,
    /// Memory in bytes (`None`: dom0's comes from `dom0_mem=`).
    pub mem: Option<u64>,
    /// vCPUs (`None`: the default for its kind).
    pub vcpus: Option<u32>,
    /// Scheduler weight.
    pub weight: u16,
    /// Scheduler cap in percent.
    pub cap: u16,
    /// Hard affinity: bit n = physical CPU n (`None`: every CPU).
    pub cpus: Option<u64>,
    /// Index of its kernel module.
    pub kernel: usize,
    /// Index of its initrd module.
    pub initrd: Option<usize>,
    /// The kernel's command line.
    pub cmdline: &'a str,
}

/// Something wrong with the modules' arguments; the module or setting is ignored.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum DomainWarning<'a> {
    /// A module that is neither a kernel nor the initrd of one.
    UnusedModule {
        /// Its index.
        index: usize,
    },
    /// A setting keel does not know or cannot parse.
    BadSetting {
        /// The module.
        index: usize,
        /// The setting.
        setting: &'a str,
    },
    /// A second `dom0`.
    SecondDom0 {
        /// The module.
        index: usize,
    },
    /// More domains than keel builds at boot.
    TooMany {
        /// The first module left out.
        index: usize,
    },
}

impl core::fmt::Display for DomainWarning<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::UnusedModule { index } => {
                write!(f, "module {index} is neither a domain's kernel nor its initrd; ignored")
            }
            Self::BadSetting { index, setting } => write!(f, "module {index}: bad domain setting '{setting}' ignored"),
            Self::SecondDom0 { index } => write!(f, "module {index}: only one domain can be dom0; this one is not"),
            Self::TooMany { index } => write!(f, "too many boot domains; module {index} and later are ignored"),
        }
    }
}

/// Parse a CPU list such as `0-3,5` into a bitmask (CPUs 0 to 63); `None` if malformed or empty.
fn parse_cpu_list(s: &str) -> Option<u64> {
    let mut mask = 0u64;
    for part in s.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let n = part.parse::<u32>().ok()?;
                (n, n)
            }
        };
        if a > b || b > 63 {
            return None;
        }
        for c in a..=b {
            mask |= 1 << c;
        }
    }
    (mask != 0).then_some(mask)
}

/// Parse a size: decimal with an optional K, M, G or T suffix (bytes without one).
fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        b't' | b'T' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1u64 << shift)
}

/// Plan the boot domains from the modules' arguments (`args[i]` for module `i`, image name
/// already removed). Returns the number of domains written to `out`.
pub fn plan<'a>(
    args: &[&'a str],
    out: &mut [Option<BootDomain<'a>>; MAX_BOOT_DOMAINS],
    warn: &mut dyn FnMut(DomainWarning<'a>),
) -> usize {
    let first_word = |s: &'a str| s.split_ascii_whitespace().next().unwrap_or("");
    let dom0less = args.iter().any(|a| first_word(a) == "domain");
    let mut n = 0;
    if !dom0less {
        if let Some(cmdline) = args.first() {
            out[0] = Some(BootDomain {
                dom0: true,
                name: Some("Domain-0"),
                mem: None,
                vcpus: None,
                weight: 256,
                cap: 0,
                cpus: None,
                kernel: 0,
                initrd: (args.len() > 1).then_some(1),
                cmdline: cmdline.trim(),
            });
            n = 1;
            for index in 2..args.len() {
                warn(DomainWarning::UnusedModule { index });
            }
        }
        return n;
    }
    let mut have_dom0 = false;
    for (index, a) in args.iter().enumerate() {
        match first_word(a) {
            "domain" => {
                if n == MAX_BOOT_DOMAINS {
                    warn(DomainWarning::TooMany { index });
                    break;
                }
                let rest = a.trim_start().strip_prefix("domain").unwrap_or("");
                let (settings, cmdline) = match rest.split_once(" -- ") {
                    Some((s, c)) => (s, c.trim()),
                    None => match rest.trim_end().strip_suffix("--") {
                        Some(s) => (s, ""),
                        None => (rest, ""),
                    },
                };
                let mut d = BootDomain {
                    dom0: false,
                    name: None,
                    mem: Some(DEFAULT_MEM),
                    vcpus: Some(1),
                    weight: 256,
                    cap: 0,
                    cpus: None,
                    kernel: index,
                    initrd: None,
                    cmdline,
                };
                for setting in settings.split_ascii_whitespace() {
                    let ok = match setting.split_once('=') {
                        None if setting == "dom0" => {
                            if have_dom0 {
                                warn(DomainWarning::SecondDom0 { index });
                            } else {
                                have_dom0 = true;
                                d.dom0 = true;
                            }
                            true
                        }
                        Some(("name", v)) if !v.is_empty() => {
                            d.name = Some(v);
                            true
                        }
                        Some(("mem", v)) => parse_size(v).filter(|&m| m >= 1 << 20).map(|m| d.mem = Some(m)).is_some(),
                        Some(("vcpus", v)) => v
                            .parse::<u32>()
                            .ok()
                            .filter(|&c| (1..=128).contains(&c))
                            .map(|c| d.vcpus = Some(c))
                            .is_some(),
                        Some(("weight", v)) => v.parse::<u16>().ok().filter(|&w| w > 0).map(|w| d.weight = w).is_some(),
                        Some(("cap", v)) => v.parse::<u16>().ok().map(|c| d.cap = c).is_some(),
                        Some(("cpus", v)) => parse_cpu_list(v).map(|m| d.cpus = Some(m)).is_some(),
                        _ => false,
                    };
                    if !ok {
                        warn(DomainWarning::BadSetting { index, setting });
                    }
                }
                out[n] = Some(d);
                n += 1;
            }
            "initrd" => match n.checked_sub(1).and_then(|i| out[i].as_mut()) {
                Some(d) if d.initrd.is_none() => d.initrd = Some(index),
                _ => warn(DomainWarning::UnusedModule { index }),
            },
            _ => warn(DomainWarning::UnusedModule { index }),
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn run<'a>(args: &[&'a str]) -> (Vec<BootDomain<'a>>, Vec<DomainWarning<'a>>) {
        let mut out = [None; MAX_BOOT_DOMAINS];
        let mut w = Vec::new();
        let n = plan(args, &mut out, &mut |x| w.push(x));
        (out[..n].iter().map(|d| d.unwrap()).collect(), w)
    }

    #[test]
    fn xen_way_first_module_is_dom0_second_its_initrd() {
        let (d, w) = run(&["console=hvc0 root=/dev/ram0", "", "extra"]);
        assert_eq!(d.len(), 1);
        assert!(d[0].dom0);
        assert_eq!((d[0].kernel, d[0].initrd, d[0].cmdline), (0, Some(1), "console=hvc0 root=/dev/ram0"));
        assert_eq!(d[0].mem, None);
        assert_eq!(w, [DomainWarning::UnusedModule { index: 2 }]);
        let (d, _) = run(&["probe"]);
        assert_eq!((d[0].initrd, d[0].cmdline), (None, "probe"));
        assert!(run(&[]).0.is_empty());
    }

    #[test]
    fn dom0less_domains_with_settings_and_initrds() {
        let (d, w) = run(&[
            "domain name=web mem=512M vcpus=2 weight=512 cap=50 -- console=hvc0 quiet",
            "initrd",
            "domain mem=32M -- probe.crash=triple-fault",
            "domain",
        ]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].name, Some("web"));
        assert_eq!((d[0].mem, d[0].vcpus, d[0].weight, d[0].cap), (Some(512 << 20), Some(2), 512, 50));
        assert_eq!((d[0].kernel, d[0].initrd, d[0].cmdline), (0, Some(1), "console=hvc0 quiet"));
        assert!(!d[0].dom0);
        assert_eq!((d[1].kernel, d[1].mem, d[1].cmdline), (2, Some(32 << 20), "probe.crash=triple-fault"));
        assert_eq!((d[2].kernel, d[2].mem, d[2].vcpus, d[2].cmdline), (3, Some(DEFAULT_MEM), Some(1), ""));
    }

    #[test]
    fn bad_settings_and_stray_modules_are_reported() {
        let (d, w) = run(&[
            "initrd",
            "domain mem=lots vcpus=0 weight=0 frob dom0 --",
            "initrd",
            "initrd",
            "junk",
            "domain dom0",
        ]);
        assert_eq!(d.len(), 2);
        assert!(d[0].dom0 && !d[1].dom0);
        assert_eq!(d[0].mem, Some(DEFAULT_MEM));
        assert_eq!(d[0].initrd, Some(2));
        assert_eq!(
            w,
            [
                DomainWarning::UnusedModule { index: 0 },
                DomainWarning::BadSetting { index: 1, setting: "mem=lots" },
                DomainWarning::BadSetting { index: 1, setting: "vcpus=0" },
                DomainWarning::BadSetting { index: 1, setting: "weight=0" },
                DomainWarning::BadSetting { index: 1, setting: "frob" },
                DomainWarning::UnusedModule { index: 3 },
                DomainWarning::UnusedModule { index: 4 },
                DomainWarning::SecondDom0 { index: 5 },
            ]
        );
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-3,5"), Some(0b10_1111));
        assert_eq!(parse_cpu_list("63"), Some(1 << 63));
        assert_eq!(parse_cpu_list("64"), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("1,,2"), None);
        let (d, w) = run(&["domain cpus=1 --", "domain cpus=x --"]);
        assert_eq!((d[0].cpus, d[1].cpus), (Some(2), None));
        assert_eq!(w, [DomainWarning::BadSetting { index: 1, setting: "cpus=x" }]);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("2g"), Some(2 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999T"), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(args in proptest::collection::vec(".{0,40}", 0..40)) {
            let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            let (d, _) = run(&refs);
            for dom in d {
                proptest::prop_assert!(dom.kernel < refs.len());
                proptest::prop_assert!(dom.initrd.is_none_or(|i| i < refs.len() && i != dom.kernel));
            }
        }
    }
}
