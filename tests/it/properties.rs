//! Property tests: random and adversarial input to every parser of outside data that is a pure
//! function — config YAML, docker `config.json` / `.dockercfg` / containers `auth.json`, pull-secret
//! payloads read back from the cluster, the credential-helper protocol's requests, and
//! Kubernetes objects read back (the ownership proof, `status`). Each must answer without a
//! panic, refuse bad input with a message, and never echo a credential value (a sentinel is
//! planted in every generated password, token and auth field).
//!
//! Case counts are set per property (`CASES`); proptest shrinks a failure to a minimal input.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{LocalObjectReference, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;
use serde_json::{Value, json};

use pullsecretd::config::Config;
use pullsecretd::credhelper::protocol;
use pullsecretd::diff::ObservedProject;
use pullsecretd::dockerconfig::{AuthFileFormat, decode_payload, parse_auth_file};
use pullsecretd::model::credential::RegistryKey;
use pullsecretd::model::desired::SecretType;
use pullsecretd::model::managed::{Ownership, role_binding_ownership, secret_ownership};
use pullsecretd::status::{StatusInputs, status};

const SENTINEL: &str = "SENTINEL-pw-props-4c1a";
/// Cases per property: pure functions, so thousands run in a second or two.
const CASES: u32 = 2000;

/// The sentinel in any form a parser might echo: as is, and inside base64 at each of the three
/// alignments (an `auth` field is base64 of `user:password`).
fn leaks(text: &str) -> bool {
    if text.contains(SENTINEL) {
        return true;
    }
    (0..3).any(|pad| {
        let encoded = STANDARD.encode(format!("{}{SENTINEL}", "x".repeat(pad)));
        // Skip the characters that mix padding and sentinel bytes, and the tail.
        let core: String = encoded.chars().skip(4).take(16).collect();
        text.contains(&core)
    })
}

/// Strings with the characters parsers trip over: quotes, escapes, controls, non-ASCII,
/// separators, and the sentinel itself.
fn tricky() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(SENTINEL.to_string()),
        Just(":".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just("\u{0}".to_string()),
        Just("é".to_string()),
        Just("\n".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        "[a-z0-9.-]{1,8}",
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|parts| parts.concat())
}

/// A JSON value of the shapes auth files have, with the sentinel in the secret fields.
fn auth_entry() -> impl Strategy<Value = Value> {
    let secret = || tricky().prop_map(|s| format!("{s}{SENTINEL}"));
    prop_oneof![
        (plain(), secret())
            .prop_map(|(user, pw)| { json!({"auth": STANDARD.encode(format!("{user}:{pw}"))}) }),
        (plain(), secret()).prop_map(|(user, pw)| json!({"username": user, "password": pw})),
        secret().prop_map(|token| json!({"identitytoken": token})),
        secret().prop_map(|raw| json!({"auth": raw})),
        Just(json!({"auth": null})),
        Just(json!({"auth": 7})),
        Just(json!([])),
        Just(json!("string entry")),
        Just(json!({})),
    ]
}

fn auth_file() -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        "[a-z]{1,8}\\.example\\.com",
        "https://[a-z]{1,8}\\.io/v1/",
        "[a-z]{1,6}\\.io/[a-z]{1,6}/[a-z]{1,6}",
        plain(),
    ];
    let auths = proptest::collection::btree_map(key, auth_entry(), 0..4);
    let helpers = proptest::collection::btree_map("[a-z.]{1,10}", plain(), 0..3);
    (auths, helpers, proptest::option::of(plain()), 0u8..4).prop_map(
        |(auths, helpers, store, shape)| {
            let auths: serde_json::Map<String, Value> = auths.into_iter().collect();
            let value = match shape {
                0 => json!({"auths": auths, "credHelpers": helpers, "credsStore": store}),
                1 => Value::Object(auths),
                2 => json!({"auths": "not a map"}),
                _ => json!({"auths": auths}),
            };
            value.to_string().into_bytes()
        },
    )
}

/// Random edits (insert, delete, overwrite a byte) of `base`.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let edit = (any::<usize>(), any::<u8>(), 0u8..3);
    proptest::collection::vec(edit, 0..6).prop_map(move |edits| {
        let mut bytes = base.clone();
        for (at, byte, kind) in edits {
            let at = if bytes.is_empty() {
                0
            } else {
                at % bytes.len()
            };
            match kind {
                0 => bytes.insert(at, byte),
                1 if !bytes.is_empty() => {
                    bytes.remove(at);
                }
                _ if !bytes.is_empty() => bytes[at] = byte,
                _ => bytes.push(byte),
            }
        }
        bytes
    })
}

const FORMATS: [AuthFileFormat; 3] = [
    AuthFileFormat::DockerConfig,
    AuthFileFormat::Dockercfg,
    AuthFileFormat::ContainersAuth,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn auth_files_parse_or_refuse_without_echoing_a_secret(
        bytes in prop_oneof![auth_file(), auth_file().prop_flat_map(mutated)],
        format in 0usize..3,
        server in "[a-z]{1,8}\\.example\\.com|[a-z]{1,6}\\.io/[a-z]{1,6}",
    ) {
        match parse_auth_file(FORMATS[format], &bytes) {
            Ok(file) => {
                if let Ok(key) = RegistryKey::from_docker(&server) {
                    let _ = format!("{:?}", file.lookup(&key));
                }
                prop_assert!(!leaks(&format!("{file:?}")), "a parsed file's Debug shows a secret");
            }
            Err(error) => {
                let shown = format!("{error} {error:?}");
                prop_assert!(!shown.is_empty());
                prop_assert!(!leaks(&shown), "error echoes a secret: {shown}");
            }
        }
    }

    #[test]
    fn payloads_read_back_decode_or_refuse_without_echoing_a_secret(
        bytes in prop_oneof![
            auth_file(),
            auth_file().prop_flat_map(mutated),
            proptest::collection::vec(any::<u8>(), 0..64),
        ],
        dockercfg in any::<bool>(),
    ) {
        let ty = if dockercfg { SecretType::Dockercfg } else { SecretType::DockerConfigJson };
        if let Err(error) = decode_payload(ty, &bytes) {
            let shown = format!("{error} {error:?}");
            prop_assert!(!leaks(&shown), "error echoes a secret: {shown}");
        }
    }

    #[test]
    fn config_yaml_parses_or_refuses_with_a_message(
        text in prop_oneof![
            Just(VALID_CONFIG.as_bytes().to_vec()).prop_flat_map(mutated),
            "[ a-z:{}\\[\\],\\-\\n'\"#&*!|>%@`0-9.]{0,160}".prop_map(String::into_bytes),
        ],
    ) {
        let text = String::from_utf8_lossy(&text).into_owned();
        match Config::from_yaml(&text, Path::new("/nonexistent/config.yaml")) {
            Ok(config) => prop_assert!(config.registries.len() <= 3),
            Err(error) => prop_assert!(!error.to_string().trim().is_empty()),
        }
    }

    #[test]
    fn helper_protocol_requests_are_answered_without_echoing_a_secret(
        input in prop_oneof![
            (tricky(), tricky(), tricky()).prop_map(|(url, user, secret)| {
                json!({"ServerURL": url, "Username": user, "Secret": format!("{secret}{SENTINEL}")})
                    .to_string()
                    .into_bytes()
            }),
            proptest::collection::vec(any::<u8>(), 0..64),
            tricky().prop_map(String::into_bytes),
        ],
    ) {
        for reply in [protocol::store(&input), protocol::erase(&input)] {
            prop_assert_eq!(reply.exit_code, 1, "store and erase are refused");
            prop_assert!(!leaks(&String::from_utf8_lossy(&reply.stdout)));
        }
        match protocol::server_url(&input) {
            Ok(url) => prop_assert!(!url.is_empty() && url.trim() == url),
            Err(reply) => prop_assert_eq!(reply.exit_code, 1),
        }
    }

    #[test]
    fn objects_read_back_are_judged_and_reported_without_panics_or_data(
        secrets in proptest::collection::vec(secret(), 0..6),
        accounts in proptest::collection::vec(account(), 0..3),
        binding in binding(),
        events in proptest::collection::vec(event(), 0..4),
        instance in prop_oneof![Just("default".to_string()), "[a-z]{1,6}"],
    ) {
        for secret in &secrets {
            if let Ownership::Ours { .. } = secret_ownership(secret, &instance) {
                let labels = secret.metadata.labels.clone().unwrap_or_default();
                prop_assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("pullsecretd"));
                prop_assert!(matches!(secret.type_.as_deref(), Some("kubernetes.io/dockerconfigjson" | "kubernetes.io/dockercfg")));
            }
        }
        let _ = role_binding_ownership(&binding, &instance);
        let observed = BTreeMap::from([(
            "team-a".to_string(),
            ObservedProject {
                secrets,
                service_accounts: accounts,
                role_bindings: vec![binding],
                unread_accounts: Default::default(),
                data_digests: Default::default(),
            },
        )]);
        let inputs = StatusInputs {
            instance: &instance,
            events: &events,
            reporting_controller: "pullsecretd",
            now: Timestamp::now(),
        };
        let report = status(&observed, &inputs, &[]);
        let json = serde_json::to_string(&report).expect("serialisable");
        prop_assert!(!leaks(&json), "status shows secret data");
        let table = pullsecretd::render::status_table(&instance, &report);
        prop_assert!(!leaks(&table));
    }
}

const VALID_CONFIG: &str = "instance: team\nregistries:\n  reg:\n    server: registry.example.com\n    \
    from: { dockerConfig: auth.json }\n  sso:\n    server: sso.example.com\n    from: { vault: { path: secret/sso } }\n\
    pullSecrets:\n  - name: reg-pull\n    registries: [reg, sso]\n    projects: { names: [a], selector: \"team=web\" }\n    \
    link: { default: [pull], builder: mount }\n    rotation: { strategy: versioned, refresh: 5m }\n\
    imagePullers:\n  - project: b\n    allow: [\"serviceaccount:a:default\", \"group:c\"]\n";

/// [`tricky`] without the sentinel: metadata text (names, annotations, Event reasons) is
/// never a credential, so only data carries the sentinel.
fn plain() -> impl Strategy<Value = String> {
    tricky().prop_map(|s| s.replace(SENTINEL, "plain"))
}

fn labels() -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
    let managed = prop_oneof![Just("pullsecretd".to_string()), plain()];
    let instance = prop_oneof![Just("default".to_string()), "[a-z]{1,6}", plain()];
    proptest::option::of(
        (managed, proptest::option::of(instance)).prop_map(|(m, i)| {
            let mut labels = BTreeMap::from([("app.kubernetes.io/managed-by".to_string(), m)]);
            if let Some(i) = i {
                labels.insert("pullsecretd.io/instance".to_string(), i);
            }
            labels
        }),
    )
}

fn secret() -> impl Strategy<Value = Secret> {
    let type_ = prop_oneof![
        Just(Some("kubernetes.io/dockerconfigjson".to_string())),
        Just(Some("kubernetes.io/dockercfg".to_string())),
        Just(Some("Opaque".to_string())),
        Just(None),
    ];
    let annotation = proptest::option::of(prop_oneof![plain(), "[a-z,]{0,40}"]);
    (
        "[a-z-]{1,12}",
        labels(),
        type_,
        annotation.clone(),
        annotation.clone(),
        annotation,
        proptest::option::of(auth_file()),
    )
        .prop_map(|(name, labels, type_, pull_secret, hash, accounts, data)| {
            let mut s = Secret::default();
            s.metadata.name = Some(name);
            s.metadata.namespace = Some("team-a".into());
            s.metadata.labels = labels;
            let mut annotations = BTreeMap::new();
            for (key, value) in [
                ("pullsecretd.io/pull-secret", pull_secret),
                ("pullsecretd.io/content-hash", hash),
                ("pullsecretd.io/service-accounts", accounts),
                ("pullsecretd.io/source-versions", Some("reg=v1".to_string())),
            ] {
                if let Some(value) = value {
                    annotations.insert(key.to_string(), value);
                }
            }
            s.metadata.annotations = Some(annotations);
            s.type_ = type_;
            s.data = data.map(|bytes| {
                BTreeMap::from([(".dockerconfigjson".to_string(), ByteString(bytes))])
            });
            s
        })
}

fn account() -> impl Strategy<Value = ServiceAccount> {
    (
        "[a-z]{1,8}",
        proptest::collection::vec("[a-z-]{1,12}", 0..4),
    )
        .prop_map(|(name, pulls)| {
            let mut a = ServiceAccount::default();
            a.metadata.name = Some(name);
            a.image_pull_secrets = Some(
                pulls
                    .into_iter()
                    .map(|name| LocalObjectReference { name })
                    .collect(),
            );
            a
        })
}

fn binding() -> impl Strategy<Value = RoleBinding> {
    (
        labels(),
        prop_oneof![Just("pullsecretd-image-puller".to_string()), plain()],
        plain(),
    )
        .prop_map(|(labels, name, subject)| RoleBinding {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name),
                labels,
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: "system:image-puller".into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: subject,
                ..Default::default()
            }]),
        })
}

fn event() -> impl Strategy<Value = Event> {
    (
        plain(),
        plain(),
        any::<bool>(),
        proptest::option::of(any::<i32>()),
    )
        .prop_map(|(reason, note, warning, count)| {
            let mut e = Event::default();
            e.metadata.namespace = Some("team-a".into());
            e.reporting_controller = Some("pullsecretd".into());
            e.reporting_instance = Some("default".into());
            e.reason = Some(reason);
            e.note = Some(note);
            e.type_ = Some(if warning { "Warning" } else { "Normal" }.into());
            e.deprecated_count = count;
            e
        })
}
