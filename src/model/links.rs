//! Service-account link editing (pure): how pullsecretd changes a service account's
//! `imagePullSecrets` (pull) and `secrets` (mount) lists — entry by entry, never by replacing
//! a list, so every entry it does not own keeps its place (docs/service-accounts.md).
//!
//! The order is fixed here: entries are removed where they stand, and added at the end of the
//! list in the order of the edit; the edit's order is the plan's (pull secrets in config order,
//! then service accounts by name, then the link kinds as configured). Must not do I/O.

use k8s_openapi::api::core::v1::{LocalObjectReference, ObjectReference, ServiceAccount};

use crate::model::desired::LinkKind;

/// Links to add to and remove from one service account, applied in one read-modify-write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceAccountEdit {
    pub name: String,
    /// Appended at the end of the list, in this order, when not already present.
    pub add: Vec<(LinkKind, String)>,
    /// Removed wherever they appear in that list.
    pub remove: Vec<(LinkKind, String)>,
}

/// The secret names on one list of a service account, in order.
pub fn linked_names(account: &ServiceAccount, kind: LinkKind) -> Vec<&str> {
    match kind {
        LinkKind::Pull => account
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|r| r.name.as_str())
            .collect(),
        LinkKind::Mount => account
            .secrets
            .iter()
            .flatten()
            .filter_map(|r| r.name.as_deref())
            .collect(),
    }
}

/// Applies `edit` to `account`: entries are removed where they are and added at the end; every
/// other entry, its position and every other field stay as they are. Returns `None` when the
/// account already matches (nothing to write). Idempotent, so it can be re-applied to a fresh
/// read after a 409 Conflict.
pub fn edit_service_account(
    account: &ServiceAccount,
    edit: &ServiceAccountEdit,
) -> Option<ServiceAccount> {
    let mut updated = account.clone();
    let mut changed = false;
    for (kind, secret) in &edit.remove {
        changed |= remove_link(&mut updated, *kind, secret);
    }
    for (kind, secret) in &edit.add {
        changed |= add_link(&mut updated, *kind, secret);
    }
    changed.then_some(updated)
}

fn remove_link(account: &mut ServiceAccount, kind: LinkKind, secret: &str) -> bool {
    match kind {
        LinkKind::Pull => {
            let Some(list) = account.image_pull_secrets.as_mut() else {
                return false;
            };
            let before = list.len();
            list.retain(|r| r.name != secret);
            before != list.len()
        }
        LinkKind::Mount => {
            let Some(list) = account.secrets.as_mut() else {
                return false;
            };
            let before = list.len();
            list.retain(|r| r.name.as_deref() != Some(secret));
            before != list.len()
        }
    }
}

pub fn add_link(account: &mut ServiceAccount, kind: LinkKind, secret: &str) -> bool {
    if linked_names(account, kind).contains(&secret) {
        return false;
    }
    match kind {
        LinkKind::Pull => account
            .image_pull_secrets
            .get_or_insert_with(Vec::new)
            .push(LocalObjectReference {
                name: secret.to_string(),
            }),
        LinkKind::Mount => account
            .secrets
            .get_or_insert_with(Vec::new)
            .push(ObjectReference {
                name: Some(secret.to_string()),
                ..ObjectReference::default()
            }),
    }
    true
}
