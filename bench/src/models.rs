//! Baselines, as MODELS of the usual approaches (not the tools themselves), run against the
//! same kube-sim and OpenBao with the same client-side QPS limit and concurrency as pullsecretd:
//!
//! - poll loop: imagepullsecret-patcher's algorithm. Every 10 s: list namespaces, then per
//!   namespace GET each Secret, create/replace it when missing or different, LIST service
//!   accounts and patch those lacking the link. It reads its credentials once per loop (here
//!   from Vault: one data read per registry).
//! - per-namespace source: the ClusterExternalSecret model. Every namespace holds one
//!   ExternalSecret per pull secret and each reads its registries from Vault at every refresh;
//!   Secrets are written when the data changed (an informer cache answers "did it change", so no
//!   GETs). External Secrets does not link service accounts, and its status writes to the
//!   ExternalSecret objects are not modelled (kube-sim serves no CRDs).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use futures::{StreamExt as _, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};

static POST: PostParams = PostParams {
    dry_run: false,
    field_manager: None,
};
static PATCH: PatchParams = PatchParams {
    dry_run: false,
    force: false,
    field_manager: None,
    field_validation: None,
};
use pullsecretd::cluster::Throttle;
use serde_json::{Value, json};

/// Registry name → (server, Vault path).
pub const REGISTRIES: [(&str, &str); 4] = [
    ("private", "privateregistry.example.com"),
    ("sso", "sso.redhat.com"),
    ("quay", "quay.io"),
    ("internal", "registry.internal.example.com"),
];

/// Pull secret → its registries (the first is the delegated pair).
pub const PULL_SECRETS: [(&str, &[&str]); 3] = [
    ("private-registry", &["private", "sso"]),
    ("quay-pull", &["quay"]),
    ("internal-pull", &["internal"]),
];

/// Reads one registry's username/password from OpenBao (KV v2 data read).
pub async fn vault_read(
    http: &reqwest::Client,
    address: &str,
    registry: &str,
) -> anyhow::Result<(String, String)> {
    let text = http
        .get(format!("{address}/v1/secret/data/registries/{registry}"))
        .header("X-Vault-Token", "root")
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let body: Value = serde_json::from_str(&text)?;
    let data = &body["data"]["data"];
    Ok((
        data["username"].as_str().unwrap_or_default().to_string(),
        data["password"].as_str().unwrap_or_default().to_string(),
    ))
}

fn server(registry: &str) -> &'static str {
    REGISTRIES
        .iter()
        .find(|(name, _)| *name == registry)
        .map_or("", |(_, server)| server)
}

/// `.dockerconfigjson` for these credentials.
fn render(credentials: &[(&str, (String, String))]) -> BTreeMap<String, ByteString> {
    let mut auths = serde_json::Map::new();
    for (registry, (user, password)) in credentials {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        auths.insert(
            server(registry).to_string(),
            json!({"username": user, "password": password, "auth": auth}),
        );
    }
    let payload = json!({ "auths": auths }).to_string();
    BTreeMap::from([(
        ".dockerconfigjson".to_string(),
        ByteString(payload.into_bytes()),
    )])
}

fn secret(name: &str, namespace: &str, data: BTreeMap<String, ByteString>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// One round's cost.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Round {
    pub seconds: f64,
    pub failures: u64,
}

/// One pass of the poll loop over every selected namespace.
pub async fn poll_round(
    client: &kube::Client,
    throttle: &Throttle,
    http: &reqwest::Client,
    vault: &str,
    concurrency: usize,
) -> anyhow::Result<Round> {
    let started = Instant::now();
    let mut credentials = HashMap::new();
    for (registry, _) in REGISTRIES {
        credentials.insert(registry, vault_read(http, vault, registry).await?);
    }
    let desired: Vec<(&str, BTreeMap<String, ByteString>)> = PULL_SECRETS
        .iter()
        .map(|(name, registries)| {
            let creds: Vec<(&str, (String, String))> = registries
                .iter()
                .map(|r| (*r, credentials.get(r).cloned().unwrap_or_default()))
                .collect();
            (*name, render(&creds))
        })
        .collect();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let selector = ListParams::default().labels("bench=yes");
    let list = throttle
        .call(|| namespaces.list(&selector))
        .await
        .context("listing namespaces")?;
    let failures: u64 = stream::iter(list.items.iter().map(|ns| {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let desired = &desired;
        async move {
            u64::from(
                poll_namespace(client, throttle, &name, desired)
                    .await
                    .is_err(),
            )
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .fold(0, |sum, failed| async move { sum + failed })
    .await;
    Ok(Round {
        seconds: started.elapsed().as_secs_f64(),
        failures,
    })
}

async fn poll_namespace(
    client: &kube::Client,
    throttle: &Throttle,
    namespace: &str,
    desired: &[(&str, BTreeMap<String, ByteString>)],
) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for (name, data) in desired {
        match throttle.call(|| secrets.get_opt(name)).await? {
            None => {
                let new = secret(name, namespace, data.clone());
                throttle.call(|| secrets.create(&POST, &new)).await?;
            }
            Some(mut existing) if existing.data.as_ref() != Some(data) => {
                existing.data = Some(data.clone());
                throttle
                    .call(|| secrets.replace(name, &POST, &existing))
                    .await?;
            }
            Some(_) => {}
        }
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let all_accounts = ListParams::default();
    let list = throttle.call(|| accounts.list(&all_accounts)).await?;
    for account in list.items {
        let (field, linked): (&str, Vec<String>) = match account.metadata.name.as_deref() {
            Some("default") => (
                "imagePullSecrets",
                account
                    .image_pull_secrets
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| r.name)
                    .collect(),
            ),
            Some("builder") => (
                "secrets",
                account
                    .secrets
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|r| r.name)
                    .collect(),
            ),
            _ => continue,
        };
        let missing: Vec<&str> = desired
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| !linked.iter().any(|l| l == name))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let all: Vec<Value> = linked
            .iter()
            .map(String::as_str)
            .chain(missing)
            .map(|name| json!({ "name": name }))
            .collect();
        let name = account.metadata.name.unwrap_or_default();
        let patch = Patch::Merge(json!({ field: all }));
        throttle
            .call(|| accounts.patch(&name, &PATCH, &patch))
            .await?;
    }
    Ok(())
}

/// The per-namespace source model's memory of what it wrote (its informer cache).
#[derive(Default)]
pub struct Written(Mutex<HashMap<(String, String), BTreeMap<String, ByteString>>>);

/// One refresh of every namespace's ExternalSecrets: each reads its own registries from Vault
/// and writes the Secret when the data changed.
pub async fn per_namespace_round(
    client: &kube::Client,
    throttle: &Throttle,
    http: &reqwest::Client,
    vault: &str,
    namespaces: &[String],
    written: &Written,
    concurrency: usize,
) -> Round {
    let started = Instant::now();
    let failures = stream::iter(namespaces.iter().flat_map(|ns| {
        PULL_SECRETS
            .iter()
            .map(move |(name, registries)| async move {
                let result: anyhow::Result<()> = async {
                    let mut creds = Vec::new();
                    for registry in *registries {
                        creds.push((*registry, vault_read(http, vault, registry).await?));
                    }
                    let data = render(&creds);
                    let key = (ns.clone(), (*name).to_string());
                    let before = written
                        .0
                        .lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .get(&key)
                        .cloned();
                    if before.as_ref() == Some(&data) {
                        return Ok(());
                    }
                    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
                    let new = secret(name, ns, data.clone());
                    if before.is_none() {
                        throttle.call(|| secrets.create(&POST, &new)).await?;
                    } else {
                        throttle.call(|| secrets.replace(name, &POST, &new)).await?;
                    }
                    written
                        .0
                        .lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .insert(key, data);
                    Ok(())
                }
                .await;
                u64::from(result.is_err())
            })
    }))
    .buffer_unordered(concurrency.max(1))
    .fold(0, |sum, failed| async move { sum + failed })
    .await;
    Round {
        seconds: started.elapsed().as_secs_f64(),
        failures,
    }
}

/// The poll loop's period: one round, then 10 s of sleep.
pub const POLL_SLEEP: Duration = Duration::from_secs(10);
