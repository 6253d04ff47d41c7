//! Manifests (pure): desired objects as the Kubernetes API types pullsecretd writes — a Secret
//! with its payload, labels and annotations, and the image-puller RoleBinding with the subjects
//! `oc policy add-role-to-user/-group` would write (docs/openshift.md). Must not do I/O.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::desired::{DesiredRoleBinding, DesiredSecret, PullerSubject};
use crate::model::managed::{self, IMAGE_PULLER_ROLE};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// SHA-256 over a Secret's data map (each key and value, length-prefixed, in key order): what
/// a cache keeps instead of the payload, still enough to see an edited payload.
pub type DataDigest = [u8; 32];

/// The [`DataDigest`] of a Secret's `data`.
pub fn data_digest(data: &BTreeMap<String, ByteString>) -> DataDigest {
    digest_entries(
        data.iter()
            .map(|(key, value)| (key.as_str(), value.0.as_slice())),
    )
}

/// The [`DataDigest`] of data holding exactly `key` → `payload` (what [`secret_manifest`]
/// writes).
pub fn payload_digest(key: &str, payload: &[u8]) -> DataDigest {
    digest_entries([(key, payload)])
}

fn digest_entries<'a>(entries: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> DataDigest {
    use sha2::{Digest as _, Sha256};
    let mut hasher = Sha256::new();
    for (key, value) in entries {
        hasher.update((key.len() as u64).to_le_bytes());
        hasher.update(key.as_bytes());
        hasher.update((value.len() as u64).to_le_bytes());
        hasher.update(value);
    }
    hasher.finalize().into()
}

/// The Secret manifest for `secret` in `namespace`, payload included.
pub fn secret_manifest(namespace: &str, secret: &DesiredSecret) -> Secret {
    let data = BTreeMap::from([(
        secret.secret_type.data_key().to_string(),
        ByteString(secret.payload.expose().to_vec()),
    )]);
    Secret {
        metadata: ObjectMeta {
            name: Some(secret.name.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(secret.labels()),
            annotations: Some(secret.annotations()),
            ..ObjectMeta::default()
        },
        type_: Some(secret.secret_type.type_name().to_string()),
        data: Some(data),
        immutable: secret.immutable.then_some(true),
        ..Secret::default()
    }
}

/// The RoleBinding manifest granting `system:image-puller` in `namespace`.
pub fn role_binding_manifest(namespace: &str, binding: &DesiredRoleBinding) -> RoleBinding {
    RoleBinding {
        metadata: ObjectMeta {
            name: Some(binding.name.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(managed::labels(&binding.instance)),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: RBAC_GROUP.to_string(),
            kind: "ClusterRole".to_string(),
            name: IMAGE_PULLER_ROLE.to_string(),
        },
        subjects: Some(binding.subjects.iter().map(rbac_subject).collect()),
    }
}

/// The subject `oc policy add-role-to-user` / `add-role-to-group` would write (docs/openshift.md).
pub fn rbac_subject(subject: &PullerSubject) -> Subject {
    match subject {
        PullerSubject::ServiceAccount { namespace, name } => Subject {
            kind: "ServiceAccount".to_string(),
            name: name.clone(),
            namespace: Some(namespace.clone()),
            api_group: None,
        },
        PullerSubject::ProjectServiceAccounts { project } => Subject {
            kind: "Group".to_string(),
            name: format!("system:serviceaccounts:{project}"),
            namespace: None,
            api_group: Some(RBAC_GROUP.to_string()),
        },
    }
}
