//! Apply (I/O): carry out one project's actions, in the order `diff` gave them.
//!
//! Safety rules enforced here, whatever happens on the wire:
//! - ownership is proven again against what the server returns before anything found there is
//!   changed (a create that meets an existing Secret, an update that meets a 409): only this
//!   instance's objects, or with `adopt` a Secret pullsecretd did not create;
//! - a Secret that could not be written (or turned out to be someone else's) is never linked;
//! - a Secret whose unlink failed is never deleted, so no service account is left pointing at a
//!   Secret pullsecretd removed; a type change unlinks first, deletes, creates and relinks, and
//!   stops where a step fails with no account naming a missing Secret;
//! - deletes carry the uid and resourceVersion read as preconditions: an object recreated or
//!   changed by someone else meanwhile survives;
//! - service-account lists are edited by read-modify-write with the `resourceVersion` read,
//!   re-read and re-applied on 409 Conflict, never replaced wholesale;
//! - one failing project never stops the others: failures are collected in the outcome.
//!
//! Every write is reported as an Event on the object (or, for failures before it exists, on the
//! namespace), with a reason and object names, never data.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::events::{EventType, Recorder, Reporter};

use super::cache::WriteLog;
use super::events::publish_event;
use super::pod_lists::{PendingPods, pod_summaries};
use super::pods::HealBudget;
use super::{ApiError, Throttle};
use crate::config::LinkKind;
use crate::diff::{
    Delete, Mode, ProjectDiff, Recreate, ServiceAccountEdit, Step, edit_service_account,
    foreign_secret,
};
use crate::model::heal::{self, PodSummary};
use crate::model::managed::{self, Ownership};
use crate::model::manifest::{role_binding_manifest, secret_manifest};
pub use crate::model::outcome::{Change, Failure, ProjectOutcome, Verb};
use crate::plan::{DesiredRoleBinding, DesiredSecret, Problem};

/// Plain create/replace parameters (no dry run, no field manager needed).
static POST: PostParams = PostParams {
    dry_run: false,
    field_manager: None,
};

/// The name pullsecretd reports as, in Events and field managers.
pub const CONTROLLER_NAME: &str = "pullsecretd";

/// ServiceAccount link edits carry pullsecretd's field manager, so `managedFields` tell its
/// entries from another writer's (and GitOps tools can be told to ignore what it manages).
fn link_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(CONTROLLER_NAME.to_string()),
    }
}

/// How `apply_project` behaves.
#[derive(Clone)]
pub struct ApplyOptions {
    /// Attempts of a service-account read-modify-write before giving up on conflicts.
    pub conflict_attempts: usize,
    /// Publish Kubernetes Events for changes and failures.
    pub events: bool,
    /// The instance whose objects may be changed.
    pub instance: String,
    /// `AddOnly` never takes a Secret over, whatever `adopt` says.
    pub mode: Mode,
    /// The Event recorder to use (`None`: one per project, made here when `events` is on). A
    /// long-lived process shares one, so a recurring Event becomes a series, not a new Event.
    pub recorder: Option<Recorder>,
    /// The rate limit of pod restarts by healing, shared by every namespace of the process.
    pub heal_budget: Arc<HealBudget>,
    /// Healing's pending-pod lists, shared by every namespace of the process.
    pub pending_pods: Arc<PendingPods>,
    /// Told every object written or deleted, with the server's answer (the daemon's caches:
    /// they remember it until the watch delivers it). `None` for one-shot passes.
    pub write_log: Option<Arc<dyn WriteLog>>,
}

impl ApplyOptions {
    /// Full writes for `instance`, Events on.
    pub fn for_instance(instance: &str) -> Self {
        Self {
            conflict_attempts: 5,
            events: true,
            instance: instance.to_string(),
            mode: Mode::Full,
            recorder: None,
            heal_budget: Arc::default(),
            pending_pods: Arc::new(PendingPods::per_namespace()),
            write_log: None,
        }
    }
}

/// An Event recorder reporting as pullsecretd `instance`.
pub fn recorder(client: &Client, instance: &str) -> Recorder {
    Recorder::new(
        client.clone(),
        Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: Some(instance.to_string()),
        },
    )
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
        recorder: options
            .recorder
            .clone()
            .or_else(|| options.events.then(|| recorder(client, &options.instance))),
        outcome: ProjectOutcome {
            project: project.to_string(),
            problems: diff.problems,
            held: diff.held,
            ..ProjectOutcome::default()
        },
        unlinkable: BTreeSet::new(),
        undeletable: BTreeSet::new(),
        pods: None,
        known_accounts: accounts
            .into_iter()
            .filter(|sa| sa.metadata.resource_version.is_some())
            .filter_map(|sa| Some((sa.metadata.name.clone()?, sa)))
            .collect(),
    };
    run.report_held().await;
    run.report_problems().await;
    for action in diff.steps {
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
    /// The namespace's pods, read before the first delete (after every link edit).
    pods: Option<Vec<PodSummary>>,
}

/// How a guarded delete ended.
enum Deleted {
    /// Gone now (deleted, or already missing).
    Gone,
    /// Not deleted on purpose: changed or recreated by someone else, or no longer ours.
    Kept(String),
    Failed(ApiError),
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

    async fn execute(&mut self, action: Step) {
        match action {
            Step::CreateSecret(secret) => {
                self.create_secret(&secret).await;
            }
            Step::UpdateSecret {
                secret,
                resource_version,
            } => {
                self.update_secret(&secret, resource_version).await;
            }
            Step::RecreateSecret(recreate) => self.recreate_secret(recreate).await,
            Step::EditServiceAccount(edit) => self.edit_account(edit).await,
            Step::DeleteSecret(delete) => self.delete_secret(&delete).await,
            Step::CreateRoleBinding(binding) => self.create_binding(&binding).await,
            Step::UpdateRoleBinding {
                binding,
                resource_version,
            } => self.update_binding(&binding, resource_version).await,
            Step::DeleteRoleBinding(delete) => self.delete_binding(&delete).await,
        }
    }

    /// A Warning Event on the namespace for each held Secret: it is kept, and why.
    async fn report_held(&mut self) {
        let notes: Vec<String> = self
            .outcome
            .held
            .iter()
            .map(|held| {
                format!(
                    "secret {} of pull secret {} is held ({}); kept as they are: {}",
                    held.secret.name,
                    held.secret.pull_secret,
                    held.secret.reason,
                    if held.kept.is_empty() {
                        "nothing exists yet".to_string()
                    } else {
                        held.kept.join(", ")
                    }
                )
            })
            .collect();
        for note in notes {
            self.warn_on_namespace("Held", &note).await;
        }
    }

    /// A Warning Event on the namespace for each problem found (someone else's Secret, a name
    /// two pull secrets want, …) but a missing service account: on plain Kubernetes `builder`
    /// is missing in every namespace, and the summary, log and metric say so already.
    async fn report_problems(&mut self) {
        let problems: Vec<Problem> = self
            .outcome
            .problems
            .iter()
            .filter(|p| p.reason != "ServiceAccountMissing")
            .cloned()
            .collect();
        let reference = self.namespace_reference();
        for problem in problems {
            // Not logged here: the trigger reports problems (summary, or the daemon's log).
            self.publish(
                EventType::Warning,
                problem.reason,
                &problem.message,
                reference.clone(),
            )
            .await;
        }
    }

    /// A problem found while applying (a create that met someone else's Secret): recorded,
    /// and published as the diff's problems are.
    async fn found_problem(&mut self, problem: Problem) {
        let reference = self.namespace_reference();
        self.publish(
            EventType::Warning,
            problem.reason,
            &problem.message,
            reference,
        )
        .await;
        self.outcome.problems.push(problem);
    }

    /// The project itself, as the object of an Event. The reference names the project as its
    /// namespace too, so the Event is stored there and `kubectl get events -n PROJECT` shows it
    /// (an Event about a cluster-scoped object would otherwise land in `default`).
    fn namespace_reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Namespace".into()),
            name: Some(self.project.into()),
            namespace: Some(self.project.into()),
            ..ObjectReference::default()
        }
    }

    /// Whether an existing Secret found on the server may be written for `secret`.
    fn may_write(&self, secret: &DesiredSecret, existing: &Secret) -> Result<(), Problem> {
        match managed::secret_ownership(existing, &self.options.instance) {
            Ownership::Ours { .. } => Ok(()),
            Ownership::Foreign | Ownership::Unproven(_)
                if secret.adopt && self.options.mode == Mode::Full =>
            {
                Ok(())
            }
            Ownership::OtherInstance(instance) => Err(Problem {
                reason: "OwnedByAnotherInstance",
                message: format!(
                    "project {}: secret {} belongs to pullsecretd instance {instance}; left \
                     untouched",
                    self.project, secret.name
                ),
            }),
            Ownership::Foreign | Ownership::Unproven(_) => {
                Err(foreign_secret(self.project, secret))
            }
        }
    }

    /// Creates `secret`; true when it exists as this instance's afterwards.
    async fn create_secret(&mut self, secret: &DesiredSecret) -> bool {
        let manifest = secret_manifest(self.project, secret);
        let api = self.secrets();
        match self.throttle.call(|| api.create(&POST, &manifest)).await {
            Ok(created) => {
                if let Some(log) = &self.options.write_log {
                    log.secret_written(None, created);
                }
                self.changed(Change::Secret {
                    verb: Verb::Create,
                    name: secret.name.clone(),
                })
                .await;
                true
            }
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                self.take_over_existing(secret).await
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                self.unlinkable.insert(secret.name.clone());
                self.namespace_missing().await;
                false
            }
            Err(error) => {
                self.secret_failed("create", secret, error).await;
                false
            }
        }
    }

    /// A create found a Secret of that name: update it if it is ours (or may be adopted),
    /// otherwise report it and leave it alone.
    async fn take_over_existing(&mut self, secret: &DesiredSecret) -> bool {
        let api = self.secrets();
        let existing = match self.throttle.call(|| api.get(&secret.name)).await {
            Ok(existing) => existing,
            Err(error) => {
                self.secret_failed("get", secret, error).await;
                return false;
            }
        };
        match self.may_write(secret, &existing) {
            Ok(()) => {
                let resource_version = existing.metadata.resource_version.clone();
                Box::pin(self.update_secret(secret, resource_version)).await
            }
            Err(problem) => {
                self.unlinkable.insert(secret.name.clone());
                self.found_problem(problem).await;
                false
            }
        }
    }

    /// Replaces `secret`'s data and metadata; true when written.
    async fn update_secret(
        &mut self,
        secret: &DesiredSecret,
        resource_version: Option<String>,
    ) -> bool {
        let api = self.secrets();
        let mut manifest = secret_manifest(self.project, secret);
        manifest.metadata.resource_version = resource_version;
        for _ in 0..self.options.conflict_attempts {
            match self
                .throttle
                .call(|| api.replace(&secret.name, &POST, &manifest))
                .await
            {
                Ok(updated) => {
                    if let Some(log) = &self.options.write_log {
                        log.secret_written(manifest.metadata.resource_version.as_deref(), updated);
                    }
                    self.changed(Change::Secret {
                        verb: Verb::Update,
                        name: secret.name.clone(),
                    })
                    .await;
                    return true;
                }
                Err(kube::Error::Api(status)) if status.is_conflict() => {
                    // Someone wrote in between: re-read, and only go on if it is still ours.
                    let fresh = match self.throttle.call(|| api.get(&secret.name)).await {
                        Ok(fresh) => fresh,
                        Err(error) => {
                            self.secret_failed("get", secret, error).await;
                            return false;
                        }
                    };
                    if let Err(problem) = self.may_write(secret, &fresh) {
                        self.unlinkable.insert(secret.name.clone());
                        self.found_problem(problem).await;
                        return false;
                    }
                    manifest.metadata.resource_version = fresh.metadata.resource_version;
                }
                Err(kube::Error::Api(status)) if status.is_not_found() => {
                    return Box::pin(self.create_secret(secret)).await;
                }
                Err(error) => {
                    self.secret_failed("update", secret, error).await;
                    return false;
                }
            }
        }
        self.unlinkable.insert(secret.name.clone());
        self.outcome
            .skipped
            .push(format!("update secret {}: kept conflicting", secret.name));
        false
    }

    /// `type` cannot change and immutable data cannot either: unlink, delete, create, relink.
    /// Wherever it stops, no service account names a Secret that is missing.
    async fn recreate_secret(&mut self, recreate: Recreate) {
        let name = recreate.secret.name.clone();
        let unlinks = group_links(&name, &recreate.linked);
        let mut unlinked: Vec<ServiceAccountEdit> = Vec::new();
        for edit in unlinks {
            match self.read_modify_write(&edit).await {
                Ok(()) => unlinked.push(edit),
                Err(error) => {
                    self.outcome.skipped.push(format!(
                        "recreate secret {name}: unlinking it from serviceaccount {} failed, so \
                         it was not deleted",
                        edit.name
                    ));
                    self.link_failed(error).await;
                    self.relink(&unlinked).await;
                    return;
                }
            }
        }
        match self.delete_guarded_secret(&recreate.current).await {
            Deleted::Gone => {}
            Deleted::Kept(why) => {
                self.outcome
                    .skipped
                    .push(format!("recreate secret {name}: not deleted: {why}"));
                self.relink(&unlinked).await;
                return;
            }
            Deleted::Failed(error) => {
                self.fail_on_namespace("DeleteFailed", error).await;
                self.relink(&unlinked).await;
                return;
            }
        }
        if !self.create_secret(&recreate.secret).await {
            // The Secret is missing: its links stay removed until a later pass creates it.
            self.unlinkable.insert(name);
            return;
        }
        self.relink(&unlinked).await;
    }

    /// Adds back what `unlinked` removed (best effort: a failure is reported).
    async fn relink(&mut self, unlinked: &[ServiceAccountEdit]) {
        for edit in unlinked {
            let back = ServiceAccountEdit {
                name: edit.name.clone(),
                add: edit.remove.clone(),
                remove: Vec::new(),
            };
            if let Err(error) = self.read_modify_write(&back).await {
                self.link_failed(error).await;
            }
        }
    }

    async fn secret_failed(
        &mut self,
        verb: &'static str,
        secret: &DesiredSecret,
        error: kube::Error,
    ) {
        self.unlinkable.insert(secret.name.clone());
        let error = ApiError::new(verb, "secrets", self.target(&secret.name), error);
        self.fail_on_namespace("WriteFailed", error).await;
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
            self.link_failed(error).await;
        }
    }

    async fn link_failed(&mut self, error: ApiError) {
        self.fail_on_namespace("LinkFailed", error).await;
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
                    self.account_disappeared(&edit.name);
                    return Ok(());
                }
                Err(error) => return Err(ApiError::new("get", "serviceaccounts", target, error)),
            };
            let Some(updated) = edit_service_account(&current, edit) else {
                return Ok(());
            };
            let params = link_params();
            match self
                .throttle
                .call(|| api.replace(&edit.name, &params, &updated))
                .await
            {
                Ok(written) => {
                    if let Some(log) = &self.options.write_log {
                        log.account_written(current.metadata.resource_version.as_deref(), written);
                    }
                    let change = applied_links(&current, edit);
                    self.changed(change).await;
                    return Ok(());
                }
                Err(kube::Error::Api(status)) if status.is_conflict() => {
                    last_conflict = Some(kube::Error::Api(status));
                }
                Err(kube::Error::Api(status)) if status.is_not_found() => {
                    // The copy last seen was of an account deleted since.
                    self.account_disappeared(&edit.name);
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

    fn account_disappeared(&mut self, name: &str) {
        self.outcome.problems.push(Problem {
            reason: "ServiceAccountMissing",
            message: format!(
                "project {}: service account {name} disappeared",
                self.project
            ),
        });
    }

    async fn delete_secret(&mut self, delete: &Delete) {
        if self.undeletable.contains(&delete.name) {
            self.outcome.skipped.push(format!(
                "delete secret {}: a service account may still reference it",
                delete.name
            ));
            return;
        }
        match self.pods_naming(&delete.name).await {
            Ok(pods) if !pods.is_empty() => {
                tracing::info!(
                    namespace = self.project,
                    secret = %delete.name,
                    pods = %pods.join(", "),
                    "Secret kept: pods still name it."
                );
                self.outcome.kept_in_use.push((delete.name.clone(), pods));
                return;
            }
            Ok(_) => {}
            Err(error) => {
                // Whether a pod still needs it is unknown: it stays.
                self.fail_on_namespace("DeleteFailed", error).await;
                return;
            }
        }
        match self.delete_guarded_secret(delete).await {
            Deleted::Gone => {}
            Deleted::Kept(why) => self
                .outcome
                .skipped
                .push(format!("delete secret {}: not deleted: {why}", delete.name)),
            Deleted::Failed(error) => self.fail_on_namespace("DeleteFailed", error).await,
        }
    }

    /// The pods that may still pull with `secret` (their `imagePullSecrets` name it). Read once
    /// per run, at the first delete: every link edit is done by then, so a pod created after
    /// the read got its account's new list and cannot name a Secret being deleted.
    async fn pods_naming(&mut self, secret: &str) -> Result<Vec<String>, ApiError> {
        if self.pods.is_none() {
            self.pods = Some(pod_summaries(self.client, self.throttle, self.project).await?);
        }
        let pods = self.pods.as_deref().unwrap_or_default();
        Ok(heal::pods_using(pods, secret)
            .into_iter()
            .map(str::to_string)
            .collect())
    }

    /// Deletes the Secret `delete` names, if it is still the one read (uid and resourceVersion
    /// as preconditions). When it changed meanwhile it is read again: deleted (with the new
    /// preconditions) only if it is the same object and still this instance's.
    async fn delete_guarded_secret(&mut self, delete: &Delete) -> Deleted {
        let api = self.secrets();
        let mut guard = delete.clone();
        for attempt in 0..2 {
            let params = guarded(&guard);
            match self
                .throttle
                .call(|| api.delete(&guard.name, &params))
                .await
            {
                Ok(_) => {
                    if let Some(log) = &self.options.write_log {
                        log.secret_deleted(
                            self.project,
                            &guard.name,
                            guard.resource_version.as_deref(),
                        );
                    }
                    self.changed(Change::Secret {
                        verb: Verb::Delete,
                        name: delete.name.clone(),
                    })
                    .await;
                    return Deleted::Gone;
                }
                Err(kube::Error::Api(status)) if status.is_not_found() => return Deleted::Gone,
                Err(kube::Error::Api(status)) if status.is_conflict() && attempt == 0 => {
                    let fresh = match self.throttle.call(|| api.get(&guard.name)).await {
                        Ok(fresh) => fresh,
                        Err(kube::Error::Api(status)) if status.is_not_found() => {
                            return Deleted::Gone;
                        }
                        Err(error) => {
                            let target = self.target(&guard.name);
                            return Deleted::Failed(ApiError::new("get", "secrets", target, error));
                        }
                    };
                    if fresh.metadata.uid != delete.uid {
                        return Deleted::Kept("it was recreated by someone else".into());
                    }
                    if !managed::secret_ownership(&fresh, &self.options.instance).is_ours() {
                        return Deleted::Kept("it is no longer this instance's".into());
                    }
                    guard.resource_version = fresh.metadata.resource_version;
                }
                Err(kube::Error::Api(status)) if status.is_conflict() => {
                    return Deleted::Kept("it kept changing".into());
                }
                Err(error) => {
                    let target = self.target(&guard.name);
                    return Deleted::Failed(ApiError::new("delete", "secrets", target, error));
                }
            }
        }
        Deleted::Kept("it kept changing".into())
    }

    async fn create_binding(&mut self, binding: &DesiredRoleBinding) {
        let api = self.bindings();
        let manifest = role_binding_manifest(self.project, binding);
        match self.throttle.call(|| api.create(&POST, &manifest)).await {
            Ok(created) => {
                if let Some(log) = &self.options.write_log {
                    log.role_binding_written(None, created);
                }
                self.changed(Change::RoleBinding {
                    verb: Verb::Create,
                    name: binding.name.clone(),
                })
                .await
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                self.namespace_missing().await;
            }
            Err(error) => self.binding_failed("create", &binding.name, error).await,
        }
    }

    /// A create answered 404: the namespace does not exist. Namespaced mode takes its
    /// namespaces as existing without reading them, so this is where a missing one shows: a
    /// problem (once per namespace), not a failure to retry.
    async fn namespace_missing(&mut self) {
        if self
            .outcome
            .problems
            .iter()
            .any(|p| p.reason == "ProjectNotFound")
        {
            return;
        }
        let problem = Problem {
            reason: "ProjectNotFound",
            message: format!("project {} does not exist", self.project),
        };
        self.found_problem(problem).await;
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
            Ok(updated) => {
                if let Some(log) = &self.options.write_log {
                    log.role_binding_written(
                        manifest.metadata.resource_version.as_deref(),
                        updated,
                    );
                }
                self.changed(Change::RoleBinding {
                    verb: Verb::Update,
                    name: binding.name.clone(),
                })
                .await
            }
            Err(error) => self.binding_failed("update", &binding.name, error).await,
        }
    }

    async fn delete_binding(&mut self, delete: &Delete) {
        let api = self.bindings();
        let params = guarded(delete);
        match self
            .throttle
            .call(|| api.delete(&delete.name, &params))
            .await
        {
            Ok(_) => {
                if let Some(log) = &self.options.write_log {
                    log.role_binding_deleted(
                        self.project,
                        &delete.name,
                        delete.resource_version.as_deref(),
                    );
                }
                self.changed(Change::RoleBinding {
                    verb: Verb::Delete,
                    name: delete.name.clone(),
                })
                .await
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(kube::Error::Api(status)) if status.is_conflict() => {
                // Changed since it was read: the next pass looks again.
                self.outcome.skipped.push(format!(
                    "delete rolebinding {}: it changed since it was read",
                    delete.name
                ));
            }
            Err(error) => self.binding_failed("delete", &delete.name, error).await,
        }
    }

    async fn binding_failed(&mut self, verb: &'static str, name: &str, error: kube::Error) {
        let error = ApiError::new(verb, "rolebindings", self.target(name), error);
        self.fail_on_namespace("WriteFailed", error).await;
    }

    async fn fail_on_namespace(&mut self, reason: &str, error: ApiError) {
        self.warn_on_namespace(reason, &error.to_string()).await;
        self.outcome.failures.push(error.to_failure());
    }

    /// Records a change and publishes a Normal Event on the object.
    async fn changed(&mut self, change: Change) {
        let (api_version, kind, name) = match &change {
            Change::Secret { name, .. } => ("v1", "Secret", name.clone()),
            Change::Links { account, .. } => ("v1", "ServiceAccount", account.clone()),
            Change::RoleBinding { name, .. } => {
                ("rbac.authorization.k8s.io/v1", "RoleBinding", name.clone())
            }
        };
        tracing::info!(
            namespace = self.project,
            object = %name,
            kind,
            change = %change,
            "{}.",
            change.reason()
        );
        let reference = ObjectReference {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
            name: Some(name),
            namespace: Some(self.project.into()),
            ..ObjectReference::default()
        };
        self.publish(
            EventType::Normal,
            change.reason(),
            &format!("pullsecretd {change}"),
            reference,
        )
        .await;
        self.outcome.changes.push(change);
    }

    /// Publishes a Warning Event on the namespace.
    async fn warn_on_namespace(&mut self, reason: &str, note: &str) {
        tracing::warn!(namespace = self.project, reason, "{note}");
        let reference = self.namespace_reference();
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
        if let Some(recorder) = &self.recorder {
            publish_event(recorder, type_, reason, note, &reference).await;
        }
    }
}

/// Delete parameters carrying `delete`'s uid and resourceVersion as preconditions.
fn guarded(delete: &Delete) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: delete.uid.clone(),
            resource_version: delete.resource_version.clone(),
        }),
        ..DeleteParams::default()
    }
}

/// One unlink edit per account, removing `secret` from the lists `linked` names.
fn group_links(secret: &str, linked: &[(String, LinkKind)]) -> Vec<ServiceAccountEdit> {
    let mut by_account: BTreeMap<&str, Vec<(LinkKind, String)>> = BTreeMap::new();
    for (account, kind) in linked {
        by_account
            .entry(account)
            .or_default()
            .push((*kind, secret.to_string()));
    }
    by_account
        .into_iter()
        .map(|(account, remove)| ServiceAccountEdit {
            name: account.to_string(),
            add: Vec::new(),
            remove,
        })
        .collect()
}

/// What `edit` actually changed on `before`: entries already absent or present are left out.
fn applied_links(before: &ServiceAccount, edit: &ServiceAccountEdit) -> Change {
    let has = |kind, secret: &str| crate::diff::linked_names(before, kind).contains(&secret);
    Change::Links {
        account: edit.name.clone(),
        added: edit
            .add
            .iter()
            .filter(|(kind, secret)| !has(*kind, secret))
            .cloned()
            .collect(),
        removed: edit
            .remove
            .iter()
            .filter(|(kind, secret)| has(*kind, secret))
            .cloned()
            .collect(),
    }
}
