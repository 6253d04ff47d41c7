//! Plan stage (pure): config + resolved credentials + known namespaces → desired objects.
//!
//! No I/O and no clock: the same inputs always give the same [`DesiredState`], which is what
//! makes "nothing changed ⇒ nothing to write" testable. Problems that are data rather than
//! failures (a registry whose source failed, a name two pull secrets both want) are collected
//! in [`DesiredState::problems`] instead of aborting the whole plan.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::{
    Config, ImagePullerConfig, Layout, PullSecretConfig, PullerSubject, RotationStrategy,
    SecretType,
};
use crate::dockerconfig::encode_payload;
use crate::model::credential::Credential;
use crate::model::credential::Resolved;
use crate::names::dns1123_subdomain_problem;

pub use crate::model::desired::{
    DesiredLink, DesiredRoleBinding, DesiredSecret, DesiredState, HeldSecret, HoldReason,
    NamespaceInfo, Problem, ProjectPlan, Retention, SecretPayload,
};
pub use crate::model::managed::{IMAGE_PULLER_BINDING, IMAGE_PULLER_ROLE};
use crate::model::rotation;
pub use crate::model::rotation::VersionKey;

/// Everything the planner reads.
#[derive(Clone, Copy, Debug)]
pub struct PlanInputs<'a> {
    pub config: &'a Config,
    /// Credentials by registry name. A registry missing here is one whose source failed.
    pub credentials: &'a BTreeMap<String, Resolved>,
    /// The namespaces that exist (or, offline, that the user asked about).
    pub namespaces: &'a [NamespaceInfo],
    /// Whether the cluster is OpenShift (`None`: not known, e.g. offline). Image-puller
    /// bindings name OpenShift's `system:image-puller` role, so they are skipped elsewhere.
    pub openshift: Option<bool>,
}

/// Computes the desired state of every namespace in `inputs.namespaces`, from the Secrets
/// [`prepare_secrets`] made of the same config and credentials: each namespace planned by
/// [`plan_namespace`] (the one planner), plus the problems that concern the whole config (a
/// failed or unrenderable source, a named project that does not exist, image pullers off
/// OpenShift). Pure.
pub fn plan(inputs: PlanInputs<'_>, secrets: &PreparedSecrets) -> DesiredState {
    let mut state = DesiredState {
        problems: config_problems(inputs, secrets),
        ..DesiredState::default()
    };
    for namespace in inputs.namespaces {
        let mut project = plan_namespace(inputs, secrets, namespace);
        state.problems.append(&mut project.problems);
        if !project.is_empty() {
            state.projects.insert(namespace.name.clone(), project);
        }
    }
    state
}

/// Problems of the config as a whole, in config order.
fn config_problems(inputs: PlanInputs<'_>, secrets: &PreparedSecrets) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (pull_secret, prepared) in inputs.config.pull_secrets.iter().zip(&secrets.pull_secrets) {
        problems.extend(prepared.problems.iter().cloned());
        report_missing_projects(pull_secret, inputs.namespaces, &mut problems);
    }
    let pullers = &inputs.config.image_pullers;
    if pullers.is_empty() {
        return problems;
    }
    if inputs.openshift == Some(false) {
        problems.push(Problem {
            reason: "NotOpenShift",
            message: format!(
                "imagePullers skipped: this cluster is not OpenShift (no project.openshift.io or \
                 image.openshift.io API), so the {IMAGE_PULLER_ROLE} role does not exist here"
            ),
        });
        return problems;
    }
    for puller in pullers {
        if !inputs.namespaces.iter().any(|ns| ns.name == puller.project) {
            problems.push(Problem {
                reason: "ProjectNotFound",
                message: format!(
                    "image puller: project {} does not exist (or is not visible)",
                    puller.project
                ),
            });
        }
    }
    problems
}

/// Every pull secret's Secrets prepared from one set of credentials: payloads, hashes and names
/// are computed once and shared (`Arc`) by every project that gets them.
#[derive(Debug, Default)]
pub struct PreparedSecrets {
    /// One entry per pull secret of the config, in config order.
    pull_secrets: Vec<PreparedPullSecret>,
}

#[derive(Debug, Default)]
struct PreparedPullSecret {
    secrets: Vec<Result<Arc<DesiredSecret>, HeldSecret>>,
    problems: Vec<Problem>,
}

/// Prepares every pull secret's Secrets for `config` once, versioned names derived under
/// `version_key`. Pure.
pub fn prepare_secrets(
    config: &Config,
    credentials: &BTreeMap<String, Resolved>,
    version_key: &VersionKey,
) -> PreparedSecrets {
    let pull_secrets = config
        .pull_secrets
        .iter()
        .map(|pull_secret| {
            let mut problems = Vec::new();
            let secrets = secret_groups(pull_secret)
                .iter()
                .map(|(name, registries)| {
                    let group = SecretGroup {
                        base_name: name,
                        registries,
                        instance: config.instance_name(),
                        version_key,
                    };
                    prepare_secret(pull_secret, &group, credentials, &mut problems)
                })
                .collect();
            PreparedPullSecret { secrets, problems }
        })
        .collect();
    PreparedSecrets { pull_secrets }
}

/// Whether [`plan_namespace`] reads `inputs.namespaces` for `namespace`: only when it holds
/// an image puller's binding (its `allowProjectsOf` subjects are other namespaces).
pub fn needs_all_namespaces(config: &Config, namespace: &str) -> bool {
    config.image_pullers.iter().any(|p| p.project == namespace)
}

/// The plan of one namespace, from Secrets prepared once for every namespace
/// ([`prepare_secrets`]). `inputs.namespaces` is read only when [`needs_all_namespaces`] says
/// so; otherwise it may be empty. Name conflicts between pull secrets are in the plan's
/// `problems`; problems of the config as a whole are [`plan`]'s. Pure.
pub fn plan_namespace(
    inputs: PlanInputs<'_>,
    prepared: &PreparedSecrets,
    namespace: &NamespaceInfo,
) -> ProjectPlan {
    let mut project = ProjectPlan::default();
    let mut problems = Vec::new();
    for (pull_secret, prepared) in inputs
        .config
        .pull_secrets
        .iter()
        .zip(&prepared.pull_secrets)
    {
        if !is_selected(pull_secret, namespace) {
            continue;
        }
        for secret in &prepared.secrets {
            add_secret(
                &mut project,
                pull_secret,
                secret,
                &namespace.name,
                &mut problems,
            );
        }
    }
    project.problems = problems;
    if inputs.openshift != Some(false) {
        for puller in &inputs.config.image_pullers {
            if puller.project == namespace.name {
                project
                    .role_bindings
                    .push(image_puller_binding(puller, inputs));
            }
        }
        merge_project_role_bindings(&mut project);
    }
    project
}

/// The Secrets a pull secret becomes: one with every registry (`combined`), or one per
/// registry named after the registry entry (`split`, the procedure's linked pair).
fn secret_groups(pull_secret: &PullSecretConfig) -> Vec<(String, Vec<String>)> {
    match pull_secret.layout {
        Layout::Combined => vec![(pull_secret.name.clone(), pull_secret.registries.clone())],
        Layout::Split => pull_secret
            .registries
            .iter()
            .map(|registry| (registry.clone(), vec![registry.clone()]))
            .collect(),
    }
}

/// One Secret of a pull secret, before it is rendered.
struct SecretGroup<'a> {
    base_name: &'a str,
    registries: &'a [String],
    instance: &'a str,
    version_key: &'a VersionKey,
}

fn prepare_secret(
    pull_secret: &PullSecretConfig,
    group: &SecretGroup<'_>,
    resolved_credentials: &BTreeMap<String, Resolved>,
    problems: &mut Vec<Problem>,
) -> Result<Arc<DesiredSecret>, HeldSecret> {
    let SecretGroup {
        base_name,
        registries,
        instance,
        version_key,
    } = *group;
    let held = |reason| HeldSecret {
        name: base_name.to_string(),
        pull_secret: pull_secret.name.clone(),
        reason,
    };
    let missing: Vec<String> = registries
        .iter()
        .filter(|registry| !resolved_credentials.contains_key(*registry))
        .cloned()
        .collect();
    if !missing.is_empty() {
        problems.push(Problem {
            reason: "SourceFailed",
            message: format!(
                "secret {base_name}: held (source failed: no credential for {}); every Secret \
                 it owns and its links are left as they are",
                missing.join(", ")
            ),
        });
        return Err(held(HoldReason::SourceFailed {
            registries: missing,
        }));
    }
    let mut credentials: Vec<Credential> = Vec::with_capacity(registries.len());
    let mut versions = Vec::with_capacity(registries.len());
    for registry in registries {
        if let Some(resolved) = resolved_credentials.get(registry) {
            credentials.push(resolved.credential.clone());
            versions.push(format!("{registry}={}", resolved.version));
        }
    }
    let payload = match encode_payload(pull_secret.secret_type, &credentials) {
        Ok(payload) => payload,
        Err(error) => {
            problems.push(Problem {
                reason: "NotRendered",
                message: format!(
                    "secret {base_name}: held (not rendered: {error}); every Secret it owns and \
                     its links are left as they are"
                ),
            });
            return Err(held(HoldReason::NotRendered {
                reason: error.to_string(),
            }));
        }
    };
    let content_hash = content_hash(pull_secret.secret_type, &payload);
    let versioned = pull_secret.rotation.strategy == RotationStrategy::Versioned;
    let name = if versioned {
        rotation::versioned_name(base_name, version_key, &content_hash)
    } else {
        base_name.to_string()
    };
    if let Some(problem) = dns1123_subdomain_problem(&name) {
        problems.push(Problem {
            reason: "InvalidName",
            message: format!(
                "secret {name} of pull secret {}: the name {problem}; held",
                pull_secret.name
            ),
        });
        return Err(held(HoldReason::NotRendered {
            reason: format!("the name {name} {problem}"),
        }));
    }
    Ok(Arc::new(DesiredSecret {
        name,
        secret_type: pull_secret.secret_type,
        pull_secret: pull_secret.name.clone(),
        registries: registries.to_vec(),
        servers: credentials.iter().map(|c| c.registry.clone()).collect(),
        payload: SecretPayload::new(payload),
        content_hash,
        source_versions: versions.join(","),
        immutable: versioned,
        service_accounts: pull_secret.links.keys().cloned().collect(),
        instance: instance.to_string(),
        adopt: pull_secret.adopt,
        retention: versioned.then_some(Retention {
            grace: pull_secret.rotation.grace,
            keep: pull_secret.rotation.keep,
        }),
    }))
}

/// Hex SHA-256 over the Secret type and payload.
pub fn content_hash(secret_type: SecretType, payload: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(secret_type.type_name().as_bytes());
    hasher.update([0]);
    hasher.update(payload);
    hex::encode(hasher.finalize())
}

fn add_secret(
    project_plan: &mut ProjectPlan,
    pull_secret: &PullSecretConfig,
    secret: &Result<Arc<DesiredSecret>, HeldSecret>,
    project: &str,
    problems: &mut Vec<Problem>,
) {
    let name = match secret {
        Ok(desired) => &desired.name,
        Err(held) => &held.name,
    };
    let taken = project_plan.secrets.iter().any(|s| &s.name == name)
        || project_plan.held.iter().any(|h| &h.name == name);
    if taken {
        problems.push(Problem {
            reason: "NameConflict",
            message: format!(
                "project {project}: secret {name} of pull secret {} is already planned \
                 by another pull secret; skipped",
                pull_secret.name
            ),
        });
        return;
    }
    match secret {
        Ok(desired) => project_plan.secrets.push(Arc::clone(desired)),
        Err(held) => project_plan.held.push(held.clone()),
    }
    for (service_account, kinds) in &pull_secret.links {
        for kind in kinds {
            project_plan.links.push(DesiredLink {
                service_account: service_account.clone(),
                kind: *kind,
                secret: name.clone(),
            });
        }
    }
}

/// Names listed, plus those whose labels match the selector, minus excluded ones; each
/// namespace must be known.
fn selected_projects(pull_secret: &PullSecretConfig, namespaces: &[NamespaceInfo]) -> Vec<String> {
    namespaces
        .iter()
        .filter(|ns| is_selected(pull_secret, ns))
        .map(|ns| ns.name.clone())
        .collect()
}

/// Whether any pull secret of `config` selects `namespace` ([`is_selected`]).
pub fn selects_namespace(config: &Config, namespace: &NamespaceInfo) -> bool {
    config
        .pull_secrets
        .iter()
        .any(|pull_secret| is_selected(pull_secret, namespace))
}

/// Listed by name or matched by the selector, and not excluded.
fn is_selected(pull_secret: &PullSecretConfig, namespace: &NamespaceInfo) -> bool {
    let selection = &pull_secret.projects;
    let chosen = selection.names.contains(&namespace.name)
        || selection
            .selector
            .as_ref()
            .is_some_and(|s| s.matches(&namespace.labels));
    chosen
        && !selection
            .exclude
            .iter()
            .any(|glob| glob.matches(&namespace.name))
}

fn report_missing_projects(
    pull_secret: &PullSecretConfig,
    namespaces: &[NamespaceInfo],
    problems: &mut Vec<Problem>,
) {
    for name in &pull_secret.projects.names {
        if !namespaces.iter().any(|ns| &ns.name == name) {
            problems.push(Problem {
                reason: "ProjectNotFound",
                message: format!(
                    "pull secret {}: project {name} does not exist (or is not visible)",
                    pull_secret.name
                ),
            });
        }
    }
}

fn image_puller_binding(puller: &ImagePullerConfig, inputs: PlanInputs<'_>) -> DesiredRoleBinding {
    let mut subjects = puller.allow.clone();
    subjects.extend(projects_of_pull_secrets(puller, inputs));
    DesiredRoleBinding {
        name: IMAGE_PULLER_BINDING.to_string(),
        subjects,
        instance: inputs.config.instance_name().to_string(),
    }
}

/// `allowProjectsOf`: the service-account group of every project the named pull secrets
/// select, except the image project itself (its own accounts may pull already).
fn projects_of_pull_secrets(
    puller: &ImagePullerConfig,
    inputs: PlanInputs<'_>,
) -> Vec<PullerSubject> {
    let projects: BTreeSet<String> = inputs
        .config
        .pull_secrets
        .iter()
        .filter(|p| puller.allow_projects_of.contains(&p.name))
        .flat_map(|p| selected_projects(p, inputs.namespaces))
        .filter(|project| *project != puller.project)
        .collect();
    projects
        .into_iter()
        .map(|project| PullerSubject::ProjectServiceAccounts { project })
        .collect()
}

/// Several `imagePullers` entries for one project become one binding, subjects deduplicated
/// in first-seen order.
fn merge_project_role_bindings(project_plan: &mut ProjectPlan) {
    let mut seen = BTreeSet::new();
    let mut subjects = Vec::new();
    let mut instance = None;
    for binding in project_plan.role_bindings.drain(..) {
        instance.get_or_insert(binding.instance);
        for subject in binding.subjects {
            if seen.insert(subject.clone()) {
                subjects.push(subject);
            }
        }
    }
    if let Some(instance) = instance.filter(|_| !subjects.is_empty()) {
        project_plan.role_bindings.push(DesiredRoleBinding {
            name: IMAGE_PULLER_BINDING.to_string(),
            subjects,
            instance,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use secrecy::SecretString;

    use super::*;
    use crate::config::LinkKind;
    use crate::config::{Heal, ProjectSelection, RegistryConfig, Rotation, SourceConfig};
    use crate::model::credential::RegistryKey;
    use crate::model::credential::Secret;
    use crate::selector::LabelSelector;

    const SENTINEL: &str = "SENTINEL-pw-plan-51c2";

    fn key(server: &str) -> RegistryKey {
        RegistryKey::from_docker(server).expect("valid server")
    }

    fn registry(name: &str, server: &str) -> RegistryConfig {
        RegistryConfig {
            name: name.to_string(),
            server: key(server),
            from: SourceConfig::DockerConfig {
                path: PathBuf::from("/nonexistent/config.json"),
            },
            verify: None,
        }
    }

    fn pull_secret(name: &str, registries: &[&str], projects: &[&str]) -> PullSecretConfig {
        PullSecretConfig {
            name: name.to_string(),
            secret_type: SecretType::DockerConfigJson,
            registries: registries.iter().map(ToString::to_string).collect(),
            layout: Layout::Combined,
            projects: ProjectSelection {
                names: projects.iter().map(ToString::to_string).collect(),
                ..ProjectSelection::default()
            },
            links: BTreeMap::from([
                ("default".to_string(), vec![LinkKind::Pull]),
                ("builder".to_string(), vec![LinkKind::Mount]),
            ]),
            rotation: Rotation::default(),
            adopt: false,
            heal: Heal::default(),
        }
    }

    fn config(
        pull_secrets: Vec<PullSecretConfig>,
        image_pullers: Vec<ImagePullerConfig>,
    ) -> Config {
        Config {
            instance: None,
            vault: None,
            credential_provider: Default::default(),
            registries: [
                registry("private", "privateregistry.example.com"),
                registry("sso", "sso.redhat.com"),
                registry("quay", "quay.io"),
            ]
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect(),
            pull_secrets,
            image_pullers,
            namespaces: None,
            shards: None,
        }
    }

    fn resolved(server: &str, password: &str) -> Resolved {
        Resolved {
            credential: Credential::with_password(key(server), "developer", password),
            version: format!("v-{password}"),
            expires_at: None,
            lease: None,
        }
    }

    fn all_credentials() -> BTreeMap<String, Resolved> {
        BTreeMap::from([
            (
                "private".to_string(),
                resolved("privateregistry.example.com", SENTINEL),
            ),
            ("sso".to_string(), resolved("sso.redhat.com", "sso-pw")),
            ("quay".to_string(), resolved("quay.io", "quay-pw")),
        ])
    }

    /// The test runs' name key (production draws one per process).
    fn name_key() -> VersionKey {
        VersionKey::from_bytes([0; 32])
    }

    fn namespaces(names: &[&str]) -> Vec<NamespaceInfo> {
        names.iter().map(|n| NamespaceInfo::named(*n)).collect()
    }

    fn run(
        config: &Config,
        credentials: &BTreeMap<String, Resolved>,
        ns: &[NamespaceInfo],
    ) -> DesiredState {
        plan(
            PlanInputs {
                config,
                credentials,
                namespaces: ns,
                openshift: None,
            },
            &prepare_secrets(config, credentials, &name_key()),
        )
    }

    fn secret_names(state: &DesiredState, project: &str) -> Vec<String> {
        state.projects[project]
            .secrets
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    fn link(sa: &str, kind: LinkKind, secret: &str) -> DesiredLink {
        DesiredLink {
            service_account: sa.to_string(),
            kind,
            secret: secret.to_string(),
        }
    }

    #[test]
    fn combined_pair_is_one_secret_with_both_servers_in_every_selected_project() {
        let config = config(
            vec![pull_secret(
                "private-registry",
                &["private", "sso"],
                &["a", "b"],
            )],
            vec![],
        );
        let state = run(&config, &all_credentials(), &namespaces(&["a", "b", "c"]));

        assert_eq!(state.projects.keys().collect::<Vec<_>>(), ["a", "b"]);
        let secret = &state.projects["a"].secrets[0];
        assert_eq!(secret.name, "private-registry");
        assert_eq!(
            secret.servers,
            [key("privateregistry.example.com"), key("sso.redhat.com")]
        );
        assert_eq!(
            secret.source_versions,
            format!("private=v-{SENTINEL},sso=v-sso-pw")
        );
        assert_eq!(
            state.projects["b"].links,
            [
                link("builder", LinkKind::Mount, "private-registry"),
                link("default", LinkKind::Pull, "private-registry")
            ]
        );
        assert!(state.problems.is_empty(), "{:?}", state.problems);
        // Rendered once, shared by every project.
        assert!(Arc::ptr_eq(secret, &state.projects["b"].secrets[0]));
    }

    #[test]
    fn split_layout_writes_one_linked_secret_per_registry() {
        let mut ps = pull_secret("private-registry", &["private", "sso"], &["a"]);
        ps.layout = Layout::Split;
        let state = run(
            &config(vec![ps], vec![]),
            &all_credentials(),
            &namespaces(&["a"]),
        );

        assert_eq!(secret_names(&state, "a"), ["private", "sso"]);
        let links = &state.projects["a"].links;
        assert!(links.contains(&link("default", LinkKind::Pull, "private")));
        assert!(links.contains(&link("default", LinkKind::Pull, "sso")));
        assert_eq!(links.len(), 4);
    }

    #[test]
    fn versioned_names_follow_content_and_plans_are_deterministic() {
        let mut ps = pull_secret("quay-pull", &["quay"], &["a"]);
        ps.rotation.strategy = RotationStrategy::Versioned;
        let config = config(vec![ps], vec![]);
        let ns = namespaces(&["a"]);
        let first = run(&config, &all_credentials(), &ns);
        let again = run(&config, &all_credentials(), &ns);
        let name = &first.projects["a"].secrets[0].name;
        assert_eq!(name, &again.projects["a"].secrets[0].name);
        assert!(
            name.starts_with("quay-pull-") && name.len() == "quay-pull-".len() + 10,
            "{name}"
        );
        assert!(first.projects["a"].secrets[0].immutable);

        let mut rotated = all_credentials();
        rotated.insert("quay".to_string(), resolved("quay.io", "rotated-pw"));
        let after = run(&config, &rotated, &ns);
        assert_ne!(&after.projects["a"].secrets[0].name, name);
        assert_eq!(
            after.projects["a"].links[1].secret,
            after.projects["a"].secrets[0].name
        );
    }

    #[test]
    fn failed_source_holds_the_secret_instead_of_dropping_it() {
        let config = config(
            vec![pull_secret("private-registry", &["private", "sso"], &["a"])],
            vec![],
        );
        let mut credentials = all_credentials();
        credentials.remove("sso");
        let state = run(&config, &credentials, &namespaces(&["a"]));

        let project = &state.projects["a"];
        assert!(project.secrets.is_empty());
        assert_eq!(
            project.held,
            [HeldSecret {
                name: "private-registry".into(),
                pull_secret: "private-registry".into(),
                reason: HoldReason::SourceFailed {
                    registries: vec!["sso".into()]
                },
            }]
        );
        assert_eq!(state.problems.len(), 1);
        assert_eq!(state.problems[0].reason, "SourceFailed");
        assert!(state.problems[0].message.contains("sso"));
    }

    #[test]
    fn unusable_credential_is_held_with_a_reason_and_no_secret_text() {
        let config = config(vec![pull_secret("quay-pull", &["quay"], &["a"])], vec![]);
        let mut credentials = all_credentials();
        credentials.insert(
            "quay".to_string(),
            Resolved {
                credential: Credential {
                    registry: key("quay.io"),
                    username: String::new(),
                    secret: Secret::IdentityToken(SecretString::from(SENTINEL)),
                    email: None,
                },
                version: "v1".into(),
                expires_at: None,
                lease: None,
            },
        );
        let state = run(&config, &credentials, &namespaces(&["a"]));
        assert_eq!(state.projects["a"].held.len(), 1);
        assert!(matches!(
            state.projects["a"].held[0].reason,
            HoldReason::NotRendered { .. }
        ));
        assert_eq!(state.problems[0].reason, "NotRendered");
        assert!(state.problems[0].message.contains("identity token"));
        assert!(!format!("{state:?}").contains(SENTINEL));
    }

    #[test]
    fn selector_and_exclude_choose_projects() {
        let mut ps = pull_secret("quay-pull", &["quay"], &["kube-system"]);
        ps.projects.selector = Some(LabelSelector::parse("team=web").expect("valid selector"));
        ps.projects.exclude = vec![glob::Pattern::new("kube-*").expect("valid glob")];
        let mut web = NamespaceInfo::named("web-prod");
        web.labels.insert("team".into(), "web".into());
        let mut other = NamespaceInfo::named("db-prod");
        other.labels.insert("team".into(), "db".into());
        let ns = vec![web, other, NamespaceInfo::named("kube-system")];

        let state = run(&config(vec![ps], vec![]), &all_credentials(), &ns);
        assert_eq!(state.projects.keys().collect::<Vec<_>>(), ["web-prod"]);
    }

    #[test]
    fn two_pull_secrets_wanting_one_name_is_a_conflict_not_an_overwrite() {
        let first = pull_secret("shared", &["quay"], &["a"]);
        let second = pull_secret("shared", &["private"], &["a"]);
        let state = run(
            &config(vec![first, second], vec![]),
            &all_credentials(),
            &namespaces(&["a"]),
        );
        assert_eq!(state.projects["a"].secrets.len(), 1);
        assert_eq!(state.projects["a"].secrets[0].registries, ["quay"]);
        assert_eq!(state.problems[0].reason, "NameConflict");
    }

    #[test]
    fn image_pullers_merge_into_one_binding_per_project() {
        let sa = PullerSubject::ServiceAccount {
            namespace: "a".into(),
            name: "default".into(),
        };
        let group = PullerSubject::ProjectServiceAccounts {
            project: "c".into(),
        };
        let pullers = vec![
            ImagePullerConfig {
                project: "b".into(),
                allow: vec![sa.clone()],
                allow_projects_of: vec![],
            },
            ImagePullerConfig {
                project: "b".into(),
                allow: vec![group.clone(), sa.clone()],
                allow_projects_of: vec![],
            },
            ImagePullerConfig {
                project: "missing".into(),
                allow: vec![sa.clone()],
                allow_projects_of: vec![],
            },
        ];
        let state = run(
            &config(vec![], pullers),
            &all_credentials(),
            &namespaces(&["a", "b"]),
        );
        assert_eq!(
            state.projects["b"].role_bindings,
            [DesiredRoleBinding {
                name: IMAGE_PULLER_BINDING.into(),
                subjects: vec![sa, group],
                instance: "default".into(),
            }]
        );
        assert_eq!(state.problems.len(), 1);
        assert_eq!(state.problems[0].reason, "ProjectNotFound");
    }

    #[test]
    fn allow_projects_of_grants_every_selected_project_but_the_image_project() {
        let mut ps = pull_secret("quay-pull", &["quay"], &["b"]);
        ps.projects.selector = Some(LabelSelector::parse("team=web").expect("valid selector"));
        let puller = ImagePullerConfig {
            project: "b".into(),
            allow: vec![PullerSubject::ServiceAccount {
                namespace: "x".into(),
                name: "ci".into(),
            }],
            allow_projects_of: vec!["quay-pull".into()],
        };
        let mut ns = namespaces(&["b", "other"]);
        for name in ["web-2", "web-1"] {
            let mut web = NamespaceInfo::named(name);
            web.labels.insert("team".into(), "web".into());
            ns.push(web);
        }
        let state = run(&config(vec![ps], vec![puller]), &all_credentials(), &ns);
        let subjects = &state.projects["b"].role_bindings[0].subjects;
        assert_eq!(
            subjects,
            &[
                PullerSubject::ServiceAccount {
                    namespace: "x".into(),
                    name: "ci".into()
                },
                PullerSubject::ProjectServiceAccounts {
                    project: "web-1".into()
                },
                PullerSubject::ProjectServiceAccounts {
                    project: "web-2".into()
                },
            ]
        );
    }

    #[test]
    fn image_pullers_are_skipped_with_one_problem_off_openshift() {
        let sa = PullerSubject::ServiceAccount {
            namespace: "a".into(),
            name: "default".into(),
        };
        let pullers = vec![
            ImagePullerConfig {
                project: "a".into(),
                allow: vec![sa.clone()],
                allow_projects_of: vec![],
            },
            ImagePullerConfig {
                project: "b".into(),
                allow: vec![sa],
                allow_projects_of: vec![],
            },
        ];
        let config = config(vec![pull_secret("quay-pull", &["quay"], &["a"])], pullers);
        let ns = namespaces(&["a", "b"]);
        let credentials = all_credentials();
        let state = plan(
            PlanInputs {
                config: &config,
                credentials: &credentials,
                namespaces: &ns,
                openshift: Some(false),
            },
            &prepare_secrets(&config, &credentials, &name_key()),
        );
        assert!(state.projects.values().all(|p| p.role_bindings.is_empty()));
        assert_eq!(
            state.projects["a"].secrets.len(),
            1,
            "everything else still planned"
        );
        assert_eq!(state.problems.len(), 1);
        assert_eq!(state.problems[0].reason, "NotOpenShift");
    }

    #[test]
    fn named_projects_that_do_not_exist_are_reported() {
        let config = config(
            vec![pull_secret("quay-pull", &["quay"], &["a", "gone"])],
            vec![],
        );
        let state = run(&config, &all_credentials(), &namespaces(&["a"]));
        assert_eq!(state.projects.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(state.problems[0].reason, "ProjectNotFound");
        assert!(state.problems[0].message.contains("gone"));
    }

    #[test]
    fn versioned_names_too_long_for_the_api_are_held() {
        let mut ps = pull_secret(&"p".repeat(250), &["quay"], &["a"]);
        ps.rotation.strategy = RotationStrategy::Versioned;
        let state = run(
            &config(vec![ps], vec![]),
            &all_credentials(),
            &namespaces(&["a"]),
        );
        assert!(state.projects["a"].secrets.is_empty());
        assert_eq!(state.projects["a"].held.len(), 1);
        assert_eq!(state.problems[0].reason, "InvalidName");
        assert!(
            state.problems[0].message.contains("253"),
            "{}",
            state.problems[0].message
        );
    }

    type Summary = (
        Vec<(String, String)>,
        Vec<HeldSecret>,
        Vec<DesiredLink>,
        Vec<DesiredRoleBinding>,
    );

    fn summary(project: &ProjectPlan) -> Summary {
        (
            project
                .secrets
                .iter()
                .map(|s| (s.name.clone(), s.content_hash.clone()))
                .collect(),
            project.held.clone(),
            project.links.clone(),
            project.role_bindings.clone(),
        )
    }

    /// Pull secrets of every kind (combined, split, versioned, selector with exclude, a name
    /// conflict, a failed source) and image pullers with `allowProjectsOf`.
    fn busy_config() -> (Config, Vec<NamespaceInfo>) {
        let mut split = pull_secret("pair", &["private", "sso"], &["a"]);
        split.layout = Layout::Split;
        split.projects.selector = Some(LabelSelector::parse("team=web").expect("selector"));
        let mut versioned = pull_secret("quay-pull", &["quay"], &["b"]);
        versioned.rotation.strategy = RotationStrategy::Versioned;
        versioned.projects.selector = Some(LabelSelector::parse("team").expect("selector"));
        versioned.projects.exclude = vec![glob::Pattern::new("*-tmp").expect("glob")];
        let conflicting = pull_secret("private", &["quay"], &["a", "gone"]);
        let held = pull_secret("held", &["private", "missing"], &["b"]);
        let pullers = vec![
            ImagePullerConfig {
                project: "images".into(),
                allow: vec![PullerSubject::ServiceAccount {
                    namespace: "x".into(),
                    name: "ci".into(),
                }],
                allow_projects_of: vec!["quay-pull".into()],
            },
            ImagePullerConfig {
                project: "images".into(),
                allow: vec![],
                allow_projects_of: vec!["pair".into()],
            },
        ];
        let mut config = config(vec![split, versioned, conflicting, held], pullers);
        config
            .registries
            .insert("missing".into(), registry("missing", "missing.example.com"));
        let mut ns = namespaces(&["a", "b", "c", "images"]);
        for (name, team) in [("web-1", "web"), ("web-tmp", "web"), ("db-1", "db")] {
            let mut info = NamespaceInfo::named(name);
            info.labels.insert("team".into(), team.into());
            ns.push(info);
        }
        (config, ns)
    }

    #[test]
    fn plan_namespace_is_the_whole_plan_restricted_to_one_namespace() {
        let (config, ns) = busy_config();
        let credentials = all_credentials();
        for openshift in [None, Some(true), Some(false)] {
            let inputs = PlanInputs {
                config: &config,
                credentials: &credentials,
                namespaces: &ns,
                openshift,
            };
            let rendered = prepare_secrets(&config, &credentials, &name_key());
            let whole = plan(inputs, &rendered);
            for namespace in &ns {
                let alone = plan_namespace(inputs, &rendered, namespace);
                let expected = whole
                    .projects
                    .get(&namespace.name)
                    .map(summary)
                    .unwrap_or_default();
                assert_eq!(
                    summary(&alone),
                    expected,
                    "{} ({openshift:?})",
                    namespace.name
                );
                // Only image-puller projects need the other namespaces.
                if !needs_all_namespaces(&config, &namespace.name) {
                    let without_others = plan_namespace(
                        PlanInputs {
                            namespaces: &[],
                            ..inputs
                        },
                        &rendered,
                        namespace,
                    );
                    assert_eq!(summary(&without_others), expected, "{}", namespace.name);
                }
            }
        }
        assert!(needs_all_namespaces(&config, "images"));
        assert!(!needs_all_namespaces(&config, "a"));
    }

    #[test]
    fn plan_namespace_shares_secrets_rendered_once() {
        let (config, ns) = busy_config();
        let credentials = all_credentials();
        let inputs = PlanInputs {
            config: &config,
            credentials: &credentials,
            namespaces: &ns,
            openshift: None,
        };
        let rendered = prepare_secrets(&config, &credentials, &name_key());
        let web = plan_namespace(inputs, &rendered, &ns[4]);
        let a = plan_namespace(inputs, &rendered, &ns[0]);
        assert_eq!(web.secrets[0].name, "private");
        let shared = a
            .secrets
            .iter()
            .find(|s| s.name == "sso")
            .expect("sso in a");
        let again = web
            .secrets
            .iter()
            .find(|s| s.name == "sso")
            .expect("sso in web-1");
        assert!(
            Arc::ptr_eq(shared, again),
            "one rendering for every namespace"
        );
        // A namespace no pull secret selects gets an empty plan.
        assert!(plan_namespace(inputs, &rendered, &ns[2]).is_empty());
    }

    #[test]
    fn content_hash_changes_with_type_and_payload() {
        let a = content_hash(SecretType::DockerConfigJson, b"{}");
        assert_eq!(a.len(), 64);
        assert_ne!(a, content_hash(SecretType::Dockercfg, b"{}"));
        assert_ne!(a, content_hash(SecretType::DockerConfigJson, b"{ }"));
    }
}
