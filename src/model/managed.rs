//! Managed-object rules (pure): the labels and annotations pullsecretd writes, and the proof of
//! ownership every write and delete is checked against. See docs/ownership.md.
//!
//! An object is this instance's only when every mark agrees: the managed-by label, this
//! instance's identity label, the kind of object pullsecretd writes (a Secret of one of the two
//! pull-secret types naming its pull secret and content hash; the image-puller RoleBinding with
//! its roleRef). A label alone proves nothing: anyone can copy it. Objects of another instance
//! are left alone; objects that carry the managed-by label but fail the proof are reported and
//! never changed or deleted. Objects written before instances existed (the managed-by label and
//! no identity label) belong to the default instance, which adopts them by adding its label.
//! Must not do I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::RoleBinding;

/// Label on every object pullsecretd writes.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "pullsecretd";
/// Label naming the pullsecretd instance (config `instance:`) that owns the object.
pub const INSTANCE_LABEL: &str = "pullsecretd.io/instance";
/// The instance of `once`, `plan` and `run` when the config names none; it also owns objects
/// written before instances existed.
pub const DEFAULT_INSTANCE: &str = "default";
/// The instance of `workstation` when its config names none: a developer's logins never take
/// over a Secret a team's pullsecretd manages in the same namespace.
pub const WORKSTATION_INSTANCE: &str = "workstation";
/// SHA-256 of the Secret payload: lets a diff see a change without reading the data.
pub const CONTENT_HASH_ANNOTATION: &str = "pullsecretd.io/content-hash";
/// `registry=version` pairs of the credentials a Secret was rendered from.
pub const SOURCE_VERSION_ANNOTATION: &str = "pullsecretd.io/source-versions";
/// The pull-secret entry of the config a Secret belongs to.
pub const PULL_SECRET_ANNOTATION: &str = "pullsecretd.io/pull-secret";
/// The service accounts a Secret is linked from, comma-separated: when the config stops linking
/// one, this is how the next run finds the account to unlink before the Secret may be deleted.
pub const SERVICE_ACCOUNTS_ANNOTATION: &str = "pullsecretd.io/service-accounts";
/// The most service accounts one pull secret may link (the config refuses more), and so the
/// most a Secret of pullsecretd's ever records: every recorded name costs a list (or, in `run`,
/// a watch), and anyone who may create a Secret can copy the labels, so a Secret recording more
/// than pullsecretd writes, or names no service account can have, fails the proof and its
/// annotation is never read.
pub const MAX_LINKED_ACCOUNTS: usize = 64;
/// The ClusterRole OpenShift grants for pulling images from a project (docs/kubernetes.md).
pub const IMAGE_PULLER_ROLE: &str = "system:image-puller";
/// The one RoleBinding pullsecretd keeps per image-holding project.
pub const IMAGE_PULLER_BINDING: &str = "pullsecretd-image-puller";
/// The Secret types pullsecretd writes; it never touches a Secret of any other type.
pub const PULL_SECRET_TYPES: [&str; 2] =
    ["kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg"];

/// The `registry=version,…` annotation ([`SOURCE_VERSION_ANNOTATION`]) as a map: which
/// credential version of each registry a Secret was rendered from.
pub fn recorded_source_versions(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SOURCE_VERSION_ANNOTATION))
        .into_iter()
        .flat_map(|list| list.split(','))
        .filter_map(|pair| pair.split_once('='))
        .map(|(registry, version)| (registry.trim().to_string(), version.trim().to_string()))
        .collect()
}

/// Labels every object of `instance` carries.
pub fn labels(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (INSTANCE_LABEL.to_string(), instance.to_string()),
    ])
}

/// Whose an object is, as far as pullsecretd is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// This instance's. `legacy`: written before instances existed (no identity label yet); the
    /// default instance adopts it by adding its label, nothing else.
    Ours { legacy: bool },
    /// Another pullsecretd instance's: never touched.
    OtherInstance(String),
    /// Carries the managed-by label but fails the proof (the reason says which mark is
    /// missing): reported, never changed or deleted.
    Unproven(&'static str),
    /// Not pullsecretd's at all.
    Foreign,
}

impl Ownership {
    pub fn is_ours(&self) -> bool {
        matches!(self, Self::Ours { .. })
    }
}

/// Which instance the labels name: `Err(Foreign)` without the managed-by label, `Ok(None)` for
/// a legacy object (managed-by and no identity label).
fn instance_of(labels: Option<&BTreeMap<String, String>>) -> Result<Option<&str>, Ownership> {
    let Some(labels) = labels else {
        return Err(Ownership::Foreign);
    };
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY_VALUE) {
        return Err(Ownership::Foreign);
    }
    Ok(labels.get(INSTANCE_LABEL).map(String::as_str))
}

/// The identity part of the proof, shared by every kind: `Ok(legacy)` when `labels` name
/// `instance` (or, for the default instance, no instance at all).
fn identity(labels: Option<&BTreeMap<String, String>>, instance: &str) -> Result<bool, Ownership> {
    match instance_of(labels)? {
        Some(name) if name == instance => Ok(false),
        Some(name) => Err(Ownership::OtherInstance(name.to_string())),
        None if instance == DEFAULT_INSTANCE => Ok(true),
        None => Err(Ownership::OtherInstance(DEFAULT_INSTANCE.to_string())),
    }
}

/// Whose `secret` is, for `instance`.
pub fn secret_ownership(secret: &Secret, instance: &str) -> Ownership {
    let legacy = match identity(secret.metadata.labels.as_ref(), instance) {
        Ok(legacy) => legacy,
        Err(other) => return other,
    };
    let type_ok = secret
        .type_
        .as_deref()
        .is_some_and(|t| PULL_SECRET_TYPES.contains(&t));
    if !type_ok {
        return Ownership::Unproven("it is not a pull secret (type)");
    }
    let annotations = secret.metadata.annotations.as_ref();
    let has = |key| {
        annotations
            .and_then(|a| a.get(key))
            .is_some_and(|v| !v.is_empty())
    };
    if !has(PULL_SECRET_ANNOTATION) || !has(CONTENT_HASH_ANNOTATION) {
        return Ownership::Unproven(
            "it lacks pullsecretd's pull-secret and content-hash annotations",
        );
    }
    let recorded = annotations.and_then(|a| a.get(SERVICE_ACCOUNTS_ANNOTATION));
    if !recorded.is_none_or(|list| recorded_list_plausible(list)) {
        return Ownership::Unproven(
            "its service-accounts annotation is not one pullsecretd writes (too many or \
             invalid names)",
        );
    }
    Ownership::Ours { legacy }
}

/// At most [`MAX_LINKED_ACCOUNTS`] names, each one a service account could have (a DNS-1123
/// subdomain: at most 253 of `a-z 0-9 . -`). Checked before any name is split out, so a huge
/// annotation costs one length check.
fn recorded_list_plausible(list: &str) -> bool {
    const MAX_NAME: usize = 253;
    if list.len() > MAX_LINKED_ACCOUNTS * (MAX_NAME + 1) {
        return false;
    }
    let names: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    names.len() <= MAX_LINKED_ACCOUNTS
        && names.iter().all(|name| {
            name.len() <= MAX_NAME
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        })
}

/// Whose `binding` is, for `instance`: only pullsecretd's image-puller binding can be ours.
pub fn role_binding_ownership(binding: &RoleBinding, instance: &str) -> Ownership {
    let legacy = match identity(binding.metadata.labels.as_ref(), instance) {
        Ok(legacy) => legacy,
        Err(other) => return other,
    };
    if binding.metadata.name.as_deref() != Some(IMAGE_PULLER_BINDING) {
        return Ownership::Unproven("it is not pullsecretd's image-puller binding (name)");
    }
    let role = &binding.role_ref;
    if role.kind != "ClusterRole" || role.name != IMAGE_PULLER_ROLE {
        return Ownership::Unproven("it does not grant ClusterRole system:image-puller");
    }
    Ownership::Ours { legacy }
}

/// The content hash a managed Secret records (hex SHA-256 of its type and payload).
pub fn recorded_content_hash(secret: &Secret) -> Option<&str> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(CONTENT_HASH_ANNOTATION)
        .map(String::as_str)
}

/// The pull secret (config entry) a managed Secret records.
pub fn recorded_pull_secret(secret: &Secret) -> Option<&str> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(PULL_SECRET_ANNOTATION)
        .map(String::as_str)
}

/// The service accounts a managed Secret says it is linked from
/// ([`SERVICE_ACCOUNTS_ANNOTATION`]), so links the config dropped can still be found. Read only
/// from this instance's own Secrets.
pub fn recorded_service_accounts(secret: &Secret) -> impl Iterator<Item = String> + '_ {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SERVICE_ACCOUNTS_ANNOTATION))
        .into_iter()
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_recording_more_accounts_than_pullsecretd_writes_fails_the_proof() {
        let with_accounts = |list: String| {
            let mut s = secret(
                &[
                    (MANAGED_BY_LABEL, MANAGED_BY_VALUE),
                    (INSTANCE_LABEL, "default"),
                ],
                "kubernetes.io/dockerconfigjson",
                true,
            );
            s.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(SERVICE_ACCOUNTS_ANNOTATION.into(), list);
            secret_ownership(&s, "default")
        };
        let names = |n: usize| {
            (0..n)
                .map(|i| format!("sa-{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert!(with_accounts(names(MAX_LINKED_ACCOUNTS)).is_ours());
        assert!(matches!(
            with_accounts(names(MAX_LINKED_ACCOUNTS + 1)),
            Ownership::Unproven(_)
        ));
        assert!(matches!(
            with_accounts("default,Not_A_Name".into()),
            Ownership::Unproven(_)
        ));
        assert!(matches!(
            with_accounts("x".repeat(1 << 20)),
            Ownership::Unproven(_)
        ));
        assert!(with_accounts(String::new()).is_ours());
    }
    use k8s_openapi::api::rbac::v1::RoleRef;

    fn secret(labels: &[(&str, &str)], type_: &str, annotated: bool) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some("reg".into());
        if !labels.is_empty() {
            s.metadata.labels = Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        }
        s.type_ = Some(type_.into());
        if annotated {
            s.metadata.annotations = Some(BTreeMap::from([
                (PULL_SECRET_ANNOTATION.into(), "reg".into()),
                (CONTENT_HASH_ANNOTATION.into(), "abc".into()),
            ]));
        }
        s
    }

    const JSON: &str = "kubernetes.io/dockerconfigjson";
    const BY: (&str, &str) = (MANAGED_BY_LABEL, MANAGED_BY_VALUE);

    #[test]
    fn a_secret_is_ours_only_when_every_mark_agrees() {
        let ours = secret(&[BY, (INSTANCE_LABEL, "team-a")], JSON, true);
        assert_eq!(
            secret_ownership(&ours, "team-a"),
            Ownership::Ours { legacy: false }
        );
        assert_eq!(
            secret_ownership(&ours, "team-b"),
            Ownership::OtherInstance("team-a".into())
        );
        let cfg = secret(
            &[BY, (INSTANCE_LABEL, "team-a")],
            "kubernetes.io/dockercfg",
            true,
        );
        assert!(secret_ownership(&cfg, "team-a").is_ours());
    }

    #[test]
    fn a_label_alone_proves_nothing() {
        let opaque = secret(&[BY, (INSTANCE_LABEL, "default")], "Opaque", true);
        assert!(matches!(
            secret_ownership(&opaque, "default"),
            Ownership::Unproven(_)
        ));
        let bare = secret(&[BY, (INSTANCE_LABEL, "default")], JSON, false);
        assert!(matches!(
            secret_ownership(&bare, "default"),
            Ownership::Unproven(_)
        ));
        assert_eq!(
            secret_ownership(&secret(&[], JSON, true), "default"),
            Ownership::Foreign
        );
        let other_value = secret(&[(MANAGED_BY_LABEL, "helm")], JSON, true);
        assert_eq!(
            secret_ownership(&other_value, "default"),
            Ownership::Foreign
        );
    }

    #[test]
    fn objects_from_before_instances_belong_to_the_default_instance() {
        let legacy = secret(&[BY], JSON, true);
        assert_eq!(
            secret_ownership(&legacy, DEFAULT_INSTANCE),
            Ownership::Ours { legacy: true }
        );
        assert_eq!(
            secret_ownership(&legacy, WORKSTATION_INSTANCE),
            Ownership::OtherInstance(DEFAULT_INSTANCE.into())
        );
    }

    #[test]
    fn only_the_image_puller_binding_can_be_ours() {
        let mut binding = RoleBinding {
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: IMAGE_PULLER_ROLE.into(),
            },
            ..RoleBinding::default()
        };
        binding.metadata.name = Some(IMAGE_PULLER_BINDING.into());
        binding.metadata.labels = Some(labels("default"));
        assert!(role_binding_ownership(&binding, "default").is_ours());
        binding.role_ref.name = "cluster-admin".into();
        assert!(matches!(
            role_binding_ownership(&binding, "default"),
            Ownership::Unproven(_)
        ));
        binding.role_ref.name = IMAGE_PULLER_ROLE.into();
        binding.metadata.name = Some("admins".into());
        assert!(matches!(
            role_binding_ownership(&binding, "default"),
            Ownership::Unproven(_)
        ));
    }
}
