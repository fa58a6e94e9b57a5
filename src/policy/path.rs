//! The upgrade path of one container: rollback, matrix, track, downgrade and
//! "no skipped versions", in that order.

use super::Rule;
use super::{Downgrade, Override, Policy, Step, Track, Version};

#[derive(Debug, Clone, PartialEq)]
pub enum PathOutcome {
    Unchanged,
    Allowed {
        rollback: bool,
        note: Option<String>,
    },
    Refused(Refusal),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub rule: Rule,
    /// `from → to …: next step`, without the workload's name.
    pub reason: String,
    /// Whether `upgradeguard.io/force-to` may override it.
    pub forceable: bool,
}

impl Policy {
    /// Judges `from → to`. `rollback_to` is the version the running refresh
    /// started from, if one is running.
    pub fn judge_path(
        &self,
        from: &Version,
        to: &Version,
        rollback_to: Option<&Version>,
    ) -> PathOutcome {
        if from == to {
            return PathOutcome::Unchanged;
        }
        let refuse = |rule, reason: String, forceable| {
            PathOutcome::Refused(Refusal {
                rule,
                reason,
                forceable,
            })
        };
        if rollback_to == Some(to) {
            if to < from && self.downgrade == Downgrade::Deny {
                return refuse(
                    Rule::Downgrade,
                    format!(
                        "{from} → {to} is a rollback, and {} denies every downgrade",
                        self.describe()
                    ),
                    false,
                );
            }
            return PathOutcome::Allowed {
                rollback: true,
                note: None,
            };
        }
        if let Some(edge) = self.matrix.iter().find(|e| e.matches(from, to)) {
            let note = edge.note.clone();
            if edge.allow {
                return PathOutcome::Allowed {
                    rollback: false,
                    note,
                };
            }
            let why =
                note.unwrap_or_else(|| format!("edge {} → {} is not allowed", edge.from, edge.to));
            return refuse(
                Rule::Matrix,
                format!("{from} → {to} is refused by the upgrade matrix: {why}"),
                true,
            );
        }
        let leaves_track = track_key(self.track, from) != track_key(self.track, to);
        let track = from.spell([from.major(), from.minor(), 0], track_len(self.track));
        // A downgrade is named as one even when it also leaves the track
        // (16.1 → 15.4); forcing it must be allowed on both counts.
        if to < from && self.downgrade != Downgrade::Allow {
            let (why, forceable) = match self.downgrade {
                Downgrade::RollbackOnly => (
                    match rollback_to {
                        Some(start) => format!("only a rollback to {start}, where the running refresh started, is allowed"),
                        None => "only a rollback to the version a running refresh started from is allowed, and none is running".to_string(),
                    },
                    true,
                ),
                _ => (format!("{} denies every downgrade", self.describe()), false),
            };
            let across = if leaves_track {
                format!(" out of release track {track}")
            } else {
                String::new()
            };
            return refuse(
                Rule::Downgrade,
                format!("{from} → {to} is a downgrade{across}: {why}"),
                forceable && (!leaves_track || self.cross_track == Override::Force),
            );
        }
        if leaves_track {
            let stay = match self
                .releases
                .iter()
                .rfind(|r| *r > from && track_key(self.track, r) == track_key(self.track, from))
            {
                Some(newest) => format!("the newest release in track {track} is {newest}"),
                None => format!("stay within {track}"),
            };
            return refuse(
                Rule::CrossTrack,
                format!(
                    "{from} → {to} leaves release track {track}: an in-place refresh stays within it; {stay}"
                ),
                self.cross_track == Override::Force,
            );
        }
        if to < from {
            return PathOutcome::Allowed {
                rollback: false,
                note: None,
            };
        }
        match self.skipped(from, to) {
            Some((skipped, next)) => refuse(
                Rule::SkipVersion,
                format!("{from} → {to} skips {skipped}: upgrade to {next} first"),
                true,
            ),
            None => PathOutcome::Allowed {
                rollback: false,
                note: None,
            },
        }
    }

    /// For an upgrade that passes over a release at `step` granularity: the
    /// skipped releases in words, and the next version to go to instead.
    fn skipped(&self, from: &Version, to: &Version) -> Option<(String, String)> {
        if self.step == Step::None {
            return None;
        }
        let key = |v: &Version| step_key(self.step, v);
        if !self.releases.is_empty() {
            // The newest release of each step-level group strictly between.
            let mut groups: Vec<&Version> = Vec::new();
            for r in self
                .releases
                .iter()
                .filter(|r| key(from) < key(r) && key(r) < key(to))
            {
                match groups.last_mut() {
                    Some(last) if key(last) == key(r) => *last = r,
                    _ => groups.push(r),
                }
            }
            let next = groups.first()?.to_string();
            let names: Vec<String> = groups.iter().map(|v| v.to_string()).collect();
            return Some((list(&names), next));
        }
        // Semver arithmetic: at most one step-level increment at a time.
        let keep = step_len(self.step);
        let spell = |n: [u64; 3]| from.spell(n, keep);
        let (f, t) = (
            [from.major(), from.minor(), from.patch()],
            [to.major(), to.minor(), to.patch()],
        );
        // The skipped run as (first, last, how many), never materialized:
        // a tag such as 1.999999999999 must cost no more than 1.9.
        let run = |lo: Option<u64>, hi: u64, at: usize| -> Option<([u64; 3], [u64; 3], u64)> {
            let lo = lo?;
            (lo < hi).then(|| {
                let mut first = [f[0], f[1], f[2]];
                first[at] = lo;
                first[at + 1..].fill(0);
                let mut last = first;
                last[at] = hi - 1;
                (first, last, hi - lo)
            })
        };
        let one = |v: [u64; 3]| Some((v, v, 1));
        let (first, last, count) = match self.step {
            Step::Major => run(f[0].checked_add(1), t[0], 0)?,
            Step::Minor if t[0] == f[0] => run(f[1].checked_add(1), t[1], 1)?,
            // Across majors: every major in between, and the target's own
            // x.0 unless the target is one.
            Step::Minor => run(
                f[0].checked_add(1),
                if t[1] > 0 { t[0].checked_add(1)? } else { t[0] },
                0,
            )?,
            Step::Patch if t[0] == f[0] && t[1] == f[1] => run(f[2].checked_add(1), t[2], 2)?,
            Step::Patch if t[0] == f[0] && f[1].checked_add(1) == Some(t[1]) && t[2] == 0 => {
                return None;
            }
            Step::Patch if t[0] == f[0] => one([f[0], f[1].checked_add(1)?, 0])?,
            // The next major's x.0.0, as `minor` allows the next major's x.0.
            Step::Patch if f[0].checked_add(1) == Some(t[0]) && t[1] == 0 && t[2] == 0 => {
                return None;
            }
            Step::Patch => one([f[0].checked_add(1)?, 0, 0])?,
            Step::None => return None,
        };
        let (a, z) = (spell(first), spell(last));
        let names = match count {
            1 => a.clone(),
            2 => format!("{a} and {z}"),
            _ => format!("{a} … {z}"),
        };
        Some((names, a))
    }
}

/// `a`, `a and b`, `a, b and c`, or `a … z` for a long run of releases.
fn list(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [a, b] => format!("{a} and {b}"),
        [a, b, c] => format!("{a}, {b} and {c}"),
        [first, .., last] => format!("{first} … {last}"),
    }
}

fn track_key(track: Track, v: &Version) -> (u64, u64) {
    match track {
        Track::Major => (v.major(), 0),
        Track::MajorMinor => (v.major(), v.minor()),
        Track::None => (0, 0),
    }
}

fn track_len(track: Track) -> usize {
    match track {
        Track::Major => 1,
        Track::MajorMinor | Track::None => 2,
    }
}

/// Versions compared at step granularity; `patch` compares whole versions.
fn step_key(step: Step, v: &Version) -> (u64, u64, u64) {
    match step {
        Step::Major => (v.major(), 0, 0),
        Step::Minor => (v.major(), v.minor(), 0),
        Step::Patch | Step::None => (v.major(), v.minor(), v.patch()),
    }
}

fn step_len(step: Step) -> usize {
    match step {
        Step::Major => 1,
        Step::Minor => 2,
        Step::Patch | Step::None => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicySet;

    fn policy(spec: &str) -> Policy {
        let text = format!(
            "apiVersion: upgradeguard.io/v1alpha1\nkind: UpgradePolicy\nmetadata: {{name: t}}\nspec:\n  selector: {{}}\n{spec}"
        );
        PolicySet::parse(&text, "test").unwrap().remove(0)
    }

    fn judge(p: &Policy, from: &str, to: &str) -> PathOutcome {
        p.judge_path(&from.parse().unwrap(), &to.parse().unwrap(), None)
    }

    fn refused(outcome: PathOutcome) -> (Rule, String, bool) {
        match outcome {
            PathOutcome::Refused(r) => (r.rule, r.reason, r.forceable),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn allowed(outcome: &PathOutcome) -> bool {
        matches!(outcome, PathOutcome::Allowed { .. })
    }

    #[test]
    fn semver_arithmetic_table() {
        // (track, step, from, to, expected: None = allowed, Some(rule))
        let table: &[(&str, &str, &str, &str, Option<Rule>)] = &[
            ("major", "minor", "1.7.0", "1.8.0", None),
            ("major", "minor", "1.7.3", "1.8.5", None),
            ("major", "minor", "1.7.0", "1.7.9", None),
            ("major", "minor", "1.7.0", "1.9.0", Some(Rule::SkipVersion)),
            ("major", "minor", "1.9", "1.10", None),
            ("major", "minor", "1.7.0", "2.0.0", Some(Rule::CrossTrack)),
            ("none", "minor", "1.9.0", "2.0.0", None),
            ("none", "minor", "1.9.0", "2.1.0", Some(Rule::SkipVersion)),
            ("none", "minor", "1.9.0", "3.0.0", Some(Rule::SkipVersion)),
            ("none", "major", "v1", "v2", None),
            ("none", "major", "v1", "v3", Some(Rule::SkipVersion)),
            ("none", "major", "v1", "v2.5", None),
            ("major.minor", "none", "3.4.1", "3.4.9", None),
            (
                "major.minor",
                "none",
                "3.4.1",
                "3.5.0",
                Some(Rule::CrossTrack),
            ),
            ("major.minor", "patch", "3.4.1", "3.4.2", None),
            (
                "major.minor",
                "patch",
                "3.4.1",
                "3.4.3",
                Some(Rule::SkipVersion),
            ),
            ("none", "patch", "3.4.9", "3.5.0", None),
            ("none", "patch", "3.4.9", "3.5.1", Some(Rule::SkipVersion)),
            ("none", "patch", "3.4.9", "4.0.0", None),
            ("none", "patch", "3.4.9", "4.0.1", Some(Rule::SkipVersion)),
            ("none", "patch", "3.4.9", "5.0.0", Some(Rule::SkipVersion)),
            ("none", "none", "1.0.0", "9.0.0", None),
            ("major", "minor", "1.8.0", "1.7.0", Some(Rule::Downgrade)),
            ("major", "minor", "1.8.0-rc.1", "1.8.0", None),
            (
                "major",
                "minor",
                "1.8.0",
                "1.8.0-rc.1",
                Some(Rule::Downgrade),
            ),
        ];
        for (track, step, from, to, expect) in table {
            let p = policy(&format!("  track: {track}\n  step: {step}\n"));
            let outcome = judge(&p, from, to);
            match expect {
                None => assert!(
                    allowed(&outcome),
                    "{track}/{step} {from} → {to}: {outcome:?}"
                ),
                Some(rule) => assert_eq!(refused(outcome).0, *rule, "{track}/{step} {from} → {to}"),
            }
        }
    }

    #[test]
    fn skipping_a_protocol_version_names_the_next_step() {
        let p = policy("  track: none\n  step: major\n  releases: [v1, v2, v3]\n");
        let (rule, reason, forceable) = refused(judge(&p, "v1", "v3"));
        assert_eq!(rule, Rule::SkipVersion);
        assert_eq!(reason, "v1 → v3 skips v2: upgrade to v2 first");
        assert!(forceable);
        assert!(allowed(&judge(&p, "v1", "v2")));
        assert!(allowed(&judge(&p, "v2", "v3")));
    }

    #[test]
    fn without_releases_the_next_step_is_computed_in_the_same_spelling() {
        let p = policy("  track: none\n  step: major\n");
        assert_eq!(
            refused(judge(&p, "v1", "v3")).1,
            "v1 → v3 skips v2: upgrade to v2 first"
        );
        let p = policy("  step: minor\n");
        assert_eq!(
            refused(judge(&p, "1.7.0", "1.9.0")).1,
            "1.7.0 → 1.9.0 skips 1.8.x: upgrade to 1.8.x first"
        );
        assert_eq!(
            refused(judge(&p, "1.2.0", "1.9.0")).1,
            "1.2.0 → 1.9.0 skips 1.3.x … 1.8.x: upgrade to 1.3.x first"
        );
    }

    #[test]
    fn releases_make_no_skip_exact() {
        let p = policy(
            "  step: minor\n  releases: [1.7.0, 1.7.1, 1.7.2, 1.8.0, 1.9.0, 1.9.1, 1.10.0]\n",
        );
        assert_eq!(
            refused(judge(&p, "1.7.2", "1.10.0")).1,
            "1.7.2 → 1.10.0 skips 1.8.0 and 1.9.1: upgrade to 1.8.0 first"
        );
        assert!(allowed(&judge(&p, "1.9.0", "1.10.0")));
        assert!(allowed(&judge(&p, "1.7.0", "1.8.0")));
        // 1.8 does not exist in this list, so 1.12 → 1.14 only skips what is listed.
        let sparse = policy("  step: minor\n  releases: [1.12.0, 1.14.0]\n");
        assert!(allowed(&judge(&sparse, "1.12.0", "1.14.0")));
    }

    #[test]
    fn the_matrix_decides_before_the_computed_rules() {
        let p = policy(
            "  step: minor\n  matrix:\n    - {from: \"1.9.*\", to: \"1.11.*\", allow: true, note: tested}\n    - {from: \"1.7.*\", to: \"*\", allow: false, note: \"convert first\"}\n",
        );
        assert_eq!(
            judge(&p, "1.9.2", "1.11.0"),
            PathOutcome::Allowed {
                rollback: false,
                note: Some("tested".into())
            }
        );
        let (rule, reason, forceable) = refused(judge(&p, "1.7.2", "1.8.0"));
        assert_eq!(rule, Rule::Matrix);
        assert_eq!(
            reason,
            "1.7.2 → 1.8.0 is refused by the upgrade matrix: convert first"
        );
        assert!(forceable);
        // A `v` spelling still matches a numeric glob.
        assert!(matches!(
            judge(&p, "v1.9.0", "v1.11.0"),
            PathOutcome::Allowed { note: Some(_), .. }
        ));
    }

    #[test]
    fn a_rollback_to_the_start_of_the_refresh_is_allowed_unless_all_downgrades_are_denied() {
        let (from, to): (Version, Version) = ("1.8.0".parse().unwrap(), "1.7.0".parse().unwrap());
        let p = policy("  downgrade: rollback-only\n");
        assert_eq!(
            p.judge_path(&from, &to, Some(&to)),
            PathOutcome::Allowed {
                rollback: true,
                note: None
            }
        );
        let other: Version = "1.6.0".parse().unwrap();
        let (rule, reason, forceable) = refused(p.judge_path(&from, &to, Some(&other)));
        assert_eq!(rule, Rule::Downgrade);
        assert_eq!(
            reason,
            "1.8.0 → 1.7.0 is a downgrade: only a rollback to 1.6.0, where the running refresh started, is allowed"
        );
        assert!(forceable);
        let deny = policy("  downgrade: deny\n");
        let (rule, _, forceable) = refused(deny.judge_path(&from, &to, Some(&to)));
        assert_eq!((rule, forceable), (Rule::Downgrade, false));
        let allow = policy("  downgrade: allow\n");
        assert!(allowed(&allow.judge_path(&from, &to, None)));
    }

    #[test]
    fn cross_track_is_forceable_only_when_the_policy_says_force() {
        let deny = policy("  track: major.minor\n  releases: [3.4.1, 3.4.3, 3.5.0]\n");
        let (rule, reason, forceable) = refused(judge(&deny, "3.4.1", "3.5.0"));
        assert_eq!(rule, Rule::CrossTrack);
        assert_eq!(
            reason,
            "3.4.1 → 3.5.0 leaves release track 3.4.x: an in-place refresh stays within it; the newest release in track 3.4.x is 3.4.3"
        );
        assert!(!forceable);
        let force = policy("  track: major.minor\n  crossTrack: force\n");
        assert!(refused(judge(&force, "3.4.1", "3.5.0")).2);
    }

    #[test]
    fn a_downgrade_out_of_the_track_is_named_a_downgrade() {
        let deny = policy("  track: major\n");
        assert_eq!(
            refused(judge(&deny, "16.1", "15.4")),
            (
                Rule::Downgrade,
                "16.1 → 15.4 is a downgrade out of release track 16.x: only a rollback to the version a running refresh started from is allowed, and none is running".into(),
                false
            )
        );
        // Forceable only when leaving the track may be forced too.
        let force = policy("  track: major\n  crossTrack: force\n");
        assert!(refused(judge(&force, "16.1", "15.4")).2);
        // Downgrades allowed: leaving the track is still refused.
        let allow = policy("  track: major\n  downgrade: allow\n");
        assert_eq!(refused(judge(&allow, "16.1", "15.4")).0, Rule::CrossTrack);
        assert!(allowed(&judge(&allow, "16.4", "16.1")));
    }

    #[test]
    fn by_default_a_variant_suffix_reads_as_a_pre_release() {
        // Semver: 15.6-bookworm sorts before 15.6. The example postgresql
        // policy's pattern reads only the numbers instead.
        let (rule, reason, _) = refused(judge(&policy(""), "15.6", "15.6-bookworm"));
        assert_eq!(rule, Rule::Downgrade);
        assert!(
            reason.starts_with("15.6 → 15.6-bookworm is a downgrade"),
            "{reason}"
        );
    }

    #[test]
    fn huge_version_numbers_cost_no_more_than_small_ones_and_never_overflow() {
        let minor = policy("  step: minor\n");
        assert_eq!(
            refused(judge(&minor, "1.0.0", "1.999999999999.0")).1,
            "1.0.0 → 1.999999999999.0 skips 1.1.x … 1.999999999998.x: upgrade to 1.1.x first"
        );
        let max = u64::MAX;
        let major = policy("  track: none\n  step: major\n");
        assert!(matches!(
            judge(&major, "1.0.0", &format!("{max}.0.0")),
            PathOutcome::Refused(_)
        ));
        assert!(matches!(
            judge(&major, &format!("{}.0.0", max - 1), &format!("{max}.0.0")),
            PathOutcome::Allowed { .. }
        ));
        let patch = policy("  track: none\n  step: patch\n");
        assert!(matches!(
            judge(&patch, &format!("1.{max}.3"), "2.5.0"),
            PathOutcome::Refused(_)
        ));
        assert_eq!(
            refused(judge(&patch, "3.4.9", "4.0.1")).1,
            "3.4.9 → 4.0.1 skips 4.0.0: upgrade to 4.0.0 first"
        );
        assert!(matches!(
            judge(&patch, &format!("{max}.1.1"), &format!("{max}.1.2")),
            PathOutcome::Allowed { .. }
        ));
    }

    #[test]
    fn same_version_is_unchanged() {
        let p = policy("");
        assert_eq!(judge(&p, "v1.2", "1.2.0"), PathOutcome::Unchanged);
    }
}
