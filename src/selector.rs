//! Label selectors (pure): the `key=v,key in (a,b),!key` syntax of apimachinery `pkg/labels`
//! (SPEC.md §7), parsed once at config load and matched against namespace labels.

use std::collections::BTreeMap;

/// A parsed label selector. An empty selector matches everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSelector {
    source: String,
}

impl LabelSelector {
    /// The selector as written in the config.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when every requirement holds for `labels`.
    pub fn matches(&self, _labels: &BTreeMap<String, String>) -> bool {
        false
    }
}
