//! Status (pure): what `pullsecretd status` reports per project, read from the cluster alone —
//! this instance's Secrets (their annotations say which pull secret and which source versions
//! they hold), the service accounts that link them, its image-puller binding, and the Events
//! pullsecretd published there (its problems, and when it last wrote or reported anything).
//!
//! No source is read: status says what is deployed and what pullsecretd said about it, not what
//! the config would want now (that is `plan --cluster`). Events expire (an hour by default on
//! a real API server), so an old problem disappears with them. Must not do I/O.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::diff::ObservedProject;
use crate::model::desired::LinkKind;
use crate::model::managed::{
    IMAGE_PULLER_BINDING, recorded_pull_secret, recorded_service_accounts, role_binding_ownership,
    secret_ownership,
};

/// One project's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProjectStatus {
    pub project: String,
    /// This instance's Secrets in the project, by name.
    pub secrets: Vec<SecretStatus>,
    /// Subjects of this instance's image-puller RoleBinding, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pullers: Option<Vec<String>>,
    /// Warning Events pullsecretd published in the project, newest first.
    pub problems: Vec<EventStatus>,
    /// When pullsecretd last wrote or reported anything in the project (its newest Event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<Moment>,
}

/// One managed Secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecretStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub secret_type: String,
    pub pull_secret: String,
    /// Registry → the version of its credential the Secret was rendered from.
    pub source_versions: BTreeMap<String, String>,
    /// When the Secret was created (a versioned Secret: when this version was written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<Moment>,
    /// The service-account lists that name it now.
    pub links: Vec<LinkStatus>,
    /// Service accounts the Secret records it is linked from that no longer name it (drift
    /// the next pass repairs, or a link the config dropped).
    pub unlinked: Vec<String>,
    /// Service accounts the Secret records that do not exist (yet): linked when they appear.
    pub missing_accounts: Vec<String>,
}

/// A service-account list naming a Secret.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct LinkStatus {
    pub service_account: String,
    /// `pull` (imagePullSecrets) or `mount` (secrets).
    #[serde(rename = "for")]
    pub kind: &'static str,
}

/// A Warning Event pullsecretd published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventStatus {
    pub reason: String,
    pub message: String,
    /// How often it was reported (an Event series).
    pub count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Moment>,
}

/// A point in time with its age at the time of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Moment {
    /// RFC 3339.
    pub time: String,
    pub age_seconds: i64,
    #[serde(skip)]
    at: Timestamp,
}

impl Moment {
    pub fn new(at: Timestamp, now: Timestamp) -> Self {
        Self {
            time: at.to_string(),
            age_seconds: now.duration_since(at).as_secs().max(0),
            at,
        }
    }
}

/// What status reads besides the observed objects.
pub struct StatusInputs<'a> {
    pub instance: &'a str,
    /// Events across the selected namespaces (any reporter; pullsecretd's are picked here).
    pub events: &'a [Event],
    /// The name pullsecretd reports Events as.
    pub reporting_controller: &'a str,
    pub now: Timestamp,
}

/// The status of every project that holds something of this instance or an Event of it, by
/// name; `only` (when not empty) narrows it to those projects, listed even when empty.
pub fn status(
    observed: &BTreeMap<String, ObservedProject>,
    inputs: &StatusInputs<'_>,
    only: &[String],
) -> Vec<ProjectStatus> {
    let ours = |event: &&Event| {
        event.reporting_controller.as_deref() == Some(inputs.reporting_controller)
            && event.reporting_instance.as_deref() == Some(inputs.instance)
    };
    let mut events: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for event in inputs.events.iter().filter(ours) {
        let namespace = event.metadata.namespace.as_deref().unwrap_or_default();
        events.entry(namespace).or_default().push(event);
    }
    let empty = ObservedProject::default();
    let names: BTreeSet<&str> = if only.is_empty() {
        observed
            .keys()
            .map(String::as_str)
            .chain(events.keys().copied())
            .collect()
    } else {
        only.iter().map(String::as_str).collect()
    };
    names
        .into_iter()
        .map(|name| {
            let project = observed.get(name).unwrap_or(&empty);
            let project_events = events.get(name).map(Vec::as_slice).unwrap_or_default();
            project_status(name, project, project_events, inputs)
        })
        .filter(|p| !only.is_empty() || !p.is_empty())
        .collect()
}

impl ProjectStatus {
    /// Nothing of this instance and nothing it said.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
            && self.image_pullers.is_none()
            && self.problems.is_empty()
            && self.last_sync.is_none()
    }
}

fn project_status(
    name: &str,
    observed: &ObservedProject,
    events: &[&Event],
    inputs: &StatusInputs<'_>,
) -> ProjectStatus {
    let mut secrets: Vec<SecretStatus> = observed
        .secrets
        .iter()
        .filter(|s| secret_ownership(s, inputs.instance).is_ours())
        .map(|s| secret_status(s, &observed.service_accounts, inputs.now))
        .collect();
    secrets.sort_by(|a, b| a.name.cmp(&b.name));
    let image_pullers = observed
        .role_bindings
        .iter()
        .filter(|b| b.metadata.name.as_deref() == Some(IMAGE_PULLER_BINDING))
        .find(|b| role_binding_ownership(b, inputs.instance).is_ours())
        .map(|b| {
            b.subjects
                .iter()
                .flatten()
                .map(|s| match s.kind.as_str() {
                    "ServiceAccount" => format!(
                        "system:serviceaccount:{}:{}",
                        s.namespace.as_deref().unwrap_or(name),
                        s.name
                    ),
                    _ => s.name.clone(),
                })
                .collect()
        });
    let mut problems: Vec<EventStatus> = events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| EventStatus {
            reason: e.reason.clone().unwrap_or_default(),
            message: e.note.clone().unwrap_or_default(),
            count: event_count(e),
            last_seen: event_time(e).map(|t| Moment::new(t, inputs.now)),
        })
        .collect();
    problems.sort_by(|a, b| {
        let at = |p: &EventStatus| p.last_seen.as_ref().map(|m| m.at);
        at(b).cmp(&at(a)).then_with(|| a.reason.cmp(&b.reason))
    });
    let last_sync = events
        .iter()
        .filter_map(|e| event_time(e))
        .max()
        .map(|t| Moment::new(t, inputs.now));
    ProjectStatus {
        project: name.to_string(),
        secrets,
        image_pullers,
        problems,
        last_sync,
    }
}

fn secret_status(secret: &Secret, accounts: &[ServiceAccount], now: Timestamp) -> SecretStatus {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let mut links = Vec::new();
    for account in accounts {
        let account_name = account.metadata.name.clone().unwrap_or_default();
        let pulls = account
            .image_pull_secrets
            .iter()
            .flatten()
            .any(|r| r.name == name);
        let mounts = account
            .secrets
            .iter()
            .flatten()
            .any(|r| r.name.as_deref() == Some(name.as_str()));
        for (linked, kind) in [(pulls, LinkKind::Pull), (mounts, LinkKind::Mount)] {
            if linked {
                links.push(LinkStatus {
                    service_account: account_name.clone(),
                    kind: kind.for_flag(),
                });
            }
        }
    }
    links.sort();
    let linked: BTreeSet<&str> = links.iter().map(|l| l.service_account.as_str()).collect();
    let existing: BTreeSet<&str> = accounts
        .iter()
        .filter_map(|a| a.metadata.name.as_deref())
        .collect();
    let (unlinked, missing_accounts) = recorded_service_accounts(secret)
        .filter(|account| !linked.contains(account.as_str()))
        .partition(|account| existing.contains(account.as_str()));
    SecretStatus {
        secret_type: secret.type_.clone().unwrap_or_default(),
        pull_secret: recorded_pull_secret(secret).unwrap_or_default().to_string(),
        source_versions: source_versions(secret),
        created: secret
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| Moment::new(t.0, now)),
        links,
        unlinked,
        missing_accounts,
        name,
    }
}

fn source_versions(secret: &Secret) -> BTreeMap<String, String> {
    crate::model::managed::recorded_source_versions(secret)
}

/// When an Event (or its series) was last observed.
fn event_time(event: &Event) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn event_count(event: &Event) -> u32 {
    let count = event
        .series
        .as_ref()
        .map(|s| s.count)
        .or(event.deprecated_count)
        .unwrap_or(1);
    u32::try_from(count).unwrap_or(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::managed::{
        CONTENT_HASH_ANNOTATION, PULL_SECRET_ANNOTATION, SERVICE_ACCOUNTS_ANNOTATION,
        SOURCE_VERSION_ANNOTATION, labels,
    };
    use k8s_openapi::api::core::v1::{LocalObjectReference, ObjectReference};
    use k8s_openapi::api::events::v1::EventSeries;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("a valid time")
    }

    fn secret(name: &str, instance: &str, accounts: &str) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("team-a".into());
        s.metadata.labels = Some(labels(instance));
        s.metadata.creation_timestamp = Some(Time(at(0)));
        s.metadata.annotations = Some(BTreeMap::from([
            (PULL_SECRET_ANNOTATION.into(), "quay".into()),
            (CONTENT_HASH_ANNOTATION.into(), "abc".into()),
            (SOURCE_VERSION_ANNOTATION.into(), "quay=7,sso=2".into()),
            (SERVICE_ACCOUNTS_ANNOTATION.into(), accounts.into()),
        ]));
        s.type_ = Some("kubernetes.io/dockerconfigjson".into());
        s
    }

    fn account(name: &str, pulls: &[&str], mounts: &[&str]) -> ServiceAccount {
        let mut a = ServiceAccount::default();
        a.metadata.name = Some(name.into());
        a.image_pull_secrets = Some(
            pulls
                .iter()
                .map(|n| LocalObjectReference {
                    name: n.to_string(),
                })
                .collect(),
        );
        a.secrets = Some(
            mounts
                .iter()
                .map(|n| ObjectReference {
                    name: Some(n.to_string()),
                    ..ObjectReference::default()
                })
                .collect(),
        );
        a
    }

    fn event(instance: &str, type_: &str, reason: &str, seconds: i64, count: i32) -> Event {
        let mut e = Event::default();
        e.metadata.namespace = Some("team-a".into());
        e.reporting_controller = Some("pullsecretd".into());
        e.reporting_instance = Some(instance.into());
        e.type_ = Some(type_.into());
        e.reason = Some(reason.into());
        e.note = Some(format!("{reason} note"));
        e.event_time = Some(MicroTime(at(seconds)));
        if count > 1 {
            e.series = Some(EventSeries {
                count,
                last_observed_time: MicroTime(at(seconds + 5)),
            });
        }
        e
    }

    fn inputs(events: &[Event]) -> StatusInputs<'_> {
        StatusInputs {
            instance: "default",
            events,
            reporting_controller: "pullsecretd",
            now: at(600),
        }
    }

    #[test]
    fn a_project_shows_its_secrets_links_versions_problems_and_last_sync() {
        let observed = BTreeMap::from([(
            "team-a".to_string(),
            ObservedProject {
                secrets: vec![
                    secret("quay", "default", "default,builder,deployer,pipeline"),
                    secret("theirs", "team-b", ""),
                ],
                service_accounts: vec![
                    account("default", &["quay", "other"], &[]),
                    account("builder", &["quay"], &["quay"]),
                    account("deployer", &[], &[]),
                ],
                role_bindings: vec![],
                unread_accounts: BTreeSet::new(),
                data_digests: BTreeMap::new(),
            },
        )]);
        let events = [
            event("default", "Normal", "Created", 10, 1),
            event("default", "Warning", "Held", 100, 3),
            event("team-b", "Warning", "ForeignSecret", 500, 1),
        ];
        let report = status(&observed, &inputs(&events), &[]);
        assert_eq!(report.len(), 1);
        let project = &report[0];
        assert_eq!(
            project.secrets.len(),
            1,
            "another instance's Secret is not ours"
        );
        let quay = &project.secrets[0];
        assert_eq!(
            quay.source_versions.get("quay").map(String::as_str),
            Some("7")
        );
        assert_eq!(
            quay.source_versions.get("sso").map(String::as_str),
            Some("2")
        );
        assert_eq!(quay.created.as_ref().map(|m| m.age_seconds), Some(600));
        let links: Vec<(&str, &str)> = quay
            .links
            .iter()
            .map(|l| (l.service_account.as_str(), l.kind))
            .collect();
        assert_eq!(
            links,
            [
                ("builder", "mount"),
                ("builder", "pull"),
                ("default", "pull")
            ]
        );
        assert_eq!(quay.unlinked, ["deployer"]);
        assert_eq!(quay.missing_accounts, ["pipeline"]);
        assert_eq!(project.problems.len(), 1, "only this instance's Warnings");
        assert_eq!(project.problems[0].reason, "Held");
        assert_eq!(project.problems[0].count, 3);
        // The series was last seen at 105 s; the newest Event of this instance is that one.
        assert_eq!(project.last_sync.as_ref().map(|m| m.age_seconds), Some(495));
    }

    #[test]
    fn projects_without_anything_of_this_instance_are_left_out_unless_asked_for() {
        let observed = BTreeMap::from([(
            "team-b".to_string(),
            ObservedProject {
                secrets: vec![secret("theirs", "team-b", "")],
                ..ObservedProject::default()
            },
        )]);
        assert!(status(&observed, &inputs(&[]), &[]).is_empty());
        let asked = status(&observed, &inputs(&[]), &["team-b".to_string()]);
        assert_eq!(asked.len(), 1);
        assert!(asked[0].is_empty());
    }

    #[test]
    fn the_json_form_names_fields_for_scripts_and_holds_no_secret_data() {
        let mut s = secret("quay", "default", "default");
        s.data = Some(BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            k8s_openapi::ByteString(b"hunter2".to_vec()),
        )]));
        let observed = BTreeMap::from([(
            "team-a".to_string(),
            ObservedProject {
                secrets: vec![s],
                service_accounts: vec![account("default", &["quay"], &[])],
                role_bindings: vec![],
                unread_accounts: BTreeSet::new(),
                data_digests: BTreeMap::new(),
            },
        )]);
        let report = status(&observed, &inputs(&[]), &[]);
        let json = serde_json::to_value(&report).expect("serialisable");
        assert_eq!(
            json[0]["secrets"][0]["type"],
            "kubernetes.io/dockerconfigjson"
        );
        assert_eq!(json[0]["secrets"][0]["links"][0]["for"], "pull");
        assert_eq!(json[0]["secrets"][0]["source_versions"]["quay"], "7");
        assert!(!json.to_string().contains("hunter2"));
    }
}
