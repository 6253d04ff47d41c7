//! Rotation (pure): the one rule for versioned Secret names, built by `plan` and parsed back by
//! `diff`, and which replaced versions are kept. A versioned Secret is `<base>-<suffix>`, the
//! suffix ten lowercase hex digits derived from the content; every version of a pull secret's
//! Secret shares the base. Must not do I/O or read a clock: `now` is passed in.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;

use crate::model::desired::DesiredSecret;
use crate::model::managed;

/// Hex characters of the suffix of versioned Secret names.
pub const VERSION_SUFFIX_LEN: usize = 10;

/// The versioned name of content `content_hash` (hex) for `base`.
pub fn versioned_name(base: &str, content_hash: &str) -> String {
    let suffix: String = content_hash.chars().take(VERSION_SUFFIX_LEN).collect();
    format!("{base}-{suffix}")
}

/// `base` of a versioned name `base-0123456789`; `None` for any other name.
pub fn version_base(name: &str) -> Option<&str> {
    let (base, suffix) = name.rsplit_once('-')?;
    (suffix.len() == VERSION_SUFFIX_LEN
        && suffix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(base)
}

/// Whether `name` is the Secret `base` itself or one of its versions.
pub fn is_name_or_version_of(name: &str, base: &str) -> bool {
    name == base || version_base(name) == Some(base)
}

/// Replaced versions of one Secret that stay, and when the first of them may go.
#[derive(Debug, Default)]
pub struct Kept<'a> {
    pub names: BTreeSet<&'a str>,
    pub revisit_at: Option<Timestamp>,
}

/// Of `candidates` (this instance's Secrets in the project that nothing wants any more), the
/// older versions of `desired` — same pull secret, same base name — that are kept: newest
/// first, version *i* was replaced when version *i-1* (or `current`, the desired one as it
/// exists) was created; it is kept while fewer than `keep` newer old versions exist and its
/// grace period, counted from that moment, has not run out. Without a clock (`now: None`)
/// nothing is old enough to go, and `keep` alone decides.
pub fn retained_versions<'a>(
    desired: &DesiredSecret,
    current: Option<&Secret>,
    candidates: &[&'a Secret],
    now: Option<Timestamp>,
) -> Kept<'a> {
    let mut kept = Kept::default();
    let (Some(policy), Some(base)) = (desired.retention, version_base(&desired.name)) else {
        return kept;
    };
    let mut older: Vec<(&'a str, Option<Timestamp>)> = candidates
        .iter()
        .filter_map(|secret| {
            let name = secret.metadata.name.as_deref()?;
            let same_pull_secret =
                managed::recorded_pull_secret(secret) == Some(desired.pull_secret.as_str());
            (version_base(name) == Some(base) && same_pull_secret)
                .then(|| (name, created_at(secret)))
        })
        .collect();
    // Newest first; unknown creation times sort as oldest.
    older.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let mut replaced_at = current.and_then(created_at).or(now);
    for (index, (name, created)) in older.into_iter().enumerate() {
        let deadline = replaced_at.and_then(|at| at.checked_add(policy.grace).ok());
        let within_grace = match (now, deadline) {
            (Some(now), Some(deadline)) => now < deadline,
            (None, _) => true,
            (Some(_), None) => false,
        };
        if index < policy.keep && within_grace {
            kept.names.insert(name);
            if let Some(deadline) = deadline {
                kept.revisit_at = Some(kept.revisit_at.map_or(deadline, |d| d.min(deadline)));
            }
        }
        replaced_at = created;
    }
    kept
}

fn created_at(secret: &Secret) -> Option<Timestamp> {
    secret.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_names_round_trip_and_nothing_else_parses() {
        let name = versioned_name("quay-pull", "0123456789abcdef");
        assert_eq!(name, "quay-pull-0123456789");
        assert_eq!(version_base(&name), Some("quay-pull"));
        assert!(is_name_or_version_of(&name, "quay-pull"));
        assert!(is_name_or_version_of("quay-pull", "quay-pull"));
        assert!(!is_name_or_version_of("quay-pull-x", "quay-pull"));
        assert_eq!(version_base("quay-pull-012345678"), None, "nine digits");
        assert_eq!(version_base("quay-pull-0123456789A"), None);
        assert_eq!(version_base("quay-pull-ABCDEF0123"), None, "upper case");
        assert_eq!(version_base("plain"), None);
    }
}
