//! Rotation naming (pure): the one rule for versioned Secret names, built by `plan` and parsed
//! back by `diff`. A versioned Secret is `<base>-<suffix>`, the suffix ten lowercase hex digits
//! derived from the content; every version of a pull secret's Secret shares the base. Must not
//! do I/O.

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
