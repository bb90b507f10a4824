//! The probe's report: its TAP-like check lines, summary and benchmark lines, read from one
//! domain's console lines.
//!
//! The probe (`guests/probe`) prints `probe: starting (command line '<options>')`, then one
//! line per check, `ok <n> - <name>` or `not ok <n> - <name>: <detail>`, numbered from 1, then
//! `probe: <N> passed, <M> failed`, then (with `probe.bench`) lines
//! `probe: bench <name> median <m> <unit>, min <a>, max <b> (<n> <what>)`. Whatever prefix the
//! hypervisor puts in front of a guest's lines (keel's `(d<N>) `) is removed by the caller.
//!
//! [`parse`] reads the lines into a [`ProbeReport`] and also says what is wrong with the report
//! itself: malformed or misnumbered check lines, a check reported twice, a missing, repeated or
//! inconsistent summary, a probe that started twice. A probe that stopped half-way therefore
//! never looks like one that passed. Lines of other forms are not part of the report.

/// How one check ended.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Outcome {
    /// `ok <n> - <name>`.
    Pass,
    /// `not ok <n> - <name>: <detail>` (the detail may be empty).
    Fail(String),
}

impl Outcome {
    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        *self == Self::Pass
    }
}

/// One check line.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Check {
    /// The number the probe gave it.
    pub number: u64,
    /// Its name, e.g. `acpi-madt`.
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
}

/// `probe: <N> passed, <M> failed`.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Summary {
    /// Passed checks, as the probe counted them.
    pub passed: u64,
    /// Failed checks, as the probe counted them.
    pub failed: u64,
    /// Index of the summary among the lines given to [`parse`].
    pub line: usize,
}

/// `probe: bench <name> median <m> <unit>, <rest>`.
#[derive(Clone, Debug, PartialEq)]
pub struct Bench {
    /// The benchmark's name, e.g. `null-hypercall`.
    pub name: String,
    /// The median.
    pub median: f64,
    /// The median's unit, e.g. `cycles`.
    pub unit: String,
    /// The rest of the line (minimum, maximum, sample count), as printed.
    pub rest: String,
}

/// Everything one probe reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeReport {
    /// The command line from `probe: starting (command line '...')`.
    pub command_line: Option<String>,
    /// Check lines, in order (a repeated name is kept once, at its first report).
    pub checks: Vec<Check>,
    /// The summary line, if there was exactly one well-formed summary.
    pub summary: Option<Summary>,
    /// Benchmark lines, in order.
    pub benches: Vec<Bench>,
    /// What is wrong with the report itself.
    pub problems: Vec<String>,
}

impl ProbeReport {
    /// The outcome of the check called `name`, if it was reported.
    pub fn outcome(&self, name: &str) -> Option<&Outcome> {
        self.checks.iter().find(|c| c.name == name).map(|c| &c.outcome)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.outcome.passed())
    }
}

const SUMMARY_PREFIX: &str = "probe: ";
const BENCH_PREFIX: &str = "probe: bench ";
const START_PREFIX: &str = "probe: starting (command line '";

/// `ok <n> - <name>` or `not ok <n> - <name>[: <detail>]`; `None` if `line` is neither kind,
/// `Some(Err(..))` if it is one but does not parse.
fn parse_check(line: &str) -> Option<Result<Check, String>> {
    let (rest, passed) = match (line.strip_prefix("ok "), line.strip_prefix("not ok ")) {
        (Some(rest), _) => (rest, true),
        (_, Some(rest)) => (rest, false),
        _ => return None,
    };
    let malformed = || Err(format!("malformed check line '{line}'"));
    let Some((number, rest)) = rest.split_once(" - ") else {
        return Some(malformed());
    };
    let Ok(number) = number.parse::<u64>() else {
        return Some(malformed());
    };
    let (name, outcome) = if passed {
        (rest, Outcome::Pass)
    } else {
        match rest.split_once(": ") {
            Some((name, detail)) => (name, Outcome::Fail(detail.trim().to_string())),
            None => (rest.strip_suffix(':').unwrap_or(rest), Outcome::Fail(String::new())),
        }
    };
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Some(malformed());
    }
    Some(Ok(Check { number, name: name.to_string(), outcome }))
}

/// `probe: <N> passed, <M> failed` as (N, M); `None` if `line` is not of that form, with
/// `Some(None)` for a line that starts like one but does not parse.
fn parse_summary(line: &str) -> Option<Option<(u64, u64)>> {
    let rest = line.strip_prefix(SUMMARY_PREFIX)?;
    let (passed, failed) = rest.split_once(" passed, ")?;
    let counts = (|| Some((passed.parse().ok()?, failed.strip_suffix(" failed")?.parse().ok()?)))();
    Some(counts)
}

/// `probe: bench <name> median <m> <unit>, <rest>`.
fn parse_bench(line: &str) -> Option<Result<Bench, String>> {
    let rest = line.strip_prefix(BENCH_PREFIX)?;
    let parsed = (|| {
        let (name, rest) = rest.split_once(" median ")?;
        let (median, rest) = rest.split_once(' ')?;
        let (unit, rest) = rest.split_once(',').unwrap_or((rest, ""));
        let (name, unit) = (name.trim(), unit.trim());
        if name.is_empty() || name.contains(char::is_whitespace) || unit.is_empty() {
            return None;
        }
        let median: f64 = median.parse().ok().filter(|m: &f64| m.is_finite())?;
        Some(Bench { name: name.to_string(), median, unit: unit.to_string(), rest: rest.trim().to_string() })
    })();
    Some(parsed.ok_or_else(|| format!("malformed bench line '{line}'")))
}

/// Reads a probe's report from its console lines (prefixes already removed).
pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> ProbeReport {
    let mut report = ProbeReport::default();
    let mut summaries = 0usize;
    for (index, line) in lines.into_iter().enumerate() {
        let line = line.trim();
        if let Some(check) = parse_check(line) {
            match check {
                Err(problem) => report.problems.push(problem),
                Ok(check) => {
                    let expected = report.checks.len() as u64 + 1;
                    if let Some(first) = report.checks.iter().find(|c| c.name == check.name) {
                        report.problems.push(format!(
                            "check '{}' reported twice (numbers {} and {})",
                            check.name, first.number, check.number
                        ));
                        continue;
                    }
                    if check.number != expected {
                        report
                            .problems
                            .push(format!("check '{}' is numbered {}, expected {expected}", check.name, check.number));
                    }
                    report.checks.push(check);
                }
            }
        } else if let Some(bench) = parse_bench(line) {
            match bench {
                Err(problem) => report.problems.push(problem),
                Ok(bench) if report.benches.iter().any(|b| b.name == bench.name) => {
                    report.problems.push(format!("bench '{}' reported twice", bench.name))
                }
                Ok(bench) => report.benches.push(bench),
            }
        } else if let Some(command_line) = line.strip_prefix(START_PREFIX) {
            if report.command_line.is_some() {
                report.problems.push("the probe started twice".into());
            }
            let command_line = command_line.strip_suffix("')").unwrap_or(command_line);
            report.command_line = Some(command_line.to_string());
        } else if let Some(counts) = parse_summary(line) {
            summaries += 1;
            match counts {
                None => report.problems.push(format!("malformed summary line '{line}'")),
                Some((passed, failed)) if summaries == 1 => {
                    report.summary = Some(Summary { passed, failed, line: index });
                }
                Some(_) => {}
            }
        }
    }

    match summaries {
        0 => report.problems.push("no 'probe: <N> passed, <M> failed' summary".into()),
        1 => {}
        n => {
            report.problems.push(format!("{n} summary lines, expected one"));
            report.summary = None;
        }
    }
    if let Some(s) = report.summary {
        let failed = report.failures().count() as u64;
        let passed = report.checks.len() as u64 - failed;
        if (s.passed, s.failed) != (passed, failed) {
            report.problems.push(format!(
                "the summary says {} passed, {} failed, but the check lines show {passed} passed, {failed} failed",
                s.passed, s.failed
            ));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = "probe: starting (command line 'probe.abi')\n\
        ok 1 - start-info-magic\n\
        probe: hello through the hypercall page\n\
        ok 2 - console-io-write\n\
        not ok 3 - evtchn-send: EVTCHNOP_send returned -38\n\
        probe: 2 passed, 1 failed\n\
        probe: bench null-hypercall median 87441 cycles, min 71638, max 3678896 (100000 calls)\n\
        probe: bench grant-copy-4k median 2.5 us, min 2, max 9 (1000 copies)\n";

    #[test]
    fn a_complete_report() {
        let r = parse(GOOD.lines());
        assert_eq!(r.problems, Vec::<String>::new());
        assert_eq!(r.command_line.as_deref(), Some("probe.abi"));
        assert_eq!(r.checks.len(), 3);
        assert_eq!(r.outcome("start-info-magic"), Some(&Outcome::Pass));
        assert_eq!(r.outcome("evtchn-send"), Some(&Outcome::Fail("EVTCHNOP_send returned -38".into())));
        assert_eq!(r.outcome("nonexistent"), None);
        assert_eq!(r.summary, Some(Summary { passed: 2, failed: 1, line: 5 }));
        assert_eq!(r.failures().map(|c| c.number).collect::<Vec<_>>(), [3]);
        assert_eq!(
            r.benches,
            [
                Bench {
                    name: "null-hypercall".into(),
                    median: 87441.0,
                    unit: "cycles".into(),
                    rest: "min 71638, max 3678896 (100000 calls)".into()
                },
                Bench {
                    name: "grant-copy-4k".into(),
                    median: 2.5,
                    unit: "us".into(),
                    rest: "min 2, max 9 (1000 copies)".into()
                },
            ]
        );
    }

    #[test]
    fn failure_details_may_contain_colons_or_be_empty() {
        let r =
            parse(["not ok 1 - a: got 1: expected 2", "not ok 2 - b", "not ok 3 - c:", "probe: 0 passed, 3 failed"]);
        assert_eq!(r.problems, Vec::<String>::new());
        assert_eq!(r.outcome("a"), Some(&Outcome::Fail("got 1: expected 2".into())));
        assert_eq!(r.outcome("b"), Some(&Outcome::Fail(String::new())));
        assert_eq!(r.outcome("c"), Some(&Outcome::Fail(String::new())));
    }

    #[test]
    fn missing_summary_is_a_problem() {
        let r = parse(["ok 1 - a", "ok 2 - b"]);
        assert_eq!(r.problems, ["no 'probe: <N> passed, <M> failed' summary"]);
        assert_eq!(r.summary, None);
        assert_eq!(r.checks.len(), 2);
    }

    #[test]
    fn inconsistent_or_repeated_summaries_are_problems() {
        let r = parse(["ok 1 - a", "not ok 2 - b: x", "probe: 2 passed, 0 failed"]);
        assert_eq!(r.problems, ["the summary says 2 passed, 0 failed, but the check lines show 1 passed, 1 failed"]);
        let r = parse(["ok 1 - a", "probe: 1 passed, 0 failed", "ok 2 - b", "probe: 2 passed, 0 failed"]);
        assert_eq!(r.problems, ["2 summary lines, expected one"]);
        assert_eq!(r.summary, None);
        let r = parse(["ok 1 - a", "probe: one passed, 0 failed"]);
        assert_eq!(r.problems, ["malformed summary line 'probe: one passed, 0 failed'"]);
        // A check after the summary makes the counts disagree.
        let r = parse(["ok 1 - a", "probe: 1 passed, 0 failed", "ok 2 - late"]);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].starts_with("the summary says 1 passed"), "{:?}", r.problems);
    }

    #[test]
    fn numbering_and_repeats_are_checked() {
        let r = parse(["ok 1 - a", "ok 3 - b", "ok 3 - a", "probe: 2 passed, 0 failed"]);
        assert_eq!(r.problems, ["check 'b' is numbered 3, expected 2", "check 'a' reported twice (numbers 1 and 3)"]);
        assert_eq!(r.checks.len(), 2);
    }

    #[test]
    fn malformed_lines_are_problems() {
        let r = parse([
            "ok x - a",
            "ok 1 a",
            "not ok 1 - : detail",
            "ok 1 - two words",
            "probe: bench x median many cycles, min 1",
            "probe: bench median 5 cycles",
            "probe: 0 passed, 0 failed",
        ]);
        assert_eq!(
            r.problems,
            [
                "malformed check line 'ok x - a'",
                "malformed check line 'ok 1 a'",
                "malformed check line 'not ok 1 - : detail'",
                "malformed check line 'ok 1 - two words'",
                "malformed bench line 'probe: bench x median many cycles, min 1'",
                "malformed bench line 'probe: bench median 5 cycles'",
            ]
        );
        assert!(r.checks.is_empty() && r.benches.is_empty());
    }

    #[test]
    fn unrelated_lines_are_ignored_and_restarts_noticed() {
        let r = parse([
            "",
            "okay then",
            "probe: hello through the hypercall page",
            "  ok 1 - indented  ",
            "probe: 1 passed, 0 failed",
        ]);
        assert_eq!(r.problems, Vec::<String>::new());
        assert_eq!(r.command_line, None);
        let r = parse([
            "probe: starting (command line '')",
            "probe: starting (command line 'x')",
            "probe: 0 passed, 0 failed",
        ]);
        assert_eq!(r.problems, ["the probe started twice"]);
        assert_eq!(r.command_line.as_deref(), Some("x"));
    }

    #[test]
    fn repeated_bench_is_a_problem() {
        let line = "probe: bench a median 1 cycles, min 1, max 1 (1 calls)";
        let r = parse([line, line, "probe: 0 passed, 0 failed"]);
        assert_eq!(r.problems, ["bench 'a' reported twice"]);
        assert_eq!(r.benches.len(), 1);
    }

    proptest! {
        #[test]
        fn parser_never_panics(lines in prop::collection::vec("\\PC{0,60}", 0..8)) {
            let _ = parse(lines.iter().map(String::as_str));
        }

        #[test]
        fn printed_reports_read_back(outcomes in prop::collection::vec(prop::option::of("[ -~]{0,30}"), 0..20)) {
            let mut text = Vec::new();
            for (i, fail) in outcomes.iter().enumerate() {
                text.push(match fail {
                    None => format!("ok {} - check-{i}", i + 1),
                    Some(detail) => format!("not ok {} - check-{i}: {detail}", i + 1),
                });
            }
            let failed = outcomes.iter().filter(|o| o.is_some()).count();
            text.push(format!("probe: {} passed, {failed} failed", outcomes.len() - failed));
            let r = parse(text.iter().map(String::as_str));
            prop_assert_eq!(&r.problems, &Vec::<String>::new());
            prop_assert_eq!(r.checks.len(), outcomes.len());
            for (i, fail) in outcomes.iter().enumerate() {
                let want = match fail {
                    None => Outcome::Pass,
                    Some(d) => Outcome::Fail(d.trim().to_string()),
                };
                prop_assert_eq!(r.outcome(&format!("check-{i}")), Some(&want));
            }
        }
    }
}
