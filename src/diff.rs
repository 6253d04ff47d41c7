//! Diff stage (pure): one project's desired objects vs what the cluster holds → the fewest
//! actions that make them equal.
//!
//! No I/O and no clock. Actions come out in the only safe order — write Secrets, then edit
//! service accounts (links added and removed together), then delete — so no service account
//! ever references a Secret pullsecretd deleted. Nothing pullsecretd does not own is changed:
//! a Secret or RoleBinding without the managed-by label is reported, not touched (unless the
//! pull secret says `adopt`), and service-account lists are edited entry by entry, never
//! replaced. A link counts as pullsecretd's when it names a Secret pullsecretd manages.
//! Equal inputs give no actions: that is the "zero writes in steady state" guarantee.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{LocalObjectReference, ObjectReference, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::jiff::Timestamp;

use crate::config::{Config, LinkKind};
use crate::plan::{
    DesiredRoleBinding, DesiredSecret, MANAGED_BY_LABEL, MANAGED_BY_VALUE, PULL_SECRET_ANNOTATION,
    Problem, ProjectPlan, SERVICE_ACCOUNTS_ANNOTATION,
};
use crate::render::role_binding_manifest;

/// What the cluster holds in one project, as read from watch caches or a list.
#[derive(Clone, Debug, Default)]
pub struct ObservedProject {
    /// Secrets that are managed by pullsecretd or share a name with a desired Secret.
    pub secrets: Vec<Secret>,
    /// Service accounts that the config links to.
    pub service_accounts: Vec<ServiceAccount>,
    /// RoleBindings managed by pullsecretd or sharing a desired name.
    pub role_bindings: Vec<RoleBinding>,
}

/// One step toward the desired state, in a project.
#[derive(Clone, Debug)]
pub enum Action {
    CreateSecret(Arc<DesiredSecret>),
    /// Replace data, labels and annotations; `resource_version` guards against lost updates.
    UpdateSecret {
        secret: Arc<DesiredSecret>,
        resource_version: Option<String>,
    },
    /// The API forbids changing `type` and the data of an immutable Secret: delete, then create.
    RecreateSecret(Arc<DesiredSecret>),
    EditServiceAccount(ServiceAccountEdit),
    DeleteSecret {
        name: String,
    },
    CreateRoleBinding(DesiredRoleBinding),
    UpdateRoleBinding {
        binding: DesiredRoleBinding,
        resource_version: Option<String>,
    },
    DeleteRoleBinding {
        name: String,
    },
}

impl Action {
    /// The kind of write, for summaries and metrics.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::CreateSecret(_) | Self::CreateRoleBinding(_) => "create",
            Self::UpdateSecret { .. }
            | Self::EditServiceAccount(_)
            | Self::UpdateRoleBinding { .. } => "update",
            Self::RecreateSecret(_) => "recreate",
            Self::DeleteSecret { .. } | Self::DeleteRoleBinding { .. } => "delete",
        }
    }
}

/// Links to add to and remove from one service account, applied in one read-modify-write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceAccountEdit {
    pub name: String,
    /// Appended at the end of the list, in this order, when not already present.
    pub add: Vec<(LinkKind, String)>,
    /// Removed wherever they appear in that list.
    pub remove: Vec<(LinkKind, String)>,
}

/// The diff of one project: actions in safe order, plus problems to report.
#[derive(Clone, Debug, Default)]
pub struct ProjectDiff {
    pub actions: Vec<Action>,
    pub problems: Vec<Problem>,
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
    config: &Config,
) -> ProjectDiff {
    diff_project_at(project, desired, observed, config, None)
}

/// Computes the actions for one project. Pull secrets with `adopt: true` in `config` may take
/// over same-name Secrets they did not create. `now` (passed in: this stage reads no clock)
/// decides which replaced versioned Secrets are past their grace period.
pub fn diff_project_at(
    project: &str,
    desired: &ProjectPlan,
    observed: &ObservedProject,
    config: &Config,
    now: Option<Timestamp>,
) -> ProjectDiff {
    let mut diff = ProjectDiff::default();
    let existing: BTreeMap<&str, &Secret> = observed
        .secrets
        .iter()
        .filter_map(|s| Some((s.metadata.name.as_deref()?, s)))
        .collect();
    let adopting = config.adopting();

    // Phase 1: Secrets. Remember which names may be linked afterwards.
    let mut linkable: BTreeSet<&str> = BTreeSet::new();
    for secret in &desired.secrets {
        let current = existing.get(secret.name.as_str()).copied();
        let adopt = adopting.contains(&secret.pull_secret);
        match secret_action(secret, current, adopt) {
            SecretDecision::Write(action) => {
                diff.actions.push(action);
                linkable.insert(&secret.name);
            }
            SecretDecision::UpToDate => {
                linkable.insert(&secret.name);
            }
            SecretDecision::Foreign => diff.problems.push(Problem {
                reason: "ForeignSecret",
                message: format!(
                    "project {project}: secret {} exists and was not created by pullsecretd; \
                     left untouched (set adopt: true on pull secret {} to take it over)",
                    secret.name, secret.pull_secret
                ),
            }),
        }
    }
    // A held Secret keeps whatever exists; an existing managed one may still be linked.
    for held in &desired.held {
        if existing
            .get(held.name.as_str())
            .is_some_and(|s| is_managed(&s.metadata.labels))
        {
            linkable.insert(&held.name);
        }
    }

    // Managed Secrets nobody wants any more (held ones are wanted, whatever their content).
    let wanted: BTreeSet<&str> = desired
        .secrets
        .iter()
        .map(|s| s.name.as_str())
        .chain(desired.held.iter().map(|h| h.name.as_str()))
        .collect();
    let mut unwanted: BTreeSet<&str> = existing
        .iter()
        .filter(|(name, s)| is_managed(&s.metadata.labels) && !wanted.contains(*name))
        .map(|(name, _)| *name)
        .collect();
    let retention = retained_versions(desired, &existing, &unwanted, config, now);
    unwanted.retain(|name| !retention.kept.contains(name));
    diff.revisit_at = retention.revisit_at;
    let managed: BTreeSet<&str> = existing
        .iter()
        .filter(|(_, s)| is_managed(&s.metadata.labels))
        .map(|(name, _)| *name)
        .collect();

    // Phase 2: service accounts, one edit each.
    diff.actions.extend(service_account_edits(
        project,
        desired,
        observed,
        &linkable,
        &managed,
        &mut diff.problems,
    ));

    // Phase 3: deletions, after every reference to them is gone.
    diff.actions
        .extend(unwanted.into_iter().map(|name| Action::DeleteSecret {
            name: name.to_string(),
        }));
    diff.actions.extend(role_binding_actions(
        project,
        desired,
        observed,
        &mut diff.problems,
    ));
    diff
}

/// Replaced versioned Secrets still inside their grace period (unlinked, not yet deleted).
#[derive(Default)]
struct Retention<'a> {
    kept: BTreeSet<&'a str>,
    revisit_at: Option<Timestamp>,
}

/// For each desired versioned Secret, the older versions of it (same pull secret, same base
/// name, a different hash suffix), newest first. Version *i* was replaced when version *i-1*
/// (or the current one) was created; it is kept while fewer than `keep` newer old versions
/// exist and its grace period, counted from that moment, has not run out.
fn retained_versions<'a>(
    desired: &ProjectPlan,
    existing: &BTreeMap<&'a str, &'a Secret>,
    unwanted: &BTreeSet<&'a str>,
    config: &Config,
    now: Option<Timestamp>,
) -> Retention<'a> {
    let mut retention = Retention::default();
    for secret in desired.secrets.iter().filter(|s| s.immutable) {
        let Some(rotation) = config
            .pull_secrets
            .iter()
            .find(|p| p.name == secret.pull_secret)
            .map(|p| &p.rotation)
        else {
            continue;
        };
        let Some(base) = version_base(&secret.name) else {
            continue;
        };
        let mut older: Vec<(&'a str, Option<Timestamp>)> = unwanted
            .iter()
            .filter(|name| version_base(name) == Some(base))
            .filter_map(|name| {
                let current = existing.get(name)?;
                let annotations = current.metadata.annotations.as_ref()?;
                (annotations.get(PULL_SECRET_ANNOTATION) == Some(&secret.pull_secret))
                    .then(|| (*name, created_at(current)))
            })
            .collect();
        // Newest first; unknown creation times sort as oldest.
        older.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let current_created = existing
            .get(secret.name.as_str())
            .and_then(|s| created_at(s));
        let mut replaced_at = current_created.or(now);
        for (index, (name, created)) in older.into_iter().enumerate() {
            let deadline = replaced_at.and_then(|at| at.checked_add(rotation.grace).ok());
            let within_grace = match (now, deadline) {
                (Some(now), Some(deadline)) => now < deadline,
                // Without a clock nothing is old enough to go.
                (None, _) => true,
                (Some(_), None) => false,
            };
            if index < rotation.keep && within_grace {
                retention.kept.insert(name);
                if let Some(deadline) = deadline {
                    retention.revisit_at = Some(
                        retention
                            .revisit_at
                            .map_or(deadline, |earliest| earliest.min(deadline)),
                    );
                }
            }
            replaced_at = created;
        }
    }
    retention
}

/// `base` of a versioned name `base-0123456789` (ten lowercase hex digits).
fn version_base(name: &str) -> Option<&str> {
    let (base, suffix) = name.rsplit_once('-')?;
    (suffix.len() == VERSION_SUFFIX_LEN
        && suffix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(base)
}

/// Length of the hash suffix of versioned Secret names (as `plan` makes them).
const VERSION_SUFFIX_LEN: usize = 10;

fn created_at(secret: &Secret) -> Option<Timestamp> {
    secret.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// How long from `now` until `at`; zero when it has passed.
pub fn until(now: Timestamp, at: Timestamp) -> Duration {
    let seconds = at.as_millisecond().saturating_sub(now.as_millisecond());
    Duration::from_millis(u64::try_from(seconds).unwrap_or(0))
}

enum SecretDecision {
    Write(Action),
    UpToDate,
    Foreign,
}

fn secret_action(
    desired: &Arc<DesiredSecret>,
    current: Option<&Secret>,
    adopt: bool,
) -> SecretDecision {
    let Some(current) = current else {
        return SecretDecision::Write(Action::CreateSecret(Arc::clone(desired)));
    };
    if !is_managed(&current.metadata.labels) && !adopt {
        return SecretDecision::Foreign;
    }
    let type_matches = current.type_.as_deref() == Some(desired.secret_type.type_name());
    let data_matches = secret_data_matches(desired, current);
    let frozen = current.immutable == Some(true);
    if !type_matches || (frozen && !data_matches) || frozen != desired.immutable {
        return SecretDecision::Write(Action::RecreateSecret(Arc::clone(desired)));
    }
    if data_matches && metadata_matches(desired, current) {
        return SecretDecision::UpToDate;
    }
    SecretDecision::Write(Action::UpdateSecret {
        secret: Arc::clone(desired),
        resource_version: current.metadata.resource_version.clone(),
    })
}

/// Exactly one data key, holding exactly the desired payload.
fn secret_data_matches(desired: &DesiredSecret, current: &Secret) -> bool {
    let Some(data) = &current.data else {
        return false;
    };
    data.len() == 1
        && data
            .get(desired.secret_type.data_key())
            .is_some_and(|value| value.0 == desired.payload.expose())
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

/// The service accounts a managed Secret says it is linked from
/// ([`SERVICE_ACCOUNTS_ANNOTATION`]), so links the config dropped can still be found.
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

/// True when the object carries `app.kubernetes.io/managed-by: pullsecretd`.
pub fn is_managed(labels: &Option<BTreeMap<String, String>>) -> bool {
    labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY_VALUE)
}

fn service_account_edits(
    project: &str,
    desired: &ProjectPlan,
    observed: &ObservedProject,
    linkable: &BTreeSet<&str>,
    managed: &BTreeSet<&str>,
    problems: &mut Vec<Problem>,
) -> Vec<Action> {
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

    let held: BTreeSet<&str> = desired.held.iter().map(|h| h.name.as_str()).collect();
    let mut actions = Vec::new();
    for (name, account) in accounts {
        let wanted = wanted_by_account
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let edit = account_edit(name, account, wanted, linkable, managed, &held);
        if !edit.add.is_empty() || !edit.remove.is_empty() {
            actions.push(Action::EditServiceAccount(edit));
        }
    }
    actions
}

/// Adds wanted links to Secrets that exist (or are being written) and removes links to
/// managed Secrets that are no longer wanted on this list. Links to held Secrets stay.
fn account_edit(
    name: &str,
    account: &ServiceAccount,
    wanted: &[(LinkKind, String)],
    linkable: &BTreeSet<&str>,
    managed: &BTreeSet<&str>,
    held: &BTreeSet<&str>,
) -> ServiceAccountEdit {
    let mut edit = ServiceAccountEdit {
        name: name.to_string(),
        ..ServiceAccountEdit::default()
    };
    for (kind, secret) in wanted {
        let present = linked_names(account, *kind).contains(&secret.as_str());
        if !present && linkable.contains(secret.as_str()) {
            edit.add.push((*kind, secret.clone()));
        }
    }
    for kind in [LinkKind::Pull, LinkKind::Mount] {
        for secret in linked_names(account, kind) {
            let still_wanted = wanted.iter().any(|(k, s)| *k == kind && s == secret);
            let ours = managed.contains(secret);
            if ours && !still_wanted && !held.contains(secret) {
                edit.remove.push((kind, secret.to_string()));
            }
        }
    }
    edit
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

fn add_link(account: &mut ServiceAccount, kind: LinkKind, secret: &str) -> bool {
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

fn role_binding_actions(
    project: &str,
    desired: &ProjectPlan,
    observed: &ObservedProject,
    problems: &mut Vec<Problem>,
) -> Vec<Action> {
    let existing: BTreeMap<&str, &RoleBinding> = observed
        .role_bindings
        .iter()
        .filter_map(|b| Some((b.metadata.name.as_deref()?, b)))
        .collect();
    let mut actions = Vec::new();
    for binding in &desired.role_bindings {
        match existing.get(binding.name.as_str()) {
            None => actions.push(Action::CreateRoleBinding(binding.clone())),
            Some(current) if !is_managed(&current.metadata.labels) => problems.push(Problem {
                reason: "ForeignRoleBinding",
                message: format!(
                    "project {project}: rolebinding {} exists and was not created by pullsecretd; \
                     left untouched",
                    binding.name
                ),
            }),
            Some(current) => {
                let wanted = role_binding_manifest(project, binding);
                if current.role_ref != wanted.role_ref {
                    // roleRef is immutable: replace the binding.
                    actions.push(Action::DeleteRoleBinding {
                        name: binding.name.clone(),
                    });
                    actions.push(Action::CreateRoleBinding(binding.clone()));
                } else if current.subjects != wanted.subjects {
                    actions.push(Action::UpdateRoleBinding {
                        binding: binding.clone(),
                        resource_version: current.metadata.resource_version.clone(),
                    });
                }
            }
        }
    }
    let wanted: BTreeSet<&str> = desired
        .role_bindings
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    for (name, current) in existing {
        if is_managed(&current.metadata.labels) && !wanted.contains(name) {
            actions.push(Action::DeleteRoleBinding {
                name: name.to_string(),
            });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        Layout, ProjectSelection, PullSecretConfig, RegistryConfig, Rotation, SecretType,
        SourceConfig,
    };
    use crate::credential::{Credential, RegistryKey};
    use crate::plan::{self, NamespaceInfo, PlanInputs};
    use crate::render::secret_manifest;
    use crate::source::Resolved;

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
        }
    }

    fn config(pull_secrets: Vec<PullSecretConfig>) -> Config {
        let registry = RegistryConfig {
            name: "quay".into(),
            server: RegistryKey::from_docker("quay.io").expect("valid"),
            from: SourceConfig::Helper { name: "x".into() },
        };
        Config {
            vault: None,
            registries: BTreeMap::from([("quay".into(), registry)]),
            pull_secrets,
            image_pullers: vec![],
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
            },
        )]);
        let state = plan::plan(PlanInputs {
            config,
            credentials: &credentials,
            namespaces: &[NamespaceInfo::named("a")],
            openshift: None,
        });
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
        }
    }

    fn names(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::CreateSecret(s) => format!("create {}", s.name),
                Action::UpdateSecret { secret, .. } => format!("update {}", secret.name),
                Action::RecreateSecret(s) => format!("recreate {}", s.name),
                Action::EditServiceAccount(e) => {
                    format!("edit {} +{:?} -{:?}", e.name, e.add, e.remove)
                }
                Action::DeleteSecret { name } => format!("delete {name}"),
                Action::CreateRoleBinding(b) => format!("create rb {}", b.name),
                Action::UpdateRoleBinding { binding, .. } => format!("update rb {}", binding.name),
                Action::DeleteRoleBinding { name } => format!("delete rb {name}"),
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
        let diff = diff_project("a", &plan, &observed, &config);
        assert_eq!(
            names(&diff.actions),
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
        let diff = diff_project("a", &plan, &converged(&plan), &config);
        assert!(diff.actions.is_empty(), "{:?}", names(&diff.actions));
        assert!(diff.problems.is_empty());
    }

    #[test]
    fn rotation_in_place_updates_data_and_leaves_links() {
        let config = config(vec![pull_secret("quay-pull", "quay")]);
        let observed = converged(&desired(&config, "pw1"));
        let diff = diff_project("a", &desired(&config, "pw2"), &observed, &config);
        assert_eq!(names(&diff.actions), ["update quay-pull"]);
        let Action::UpdateSecret {
            resource_version, ..
        } = &diff.actions[0]
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
            names(&diff_project("a", &plan, &observed, &config).actions),
            ["update quay-pull"]
        );
    }

    #[test]
    fn type_change_recreates() {
        let mut legacy = pull_secret("quay-pull", "quay");
        legacy.secret_type = SecretType::Dockercfg;
        let observed = converged(&desired(&config(vec![legacy]), "pw1"));
        let config = config(vec![pull_secret("quay-pull", "quay")]);
        let diff = diff_project("a", &desired(&config, "pw1"), &observed, &config);
        assert_eq!(names(&diff.actions), ["recreate quay-pull"]);
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
        };
        let diff = diff_project("a", &plan, &observed, &config);
        assert!(diff.actions.is_empty(), "{:?}", names(&diff.actions));
        assert_eq!(diff.problems[0].reason, "ForeignSecret");

        let mut adopting = pull_secret("quay-pull", "quay");
        adopting.adopt = true;
        let config = self::config(vec![adopting]);
        let diff = diff_project("a", &desired(&config, "pw1"), &observed, &config);
        assert_eq!(names(&diff.actions)[0], "update quay-pull");
        assert_eq!(diff.actions.len(), 3, "{:?}", names(&diff.actions));
    }

    #[test]
    fn dropped_pull_secret_is_unlinked_before_it_is_deleted_and_others_survive() {
        let old = config(vec![pull_secret("quay-pull", "quay")]);
        let mut observed = converged(&desired(&old, "pw1"));
        // A user's own secret, linked after ours.
        add_link(&mut observed.service_accounts[0], LinkKind::Pull, "my-own");
        let now = config(vec![]);
        let diff = diff_project("a", &desired(&now, "pw1"), &observed, &now);
        assert_eq!(
            names(&diff.actions),
            [
                "edit builder +[] -[(Mount, \"quay-pull\")]",
                "edit default +[] -[(Pull, \"quay-pull\")]",
                "delete quay-pull",
            ]
        );
        let Action::EditServiceAccount(edit) = &diff.actions[1] else {
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
        });
        let diff = diff_project("a", &held, &observed, &config);
        assert!(diff.actions.is_empty(), "{:?}", names(&diff.actions));
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
        });
        let observed = ObservedProject {
            service_accounts: vec![account("default", &[], &[]), account("builder", &[], &[])],
            ..ObservedProject::default()
        };
        assert!(
            diff_project("a", &held, &observed, &config)
                .actions
                .is_empty()
        );
    }

    #[test]
    fn role_bindings_are_created_updated_and_deleted_only_when_managed() {
        let config = config(vec![]);
        let subject = crate::config::PullerSubject::ServiceAccount {
            namespace: "b".into(),
            name: "default".into(),
        };
        let binding = DesiredRoleBinding {
            name: "pullsecretd-image-puller".into(),
            subjects: vec![subject],
        };
        let plan = ProjectPlan {
            role_bindings: vec![binding.clone()],
            ..ProjectPlan::default()
        };
        let empty = ObservedProject::default();
        assert_eq!(
            names(&diff_project("a", &plan, &empty, &config).actions),
            ["create rb pullsecretd-image-puller"]
        );

        let mut current = role_binding_manifest("a", &binding);
        let same = ObservedProject {
            role_bindings: vec![current.clone()],
            ..ObservedProject::default()
        };
        assert!(diff_project("a", &plan, &same, &config).actions.is_empty());

        current.subjects = Some(vec![]);
        let drifted = ObservedProject {
            role_bindings: vec![current.clone()],
            ..ObservedProject::default()
        };
        assert_eq!(
            names(&diff_project("a", &plan, &drifted, &config).actions),
            ["update rb pullsecretd-image-puller"]
        );

        let nothing = ProjectPlan::default();
        assert_eq!(
            names(&diff_project("a", &nothing, &drifted, &config).actions),
            ["delete rb pullsecretd-image-puller"]
        );
        current.metadata.labels = None;
        let foreign = ObservedProject {
            role_bindings: vec![current],
            ..ObservedProject::default()
        };
        assert!(
            diff_project("a", &nothing, &foreign, &config)
                .actions
                .is_empty()
        );
        assert_eq!(
            diff_project("a", &plan, &foreign, &config).problems[0].reason,
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
        }
    }

    fn deleted(diff: &ProjectDiff) -> Vec<String> {
        diff.actions
            .iter()
            .filter_map(|a| match a {
                Action::DeleteSecret { name } => Some(name.clone()),
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
        let diff = diff_project_at("a", &desired(&config, "pw2"), &observed, &config, Some(now));
        // The new one is created and swapped in, in one edit per account; the old one stays.
        assert_eq!(
            names(&diff.actions),
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
        let diff = diff_project_at("a", &plan, &observed, &config, Some(at(39)));
        assert!(diff.actions.is_empty(), "{:?}", names(&diff.actions));
        assert_eq!(
            diff.revisit_at,
            Some(at(40)),
            "grace counts from the replacement"
        );

        let diff = diff_project_at("a", &plan, &observed, &config, Some(at(40)));
        assert_eq!(names(&diff.actions), [format!("delete {v1}")]);
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
            &config,
            Some(at(600)),
        );
        assert_eq!(
            names(&diff.actions),
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
        let diff = diff_project_at("a", &plan, &observed, &config, Some(at(31)));
        assert_eq!(deleted(&diff), [v[0].clone()], "only the oldest goes");
        // v2 was replaced (by v3) at minute 20: the earliest deadline of those kept.
        assert_eq!(diff.revisit_at, Some(at(20 + 24 * 60)));

        let none_kept = versioned_config(24 * 60, 0);
        let diff = diff_project_at("a", &plan, &observed, &none_kept, Some(at(31)));
        let mut gone = deleted(&diff);
        gone.sort();
        let mut expected = v[..3].to_vec();
        expected.sort();
        assert_eq!(gone, expected, "keep: 0 deletes every replaced version");
        assert_eq!(diff.revisit_at, None);

        // Past grace beats keep: v3 (replaced at 30) is kept, v2 (replaced at 20) is not.
        let short = versioned_config(15, 2);
        let diff = diff_project_at("a", &plan, &observed, &short, Some(at(40)));
        let mut gone = deleted(&diff);
        gone.sort();
        let mut expected = vec![v[0].clone(), v[1].clone()];
        expected.sort();
        assert_eq!(gone, expected);
        assert_eq!(diff.revisit_at, Some(at(45)));
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
        let diff = diff_project("a", &plan, &observed, &config);
        assert_eq!(
            deleted(&diff),
            [v[0].clone()],
            "no creation time sorts as oldest"
        );
        assert_eq!(diff.revisit_at, Some(at(30)));
        // The same answer whenever it is computed: `now` is the only time it looks at.
        let later = diff_project_at("a", &plan, &observed, &config, Some(at(29)));
        assert_eq!(deleted(&later), [v[0].clone()]);
        let past = diff_project_at("a", &plan, &observed, &config, Some(at(30)));
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
            &config,
            Some(at(2)),
        );
        assert_eq!(deleted(&diff), [stranger_name]);
        assert_eq!(diff.revisit_at, None);
    }
}
