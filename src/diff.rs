//! Diff stage (pure): one project's desired objects vs what the cluster holds → the fewest
//! actions that make them equal.
//!
//! No I/O and no clock. Actions come out in the only safe order — write Secrets, then edit
//! service accounts (links added and removed together), then delete — so no service account
//! ever references a Secret pullsecretd deleted. A type change (which the API allows only by
//! delete and create) unlinks the Secret first and relinks it after (see [`Recreate`]).
//!
//! Ownership is proven before anything is changed or deleted ([`crate::model::managed`]): only
//! this instance's objects are updated, unlinked or deleted; another instance's are left alone;
//! objects that carry pullsecretd's label but fail the proof are reported, never touched; a
//! Secret pullsecretd did not create is taken over only with `adopt`. A held Secret (its source
//! failed, or it cannot be rendered) keeps every Secret it owns — every version — and their
//! links exactly as they are. Service-account lists are edited entry by entry, never replaced.
//! Equal inputs give no actions: that is the "zero writes in steady state" guarantee.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::jiff::Timestamp;

use crate::config::LinkKind;
pub use crate::model::links::{ServiceAccountEdit, edit_service_account, linked_names};
use crate::model::managed::{self, Ownership};
use crate::model::manifest::{DataDigest, payload_digest, role_binding_manifest};
pub use crate::model::outcome::Held;
use crate::model::rotation;
use crate::plan::{DesiredRoleBinding, DesiredSecret, HeldSecret, Problem, ProjectPlan};

pub use crate::model::managed::recorded_service_accounts;

/// What the cluster holds in one project, as read from watch caches or a list.
#[derive(Clone, Debug, Default)]
pub struct ObservedProject {
    /// Secrets that carry pullsecretd's managed-by label (any instance).
    pub secrets: Vec<Secret>,
    /// Service accounts that the config links (or this instance's Secrets record).
    pub service_accounts: Vec<ServiceAccount>,
    /// RoleBindings that carry pullsecretd's managed-by label (any instance).
    pub role_bindings: Vec<RoleBinding>,
    /// Accounts this instance's Secrets here record but the view did not read (their lists
    /// are unknown, [`crate::cluster::view::unread_accounts`]): a Secret recording one is
    /// never deleted, since one of them may still name it.
    pub unread_accounts: BTreeSet<String>,
    /// Secrets whose data the view keeps only as a digest (the daemon's caches: a payload is
    /// never held twice), by name; their `data` is `None`. A Secret with `data` is compared
    /// byte for byte and needs no entry here.
    pub data_digests: BTreeMap<String, DataDigest>,
}

/// How far a diff may go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Create, update, recreate, link, unlink and delete (`once`, `run`).
    #[default]
    Full,
    /// Create and update this instance's Secrets and add links only: never delete, unlink,
    /// recreate or take over anything (`workstation`).
    AddOnly,
}

/// What the diff needs beyond the desired and observed objects.
#[derive(Clone, Debug)]
pub struct DiffPolicy {
    /// The instance whose objects may be changed.
    pub instance: String,
    pub mode: Mode,
}

impl DiffPolicy {
    pub fn full(instance: &str) -> Self {
        Self {
            instance: instance.to_string(),
            mode: Mode::Full,
        }
    }
}

/// One step toward the desired state, in a project.
#[derive(Clone, Debug)]
pub enum Step {
    CreateSecret(Arc<DesiredSecret>),
    /// Replace data, labels and annotations; `resource_version` guards against lost updates.
    UpdateSecret {
        secret: Arc<DesiredSecret>,
        resource_version: Option<String>,
    },
    /// The API forbids changing `type` and the data of an immutable Secret: unlink, delete,
    /// create, relink.
    RecreateSecret(Recreate),
    EditServiceAccount(ServiceAccountEdit),
    DeleteSecret(Delete),
    CreateRoleBinding(DesiredRoleBinding),
    UpdateRoleBinding {
        binding: DesiredRoleBinding,
        resource_version: Option<String>,
    },
    DeleteRoleBinding(Delete),
}

/// An object to delete, with what identifies the version read: the delete carries them as
/// preconditions, so an object recreated or changed by someone else meanwhile survives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    pub name: String,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl Delete {
    fn of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Self {
        Self {
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
        }
    }
}

/// A Secret whose type (or immutable data) must change. In order: remove it from every list in
/// `linked` (so no account names it while it is missing), delete `current`, create `secret`,
/// add it back to `linked`. A failure stops the sequence where it is: before the delete the
/// links are restored; after it they stay removed until a later pass creates the Secret.
#[derive(Clone, Debug)]
pub struct Recreate {
    pub secret: Arc<DesiredSecret>,
    pub current: Delete,
    /// (service account, list) pairs that reference the Secret now.
    pub linked: Vec<(String, LinkKind)>,
}

impl Step {
    /// The kind of write, for summaries and metrics.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::CreateSecret(_) | Self::CreateRoleBinding(_) => "create",
            Self::UpdateSecret { .. }
            | Self::EditServiceAccount(_)
            | Self::UpdateRoleBinding { .. } => "update",
            Self::RecreateSecret(_) => "recreate",
            Self::DeleteSecret(_) | Self::DeleteRoleBinding(_) => "delete",
        }
    }
}

/// The diff of one project: actions in safe order, plus problems to report.
#[derive(Clone, Debug, Default)]
pub struct ProjectDiff {
    pub steps: Vec<Step>,
    pub problems: Vec<Problem>,
    /// Secrets held (source failed, or not rendered), with what they keep.
    pub held: Vec<Held>,
    /// When a replaced versioned Secret kept for its grace period may be deleted: the project
    /// needs another look then, even if nothing else changes.
    pub revisit_at: Option<Timestamp>,
}

/// Computes the actions for one project without a clock: replaced versioned Secrets are kept
/// (up to `keep`) however old they are. See [`diff_project_at`].
pub fn diff_project(
    project: &str,
    desired: &ProjectPlan,
    observed: &ObservedProject,
    policy: &DiffPolicy,
) -> ProjectDiff {
    diff_project_at(project, desired, observed, policy, None)
}

/// An existing Secret with whose it is.
struct Existing<'a> {
    secret: &'a Secret,
    ownership: Ownership,
    /// The digest of its data when the view holds only that ([`ObservedProject::data_digests`]).
    digest: Option<&'a DataDigest>,
}

/// Computes the actions for one project. `now` (passed in: this stage reads no clock) decides
/// which replaced versioned Secrets are past their grace period.
pub fn diff_project_at(
    project: &str,
    desired: &ProjectPlan,
    observed: &ObservedProject,
    policy: &DiffPolicy,
    now: Option<Timestamp>,
) -> ProjectDiff {
    let mut diff = ProjectDiff::default();
    let existing: BTreeMap<&str, Existing<'_>> = observed
        .secrets
        .iter()
        .filter_map(|s| {
            let name = s.metadata.name.as_deref()?;
            let ownership = managed::secret_ownership(s, &policy.instance);
            Some((
                name,
                Existing {
                    secret: s,
                    ownership,
                    digest: observed.data_digests.get(name),
                },
            ))
        })
        .collect();
    let ours: BTreeSet<&str> = existing
        .iter()
        .filter(|(_, e)| e.ownership.is_ours())
        .map(|(name, _)| *name)
        .collect();
    let reused = reuse_existing_versions(desired, &existing);
    let desired = reused.as_ref().unwrap_or(desired);

    // Phase 1: Secrets. Remember which names may be linked afterwards.
    let mut linkable: BTreeSet<&str> = BTreeSet::new();
    for secret in &desired.secrets {
        let current = existing.get(secret.name.as_str());
        match secret_action(project, secret, current, policy.mode) {
            SecretDecision::Write(action) => {
                diff.steps.push(action);
                linkable.insert(&secret.name);
            }
            SecretDecision::UpToDate => {
                linkable.insert(&secret.name);
            }
            SecretDecision::LeftAlone(problem) => diff.problems.push(problem),
        }
    }

    // Held Secrets keep everything they own; an existing in-place one may still be linked.
    let mut kept: BTreeSet<&str> = BTreeSet::new();
    for held in &desired.held {
        let owned: Vec<&str> = ours
            .iter()
            .copied()
            .filter(|name| held_owns(held, existing[name].secret))
            .collect();
        if ours.contains(held.name.as_str()) {
            linkable.insert(&held.name);
        }
        kept.extend(&owned);
        diff.held.push(Held {
            secret: held.clone(),
            kept: owned.iter().map(|n| (*n).to_string()).collect(),
        });
    }
    report_unproven(project, desired, &existing, &mut diff.problems);

    // Phase 2: service accounts, one edit each; a recreated Secret is unlinked and relinked
    // by its own action, so the edits leave its entries alone.
    let links = Links {
        linkable: &linkable,
        ours: &ours,
        kept: &kept,
        mode: policy.mode,
    };
    let edits = service_account_edits(project, desired, observed, &links, &mut diff.problems);
    attach_recreate_links(&mut diff.steps, observed);
    diff.steps.extend(edits);

    // Phase 3: deletions, after every reference to them is gone.
    if policy.mode == Mode::Full {
        let wanted: BTreeSet<&str> = desired
            .secrets
            .iter()
            .map(|s| s.name.as_str())
            .chain(kept.iter().copied())
            .collect();
        let mut unwanted: BTreeSet<&str> = ours
            .iter()
            .copied()
            .filter(|name| !wanted.contains(name))
            .collect();
        let retention = retained_versions(desired, &existing, &unwanted, now);
        unwanted.retain(|name| !retention.kept.contains(name));
        unwanted.retain(|name| {
            links_known_for_delete(project, existing[name].secret, observed, &mut diff.problems)
        });
        diff.revisit_at = retention.revisit_at;
        diff.steps.extend(
            unwanted
                .into_iter()
                .map(|name| Step::DeleteSecret(Delete::of(&existing[name].secret.metadata))),
        );
    }
    diff.steps.extend(role_binding_actions(
        project,
        desired,
        observed,
        policy,
        &mut diff.problems,
    ));
    diff
}

/// The plan with each versioned Secret that does not exist under its planned name renamed to
/// an existing version of this instance holding exactly that content (same pull secret, same
/// base, same recorded content hash, type and data; immutable), links included; `None` when
/// nothing is renamed. Planned names are keyed per process ([`rotation`]): this is what keeps a
/// version across restarts, replicas and keys, and what adopts names of the older unkeyed
/// scheme without a write.
fn reuse_existing_versions(
    desired: &ProjectPlan,
    existing: &BTreeMap<&str, Existing<'_>>,
) -> Option<ProjectPlan> {
    let mut renames: BTreeMap<&str, String> = BTreeMap::new();
    for secret in &desired.secrets {
        if secret.retention.is_none() || existing.contains_key(secret.name.as_str()) {
            continue;
        }
        if let Some(name) = existing_version_with_content(secret, existing) {
            renames.insert(&secret.name, name.to_string());
        }
    }
    if renames.is_empty() {
        return None;
    }
    let mut plan = desired.clone();
    for secret in &mut plan.secrets {
        if let Some(name) = renames.get(secret.name.as_str()) {
            *secret = Arc::new(DesiredSecret {
                name: name.clone(),
                ..DesiredSecret::clone(secret)
            });
        }
    }
    for link in &mut plan.links {
        if let Some(name) = renames.get(link.secret.as_str()) {
            link.secret.clone_from(name);
        }
    }
    Some(plan)
}

/// The newest existing version of `desired` (by creation time, then name) with its content.
fn existing_version_with_content<'a>(
    desired: &DesiredSecret,
    existing: &BTreeMap<&'a str, Existing<'a>>,
) -> Option<&'a str> {
    let base = rotation::version_base(&desired.name)?;
    existing
        .iter()
        .filter(|(name, current)| {
            let secret = current.secret;
            current.ownership.is_ours()
                && rotation::version_base(name) == Some(base)
                && managed::recorded_pull_secret(secret) == Some(desired.pull_secret.as_str())
                && managed::recorded_content_hash(secret) == Some(desired.content_hash.as_str())
                && secret.type_.as_deref() == Some(desired.secret_type.type_name())
                && secret.immutable == Some(true)
                && secret_data_matches(desired, secret, current.digest)
        })
        .max_by(|a, b| {
            let created = |e: &Existing<'_>| e.secret.metadata.creation_timestamp.clone();
            created(a.1).cmp(&created(b.1)).then_with(|| b.0.cmp(a.0))
        })
        .map(|(name, _)| *name)
}

/// Whether `secret` (this instance's) belongs to `held`: it records the same pull secret and
/// is the held Secret itself or one of its versions.
fn held_owns(held: &HeldSecret, secret: &Secret) -> bool {
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    managed::recorded_pull_secret(secret) == Some(held.pull_secret.as_str())
        && rotation::is_name_or_version_of(name, &held.name)
}

/// Objects with pullsecretd's label that fail the ownership proof are reported (never touched).
/// A desired Secret of the same name has been reported already.
fn report_unproven(
    project: &str,
    desired: &ProjectPlan,
    existing: &BTreeMap<&str, Existing<'_>>,
    problems: &mut Vec<Problem>,
) {
    for (name, current) in existing {
        if let Ownership::Unproven(why) = current.ownership
            && !desired.secrets.iter().any(|s| s.name == *name)
        {
            problems.push(Problem {
                reason: "UnprovenOwnership",
                message: format!(
                    "project {project}: secret {name} carries pullsecretd's label but {why}; \
                     left untouched"
                ),
            });
        }
    }
}

/// Fills in each recreate's `linked`: the lists of the observed accounts that name it now.
fn attach_recreate_links(actions: &mut [Step], observed: &ObservedProject) {
    for action in actions {
        let Step::RecreateSecret(recreate) = action else {
            continue;
        };
        for account in &observed.service_accounts {
            let Some(account_name) = account.metadata.name.as_deref() else {
                continue;
            };
            for kind in [LinkKind::Pull, LinkKind::Mount] {
                if linked_names(account, kind).contains(&recreate.secret.name.as_str()) {
                    recreate.linked.push((account_name.to_string(), kind));
                }
            }
        }
    }
}

/// Replaced versioned Secrets still inside their grace period (unlinked, not yet deleted), and
/// when the first of them may go.
#[derive(Default)]
struct Retention<'a> {
    kept: BTreeSet<&'a str>,
    revisit_at: Option<Timestamp>,
}

/// Whether `secret` may be deleted as far as unread accounts go: `false` (with a problem) when
/// it records an account whose lists the view did not read.
fn links_known_for_delete(
    project: &str,
    secret: &Secret,
    observed: &ObservedProject,
    problems: &mut Vec<Problem>,
) -> bool {
    let unread: Vec<String> = managed::recorded_service_accounts(secret)
        .filter(|name| observed.unread_accounts.contains(name))
        .collect();
    if unread.is_empty() {
        return true;
    }
    problems.push(Problem {
        reason: "UnreadServiceAccounts",
        message: format!(
            "project {project}: secret {} records service accounts {} whose links pullsecretd \
             does not read here (the project is not selected, or they were recorded by another \
             run); not deleted, so no account is left naming a missing Secret (select the \
             project again, or unlink and delete it by hand)",
            secret.metadata.name.as_deref().unwrap_or_default(),
            unread.join(", ")
        ),
    });
    false
}

/// The older versions of each desired versioned Secret that are still kept
/// ([`rotation::retained_versions`]).
fn retained_versions<'a>(
    desired: &ProjectPlan,
    existing: &BTreeMap<&'a str, Existing<'a>>,
    unwanted: &BTreeSet<&'a str>,
    now: Option<Timestamp>,
) -> Retention<'a> {
    let mut retention = Retention::default();
    let candidates: Vec<&'a Secret> = unwanted.iter().map(|n| existing[n].secret).collect();
    for secret in &desired.secrets {
        let current = existing.get(secret.name.as_str()).map(|e| e.secret);
        let kept = rotation::retained_versions(secret, current, &candidates, now);
        retention.kept.extend(kept.names);
        retention.revisit_at = match (retention.revisit_at, kept.revisit_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    retention
}

/// How long from `now` until `at`; zero when it has passed.
pub fn until(now: Timestamp, at: Timestamp) -> Duration {
    let seconds = at.as_millisecond().saturating_sub(now.as_millisecond());
    Duration::from_millis(u64::try_from(seconds).unwrap_or(0))
}

enum SecretDecision {
    Write(Step),
    UpToDate,
    /// Not written (someone else's, or a change this mode may not make): the problem says why.
    LeftAlone(Problem),
}

fn secret_action(
    project: &str,
    desired: &Arc<DesiredSecret>,
    current: Option<&Existing<'_>>,
    mode: Mode,
) -> SecretDecision {
    let Some(current) = current else {
        return SecretDecision::Write(Step::CreateSecret(Arc::clone(desired)));
    };
    let adopt = desired.adopt && mode == Mode::Full;
    match &current.ownership {
        Ownership::Ours { .. } => {}
        Ownership::OtherInstance(instance) => {
            return SecretDecision::LeftAlone(Problem {
                reason: "OwnedByAnotherInstance",
                message: format!(
                    "project {project}: secret {} belongs to pullsecretd instance {instance}; \
                     left untouched (give the two configs different names, or let one of them \
                     write it)",
                    desired.name
                ),
            });
        }
        Ownership::Unproven(_) | Ownership::Foreign if adopt => {}
        Ownership::Unproven(why) => {
            return SecretDecision::LeftAlone(Problem {
                reason: "UnprovenOwnership",
                message: format!(
                    "project {project}: secret {} carries pullsecretd's label but {why}; left \
                     untouched (set adopt: true on pull secret {} to take it over)",
                    desired.name, desired.pull_secret
                ),
            });
        }
        Ownership::Foreign => return SecretDecision::LeftAlone(foreign_secret(project, desired)),
    }
    let digest = current.digest;
    let current = current.secret;
    let type_matches = current.type_.as_deref() == Some(desired.secret_type.type_name());
    let data_matches = secret_data_matches(desired, current, digest);
    let frozen = current.immutable == Some(true);
    if !type_matches || (frozen && !data_matches) || frozen != desired.immutable {
        if mode == Mode::AddOnly {
            return SecretDecision::LeftAlone(Problem {
                reason: "RecreateSkipped",
                message: format!(
                    "project {project}: secret {} must be recreated (its type or immutable data \
                     changes), which this mode never does; left as it is (run `pullsecretd \
                     once` to replace it)",
                    desired.name
                ),
            });
        }
        return SecretDecision::Write(Step::RecreateSecret(Recreate {
            secret: Arc::clone(desired),
            current: Delete::of(&current.metadata),
            linked: Vec::new(),
        }));
    }
    if data_matches && metadata_matches(desired, current) {
        return SecretDecision::UpToDate;
    }
    SecretDecision::Write(Step::UpdateSecret {
        secret: Arc::clone(desired),
        resource_version: current.metadata.resource_version.clone(),
    })
}

/// The problem reported for a same-name Secret pullsecretd did not create.
pub fn foreign_secret(project: &str, desired: &DesiredSecret) -> Problem {
    Problem {
        reason: "ForeignSecret",
        message: format!(
            "project {project}: secret {} exists and was not created by pullsecretd; left \
             untouched (set adopt: true on pull secret {} to take it over)",
            desired.name, desired.pull_secret
        ),
    }
}

/// Exactly one data key, holding exactly the desired payload: compared byte for byte, or (a
/// view that keeps only digests) digest for digest, which covers the keys as well.
fn secret_data_matches(
    desired: &DesiredSecret,
    current: &Secret,
    digest: Option<&DataDigest>,
) -> bool {
    match (&current.data, digest) {
        (Some(data), _) => {
            data.len() == 1
                && data
                    .get(desired.secret_type.data_key())
                    .is_some_and(|value| value.0 == desired.payload.expose())
        }
        (None, Some(digest)) => {
            *digest == payload_digest(desired.secret_type.data_key(), desired.payload.expose())
        }
        (None, None) => false,
    }
}

/// Every label and annotation pullsecretd sets is present with its value; others may exist.
fn metadata_matches(desired: &DesiredSecret, current: &Secret) -> bool {
    contains_all(&current.metadata.labels, &desired.labels())
        && contains_all(&current.metadata.annotations, &desired.annotations())
}

fn contains_all(
    actual: &Option<BTreeMap<String, String>>,
    wanted: &BTreeMap<String, String>,
) -> bool {
    let actual = actual.as_ref();
    wanted
        .iter()
        .all(|(k, v)| actual.and_then(|a| a.get(k)) == Some(v))
}

/// What the service-account edits may touch.
struct Links<'a> {
    /// Secrets that exist (or are being written) and may be linked.
    linkable: &'a BTreeSet<&'a str>,
    /// This instance's Secrets: only links to these may be removed.
    ours: &'a BTreeSet<&'a str>,
    /// Secrets of held pull secrets: their links stay as they are.
    kept: &'a BTreeSet<&'a str>,
    mode: Mode,
}

fn service_account_edits(
    project: &str,
    desired: &ProjectPlan,
    observed: &ObservedProject,
    links: &Links<'_>,
    problems: &mut Vec<Problem>,
) -> Vec<Step> {
    let mut wanted_by_account: BTreeMap<&str, Vec<(LinkKind, String)>> = BTreeMap::new();
    for link in &desired.links {
        wanted_by_account
            .entry(link.service_account.as_str())
            .or_default()
            .push((link.kind, link.secret.clone()));
    }
    let accounts: BTreeMap<&str, &ServiceAccount> = observed
        .service_accounts
        .iter()
        .filter_map(|sa| Some((sa.metadata.name.as_deref()?, sa)))
        .collect();

    for name in wanted_by_account.keys() {
        if !accounts.contains_key(name) {
            problems.push(Problem {
                reason: "ServiceAccountMissing",
                message: format!(
                    "project {project}: service account {name} does not exist yet; \
                     it is linked when it appears"
                ),
            });
        }
    }

    let mut actions = Vec::new();
    for (name, account) in accounts {
        let wanted = wanted_by_account
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let edit = account_edit(name, account, wanted, links);
        if !edit.add.is_empty() || !edit.remove.is_empty() {
            actions.push(Step::EditServiceAccount(edit));
        }
    }
    actions
}

/// Adds wanted links to Secrets that exist (or are being written) and removes links to this
/// instance's Secrets that are no longer wanted on this list. Links to held Secrets, to other
/// instances' and to foreign Secrets stay.
fn account_edit(
    name: &str,
    account: &ServiceAccount,
    wanted: &[(LinkKind, String)],
    links: &Links<'_>,
) -> ServiceAccountEdit {
    let mut edit = ServiceAccountEdit {
        name: name.to_string(),
        ..ServiceAccountEdit::default()
    };
    for (kind, secret) in wanted {
        let present = linked_names(account, *kind).contains(&secret.as_str());
        if !present && links.linkable.contains(secret.as_str()) {
            edit.add.push((*kind, secret.clone()));
        }
    }
    if links.mode == Mode::AddOnly {
        return edit;
    }
    for kind in [LinkKind::Pull, LinkKind::Mount] {
        for secret in linked_names(account, kind) {
            let still_wanted = wanted.iter().any(|(k, s)| *k == kind && s == secret);
            let ours = links.ours.contains(secret);
            if ours && !still_wanted && !links.kept.contains(secret) {
                edit.remove.push((kind, secret.to_string()));
            }
        }
    }
    edit
}

fn role_binding_actions(
    project: &str,
    desired: &ProjectPlan,
    observed: &ObservedProject,
    policy: &DiffPolicy,
    problems: &mut Vec<Problem>,
) -> Vec<Step> {
    let existing: BTreeMap<&str, (&RoleBinding, Ownership)> = observed
        .role_bindings
        .iter()
        .filter_map(|b| {
            let ownership = managed::role_binding_ownership(b, &policy.instance);
            Some((b.metadata.name.as_deref()?, (b, ownership)))
        })
        .collect();
    let mut actions = Vec::new();
    for binding in &desired.role_bindings {
        let Some((current, ownership)) = existing.get(binding.name.as_str()) else {
            actions.push(Step::CreateRoleBinding(binding.clone()));
            continue;
        };
        if !ownership.is_ours() {
            let whose = match ownership {
                Ownership::OtherInstance(instance) => {
                    format!("belongs to pullsecretd instance {instance}")
                }
                _ => "exists and was not created by pullsecretd".to_string(),
            };
            problems.push(Problem {
                reason: "ForeignRoleBinding",
                message: format!(
                    "project {project}: rolebinding {} {whose}; left untouched",
                    binding.name
                ),
            });
            continue;
        }
        let wanted = role_binding_manifest(project, binding);
        if current.role_ref != wanted.role_ref {
            if policy.mode == Mode::AddOnly {
                continue;
            }
            // roleRef is immutable: replace the binding.
            actions.push(Step::DeleteRoleBinding(Delete::of(&current.metadata)));
            actions.push(Step::CreateRoleBinding(binding.clone()));
        } else if current.subjects != wanted.subjects
            || !contains_all(
                &current.metadata.labels,
                &wanted.metadata.labels.unwrap_or_default(),
            )
        {
            actions.push(Step::UpdateRoleBinding {
                binding: binding.clone(),
                resource_version: current.metadata.resource_version.clone(),
            });
        }
    }
    if policy.mode == Mode::AddOnly {
        return actions;
    }
    let wanted: BTreeSet<&str> = desired
        .role_bindings
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    for (name, (current, ownership)) in existing {
        if ownership.is_ours() && !wanted.contains(name) {
            actions.push(Step::DeleteRoleBinding(Delete::of(&current.metadata)));
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::{
        Heal, Layout, ProjectSelection, PullSecretConfig, RegistryConfig, Rotation, SecretType,
        SourceConfig,
    };
    use crate::model::credential::{Credential, RegistryKey};
    use crate::model::links::add_link;
    use crate::model::managed::PULL_SECRET_ANNOTATION;
    use crate::model::manifest::secret_manifest;
    use crate::plan::HoldReason;
    use crate::plan::{self, NamespaceInfo, PlanInputs};
    use k8s_openapi::api::core::v1::{LocalObjectReference, ObjectReference};

    fn policy() -> DiffPolicy {
        DiffPolicy::full("default")
    }
    use crate::model::credential::Resolved;

    fn pull_secret(name: &str, registry: &str) -> PullSecretConfig {
        PullSecretConfig {
            name: name.into(),
            secret_type: SecretType::DockerConfigJson,
            registries: vec![registry.into()],
            layout: Layout::Combined,
            projects: ProjectSelection {
                names: vec!["a".into()],
                ..ProjectSelection::default()
            },
            links: BTreeMap::from([
                ("default".into(), vec![LinkKind::Pull]),
                ("builder".into(), vec![LinkKind::Mount]),
            ]),
            rotation: Rotation::default(),
            adopt: false,
            heal: Heal::default(),
        }
    }

    fn config(pull_secrets: Vec<PullSecretConfig>) -> Config {
        let registry = RegistryConfig {
            name: "quay".into(),
            server: RegistryKey::from_docker("quay.io").expect("valid"),
            from: SourceConfig::Helper { name: "x".into() },
            verify: None,
        };
        Config {
            instance: None,
            vault: None,
            credential_provider: Default::default(),
            registries: BTreeMap::from([("quay".into(), registry)]),
            pull_secrets,
            image_pullers: vec![],
            namespaces: None,
            shards: None,
        }
    }

    fn desired(config: &Config, password: &str) -> ProjectPlan {
        let credential = Credential::with_password(
            RegistryKey::from_docker("quay.io").expect("valid"),
            "robot",
            password,
        );
        let credentials = BTreeMap::from([(
            "quay".to_string(),
            Resolved {
                credential,
                version: password.into(),
                expires_at: None,
                lease: None,
            },
        )]);
        let key = plan::VersionKey::from_bytes([0; 32]);
        let state = plan::plan(
            PlanInputs {
                config,
                credentials: &credentials,
                namespaces: &[NamespaceInfo::named("a")],
                openshift: None,
            },
            &plan::prepare_secrets(config, &credentials, &key),
        );
        state.projects.get("a").cloned().unwrap_or_default()
    }

    fn account(name: &str, pull: &[&str], mount: &[&str]) -> ServiceAccount {
        let mut sa = ServiceAccount::default();
        sa.metadata.name = Some(name.into());
        sa.metadata.resource_version = Some("7".into());
        if !pull.is_empty() {
            sa.image_pull_secrets = Some(
                pull.iter()
                    .map(|n| LocalObjectReference { name: (*n).into() })
                    .collect(),
            );
        }
        if !mount.is_empty() {
            sa.secrets = Some(
                mount
                    .iter()
                    .map(|n| ObjectReference {
                        name: Some((*n).into()),
                        ..ObjectReference::default()
                    })
                    .collect(),
            );
        }
        sa
    }

    /// The cluster after a perfect apply of `plan`, plus OpenShift's own references.
    fn converged(plan: &ProjectPlan) -> ObservedProject {
        let secrets = plan
            .secrets
            .iter()
            .map(|s| secret_manifest("a", s))
            .collect();
        let mut default = account(
            "default",
            &["default-dockercfg-abcde"],
            &["default-dockercfg-abcde"],
        );
        let mut builder = account(
            "builder",
            &["builder-dockercfg-xyz12"],
            &["builder-dockercfg-xyz12"],
        );
        for link in &plan.links {
            let sa = if link.service_account == "default" {
                &mut default
            } else {
                &mut builder
            };
            add_link(sa, link.kind, &link.secret);
        }
        ObservedProject {
            secrets,
            service_accounts: vec![default, builder],
            role_bindings: vec![],
            unread_accounts: BTreeSet::new(),
            data_digests: BTreeMap::new(),
        }
    }

    fn names(actions: &[Step]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Step::CreateSecret(s) => format!("create {}", s.name),
                Step::UpdateSecret { secret, .. } => format!("update {}", secret.name),
                Step::RecreateSecret(r) => format!("recreate {} {:?}", r.secret.name, r.linked),
                Step::EditServiceAccount(e) => {
                    format!("edit {} +{:?} -{:?}", e.name, e.add, e.remove)
                }
                Step::DeleteSecret(delete) => format!("delete {}", delete.name),
                Step::CreateRoleBinding(b) => format!("create rb {}", b.name),
                Step::UpdateRoleBinding { binding, .. } => format!("update rb {}", binding.name),
                Step::DeleteRoleBinding(delete) => format!("delete rb {}", delete.name),
            })
            .collect()
    }

    #[test]
    fn from_empty_creates_then_links_in_that_order() {
        let config = config(vec![pull_secret("quay-pull", "quay")]);
        let plan = desired(&config, "pw1");
        let observed = ObservedProject {
            service_accounts: vec![account("default", &["default-dockercfg-abcde"], &[])],
            ..ObservedProject::default()
        };
        let diff = diff_project("a", &plan, &observed, &policy());
        assert_eq!(
            names(&diff.steps),
            [
                "create quay-pull",
                "edit default +[(Pull, \"quay-pull\")] -[]"
            ]
        );
        assert_eq!(
            diff.problems.len(),
            1,
            "builder is missing: {:?}",
            diff.problems
        );
        assert_eq!(diff.problems[0].reason, "ServiceAccountMissing");
    }

    #[test]
    fn converged_project_needs_no_action() {
        let config = config(vec![pull_secret("quay-pull", "quay")]);
        let plan = desired(&config, "pw1");
        let diff = diff_project("a", &plan, &converged(&plan), &policy());
        assert!(diff.steps.is_empty(), "{:?}", names(&diff.steps));
        assert!(diff.problems.is_empty());
    }

    #[test]
    fn rotation_in_place_updates_data_and_leaves_links() {
        let config = config(vec![pull_secret("quay-pull", "quay")]);
        let observed = converged(&desired(&config, "pw1"));
        let diff = diff_project("a", &desired(&config, "pw2"), &observed, &policy());
        assert_eq!(names(&diff.steps), ["update quay-pull"]);
        let Step::UpdateSecret {
            resource_version, ..
        } = &diff.steps[0]
        else {
            panic!("expected an update");
        };
        assert_eq!(
            resource_version,
            &observed.secrets[0].metadata.resource_version
        );
    }

    #[test]
    fn edited_data_with_an_intact_hash_annotation_is_still_repaired() {
        let config = config(vec![pull_secret("quay-pull", "quay")]);
        let plan = desired(&config, "pw1");
        let mut observed = converged(&plan);
        if let Some(data) = observed.secrets[0].data.as_mut() {
            data.insert(
                ".dockerconfigjson".into(),
                k8s_openapi::ByteString(b"{}".to_vec()),
            );
        }
        assert_eq!(
            names(&diff_project("a", &plan, &observed, &policy()).steps),
            ["update quay-pull"]
        );
    }

    /// A cache keeps data only as a digest: the same content is up to date, an edited payload
    /// or an extra key is repaired, and no digest at all is no match.
    #[test]
    fn data_held_as_a_digest_is_compared_by_digest() {
        let config = config(vec![pull_secret("quay-pull", "quay")]);
        let plan = desired(&config, "pw1");
        let as_cached = |observed: &ObservedProject| {
            let mut cached = observed.clone();
            for secret in &mut cached.secrets {
                if let Some(data) = secret.data.take() {
                    let name = secret.metadata.name.clone().unwrap_or_default();
                    cached
                        .data_digests
                        .insert(name, crate::model::manifest::data_digest(&data));
                }
            }
            cached
        };
        let steps = |observed: &ObservedProject| {
            names(&diff_project("a", &plan, observed, &policy()).steps)
        };
        let observed = converged(&plan);
        assert!(steps(&as_cached(&observed)).is_empty());

        let mut edited = observed.clone();
        if let Some(data) = edited.secrets[0].data.as_mut() {
            data.insert(
                ".dockerconfigjson".into(),
                k8s_openapi::ByteString(b"{}".to_vec()),
            );
        }
        assert_eq!(steps(&as_cached(&edited)), ["update quay-pull"]);

        let mut extra_key = observed.clone();
        if let Some(data) = extra_key.secrets[0].data.as_mut() {
            data.insert("extra".into(), k8s_openapi::ByteString(b"x".to_vec()));
        }
        assert_eq!(steps(&as_cached(&extra_key)), ["update quay-pull"]);

        let mut no_digest = as_cached(&observed);
        no_digest.data_digests.clear();
        assert_eq!(steps(&no_digest), ["update quay-pull"]);
    }

    #[test]
    fn type_change_recreates() {
        let mut legacy = pull_secret("quay-pull", "quay");
        legacy.secret_type = SecretType::Dockercfg;
        let observed = converged(&desired(&config(vec![legacy]), "pw1"));
        let config = config(vec![pull_secret("quay-pull", "quay")]);
        let diff = diff_project("a", &desired(&config, "pw1"), &observed, &policy());
        // Every list naming it now is unlinked before the delete and relinked after the create.
        assert_eq!(
            names(&diff.steps),
            ["recreate quay-pull [(\"default\", Pull), (\"builder\", Mount)]"]
        );
        let Step::RecreateSecret(recreate) = &diff.steps[0] else {
            panic!("a recreate");
        };
        assert_eq!(
            recreate.current.uid, observed.secrets[0].metadata.uid,
            "the delete is guarded by the uid read"
        );
    }

    #[test]
    fn foreign_secret_is_reported_not_touched_or_linked_unless_adopted() {
        let config = config(vec![pull_secret("quay-pull", "quay")]);
        let plan = desired(&config, "pw1");
        let mut foreign = secret_manifest("a", &plan.secrets[0]);
        foreign.metadata.labels = None;
        let observed = ObservedProject {
            secrets: vec![foreign.clone()],
            service_accounts: vec![account("default", &[], &[]), account("builder", &[], &[])],
            role_bindings: vec![],
            unread_accounts: BTreeSet::new(),
            data_digests: BTreeMap::new(),
        };
        let diff = diff_project("a", &plan, &observed, &policy());
        assert!(diff.steps.is_empty(), "{:?}", names(&diff.steps));
        assert_eq!(diff.problems[0].reason, "ForeignSecret");

        let mut adopting = pull_secret("quay-pull", "quay");
        adopting.adopt = true;
        let config = self::config(vec![adopting]);
        let diff = diff_project("a", &desired(&config, "pw1"), &observed, &policy());
        assert_eq!(names(&diff.steps)[0], "update quay-pull");
        assert_eq!(diff.steps.len(), 3, "{:?}", names(&diff.steps));
    }

    #[test]
    fn dropped_pull_secret_is_unlinked_before_it_is_deleted_and_others_survive() {
        let old = config(vec![pull_secret("quay-pull", "quay")]);
        let mut observed = converged(&desired(&old, "pw1"));
        // A user's own secret, linked after ours.
        add_link(&mut observed.service_accounts[0], LinkKind::Pull, "my-own");
        let now = config(vec![]);
        let diff = diff_project("a", &desired(&now, "pw1"), &observed, &policy());
        assert_eq!(
            names(&diff.steps),
            [
                "edit builder +[] -[(Mount, \"quay-pull\")]",
                "edit default +[] -[(Pull, \"quay-pull\")]",
                "delete quay-pull",
            ]
        );
        let Step::EditServiceAccount(edit) = &diff.steps[1] else {
            panic!("expected an edit");
        };
        let edited = edit_service_account(&observed.service_accounts[0], edit).expect("changes");
        assert_eq!(
            linked_names(&edited, LinkKind::Pull),
            ["default-dockercfg-abcde", "my-own"]
        );
        assert_eq!(
            linked_names(&edited, LinkKind::Mount),
            ["default-dockercfg-abcde"]
        );
        assert_eq!(edited.metadata.resource_version.as_deref(), Some("7"));
    }

    #[test]
    fn a_secret_recording_an_account_that_was_not_read_is_not_deleted() {
        // The builder account's lists are unknown (its namespace is not selected, so the
        // record was not trusted for reads): deleting the Secret could leave builder naming it.
        let old = config(vec![pull_secret("quay-pull", "quay")]);
        let mut observed = converged(&desired(&old, "pw1"));
        observed
            .service_accounts
            .retain(|sa| sa.metadata.name.as_deref() == Some("default"));
        observed.unread_accounts = ["builder".to_string()].into();
        let nothing = config(vec![]);
        let diff = diff_project("a", &desired(&nothing, "pw1"), &observed, &policy());
        assert_eq!(
            names(&diff.steps),
            ["edit default +[] -[(Pull, \"quay-pull\")]"],
            "unlinked where known, never deleted"
        );
        assert_eq!(diff.problems[0].reason, "UnreadServiceAccounts");
        assert!(
            diff.problems[0].message.contains("builder"),
            "{:?}",
            diff.problems
        );

        // Once every recorded account is read, the same Secret goes.
        observed.unread_accounts.clear();
        let diff = diff_project("a", &desired(&nothing, "pw1"), &observed, &policy());
        assert!(names(&diff.steps).contains(&"delete quay-pull".to_string()));
    }

    #[test]
    fn linking_appends_after_foreign_entries_and_is_idempotent() {
        let sa = account(
            "default",
            &["default-dockercfg-abcde", "user-secret"],
            &["default-dockercfg-abcde"],
        );
        let edit = ServiceAccountEdit {
            name: "default".into(),
            add: vec![
                (LinkKind::Pull, "quay-pull".into()),
                (LinkKind::Mount, "quay-pull".into()),
            ],
            remove: vec![],
        };
        let once = edit_service_account(&sa, &edit).expect("changes");
        assert_eq!(
            linked_names(&once, LinkKind::Pull),
            ["default-dockercfg-abcde", "user-secret", "quay-pull"]
        );
        assert_eq!(
            linked_names(&once, LinkKind::Mount),
            ["default-dockercfg-abcde", "quay-pull"]
        );
        assert!(
            edit_service_account(&once, &edit).is_none(),
            "re-applying changes nothing"
        );
    }

    #[test]
    fn held_secret_keeps_its_links_and_is_not_deleted() {
        let config = config(vec![pull_secret("quay-pull", "quay")]);
        let observed = converged(&desired(&config, "pw1"));
        let mut held = desired(&config, "pw1");
        let name = held.secrets[0].name.clone();
        held.secrets.clear();
        held.held.push(plan::HeldSecret {
            name,
            pull_secret: "quay-pull".into(),
            reason: HoldReason::SourceFailed {
                registries: vec!["quay".into()],
            },
        });
        let diff = diff_project("a", &held, &observed, &policy());
        assert!(diff.steps.is_empty(), "{:?}", names(&diff.steps));
    }

    #[test]
    fn missing_held_secret_is_not_linked() {
        let config = config(vec![pull_secret("quay-pull", "quay")]);
        let mut held = desired(&config, "pw1");
        let name = held.secrets[0].name.clone();
        held.secrets.clear();
        held.held.push(plan::HeldSecret {
            name,
            pull_secret: "quay-pull".into(),
            reason: HoldReason::SourceFailed {
                registries: vec!["quay".into()],
            },
        });
        let observed = ObservedProject {
            service_accounts: vec![account("default", &[], &[]), account("builder", &[], &[])],
            ..ObservedProject::default()
        };
        assert!(
            diff_project("a", &held, &observed, &policy())
                .steps
                .is_empty()
        );
    }

    #[test]
    fn role_bindings_are_created_updated_and_deleted_only_when_managed() {
        let subject = crate::config::PullerSubject::ServiceAccount {
            namespace: "b".into(),
            name: "default".into(),
        };
        let binding = DesiredRoleBinding {
            name: "pullsecretd-image-puller".into(),
            subjects: vec![subject],
            instance: "default".into(),
        };
        let plan = ProjectPlan {
            role_bindings: vec![binding.clone()],
            ..ProjectPlan::default()
        };
        let empty = ObservedProject::default();
        assert_eq!(
            names(&diff_project("a", &plan, &empty, &policy()).steps),
            ["create rb pullsecretd-image-puller"]
        );

        let mut current = role_binding_manifest("a", &binding);
        let same = ObservedProject {
            role_bindings: vec![current.clone()],
            ..ObservedProject::default()
        };
        assert!(diff_project("a", &plan, &same, &policy()).steps.is_empty());

        current.subjects = Some(vec![]);
        let drifted = ObservedProject {
            role_bindings: vec![current.clone()],
            ..ObservedProject::default()
        };
        assert_eq!(
            names(&diff_project("a", &plan, &drifted, &policy()).steps),
            ["update rb pullsecretd-image-puller"]
        );

        let nothing = ProjectPlan::default();
        assert_eq!(
            names(&diff_project("a", &nothing, &drifted, &policy()).steps),
            ["delete rb pullsecretd-image-puller"]
        );
        current.metadata.labels = None;
        let foreign = ObservedProject {
            role_bindings: vec![current],
            ..ObservedProject::default()
        };
        assert!(
            diff_project("a", &nothing, &foreign, &policy())
                .steps
                .is_empty()
        );
        assert_eq!(
            diff_project("a", &plan, &foreign, &policy()).problems[0].reason,
            "ForeignRoleBinding"
        );
    }

    // ---------------------------------------------------------------------------------------
    // Versioned rotation: grace and keep. Every `now` is passed in; the timestamps are in 2001,
    // so a diff that read the wall clock (years later) would find every old version expired.

    const T0: &str = "2001-02-03T04:00:00Z";

    fn at(minutes: i64) -> Timestamp {
        let start: Timestamp = T0.parse().expect("timestamp");
        start
            .checked_add(k8s_openapi::jiff::SignedDuration::from_mins(minutes))
            .expect("in range")
    }

    fn versioned_config(grace_minutes: u64, keep: usize) -> Config {
        let mut ps = pull_secret("quay-pull", "quay");
        ps.rotation = Rotation {
            strategy: crate::config::RotationStrategy::Versioned,
            grace: Duration::from_secs(grace_minutes * 60),
            keep,
            ..Rotation::default()
        };
        config(vec![ps])
    }

    /// One version in the cluster: the plan for `password`, created `minutes` after T0
    /// (`None`: no creation time), and whether the service accounts still link it.
    struct Version<'a> {
        password: &'a str,
        created: Option<i64>,
        linked: bool,
    }

    fn version_name(config: &Config, password: &str) -> String {
        desired(config, password).secrets[0].name.clone()
    }

    fn cluster_with(config: &Config, versions: &[Version<'_>]) -> ObservedProject {
        let mut default = account("default", &["default-dockercfg-abcde"], &[]);
        let mut builder = account("builder", &[], &["builder-dockercfg-xyz12"]);
        let mut secrets = Vec::new();
        for version in versions {
            let plan = desired(config, version.password);
            let mut secret = secret_manifest("a", &plan.secrets[0]);
            secret.metadata.creation_timestamp = version
                .created
                .map(|m| k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(m)));
            secrets.push(secret);
            if version.linked {
                for link in &plan.links {
                    let sa = if link.service_account == "default" {
                        &mut default
                    } else {
                        &mut builder
                    };
                    add_link(sa, link.kind, &link.secret);
                }
            }
        }
        ObservedProject {
            secrets,
            service_accounts: vec![default, builder],
            role_bindings: vec![],
            unread_accounts: BTreeSet::new(),
            data_digests: BTreeMap::new(),
        }
    }

    fn deleted(diff: &ProjectDiff) -> Vec<String> {
        diff.steps
            .iter()
            .filter_map(|a| match a {
                Step::DeleteSecret(delete) => Some(delete.name.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn versioned_rotation_links_the_new_version_and_keeps_the_old_one_within_grace() {
        let config = versioned_config(10, 2);
        let (v1, v2) = (version_name(&config, "pw1"), version_name(&config, "pw2"));
        assert_ne!(v1, v2);
        let observed = cluster_with(
            &config,
            &[Version {
                password: "pw1",
                created: Some(0),
                linked: true,
            }],
        );
        let now = at(60);
        let diff = diff_project_at(
            "a",
            &desired(&config, "pw2"),
            &observed,
            &policy(),
            Some(now),
        );
        // The new one is created and swapped in, in one edit per account; the old one stays.
        assert_eq!(
            names(&diff.steps),
            [
                format!("create {v2}"),
                format!("edit builder +[(Mount, \"{v2}\")] -[(Mount, \"{v1}\")]"),
                format!("edit default +[(Pull, \"{v2}\")] -[(Pull, \"{v1}\")]"),
            ]
        );
        // It was replaced just now (the new version does not exist yet): its grace starts now.
        assert_eq!(diff.revisit_at, Some(at(70)));
    }

    #[test]
    fn a_replaced_version_goes_exactly_when_its_grace_ends() {
        let config = versioned_config(10, 2);
        let (v1, v2) = (version_name(&config, "pw1"), version_name(&config, "pw2"));
        // v2 created at minute 30 (which replaced v1); v1 is unlinked already.
        let observed = cluster_with(
            &config,
            &[
                Version {
                    password: "pw1",
                    created: Some(0),
                    linked: false,
                },
                Version {
                    password: "pw2",
                    created: Some(30),
                    linked: true,
                },
            ],
        );
        let plan = desired(&config, "pw2");
        // Grace counts from the replacement, plus the second creationTimestamp may have cut off.
        let end = at(40)
            .checked_add(rotation::TIMESTAMP_RESOLUTION)
            .expect("in range");
        let diff = diff_project_at("a", &plan, &observed, &policy(), Some(at(40)));
        assert!(diff.steps.is_empty(), "{:?}", names(&diff.steps));
        assert_eq!(
            diff.revisit_at,
            Some(end),
            "grace counts from the replacement"
        );

        let diff = diff_project_at("a", &plan, &observed, &policy(), Some(end));
        assert_eq!(names(&diff.steps), [format!("delete {v1}")]);
        assert_eq!(diff.revisit_at, None, "nothing left to wait for");
        assert!(!deleted(&diff).contains(&v2));
    }

    #[test]
    fn a_version_past_grace_that_is_still_linked_is_unlinked_before_it_is_deleted() {
        let config = versioned_config(10, 2);
        let (v1, v2) = (version_name(&config, "pw1"), version_name(&config, "pw2"));
        // v2 exists since minute 30 but the link swap never happened (say the edit failed).
        let observed = cluster_with(
            &config,
            &[
                Version {
                    password: "pw1",
                    created: Some(0),
                    linked: true,
                },
                Version {
                    password: "pw2",
                    created: Some(30),
                    linked: false,
                },
            ],
        );
        let diff = diff_project_at(
            "a",
            &desired(&config, "pw2"),
            &observed,
            &policy(),
            Some(at(600)),
        );
        assert_eq!(
            names(&diff.steps),
            [
                format!("edit builder +[(Mount, \"{v2}\")] -[(Mount, \"{v1}\")]"),
                format!("edit default +[(Pull, \"{v2}\")] -[(Pull, \"{v1}\")]"),
                format!("delete {v1}"),
            ]
        );
    }

    #[test]
    fn at_most_keep_replaced_versions_are_retained_newest_first() {
        // A long grace: only `keep` limits what stays.
        let config = versioned_config(24 * 60, 2);
        let v: Vec<String> = ["pw1", "pw2", "pw3", "pw4"]
            .iter()
            .map(|p| version_name(&config, p))
            .collect();
        let observed = cluster_with(
            &config,
            &[
                Version {
                    password: "pw1",
                    created: Some(0),
                    linked: false,
                },
                Version {
                    password: "pw2",
                    created: Some(10),
                    linked: false,
                },
                Version {
                    password: "pw3",
                    created: Some(20),
                    linked: false,
                },
                Version {
                    password: "pw4",
                    created: Some(30),
                    linked: true,
                },
            ],
        );
        let plan = desired(&config, "pw4");
        let diff = diff_project_at("a", &plan, &observed, &policy(), Some(at(31)));
        assert_eq!(deleted(&diff), [v[0].clone()], "only the oldest goes");
        // v2 was replaced (by v3) at minute 20: the earliest deadline of those kept (plus the
        // second a creationTimestamp may have cut off).
        let deadline = at(20 + 24 * 60).checked_add(rotation::TIMESTAMP_RESOLUTION);
        assert_eq!(diff.revisit_at, deadline.ok());

        let none_kept = versioned_config(24 * 60, 0);
        let plan_none_kept = desired(&none_kept, "pw4");
        let diff = diff_project_at("a", &plan_none_kept, &observed, &policy(), Some(at(31)));
        let mut gone = deleted(&diff);
        gone.sort();
        let mut expected = v[..3].to_vec();
        expected.sort();
        assert_eq!(gone, expected, "keep: 0 deletes every replaced version");
        assert_eq!(diff.revisit_at, None);

        // Past grace beats keep: v3 (replaced at 30) is kept, v2 (replaced at 20) is not.
        let short = versioned_config(15, 2);
        let plan_short = desired(&short, "pw4");
        let diff = diff_project_at("a", &plan_short, &observed, &policy(), Some(at(40)));
        let mut gone = deleted(&diff);
        gone.sort();
        let mut expected = vec![v[0].clone(), v[1].clone()];
        expected.sort();
        assert_eq!(gone, expected);
        let deadline = at(45).checked_add(rotation::TIMESTAMP_RESOLUTION);
        assert_eq!(diff.revisit_at, deadline.ok());
    }

    #[test]
    fn without_a_clock_replaced_versions_are_kept_up_to_keep_and_unknown_ages_go_first() {
        let config = versioned_config(10, 1);
        let v: Vec<String> = ["pw1", "pw2", "pw3"]
            .iter()
            .map(|p| version_name(&config, p))
            .collect();
        let observed = cluster_with(
            &config,
            &[
                Version {
                    password: "pw1",
                    created: None,
                    linked: false,
                },
                Version {
                    password: "pw2",
                    created: Some(10),
                    linked: false,
                },
                Version {
                    password: "pw3",
                    created: Some(20),
                    linked: true,
                },
            ],
        );
        let plan = desired(&config, "pw3");
        // `diff_project` has no clock: years after T0, nothing is judged old, and keep holds.
        let diff = diff_project("a", &plan, &observed, &policy());
        assert_eq!(
            deleted(&diff),
            [v[0].clone()],
            "no creation time sorts as oldest"
        );
        let end = at(30)
            .checked_add(rotation::TIMESTAMP_RESOLUTION)
            .expect("in range");
        assert_eq!(diff.revisit_at, Some(end));
        // The same answer whenever it is computed: `now` is the only time it looks at.
        let later = diff_project_at("a", &plan, &observed, &policy(), Some(at(30)));
        assert_eq!(deleted(&later), [v[0].clone()]);
        let past = diff_project_at("a", &plan, &observed, &policy(), Some(end));
        let mut gone = deleted(&past);
        gone.sort();
        let mut expected = vec![v[0].clone(), v[1].clone()];
        expected.sort();
        assert_eq!(gone, expected);
    }

    #[test]
    fn a_managed_secret_recording_another_pull_secret_is_not_retained_as_a_version() {
        // A managed Secret named like a version of ours but recording another pull secret
        // is not an old version of it: unwanted, it is deleted at once.
        let config = versioned_config(10, 2);
        let mut observed = cluster_with(
            &config,
            &[Version {
                password: "pw2",
                created: Some(0),
                linked: true,
            }],
        );
        let mut stranger = secret_manifest("a", &desired(&config, "pw1").secrets[0]);
        let stranger_name = stranger.metadata.name.clone().expect("name");
        stranger
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(PULL_SECRET_ANNOTATION.into(), "someone-else".into());
        stranger.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(1)));
        observed.secrets.push(stranger);
        let diff = diff_project_at(
            "a",
            &desired(&config, "pw2"),
            &observed,
            &policy(),
            Some(at(2)),
        );
        assert_eq!(deleted(&diff), [stranger_name]);
        assert_eq!(diff.revisit_at, None);
    }

    /// `observed` with Secret `from` renamed `to`, in every service account's lists too.
    fn renamed(mut observed: ObservedProject, from: &str, to: &str) -> ObservedProject {
        for secret in &mut observed.secrets {
            if secret.metadata.name.as_deref() == Some(from) {
                secret.metadata.name = Some(to.into());
            }
        }
        for account in &mut observed.service_accounts {
            let lists = account
                .image_pull_secrets
                .iter_mut()
                .flatten()
                .map(|r| &mut r.name);
            let mounts = account
                .secrets
                .iter_mut()
                .flatten()
                .filter_map(|r| r.name.as_mut());
            for name in lists.chain(mounts) {
                if name == from {
                    *name = to.into();
                }
            }
        }
        observed
    }

    /// The cluster holding the linked version of "pw1", named `name` instead of its planned name.
    fn one_version_named(config: &Config, name: &str) -> ObservedProject {
        let one = [Version {
            password: "pw1",
            created: Some(0),
            linked: true,
        }];
        renamed(
            cluster_with(config, &one),
            &version_name(config, "pw1"),
            name,
        )
    }

    #[test]
    fn a_version_named_under_another_key_or_the_unkeyed_scheme_is_reused_without_a_write() {
        // Another process (another key), or a release before names were keyed (a plain hash
        // prefix), wrote the version of this very content: it is kept as it is, links and all.
        let config = versioned_config(10, 2);
        for other in ["quay-pull-0123456789", "quay-pull-fedcba9876"] {
            let observed = one_version_named(&config, other);
            let plan = desired(&config, "pw1");
            let diff = diff_project_at("a", &plan, &observed, &policy(), Some(at(1)));
            assert!(diff.steps.is_empty(), "{other}: {:?}", names(&diff.steps));
            assert!(diff.problems.is_empty(), "{:?}", diff.problems);

            // The next rotation names the new version under this process's key, links it
            // in place of the reused one and keeps that one through its grace.
            let rotated = desired(&config, "pw2");
            let new = version_name(&config, "pw2");
            let diff = diff_project_at("a", &rotated, &observed, &policy(), Some(at(1)));
            assert_eq!(
                names(&diff.steps),
                [
                    format!("create {new}"),
                    format!("edit builder +[(Mount, \"{new}\")] -[(Mount, \"{other}\")]"),
                    format!("edit default +[(Pull, \"{new}\")] -[(Pull, \"{other}\")]"),
                ]
            );
        }
    }

    #[test]
    fn only_an_immutable_version_of_ours_with_the_same_content_is_reused() {
        let config = versioned_config(10, 2);
        let planned = version_name(&config, "pw1");
        let other = "quay-pull-0123456789";
        type Spoil = fn(&mut Secret);
        let spoil: [(&str, Spoil); 5] = [
            ("another content hash", |s| {
                s.metadata.annotations.get_or_insert_default().insert(
                    crate::model::managed::CONTENT_HASH_ANNOTATION.into(),
                    "0".repeat(64),
                );
            }),
            ("edited data", |s| {
                s.data
                    .get_or_insert_default()
                    .values_mut()
                    .for_each(|v| v.0.push(b' '));
            }),
            ("mutable", |s| s.immutable = None),
            ("another pull secret", |s| {
                s.metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(PULL_SECRET_ANNOTATION.into(), "someone-else".into());
            }),
            ("not ours", |s| s.metadata.labels = None),
        ];
        for (why, change) in spoil {
            let mut observed = one_version_named(&config, other);
            change(&mut observed.secrets[0]);
            let diff = diff_project_at(
                "a",
                &desired(&config, "pw1"),
                &observed,
                &policy(),
                Some(at(1)),
            );
            assert_eq!(
                names(&diff.steps).first().map(String::as_str),
                Some(format!("create {planned}").as_str()),
                "{why}"
            );
        }
    }
}

#[cfg(test)]
mod safety_tests {
    //! Ownership, held Secrets and the add-only mode (issue: never delete what is still wanted
    //! or what someone else owns).
    use super::*;
    use crate::config::{
        Config, Heal, Layout, ProjectSelection, PullSecretConfig, RegistryConfig, Rotation,
        RotationStrategy, SecretType, SourceConfig,
    };
    use crate::model::credential::Resolved;
    use crate::model::credential::{Credential, RegistryKey};
    use crate::model::managed::{INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
    use crate::model::manifest::secret_manifest;
    use crate::plan::{self, HoldReason, NamespaceInfo, PlanInputs};
    use k8s_openapi::api::core::v1::LocalObjectReference;

    fn config(instance: Option<&str>, strategy: RotationStrategy) -> Config {
        let registry = RegistryConfig {
            name: "quay".into(),
            server: RegistryKey::from_docker("quay.io").expect("valid"),
            from: SourceConfig::Helper { name: "x".into() },
            verify: None,
        };
        Config {
            instance: instance.map(String::from),
            vault: None,
            credential_provider: Default::default(),
            registries: BTreeMap::from([("quay".into(), registry)]),
            pull_secrets: vec![PullSecretConfig {
                name: "priv".into(),
                secret_type: SecretType::DockerConfigJson,
                registries: vec!["quay".into()],
                layout: Layout::Combined,
                projects: ProjectSelection {
                    names: vec!["a".into()],
                    ..ProjectSelection::default()
                },
                links: BTreeMap::from([("default".into(), vec![LinkKind::Pull])]),
                rotation: Rotation {
                    strategy,
                    ..Rotation::default()
                },
                adopt: false,
                heal: Heal::default(),
            }],
            image_pullers: vec![],
            namespaces: None,
            shards: None,
        }
    }

    /// The plan with the credential (`Some(password)`) or with its source failed (`None`).
    fn planned(config: &Config, password: Option<&str>) -> ProjectPlan {
        let credentials: BTreeMap<String, Resolved> = password
            .map(|password| {
                let credential = Credential::with_password(
                    RegistryKey::from_docker("quay.io").expect("valid"),
                    "robot",
                    password,
                );
                (
                    "quay".to_string(),
                    Resolved {
                        credential,
                        version: password.into(),
                        expires_at: None,
                        lease: None,
                    },
                )
            })
            .into_iter()
            .collect();
        let key = plan::VersionKey::from_bytes([0; 32]);
        let state = plan::plan(
            PlanInputs {
                config,
                credentials: &credentials,
                namespaces: &[NamespaceInfo::named("a")],
                openshift: None,
            },
            &plan::prepare_secrets(config, &credentials, &key),
        );
        state.projects.get("a").cloned().unwrap_or_default()
    }

    fn account(pull: &[&str]) -> ServiceAccount {
        let mut sa = ServiceAccount::default();
        sa.metadata.name = Some("default".into());
        sa.metadata.resource_version = Some("3".into());
        sa.image_pull_secrets = Some(
            pull.iter()
                .map(|n| LocalObjectReference { name: (*n).into() })
                .collect(),
        );
        sa
    }

    fn written(config: &Config, password: &str) -> (Secret, String) {
        let plan = planned(config, Some(password));
        let mut secret = secret_manifest("a", &plan.secrets[0]);
        secret.metadata.uid = Some(format!("uid-{password}"));
        secret.metadata.resource_version = Some("7".into());
        let name = plan.secrets[0].name.clone();
        (secret, name)
    }

    #[test]
    fn a_held_versioned_pull_secret_keeps_every_version_and_its_links() {
        let config = config(None, RotationStrategy::Versioned);
        let (v1, n1) = written(&config, "pw1");
        let (v2, n2) = written(&config, "pw2");
        let observed = ObservedProject {
            secrets: vec![v1, v2],
            service_accounts: vec![account(&["default-dockercfg-x", &n2])],
            role_bindings: vec![],
            unread_accounts: BTreeSet::new(),
            data_digests: BTreeMap::new(),
        };
        for hold in [None, Some("")] {
            // Source failed (no credential), or not rendered (an empty-username token).
            let held = match hold {
                None => planned(&config, None),
                Some(_) => {
                    let mut plan = planned(&config, Some("pw3"));
                    let name = plan.secrets.remove(0).name.clone();
                    plan.held.push(plan::HeldSecret {
                        name: rotation::version_base(&name).expect("versioned").into(),
                        pull_secret: "priv".into(),
                        reason: HoldReason::NotRendered {
                            reason: "identity token".into(),
                        },
                    });
                    plan
                }
            };
            assert_eq!(held.held.len(), 1, "{held:?}");
            let diff = diff_project_at("a", &held, &observed, &DiffPolicy::full("default"), None);
            assert!(diff.steps.is_empty(), "{:?}", diff.steps);
            let mut kept = diff.held[0].kept.clone();
            kept.sort();
            let mut both = vec![n1.clone(), n2.clone()];
            both.sort();
            assert_eq!(kept, both);
        }
    }

    #[test]
    fn another_instances_secrets_are_never_touched_or_unlinked() {
        let team_a = config(Some("team-a"), RotationStrategy::InPlace);
        let (theirs, name) = written(&team_a, "pw1");
        let observed = ObservedProject {
            secrets: vec![theirs],
            service_accounts: vec![account(&[&name])],
            role_bindings: vec![],
            unread_accounts: BTreeSet::new(),
            data_digests: BTreeMap::new(),
        };
        // Team B wants nothing here: nothing is unlinked or deleted.
        let team_b = config(Some("team-b"), RotationStrategy::InPlace);
        let nothing = ProjectPlan::default();
        let diff = diff_project("a", &nothing, &observed, &DiffPolicy::full("team-b"));
        assert!(diff.steps.is_empty(), "{:?}", diff.steps);
        // Team B wants the same name: reported, not written, not linked.
        let wanted = planned(&team_b, Some("pw2"));
        let diff = diff_project("a", &wanted, &observed, &DiffPolicy::full("team-b"));
        assert!(diff.steps.is_empty(), "{:?}", diff.steps);
        assert_eq!(diff.problems[0].reason, "OwnedByAnotherInstance");
        assert!(diff.problems[0].message.contains("team-a"));
    }

    #[test]
    fn a_labelled_secret_that_fails_the_proof_is_reported_not_deleted() {
        let mut opaque = Secret::default();
        opaque.metadata.name = Some("app-config".into());
        opaque.metadata.labels = Some(BTreeMap::from([(
            MANAGED_BY_LABEL.to_string(),
            MANAGED_BY_VALUE.to_string(),
        )]));
        opaque.type_ = Some("Opaque".into());
        let observed = ObservedProject {
            secrets: vec![opaque],
            ..ObservedProject::default()
        };
        let diff = diff_project(
            "a",
            &ProjectPlan::default(),
            &observed,
            &DiffPolicy::full("default"),
        );
        assert!(diff.steps.is_empty(), "{:?}", diff.steps);
        assert_eq!(diff.problems[0].reason, "UnprovenOwnership");
    }

    #[test]
    fn a_legacy_secret_is_adopted_by_the_default_instance_with_its_label_only() {
        let config = config(None, RotationStrategy::InPlace);
        let (mut legacy, name) = written(&config, "pw1");
        legacy
            .metadata
            .labels
            .as_mut()
            .expect("labels")
            .remove(INSTANCE_LABEL);
        let observed = ObservedProject {
            secrets: vec![legacy.clone()],
            service_accounts: vec![account(&[&name])],
            role_bindings: vec![],
            unread_accounts: BTreeSet::new(),
            data_digests: BTreeMap::new(),
        };
        let plan = planned(&config, Some("pw1"));
        let diff = diff_project("a", &plan, &observed, &DiffPolicy::full("default"));
        let [Step::UpdateSecret { secret, .. }] = diff.steps.as_slice() else {
            panic!("one update: {:?}", diff.steps);
        };
        let after = secret_manifest("a", secret);
        assert_eq!(after.data, legacy.data, "the data is not rewritten");
        assert_eq!(after.metadata.annotations, legacy.metadata.annotations);
        // Another instance leaves it alone.
        let diff = diff_project(
            "a",
            &ProjectPlan::default(),
            &observed,
            &DiffPolicy::full("team-b"),
        );
        assert!(diff.steps.is_empty(), "{:?}", diff.steps);
    }

    #[test]
    fn add_only_never_recreates_unlinks_or_deletes() {
        let mut old = config(Some("workstation"), RotationStrategy::InPlace);
        old.pull_secrets[0].secret_type = SecretType::Dockercfg;
        let (dockercfg, name) = written(&old, "pw1");
        let (stale, stale_name) = {
            let mut other = config(Some("workstation"), RotationStrategy::InPlace);
            other.pull_secrets[0].name = "gone".into();
            written(&other, "pw9")
        };
        let observed = ObservedProject {
            secrets: vec![dockercfg, stale],
            service_accounts: vec![account(&[&name, &stale_name])],
            role_bindings: vec![],
            unread_accounts: BTreeSet::new(),
            data_digests: BTreeMap::new(),
        };
        let now = config(Some("workstation"), RotationStrategy::InPlace);
        let add_only = DiffPolicy {
            instance: "workstation".into(),
            mode: Mode::AddOnly,
        };
        let diff = diff_project("a", &planned(&now, Some("pw1")), &observed, &add_only);
        assert!(diff.steps.is_empty(), "{:?}", diff.steps);
        assert_eq!(diff.problems[0].reason, "RecreateSkipped");
        // The full mode would recreate it and clean up the stale one.
        let full = diff_project(
            "a",
            &planned(&now, Some("pw1")),
            &observed,
            &DiffPolicy::full("workstation"),
        );
        assert!(matches!(full.steps[0], Step::RecreateSecret(_)));
        assert!(
            full.steps
                .iter()
                .any(|a| matches!(a, Step::DeleteSecret(d) if d.name == stale_name))
        );
    }
}
