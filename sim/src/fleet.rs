//! Sweeps across machines: a shard of a sweep's seeds (`--shard K/N`), one JSON line per run
//! (`--json`), a JUnit report (`--junit`), and `cargo sim merge`, which checks that the shards'
//! JSON files hold every seed of the sweep exactly once and groups the failures by check.
//!
//! A shard is a deterministic slice: seed `from + i` of every scenario belongs to shard
//! `i mod N + 1`, so N machines given the same `--seeds`/`--from` and shards 1..N run every seed
//! once between them, and any seed's shard is known without running anything.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::str::FromStr;

/// Shard `index` of `count` (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Which shard, 1 to `count`.
    pub index: u64,
    /// How many shards the sweep is cut into.
    pub count: u64,
}

impl Shard {
    /// The whole sweep as one shard.
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    /// Whether seed `seed` of a sweep starting at `from` is this shard's.
    pub fn holds(self, from: u64, seed: u64) -> bool {
        (seed - from) % self.count == self.index - 1
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Shard, String> {
        let wrong = || format!("--shard {text:?}: expected K/N with 1 <= K <= N, such as 2/8");
        let (index, count) = text.split_once('/').ok_or_else(wrong)?;
        let index: u64 = index.trim().parse().map_err(|_| wrong())?;
        let count: u64 = count.trim().parse().map_err(|_| wrong())?;
        if index == 0 || count == 0 || index > count {
            return Err(wrong());
        }
        Ok(Shard { index, count })
    }
}

/// The seeds a sweep was asked to run, so that `merge` can tell whether its shards cover them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepSpec {
    /// The first seed.
    pub from: u64,
    /// Seeds per scenario, in all shards together.
    pub seeds: u64,
    /// The slice this run belongs to.
    pub shard: Shard,
}

/// One run of a sweep, as `--json` writes it (one line each).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The scenario file, as given on the command line.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// The swarm parameters the seed drew, one line.
    pub drawn: String,
    /// `"pass"` or `"fail"`.
    pub result: String,
    /// The check that failed.
    pub check: Option<String>,
    /// What the check saw.
    pub detail: Option<String>,
    /// Wall time of the run, in milliseconds.
    pub wall_ms: u64,
    /// The sweep's seeds and shard; absent for a `--time-budget` sweep, whose seeds are random.
    pub sweep: Option<SweepSpec>,
    /// The mutant switched on, if any.
    pub mutant: Option<String>,
}

impl RunRecord {
    fn failed(&self) -> bool {
        self.result != "pass"
    }

    /// The command that replays this run.
    pub fn replay(&self) -> String {
        let mutant = self
            .mutant
            .as_ref()
            .map_or(String::new(), |m| format!(" --mutant {m}"));
        format!(
            "cargo sim run {} --seed {} --trace trace.jsonl --history history.jsonl{mutant}",
            self.scenario, self.seed
        )
    }
}

/// A JUnit XML report of a sweep: one test case per failing seed, and per scenario one case
/// that stands for all its passing seeds.
pub fn junit(records: &[RunRecord]) -> String {
    let mut by_scenario: BTreeMap<&str, Vec<&RunRecord>> = BTreeMap::new();
    for record in records {
        by_scenario
            .entry(&record.scenario)
            .or_default()
            .push(record);
    }
    let failures = records.iter().filter(|r| r.failed()).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"raftchat-sim sweep\" tests=\"{}\" failures=\"{failures}\">",
        records.len()
    );
    for (scenario, runs) in &by_scenario {
        let failed: Vec<&&RunRecord> = runs.iter().filter(|r| r.failed()).collect();
        let seconds = |runs: &mut dyn Iterator<Item = &&RunRecord>| {
            runs.map(|r| r.wall_ms).sum::<u64>() as f64 / 1000.0
        };
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" time=\"{:.3}\">",
            xml(scenario),
            runs.len(),
            failed.len(),
            seconds(&mut runs.iter())
        );
        for run in &failed {
            let check = run.check.as_deref().unwrap_or("unknown");
            let _ = writeln!(
                out,
                "    <testcase classname=\"{}\" name=\"seed {}\" time=\"{:.3}\">\n      \
                 <failure type=\"{}\" message=\"{}\">{}\n[{}]\nreplay: {}</failure>\n    \
                 </testcase>",
                xml(scenario),
                run.seed,
                run.wall_ms as f64 / 1000.0,
                xml(check),
                xml(check),
                xml(run.detail.as_deref().unwrap_or("")),
                xml(&run.drawn),
                xml(&run.replay()),
            );
        }
        let passed = runs.len() - failed.len();
        if passed > 0 {
            let _ = writeln!(
                out,
                "    <testcase classname=\"{}\" name=\"{passed} seeds passed\" time=\"{:.3}\"/>",
                xml(scenario),
                seconds(&mut runs.iter().filter(|r| !r.failed()))
            );
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// `text` with XML's special characters escaped, and the characters XML 1.0 cannot hold
/// (control characters other than tab and newline) replaced.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// What `merge` found in the shards' records.
#[derive(Debug, Default, PartialEq)]
pub struct Merged {
    /// Runs read.
    pub runs: usize,
    /// Runs of random seeds (`--time-budget`), which have no range to check.
    pub random: usize,
    /// Per scenario, seeds the sweep asked for that no shard ran.
    pub missing: BTreeMap<String, Vec<u64>>,
    /// Per scenario, seeds run more than once.
    pub duplicated: BTreeMap<String, Vec<u64>>,
    /// Shards whose sweeps disagree (other seeds, another shard count), one line each.
    pub inconsistent: Vec<String>,
    /// The failures, grouped by check.
    pub failures: BTreeMap<String, Vec<RunRecord>>,
}

impl Merged {
    /// Whether every seed ran exactly once and none failed.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty()
            && self.duplicated.is_empty()
            && self.inconsistent.is_empty()
            && self.failures.is_empty()
    }

    /// The report `cargo sim merge` prints.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let list = |seeds: &[u64]| {
            let shown: Vec<String> = seeds.iter().take(20).map(u64::to_string).collect();
            let more = seeds.len().saturating_sub(20);
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!("{}{tail}", shown.join(", "))
        };
        for line in &self.inconsistent {
            let _ = writeln!(out, "INCONSISTENT {line}");
        }
        for (scenario, seeds) in &self.missing {
            let _ = writeln!(
                out,
                "MISSING {scenario}: {} seeds: {}",
                seeds.len(),
                list(seeds)
            );
        }
        for (scenario, seeds) in &self.duplicated {
            let _ = writeln!(out, "DUPLICATED {scenario}: {}", list(seeds));
        }
        for (check, runs) in &self.failures {
            let _ = writeln!(out, "{check}: {} failing runs", runs.len());
            for run in runs {
                let detail = run.detail.as_deref().unwrap_or("");
                let _ = writeln!(out, "  {} seed {}: {detail}", run.scenario, run.seed);
                let _ = writeln!(out, "    replay: {}", run.replay());
            }
        }
        let failed: usize = self.failures.values().map(Vec::len).sum();
        let complete = if !(self.missing.is_empty()
            && self.duplicated.is_empty()
            && self.inconsistent.is_empty())
        {
            "INCOMPLETE".to_owned()
        } else if self.random == self.runs {
            "random seeds (no range to check)".to_owned()
        } else if self.random > 0 {
            format!("every seed once ({} of random seeds)", self.random)
        } else {
            "every seed once".to_owned()
        };
        let _ = writeln!(
            out,
            "{} runs, {complete}: {} passed, {failed} failed",
            self.runs,
            self.runs - failed
        );
        out
    }
}

/// Merges the JSON lines of every shard of a sweep (`files`: name and text). Records without a
/// sweep spec (a `--time-budget` sweep) are counted and their failures grouped, but cannot be
/// checked for completeness.
pub fn merge(files: &[(String, String)]) -> Result<Merged, String> {
    let mut merged = Merged::default();
    // Per scenario: the spec every shard must share (but its shard), and the seeds seen.
    let mut specs: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    let mut seen: BTreeMap<String, BTreeMap<u64, usize>> = BTreeMap::new();
    for (name, text) in files {
        for (number, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record: RunRecord = serde_json::from_str(line)
                .map_err(|e| format!("{name}:{}: not a sweep record: {e}", number + 1))?;
            merged.runs += 1;
            merged.random += usize::from(record.sweep.is_none());
            if let Some(spec) = record.sweep {
                let key = (spec.from, spec.seeds, spec.shard.count);
                let first = *specs.entry(record.scenario.clone()).or_insert(key);
                if first != key {
                    merged.inconsistent.push(format!(
                        "{}: {name} ran seeds {}..+{} in {} shards, another file {}..+{} in {}",
                        record.scenario, key.0, key.1, key.2, first.0, first.1, first.2
                    ));
                } else if record.seed < spec.from
                    || record.seed - spec.from >= spec.seeds
                    || !spec.shard.holds(spec.from, record.seed)
                {
                    merged.inconsistent.push(format!(
                        "{}: {name} ran seed {}, which is not shard {}/{}'s",
                        record.scenario, record.seed, spec.shard.index, spec.shard.count
                    ));
                }
                *seen
                    .entry(record.scenario.clone())
                    .or_default()
                    .entry(record.seed)
                    .or_default() += 1;
            }
            if record.failed() {
                let check = record.check.clone().unwrap_or_else(|| "unknown".into());
                merged.failures.entry(check).or_default().push(record);
            }
        }
    }
    merged.inconsistent.dedup();
    for (scenario, (from, seeds, _)) in &specs {
        let counts = &seen[scenario];
        let missing: Vec<u64> = (*from..from.saturating_add(*seeds))
            .filter(|seed| !counts.contains_key(seed))
            .collect();
        if !missing.is_empty() {
            merged.missing.insert(scenario.clone(), missing);
        }
        let duplicated: BTreeSet<u64> = counts
            .iter()
            .filter(|(_, &count)| count > 1)
            .map(|(&seed, _)| seed)
            .collect();
        if !duplicated.is_empty() {
            merged
                .duplicated
                .insert(scenario.clone(), duplicated.into_iter().collect());
        }
    }
    for runs in merged.failures.values_mut() {
        runs.sort_by(|a, b| (&a.scenario, a.seed).cmp(&(&b.scenario, b.seed)));
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(scenario: &str, seed: u64, shard: Shard, check: Option<&str>) -> RunRecord {
        RunRecord {
            scenario: scenario.into(),
            seed,
            drawn: "nodes=3".into(),
            result: if check.is_some() { "fail" } else { "pass" }.into(),
            check: check.map(Into::into),
            detail: check.map(|_| "two leaders in term 4".into()),
            wall_ms: 120,
            sweep: Some(SweepSpec {
                from: 100,
                seeds: 10,
                shard,
            }),
            mutant: None,
        }
    }

    fn lines(records: &[RunRecord]) -> String {
        records
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect()
    }

    /// Shard `index` of `count` of a 10-seed sweep from 100, with the given failing seeds.
    fn shard_file(index: u64, count: u64, failing: &[u64]) -> (String, String) {
        let shard = Shard { index, count };
        let records: Vec<RunRecord> = (100..110)
            .filter(|&seed| shard.holds(100, seed))
            .map(|seed| {
                let check = failing.contains(&seed).then_some("election_safety");
                record("scenarios/a.toml", seed, shard, check)
            })
            .collect();
        (format!("shard-{index}.jsonl"), lines(&records))
    }

    #[test]
    fn shards_parse_and_cut_the_seeds_into_disjoint_covering_slices() {
        assert_eq!("2/8".parse(), Ok(Shard { index: 2, count: 8 }));
        for bad in ["0/3", "4/3", "1/0", "3", "a/b", "", "1/3/4"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        for seed in 50..80 {
            let owners = (1..=4)
                .filter(|&index| Shard { index, count: 4 }.holds(50, seed))
                .count();
            assert_eq!(owners, 1, "seed {seed}");
        }
    }

    #[test]
    fn merge_of_every_shard_is_complete_and_groups_failures_by_check() {
        let files = [
            shard_file(1, 3, &[]),
            shard_file(2, 3, &[104]),
            shard_file(3, 3, &[]),
        ];
        let merged = merge(&files).unwrap();
        assert_eq!(merged.runs, 10);
        assert!(merged.missing.is_empty() && merged.duplicated.is_empty());
        assert!(merged.inconsistent.is_empty(), "{:?}", merged.inconsistent);
        assert_eq!(merged.failures["election_safety"].len(), 1);
        assert_eq!(merged.failures["election_safety"][0].seed, 104);
        assert!(!merged.is_clean());
        let report = merged.report();
        assert!(
            report.contains("every seed once: 9 passed, 1 failed"),
            "{report}"
        );
        assert!(
            report.contains("cargo sim run scenarios/a.toml --seed 104"),
            "{report}"
        );
    }

    #[test]
    fn merge_finds_a_missing_shard_and_a_shard_run_twice() {
        let files = [
            shard_file(1, 3, &[]),
            shard_file(1, 3, &[]),
            shard_file(3, 3, &[]),
        ];
        let merged = merge(&files).unwrap();
        assert_eq!(merged.missing["scenarios/a.toml"], [101, 104, 107]);
        assert_eq!(merged.duplicated["scenarios/a.toml"], [100, 103, 106, 109]);
        assert!(merged.report().contains("INCOMPLETE"));
    }

    #[test]
    fn merge_refuses_garbage_and_reports_shards_of_different_sweeps() {
        let garbage = [("x.jsonl".to_owned(), "{not json\n".to_owned())];
        let error = merge(&garbage).unwrap_err();
        assert!(error.starts_with("x.jsonl:1: "), "{error}");
        let (name, text) = shard_file(2, 2, &[]);
        let other = (name, text.replace("\"count\":2", "\"count\":3"));
        let merged = merge(&[shard_file(1, 2, &[]), other]).unwrap();
        assert!(!merged.inconsistent.is_empty());
    }

    #[test]
    fn junit_has_a_case_per_failing_seed_and_one_for_the_passing_ones() {
        let shard = Shard::WHOLE;
        let mut failing = record("scenarios/<a>.toml", 7, shard, Some("log_matching"));
        failing.detail = Some("entry 3 differs: \"x\" & 'y'\u{1}".into());
        let records = [
            failing,
            record("scenarios/<a>.toml", 8, shard, None),
            record("scenarios/<a>.toml", 9, shard, None),
        ];
        let report = junit(&records);
        assert!(report.contains("tests=\"3\" failures=\"1\""), "{report}");
        assert!(report.contains("name=\"seed 7\""), "{report}");
        assert!(report.contains("name=\"2 seeds passed\""), "{report}");
        assert!(
            report.contains("&quot;x&quot; &amp; &apos;y&apos;\u{fffd}"),
            "{report}"
        );
        assert!(report.contains("scenarios/&lt;a&gt;.toml"), "{report}");
        assert!(!report.contains('\u{1}'));
    }
}
