//! Apply (I/O): carry out one project's actions, in the order `diff` gave them.
//!
//! Safety rules enforced here, whatever happens on the wire:
//! - a Secret that could not be written (or turned out to be someone else's) is never linked;
//! - a Secret whose unlink failed is never deleted, so no service account is left pointing at a
//!   Secret pullsecretd removed;
//! - service-account lists are edited by read-modify-write with the `resourceVersion` read,
//!   re-read and re-applied on 409 Conflict, never replaced wholesale;
//! - one failing project never stops the others: failures are collected in the outcome.
//!
//! Every write is reported as an Event on the object (or, for failures before it exists, on the
//! namespace), with a reason and object names, never data.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ObjectReference, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::{ApiError, Throttle};
use crate::diff::{Action, ProjectDiff, ServiceAccountEdit, edit_service_account, is_managed};
use crate::plan::{DesiredRoleBinding, DesiredSecret, Problem};
use crate::render::{role_binding_manifest, secret_manifest};

/// Plain create/replace and delete parameters (no dry run, no field manager needed).
static POST: PostParams = PostParams {
    dry_run: false,
    field_manager: None,
};
static DELETE: DeleteParams = DeleteParams {
    dry_run: false,
    grace_period_seconds: None,
    propagation_policy: None,
    preconditions: None,
};

/// The name pullsecretd reports as, in Events and field managers.
pub const CONTROLLER_NAME: &str = "pullsecretd";

/// How `apply_project` behaves.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Attempts of a service-account read-modify-write before giving up on conflicts.
    pub conflict_attempts: usize,
    /// Publish Kubernetes Events for changes and failures.
    pub events: bool,
    /// Pull secrets allowed to take over same-name Secrets they did not create.
    pub adopt: BTreeSet<String>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            conflict_attempts: 5,
            events: true,
            adopt: BTreeSet::new(),
        }
    }
}

/// What happened in one project.
#[derive(Debug, Default)]
pub struct ProjectOutcome {
    pub project: String,
    /// One line per change made, e.g. `created secret quay-pull`.
    pub changes: Vec<String>,
    /// Calls that failed for good, with the reason.
    pub failures: Vec<ApiError>,
    /// Things left alone on purpose (someone else's Secret, a missing service account).
    pub problems: Vec<Problem>,
    /// Actions skipped because an earlier one failed (never linked, never deleted).
    pub skipped: Vec<String>,
}

impl ProjectOutcome {
    /// True when every action succeeded.
    pub fn converged(&self) -> bool {
        self.failures.is_empty() && self.skipped.is_empty()
    }
}

/// Carries out `diff` in `project`.
pub async fn apply_project(
    client: &Client,
    throttle: &Throttle,
    options: &ApplyOptions,
    project: &str,
    diff: ProjectDiff,
) -> ProjectOutcome {
    apply_project_from(client, throttle, options, project, diff, Vec::new()).await
}

/// [`apply_project`], with the service accounts the diff was made from (a watch cache or a
/// list): a link edit's first attempt writes against that copy's `resourceVersion` instead of
/// reading the account again; only a 409 Conflict (the copy was stale) costs a GET.
pub async fn apply_project_from(
    client: &Client,
    throttle: &Throttle,
    options: &ApplyOptions,
    project: &str,
    diff: ProjectDiff,
    accounts: Vec<ServiceAccount>,
) -> ProjectOutcome {
    let mut run = ProjectRun {
        client,
        throttle,
        options,
        project,
        recorder: options.events.then(|| {
            Recorder::new(
                client.clone(),
                Reporter {
                    controller: CONTROLLER_NAME.into(),
                    instance: None,
                },
            )
        }),
        outcome: ProjectOutcome {
            project: project.to_string(),
            problems: diff.problems,
            ..ProjectOutcome::default()
        },
        unlinkable: BTreeSet::new(),
        undeletable: BTreeSet::new(),
        known_accounts: accounts
            .into_iter()
            .filter(|sa| sa.metadata.resource_version.is_some())
            .filter_map(|sa| Some((sa.metadata.name.clone()?, sa)))
            .collect(),
    };
    for action in diff.actions {
        run.execute(action).await;
    }
    run.outcome
}

struct ProjectRun<'a> {
    client: &'a Client,
    throttle: &'a Throttle,
    options: &'a ApplyOptions,
    project: &'a str,
    recorder: Option<Recorder>,
    outcome: ProjectOutcome,
    /// Secrets that must not be linked: not written, or not ours.
    unlinkable: BTreeSet<String>,
    /// Secrets that must not be deleted: a reference to them may remain.
    undeletable: BTreeSet<String>,
    /// Service accounts as last seen, by name: each used once, for a first attempt.
    known_accounts: BTreeMap<String, ServiceAccount>,
}

impl ProjectRun<'_> {
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), self.project)
    }

    fn accounts(&self) -> Api<ServiceAccount> {
        Api::namespaced(self.client.clone(), self.project)
    }

    fn bindings(&self) -> Api<RoleBinding> {
        Api::namespaced(self.client.clone(), self.project)
    }

    fn target(&self, name: &str) -> String {
        format!("{}/{name}", self.project)
    }

    async fn execute(&mut self, action: Action) {
        match action {
            Action::CreateSecret(secret) => self.create_secret(&secret).await,
            Action::UpdateSecret {
                secret,
                resource_version,
            } => self.update_secret(&secret, resource_version).await,
            Action::RecreateSecret(secret) => self.recreate_secret(&secret).await,
            Action::EditServiceAccount(edit) => self.edit_account(edit).await,
            Action::DeleteSecret { name } => self.delete_secret(&name).await,
            Action::CreateRoleBinding(binding) => self.create_binding(&binding).await,
            Action::UpdateRoleBinding {
                binding,
                resource_version,
            } => self.update_binding(&binding, resource_version).await,
            Action::DeleteRoleBinding { name } => self.delete_binding(&name).await,
        }
    }

    async fn create_secret(&mut self, secret: &DesiredSecret) {
        let manifest = secret_manifest(self.project, secret);
        let api = self.secrets();
        match self.throttle.call(|| api.create(&POST, &manifest)).await {
            Ok(_) => {
                self.changed("Secret", &secret.name, "Created", "created secret")
                    .await
            }
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                self.take_over_existing(secret).await;
            }
            Err(error) => self.secret_failed("create", secret, error).await,
        }
    }

    /// A create found a Secret of that name: update it if it is ours (or may be adopted),
    /// otherwise report it and leave it alone.
    async fn take_over_existing(&mut self, secret: &DesiredSecret) {
        let api = self.secrets();
        let existing = match self.throttle.call(|| api.get(&secret.name)).await {
            Ok(existing) => existing,
            Err(error) => return self.secret_failed("get", secret, error).await,
        };
        if is_managed(&existing.metadata.labels) || self.options.adopt.contains(&secret.pull_secret)
        {
            let resource_version = existing.metadata.resource_version.clone();
            return self.update_secret(secret, resource_version).await;
        }
        self.unlinkable.insert(secret.name.clone());
        self.outcome.problems.push(Problem {
            reason: "ForeignSecret",
            message: format!(
                "project {}: secret {} exists and was not created by pullsecretd; left untouched \
                 (set adopt: true on pull secret {} to take it over)",
                self.project, secret.name, secret.pull_secret
            ),
        });
    }

    async fn update_secret(&mut self, secret: &DesiredSecret, resource_version: Option<String>) {
        let api = self.secrets();
        let mut manifest = secret_manifest(self.project, secret);
        manifest.metadata.resource_version = resource_version;
        for _ in 0..self.options.conflict_attempts {
            match self
                .throttle
                .call(|| api.replace(&secret.name, &POST, &manifest))
                .await
            {
                Ok(_) => {
                    return self
                        .changed("Secret", &secret.name, "Updated", "updated secret")
                        .await;
                }
                Err(kube::Error::Api(status)) if status.is_conflict() => {
                    // Someone wrote in between: re-read, and only go on if it is still ours.
                    match self.throttle.call(|| api.get(&secret.name)).await {
                        Ok(fresh)
                            if is_managed(&fresh.metadata.labels)
                                || self.options.adopt.contains(&secret.pull_secret) =>
                        {
                            manifest.metadata.resource_version = fresh.metadata.resource_version;
                        }
                        Ok(_) => {
                            self.unlinkable.insert(secret.name.clone());
                            return;
                        }
                        Err(error) => return self.secret_failed("get", secret, error).await,
                    }
                }
                Err(kube::Error::Api(status)) if status.is_not_found() => {
                    return Box::pin(self.create_secret(secret)).await;
                }
                Err(error) => return self.secret_failed("update", secret, error).await,
            }
        }
        self.unlinkable.insert(secret.name.clone());
        self.outcome
            .skipped
            .push(format!("update secret {}: kept conflicting", secret.name));
    }

    /// `type` cannot change and immutable data cannot either: delete, then create.
    async fn recreate_secret(&mut self, secret: &DesiredSecret) {
        let api = self.secrets();
        match self
            .throttle
            .call(|| api.delete(&secret.name, &DELETE))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(error) => return self.secret_failed("delete", secret, error).await,
        }
        self.create_secret(secret).await;
    }

    async fn secret_failed(
        &mut self,
        verb: &'static str,
        secret: &DesiredSecret,
        error: kube::Error,
    ) {
        self.unlinkable.insert(secret.name.clone());
        let error = ApiError::new(verb, "secrets", self.target(&secret.name), error);
        self.warn_on_namespace("WriteFailed", &error.to_string())
            .await;
        self.outcome.failures.push(error);
    }

    async fn edit_account(&mut self, mut edit: ServiceAccountEdit) {
        let skipped: Vec<String> = edit
            .add
            .iter()
            .filter(|(_, secret)| self.unlinkable.contains(secret))
            .map(|(kind, secret)| format!("link {secret} to {} ({})", edit.name, kind.field()))
            .collect();
        self.outcome.skipped.extend(skipped);
        edit.add
            .retain(|(_, secret)| !self.unlinkable.contains(secret));
        if edit.add.is_empty() && edit.remove.is_empty() {
            return;
        }
        if let Err(error) = self.read_modify_write(&edit).await {
            self.undeletable
                .extend(edit.remove.iter().map(|(_, secret)| secret.clone()));
            self.warn_on_namespace("LinkFailed", &error.to_string())
                .await;
            self.outcome.failures.push(error);
        }
    }

    /// GET (or take the copy last seen), edit the lists, PUT with its `resourceVersion`;
    /// again, with a fresh GET, on 409 Conflict.
    async fn read_modify_write(&mut self, edit: &ServiceAccountEdit) -> Result<(), ApiError> {
        let api = self.accounts();
        let target = self.target(&edit.name);
        let mut last_conflict = None;
        for _ in 0..self.options.conflict_attempts {
            let known = self.known_accounts.remove(&edit.name);
            let read = match known {
                Some(known) => Ok(known),
                None => self.throttle.call(|| api.get(&edit.name)).await,
            };
            let current = match read {
                Ok(current) => current,
                Err(kube::Error::Api(status)) if status.is_not_found() => {
                    self.outcome.problems.push(Problem {
                        reason: "ServiceAccountMissing",
                        message: format!(
                            "project {}: service account {} disappeared",
                            self.project, edit.name
                        ),
                    });
                    return Ok(());
                }
                Err(error) => return Err(ApiError::new("get", "serviceaccounts", target, error)),
            };
            let Some(updated) = edit_service_account(&current, edit) else {
                return Ok(());
            };
            match self
                .throttle
                .call(|| api.replace(&edit.name, &POST, &updated))
                .await
            {
                Ok(_) => {
                    let what = describe_edit(edit);
                    self.changed("ServiceAccount", &edit.name, "Linked", &what)
                        .await;
                    return Ok(());
                }
                Err(kube::Error::Api(status)) if status.is_conflict() => {
                    last_conflict = Some(kube::Error::Api(status));
                }
                Err(kube::Error::Api(status)) if status.is_not_found() => {
                    // The copy last seen was of an account deleted since.
                    self.outcome.problems.push(Problem {
                        reason: "ServiceAccountMissing",
                        message: format!(
                            "project {}: service account {} disappeared",
                            self.project, edit.name
                        ),
                    });
                    return Ok(());
                }
                Err(error) => {
                    return Err(ApiError::new("update", "serviceaccounts", target, error));
                }
            }
        }
        let error = last_conflict.unwrap_or_else(|| {
            kube::Error::Api(Box::new(kube::core::Status::failure(
                "no attempt was made",
                "Conflict",
            )))
        });
        Err(ApiError::new("update", "serviceaccounts", target, error))
    }

    async fn delete_secret(&mut self, name: &str) {
        if self.undeletable.contains(name) {
            self.outcome.skipped.push(format!(
                "delete secret {name}: a service account may still reference it"
            ));
            return;
        }
        let api = self.secrets();
        match self.throttle.call(|| api.delete(name, &DELETE)).await {
            Ok(_) => {
                self.changed("Secret", name, "Deleted", "deleted secret")
                    .await
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(error) => {
                let error = ApiError::new("delete", "secrets", self.target(name), error);
                self.warn_on_namespace("DeleteFailed", &error.to_string())
                    .await;
                self.outcome.failures.push(error);
            }
        }
    }

    async fn create_binding(&mut self, binding: &DesiredRoleBinding) {
        let api = self.bindings();
        let manifest = role_binding_manifest(self.project, binding);
        match self.throttle.call(|| api.create(&POST, &manifest)).await {
            Ok(_) => {
                self.changed(
                    "RoleBinding",
                    &binding.name,
                    "Created",
                    "created rolebinding",
                )
                .await
            }
            Err(error) => self.binding_failed("create", &binding.name, error).await,
        }
    }

    async fn update_binding(
        &mut self,
        binding: &DesiredRoleBinding,
        resource_version: Option<String>,
    ) {
        let api = self.bindings();
        let mut manifest = role_binding_manifest(self.project, binding);
        manifest.metadata.resource_version = resource_version;
        match self
            .throttle
            .call(|| api.replace(&binding.name, &POST, &manifest))
            .await
        {
            Ok(_) => {
                self.changed(
                    "RoleBinding",
                    &binding.name,
                    "Updated",
                    "updated rolebinding",
                )
                .await
            }
            Err(error) => self.binding_failed("update", &binding.name, error).await,
        }
    }

    async fn delete_binding(&mut self, name: &str) {
        let api = self.bindings();
        match self.throttle.call(|| api.delete(name, &DELETE)).await {
            Ok(_) => {
                self.changed("RoleBinding", name, "Deleted", "deleted rolebinding")
                    .await
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(error) => self.binding_failed("delete", name, error).await,
        }
    }

    async fn binding_failed(&mut self, verb: &'static str, name: &str, error: kube::Error) {
        let error = ApiError::new(verb, "rolebindings", self.target(name), error);
        self.warn_on_namespace("WriteFailed", &error.to_string())
            .await;
        self.outcome.failures.push(error);
    }

    /// Records a change and publishes a Normal Event on the object.
    async fn changed(&mut self, kind: &str, name: &str, reason: &str, what: &str) {
        tracing::info!(namespace = self.project, object = name, kind, "{reason}.");
        self.outcome.changes.push(format!("{what} {name}"));
        let (api_version, kind_name) = match kind {
            "RoleBinding" => ("rbac.authorization.k8s.io/v1", "RoleBinding"),
            "ServiceAccount" => ("v1", "ServiceAccount"),
            _ => ("v1", "Secret"),
        };
        let reference = ObjectReference {
            api_version: Some(api_version.into()),
            kind: Some(kind_name.into()),
            name: Some(name.into()),
            namespace: Some(self.project.into()),
            ..ObjectReference::default()
        };
        self.publish(
            EventType::Normal,
            reason,
            &format!("pullsecretd {what} {name}"),
            reference,
        )
        .await;
    }

    /// Publishes a Warning Event on the namespace.
    async fn warn_on_namespace(&mut self, reason: &str, note: &str) {
        tracing::warn!(namespace = self.project, reason, "{note}");
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Namespace".into()),
            name: Some(self.project.into()),
            ..ObjectReference::default()
        };
        self.publish(EventType::Warning, reason, note, reference)
            .await;
    }

    async fn publish(
        &self,
        type_: EventType,
        reason: &str,
        note: &str,
        reference: ObjectReference,
    ) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: reason.into(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &reference).await {
            // An Event is a courtesy: failing to publish one never fails the change itself.
            tracing::debug!(%error, "Could not publish an Event.");
        }
    }
}

fn describe_edit(edit: &ServiceAccountEdit) -> String {
    let added: Vec<String> = edit
        .add
        .iter()
        .map(|(kind, secret)| format!("+{secret} ({})", kind.field()))
        .collect();
    let removed: Vec<String> = edit
        .remove
        .iter()
        .map(|(kind, secret)| format!("-{secret} ({})", kind.field()))
        .collect();
    format!(
        "edited links [{}] of serviceaccount",
        [added, removed].concat().join(", ")
    )
}
