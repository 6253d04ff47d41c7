//! Rotation (pure): the one rule for versioned Secret names, built by `plan` and parsed back by
//! `diff`, and which replaced versions are kept. A versioned Secret is `<base>-<suffix>`, the
//! suffix ten lowercase hex digits; every version of a pull secret's Secret shares the base.
//! Must not do I/O, read a clock or draw randomness: `now` and the [`VersionKey`] are passed in.
//!
//! Why the suffix is keyed: a name is seen by anyone who may read service accounts, Events or
//! pod specs, far more people than may read the Secret. A suffix taken from a plain hash of the
//! payload let them test password guesses offline (docs/versioned-names.md). The suffix is an
//! HMAC of the content under a key drawn at random when the process starts and never stored or
//! shown, so it says nothing about the credential. The name stays stable without the key being
//! stored: the diff keeps any existing version whose recorded content hash (an annotation, seen
//! only by those who may read the Secret itself) matches, so a restart, another replica or a
//! `once` with another key reuses the version that exists instead of rotating. Names of the
//! older unkeyed scheme have the same shape and are reused the same way.

use std::collections::BTreeSet;
use std::fmt;

use hmac::{Hmac, Mac as _};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use sha2::Sha256;

use crate::model::desired::DesiredSecret;
use crate::model::managed;

/// Hex characters of the suffix of versioned Secret names.
pub const VERSION_SUFFIX_LEN: usize = 10;

/// The key versioned names are derived under: random per process, never stored, never printed.
#[derive(Clone)]
pub struct VersionKey([u8; 32]);

impl VersionKey {
    /// A key from bytes the caller drew at random (at the I/O edge).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for VersionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VersionKey(..)")
    }
}

/// The versioned name of content `content_hash` (hex) for `base`: the suffix is the first
/// [`VERSION_SUFFIX_LEN`] hex digits of HMAC-SHA-256(`key`, `content_hash`).
pub fn versioned_name(base: &str, key: &VersionKey, content_hash: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key.0) else {
        unreachable!("HMAC takes a key of any length")
    };
    mac.update(content_hash.as_bytes());
    let digest = hex::encode(mac.finalize().into_bytes());
    format!("{base}-{}", &digest[..VERSION_SUFFIX_LEN])
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
/// grace period, counted from that moment (read back from a `creationTimestamp`: plus
/// [`TIMESTAMP_RESOLUTION`]), has not run out. Without a clock (`now: None`)
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
    // A creation time read back is rounded down to the second: the replacement may have come
    // up to a second later, and grace never ends early.
    let read_back = |at: Timestamp| at.checked_add(TIMESTAMP_RESOLUTION).ok();
    let mut replaced_at = current.and_then(created_at).and_then(read_back).or(now);
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
        replaced_at = created.and_then(read_back);
    }
    kept
}

/// `creationTimestamp` is in whole seconds (RFC 3339 without fractions, as the API server
/// writes it), so a version created at 12:00:00.9 reads 12:00:00: a grace period counted from it
/// gets this much more, and never ends early.
pub const TIMESTAMP_RESOLUTION: std::time::Duration = std::time::Duration::from_secs(1);

fn created_at(secret: &Secret) -> Option<Timestamp> {
    secret.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_names_round_trip_and_nothing_else_parses() {
        let key = VersionKey::from_bytes([7; 32]);
        let name = versioned_name("quay-pull", &key, "0123456789abcdef");
        assert_eq!(version_base(&name), Some("quay-pull"));
        assert_eq!(
            version_base("quay-pull-0123456789"),
            Some("quay-pull"),
            "the unkeyed scheme"
        );
        assert!(is_name_or_version_of(&name, "quay-pull"));
        assert!(is_name_or_version_of("quay-pull", "quay-pull"));
        assert!(!is_name_or_version_of("quay-pull-x", "quay-pull"));
        assert_eq!(version_base("quay-pull-012345678"), None, "nine digits");
        assert_eq!(version_base("quay-pull-0123456789A"), None);
        assert_eq!(version_base("quay-pull-ABCDEF0123"), None, "upper case");
        assert_eq!(version_base("plain"), None);
    }

    #[test]
    fn a_versioned_name_is_the_keyed_hmac_of_the_content_and_reveals_no_plain_hash() {
        // RFC 4231 test case 2: HMAC-SHA-256("Jefe", "what do ya want for nothing?").
        let mut jefe = [0u8; 32];
        jefe[..4].copy_from_slice(b"Jefe");
        // HMAC pads a short key with zeros to the block size, so "Jefe" and "Jefe\0..." agree.
        let name = versioned_name(
            "p",
            &VersionKey::from_bytes(jefe),
            "what do ya want for nothing?",
        );
        assert_eq!(name, "p-5bdcc146bf");
        let content = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let a = versioned_name("p", &VersionKey::from_bytes([1; 32]), content);
        let b = versioned_name("p", &VersionKey::from_bytes([2; 32]), content);
        assert_ne!(a, b, "another key, another name");
        assert_ne!(
            a,
            format!("p-{}", &content[..VERSION_SUFFIX_LEN]),
            "not the plain hash"
        );
        assert_eq!(
            a,
            versioned_name("p", &VersionKey::from_bytes([1; 32]), content)
        );
        assert_eq!(
            format!("{:?}", VersionKey::from_bytes([1; 32])),
            "VersionKey(..)"
        );
    }
}
