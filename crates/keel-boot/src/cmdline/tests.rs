//! Tests of the command-line parser as a whole.

use super::*;
use proptest::prelude::*;
use std::format;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

/// Parses `s` and collects the warnings.
fn run(s: &str) -> (Options, Vec<CmdlineWarning<'_>>) {
    let mut warnings = Vec::new();
    let o = parse(s, &mut |w| warnings.push(w));
    (o, warnings)
}

/// Parses `s`, which must produce no warnings.
fn clean(s: &str) -> Options {
    let (o, w) = run(s);
    assert!(w.is_empty(), "{s:?}: unexpected warnings {w:?}");
    o
}

/// Parses `s`, which must produce exactly one BadValue for `value`, and
/// checks the option kept its default.
fn rejected(s: &str, option: &str, value: &str) {
    let (o, w) = run(s);
    assert_eq!(o, Options::DEFAULT, "{s:?} changed the options");
    assert_eq!(w.len(), 1, "{s:?}: {w:?}");
    match w[0] {
        CmdlineWarning::BadValue { option: o, value: v, .. } => assert_eq!((o, v), (option, value), "{s:?}"),
        other => panic!("{s:?}: expected BadValue, got {other:?}"),
    }
}

#[test]
fn empty_and_blank_lines_give_defaults() {
    for s in ["", " ", "\t\n  \r\n"] {
        assert_eq!(clean(s), Options::DEFAULT);
    }
    let d = Options::default();
    assert_eq!(d.console, ConsoleSelect::Com1);
    assert_eq!(d.com1, ComConfig::DEFAULT);
    assert_eq!(d.loglvl.level, LogLevel::Info);
    assert_eq!(d.loglvl.rate_limited, None);
    assert_eq!(d.guest_loglvl.level, LogLevel::None);
    assert_eq!(d.guest_loglvl.rate_limited, Some(LogLevel::Warning));
    assert_eq!(d.maxcpus, None);
    assert_eq!(d.dom0_mem, Dom0Mem::default());
    assert!(!d.noreboot);
    assert_eq!(d.when_idle, WhenIdle::Stay);
    assert_eq!(d.test, None);
}

#[test]
fn console() {
    assert_eq!(clean("console=none").console, ConsoleSelect::None);
    assert_eq!(clean("console=none console=com1").console, ConsoleSelect::Com1);
    rejected("console=com3", "console", "com3");
    rejected("console=", "console", "");
    rejected("console", "console", "");
    rejected("console=com1,none", "console", "com1,none");
    rejected("console=com1,,none", "console", "com1,,none");
}

#[test]
fn console_unsupported_entries_are_ignored() {
    let (o, w) = run("console=com1,vga");
    assert_eq!(o.console, ConsoleSelect::Com1);
    assert_eq!(
        w,
        [CmdlineWarning::Unsupported { option: "console", value: "vga", why: "keel's consoles are com1 and none" }]
    );
    // Only unsupported consoles: keep the previous choice rather than go
    // silent.
    let (o, w) = run("console=none console=vga,dbgp");
    assert_eq!(o.console, ConsoleSelect::None);
    assert_eq!(w.len(), 2);
    let (o, _) = run("console=xhci");
    assert_eq!(o.console, ConsoleSelect::Com1);
}

#[test]
fn com1() {
    let o = clean("com1=57600,8n1,0x3f8,4");
    assert_eq!(o.com1.baud, Baud::Rate(57_600));
    assert_eq!(clean("com1=115200,8n1").com1, ComConfig::DEFAULT);
    rejected("com1=115200,9n1", "com1", "115200,9n1");
    rejected("com1", "com1", "");
    let (o, w) = run("com1=115200,8n1,pci");
    assert_eq!(o.com1, ComConfig::DEFAULT);
    assert!(matches!(w[..], [CmdlineWarning::Unsupported { option: "com1", value: "pci", .. }]));
}

#[test]
fn loglvl_and_guest_loglvl() {
    let o = clean("loglvl=all guest_loglvl=error/debug");
    assert_eq!(o.loglvl.level, LogLevel::All);
    assert_eq!(o.loglvl.rate_limited, None);
    assert_eq!(o.guest_loglvl.level, LogLevel::Error);
    assert_eq!(o.guest_loglvl.rate_limited, Some(LogLevel::Debug));
    for (s, l) in [
        ("none", LogLevel::None),
        ("error", LogLevel::Error),
        ("warning", LogLevel::Warning),
        ("info", LogLevel::Info),
        ("debug", LogLevel::Debug),
        ("all", LogLevel::All),
    ] {
        assert_eq!(clean(&format!("loglvl={s}")).loglvl.level, l);
        assert_eq!(l.to_string(), s);
    }
    assert!(LogLevel::None < LogLevel::Error && LogLevel::Debug < LogLevel::All);
    rejected("loglvl=loud", "loglvl", "loud");
    rejected("loglvl=info/", "loglvl", "info/");
    rejected("loglvl=/info", "loglvl", "/info");
    rejected("loglvl=INFO", "loglvl", "INFO");
    rejected("guest_loglvl=info/x", "guest_loglvl", "info/x");
}

#[test]
fn maxcpus() {
    assert_eq!(clean("maxcpus=1").maxcpus, Some(1));
    assert_eq!(clean("maxcpus=0x10").maxcpus, Some(16));
    assert_eq!(clean("maxcpus=4294967295").maxcpus, Some(u32::MAX));
    rejected("maxcpus=0", "maxcpus", "0");
    rejected("maxcpus=x", "maxcpus", "x");
    rejected("maxcpus=-1", "maxcpus", "-1");
    rejected("maxcpus=4294967296", "maxcpus", "4294967296");
    rejected("maxcpus=99999999999999999999", "maxcpus", "99999999999999999999");
    rejected("maxcpus=", "maxcpus", "");
    rejected("maxcpus", "maxcpus", "");
}

#[test]
fn dom0_mem() {
    let o = clean("dom0_mem=512M,max:1G");
    assert_eq!(o.dom0_mem.initial.map(|s| s.bytes), Some(512 << 20));
    assert_eq!(o.dom0_mem.max.map(|s| s.bytes), Some(1 << 30));
    rejected("dom0_mem=lots", "dom0_mem", "lots");
    rejected("dom0_mem=100%", "dom0_mem", "100%");
}

#[test]
fn noreboot_and_no_prefix() {
    assert!(clean("noreboot").noreboot);
    assert!(!clean("noreboot no-noreboot").noreboot);
    for t in ["yes", "on", "true", "enable", "1"] {
        assert!(clean(&format!("noreboot={t}")).noreboot, "{t}");
    }
    for f in ["no", "off", "false", "disable", "0"] {
        assert!(!clean(&format!("noreboot noreboot={f}")).noreboot, "{f}");
    }
    rejected("noreboot=maybe", "noreboot", "maybe");
    rejected("noreboot=", "noreboot", "");
    rejected("no-noreboot=yes", "no-noreboot", "yes");
    // `no-` is only for booleans.
    rejected("no-maxcpus", "no-maxcpus", "");
    rejected("no-console=com1", "no-console", "com1");
}

#[test]
fn dom0_max_vcpus() {
    assert_eq!(clean("dom0_max_vcpus=4").dom0_max_vcpus, Some((4, 4)));
    assert_eq!(clean("dom0_max_vcpus=2-8").dom0_max_vcpus, Some((2, 8)));
    assert_eq!(clean("dom0_max_vcpus=-8").dom0_max_vcpus, Some((1, 8)));
    assert_eq!(clean("dom0_max_vcpus=2-").dom0_max_vcpus, Some((2, u32::MAX)));
    rejected("dom0_max_vcpus=0", "dom0_max_vcpus", "0");
    rejected("dom0_max_vcpus=8-2", "dom0_max_vcpus", "8-2");
    rejected("dom0_max_vcpus=x", "dom0_max_vcpus", "x");
}

#[test]
fn when_idle_and_test() {
    assert_eq!(clean("when_idle=poweroff").when_idle, WhenIdle::PowerOff);
    assert_eq!(clean("when_idle=reboot").when_idle, WhenIdle::Reboot);
    assert_eq!(clean("when_idle=reboot when_idle=stay").when_idle, WhenIdle::Stay);
    rejected("when_idle=sleep", "when_idle", "sleep");
    assert_eq!(clean("test=pagefault").test, Some(TestAction::PageFault));
    assert_eq!(clean("test=panic").test, Some(TestAction::Panic));
    rejected("test=oops", "test", "oops");
}

#[test]
fn repeated_options_last_good_value_wins() {
    assert_eq!(clean("maxcpus=2 maxcpus=8").maxcpus, Some(8));
    let (o, w) = run("maxcpus=2 maxcpus=x");
    assert_eq!(o.maxcpus, Some(2));
    assert_eq!(w.len(), 1);
}

#[test]
fn whitespace_runs_tabs_and_newlines_separate_words() {
    let o = clean("  maxcpus=3\t\tnoreboot\n\r when_idle=reboot   ");
    assert_eq!(o.maxcpus, Some(3));
    assert!(o.noreboot);
    assert_eq!(o.when_idle, WhenIdle::Reboot);
}

#[test]
fn unknown_options_are_reported_whole_and_ignored() {
    let (o, w) = run("frobnicate=7 maxcpus=2 no-frob =5 = noreboot=yes=no MAXCPUS=1");
    assert_eq!(o.maxcpus, Some(2));
    assert!(!o.noreboot);
    assert_eq!(
        w,
        [
            CmdlineWarning::Unknown { option: "frobnicate=7" },
            CmdlineWarning::Unknown { option: "no-frob" },
            CmdlineWarning::Unknown { option: "=5" },
            CmdlineWarning::Unknown { option: "=" },
            CmdlineWarning::BadValue {
                option: "noreboot",
                value: "yes=no",
                why: "expected yes, on, true, enable, 1, no, off, false, disable or 0",
            },
            CmdlineWarning::Unknown { option: "MAXCPUS=1" },
        ]
    );
}

#[test]
fn non_ascii_input_is_reported_not_panicked_on() {
    let (o, w) = run("maxcpus=٣ loglvl=ïnfo ünknown=1 com1=115200,8ñ1 noreboot\u{a0}");
    assert_eq!(o, Options::DEFAULT);
    assert_eq!(w.len(), 5, "{w:?}");
    assert_eq!(w[2], CmdlineWarning::Unknown { option: "ünknown=1" });
    // A non-breaking space is not a separator.
    assert_eq!(w[4], CmdlineWarning::Unknown { option: "noreboot\u{a0}" });
}

#[test]
fn warnings_read_as_operator_sentences() {
    let (_, w) = run("frobnicate=7 maxcpus=x console=vga maxcpus");
    assert_eq!(w[0].to_string(), "unknown option 'frobnicate=7' ignored");
    assert_eq!(w[1].to_string(), "bad value 'x' for 'maxcpus': not a number; option left unchanged");
    assert_eq!(w[2].to_string(), "unsupported 'vga' in 'console' ignored: keel's consoles are com1 and none");
    assert_eq!(w[3].to_string(), "no value for 'maxcpus': a value is required; option left unchanged");
}

#[test]
fn split_image_name_cases() {
    assert_eq!(split_image_name("/boot/vmlinuz root=/dev/xvda ro"), ("/boot/vmlinuz", "root=/dev/xvda ro"));
    assert_eq!(split_image_name("vmlinuz"), ("vmlinuz", ""));
    assert_eq!(split_image_name(""), ("", ""));
    assert_eq!(split_image_name("   "), ("", ""));
    assert_eq!(split_image_name("\t initrd.img \t  a  b \n"), ("initrd.img", "a  b"));
}

/// True if `inner` is a sub-slice of `outer` (same memory, not just equal).
fn within(outer: &str, inner: &str) -> bool {
    let o = outer.as_ptr() as usize;
    let i = inner.as_ptr() as usize;
    i >= o && i + inner.len() <= o + outer.len()
}

/// Byte ranges of the words of `s`, computed independently of the parser.
fn word_ranges(s: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices() {
        match (c.is_ascii_whitespace(), start) {
            (true, Some(st)) => {
                out.push((st, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(st) = start {
        out.push((st, s.len()));
    }
    out
}

fn word_is_known(word: &str) -> bool {
    let key = word.split_once('=').map_or(word, |(k, _)| k);
    let name = key.strip_prefix("no-").filter(|n| Known::lookup(n).is_some()).unwrap_or(key);
    Known::lookup(name).is_some()
}

/// Strings made mostly of option-like pieces, to reach deep into the
/// value parsers, plus arbitrary text.
fn cmdline_soup() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("console=".to_string()),
        Just("com1=".to_string()),
        Just("loglvl=".to_string()),
        Just("guest_loglvl=".to_string()),
        Just("maxcpus=".to_string()),
        Just("dom0_mem=".to_string()),
        Just("noreboot".to_string()),
        Just("no-".to_string()),
        Just("when_idle=".to_string()),
        Just("test=".to_string()),
        Just(",".to_string()),
        Just("/".to_string()),
        Just(":".to_string()),
        Just("%".to_string()),
        Just("+".to_string()),
        Just("-".to_string()),
        Just("=".to_string()),
        Just(" ".to_string()),
        Just("\t".to_string()),
        "[0-9a-zA-Z]{1,6}",
        "\\PC{1,4}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    /// Never panics, and every byte is accounted for: each word is either a
    /// known option or reported whole as unknown, and every warning points
    /// into exactly one word of the input.
    #[test]
    fn never_panics_and_accounts_for_every_byte(s in prop_oneof![cmdline_soup(), "\\PC{0,64}", any::<String>()]) {
        let (_, warnings) = run(&s);
        let words = word_ranges(&s);
        let covered: usize = words.iter().map(|(a, b)| b - a).sum();
        let blank = s.bytes().filter(u8::is_ascii_whitespace).count();
        prop_assert_eq!(covered + blank, s.len());

        for w in &warnings {
            let parts: Vec<&str> = match *w {
                CmdlineWarning::Unknown { option } => std::vec![option],
                CmdlineWarning::BadValue { option, value, why } => {
                    prop_assert!(!why.is_empty());
                    std::vec![option, value]
                }
                CmdlineWarning::Unsupported { option, value, why } => {
                    prop_assert!(!why.is_empty());
                    std::vec![option, value]
                }
            };
            let home: Vec<_> = words
                .iter()
                .filter(|(a, b)| parts.iter().all(|p| within(&s[*a..*b], p)))
                .collect();
            prop_assert_eq!(home.len(), 1, "warning {:?} is not inside one word", w);
            prop_assert!(!w.to_string().is_empty());
        }
        for &(a, b) in &words {
            let word = &s[a..b];
            let unknown = warnings.iter().filter(|w| matches!(
                w, CmdlineWarning::Unknown { option } if option.as_ptr() == word.as_ptr() && option.len() == word.len()
            )).count();
            prop_assert_eq!(unknown, usize::from(!word_is_known(word)), "word {:?}", word);
        }
    }

    /// Any mix of valid options, in any whitespace, parses without warnings
    /// into exactly the values written.
    #[test]
    fn valid_options_round_trip(
        maxcpus in prop::option::of(1u32..),
        hex in any::<bool>(),
        level in 0usize..6,
        rate in prop::option::of(0usize..6),
        noreboot in prop::option::of(0usize..12),
        idle in prop::option::of(0usize..3),
        console_none in any::<bool>(),
        baud in prop::sample::select(std::vec![300u32, 1200, 9600, 19200, 38400, 57600, 115200]),
        data_bits in 5u8..=8,
        parity in 0usize..5,
        stop_bits in 1u8..=2,
        io_base in 1u16..,
        irq: u8,
        dom0_mib in 1u64..1 << 20,
        dom0_pct in prop::option::of(0u8..100),
        all_but: bool,
        seps in prop::collection::vec(prop::sample::select(std::vec![" ", "\t", "\n", "  ", " \r\n "]), 8),
    ) {
        const LEVELS: [LogLevel; 6] = [
            LogLevel::None, LogLevel::Error, LogLevel::Warning,
            LogLevel::Info, LogLevel::Debug, LogLevel::All,
        ];
        const PARITY: [(Parity, char); 5] = [
            (Parity::None, 'n'), (Parity::Odd, 'o'), (Parity::Even, 'e'),
            (Parity::Mark, 'm'), (Parity::Space, 's'),
        ];
        const BOOLS: [(&str, bool); 12] = [
            ("noreboot", true), ("no-noreboot", false),
            ("noreboot=yes", true), ("noreboot=on", true), ("noreboot=true", true),
            ("noreboot=enable", true), ("noreboot=1", true), ("noreboot=no", false),
            ("noreboot=off", false), ("noreboot=false", false),
            ("noreboot=disable", false), ("noreboot=0", false),
        ];
        const IDLE: [(&str, WhenIdle); 3] = [
            ("stay", WhenIdle::Stay), ("poweroff", WhenIdle::PowerOff), ("reboot", WhenIdle::Reboot),
        ];
        let mut expected = Options::DEFAULT;
        let mut words: Vec<String> = Vec::new();
        if let Some(n) = maxcpus {
            expected.maxcpus = Some(n);
            words.push(if hex { format!("maxcpus={n:#x}") } else { format!("maxcpus={n}") });
        }
        expected.loglvl = LogLevels { level: LEVELS[level], rate_limited: rate.map(|r| LEVELS[r]) };
        words.push(match rate {
            Some(r) => format!("loglvl={}/{}", LEVELS[level], LEVELS[r]),
            None => format!("loglvl={}", LEVELS[level]),
        });
        if let Some(i) = noreboot {
            expected.noreboot = BOOLS[i].1;
            words.push(BOOLS[i].0.to_string());
        }
        if let Some(i) = idle {
            expected.when_idle = IDLE[i].1;
            words.push(format!("when_idle={}", IDLE[i].0));
        }
        if console_none {
            expected.console = ConsoleSelect::None;
            words.push("console=none".to_string());
        }
        expected.com1 = ComConfig {
            baud: Baud::Rate(baud),
            base_baud: None,
            data_bits,
            parity: PARITY[parity].0,
            stop_bits,
            io_base,
            irq,
        };
        words.push(format!(
            "com1={baud},{data_bits}{}{stop_bits},{io_base:#x},{irq}",
            PARITY[parity].1
        ));
        let size = MemSize { bytes: dom0_mib << 20, percent: dom0_pct.unwrap_or(0), all_but };
        expected.dom0_mem = Dom0Mem { initial: Some(size), min: None, max: Some(size) };
        let amount = format!(
            "{}{}M{}",
            if all_but { "-" } else { "" },
            dom0_mib,
            dom0_pct.map(|p| format!("+{p}%")).unwrap_or_default()
        );
        words.push(format!("dom0_mem={amount},max:{amount}"));

        let mut line = String::new();
        for (i, w) in words.iter().enumerate() {
            line.push_str(seps[i % seps.len()]);
            line.push_str(w);
        }
        prop_assert_eq!(clean(&line), expected);
    }
}
