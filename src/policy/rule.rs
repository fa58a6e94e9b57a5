//! The rules a change is judged by, named once: refusals, audit
//! annotations, Events and metrics all say these ids.

use std::fmt;

use serde::Serialize;

/// Stable rule ids, as they appear in refusals, audit annotations and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    SkipVersion,
    CrossTrack,
    Downgrade,
    FrozenDuringRefresh,
    UnknownVersion,
    Matrix,
    RequireStatefulset,
    /// Every container the policy names is gone from the new template.
    GovernedContainerRemoved,
    /// The refresh record changed by someone other than upgrade-guard.
    RecordIntegrity,
    /// A governed workload relabelled out of its policy.
    LeftPolicy,
    Forced,
}

impl Rule {
    pub const ALL: [Rule; 11] = [
        Rule::SkipVersion,
        Rule::CrossTrack,
        Rule::Downgrade,
        Rule::FrozenDuringRefresh,
        Rule::UnknownVersion,
        Rule::Matrix,
        Rule::RequireStatefulset,
        Rule::GovernedContainerRemoved,
        Rule::RecordIntegrity,
        Rule::LeftPolicy,
        Rule::Forced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::SkipVersion => "skip-version",
            Rule::CrossTrack => "cross-track",
            Rule::Downgrade => "downgrade",
            Rule::FrozenDuringRefresh => "frozen-during-refresh",
            Rule::UnknownVersion => "unknown-version",
            Rule::Matrix => "matrix",
            Rule::RequireStatefulset => "require-statefulset",
            Rule::GovernedContainerRemoved => "governed-container-removed",
            Rule::RecordIntegrity => "record-integrity",
            Rule::LeftPolicy => "left-policy",
            Rule::Forced => "forced",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
