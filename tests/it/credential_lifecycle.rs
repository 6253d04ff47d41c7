//! Credential lifecycle against the real parts: a leased dynamic secret from OpenBao's database
//! engine on a real PostgreSQL (renewed, replaced before its end, the old lease revoked after
//! the grace, reported expired when OpenBao is down past the TTL), and refresh by expiry of a
//! KV v2 secret whose `custom_metadata.expires_at` is seconds ahead while `rotation.refresh` is
//! an hour. The daemon runs in-process against kube-sim; OpenBao's lease list, its audit log
//! and `psql` logins are the evidence. Waits are for states with a deadline.

use crate::daemon::{http_get, metric};
use crate::support::cluster::{Fixture, nz};
use pullsecretd_testkit::openbao::{
    DatabaseConnection, DatabaseRole, LeaseAction, OpenBao, POSTGRES_CREATION_STATEMENTS,
    ROOT_TOKEN,
};
use pullsecretd_testkit::poll::eventually_async;
use pullsecretd_testkit::postgres::{Postgres, SUPERUSER};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube_sim::Options;
use secrecy::SecretString;
use serde_json::{Value, json};

use pullsecretd::config::{Config, KvVersion, SourceConfig};
use pullsecretd::daemon::{self, Running};
use pullsecretd::source::SourceContext;
use pullsecretd::source::vault::{RetryPolicy, TokenEnvironment, VaultSession};

const MOUNT: &str = "database";
const ROLE: &str = "app";
const LEASE_PREFIX: &str = "database/creds/app/";
/// The registry the credential is for; nothing pulls from it here.
const SERVER: &str = "registry.example.test:5000";
const WAIT: Duration = Duration::from_secs(60);

/// PostgreSQL, and OpenBao issuing logins on it with these TTLs (seconds).
async fn database_fixture(default_ttl: u64, max_ttl: u64) -> (Postgres, OpenBao) {
    let pg = Postgres::start();
    let bao = OpenBao::start().await;
    bao.enable_database(MOUNT).await;
    bao.configure_postgres_connection(&DatabaseConnection {
        mount: MOUNT,
        name: "pg",
        connection_url: &pg.templated_connection_url(),
        username: SUPERUSER,
        password: pg.superuser_password(),
        allowed_roles: &[ROLE],
    })
    .await;
    bao.create_database_role(&DatabaseRole {
        mount: MOUNT,
        name: ROLE,
        db_name: "pg",
        creation_statements: POSTGRES_CREATION_STATEMENTS,
        default_ttl_seconds: default_ttl,
        max_ttl_seconds: max_ttl,
    })
    .await;
    (pg, bao)
}

fn write_config(fx: &Fixture, bao: &OpenBao, body: &str) -> PathBuf {
    let yaml = format!(
        "vault:\n  address: {}\n  timeout: 1s\n  auth: {{ method: token }}\n{body}",
        bao.address
    );
    let path = fx.dir.path().join("config.yaml");
    std::fs::write(&path, &yaml).expect("config written");
    path
}

async fn start_daemon(fx: &Fixture, path: &Path) -> Running {
    fx.namespace("pullsecretd", json!({}));
    let config = Config::load(path).expect("config");
    let vault = config.vault.as_ref().expect("vault block");
    let session = VaultSession::with_environment(
        vault,
        TokenEnvironment {
            vault_token: Some(SecretString::from(ROOT_TOKEN.to_string())),
            home: None,
        },
    )
    .expect("session")
    .with_retry(RetryPolicy {
        retries: 1,
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(50),
    });
    let options = daemon::DaemonOptions {
        sources: SourceContext {
            vault: Some(Arc::new(session)),
            ..SourceContext::default()
        },
        throttle: pullsecretd::cluster::Throttle::new(nz(500), nz(200), 4),
        listen: Some("127.0.0.1:0".parse().expect("address")),
        ..fx.daemon_options(4)
    };
    daemon::start(fx.client.clone(), options)
        .await
        .expect("daemon starts")
}

/// The username and password of the Secret's one `auths` entry.
fn login_in(secret: &Secret) -> Option<(String, String)> {
    let data = secret.data.as_ref()?;
    let payload: Value = serde_json::from_slice(&data.get(".dockerconfigjson")?.0).ok()?;
    let entry = payload["auths"].as_object()?.values().next()?;
    Some((
        entry["username"].as_str()?.to_string(),
        entry["password"].as_str()?.to_string(),
    ))
}

/// Requests of the audit log on `path`: (operation, time).
fn audit_times(log: &Path, path: &str) -> Vec<(String, SystemTime)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["type"] == "request" && entry["request"]["path"] == path)
        .filter_map(|entry| {
            let time: k8s_openapi::jiff::Timestamp = entry["time"].as_str()?.parse().ok()?;
            Some((
                entry["request"]["operation"].as_str()?.to_string(),
                SystemTime::from(time),
            ))
        })
        .collect()
}

#[test]
fn dynamic_sources_decode_and_kv_only_fields_are_refused() {
    let vault = "vault:\n  address: http://127.0.0.1:8200\n  auth: { method: token }\n";
    let with =
        |from: &str| format!("{vault}registries:\n  r:\n    server: quay.io\n    from: {from}\n");
    let config = Config::from_yaml(
        &with(
            "{ vault: { engine: dynamic, path: database/creds/app, fields: { username: user } } }",
        ),
        Path::new("/x.yaml"),
    )
    .expect("valid");
    let SourceConfig::Vault(source) = &config.registries["r"].from else {
        panic!("a Vault source");
    };
    assert_eq!(source.location.kv, KvVersion::Dynamic);
    assert_eq!(source.location.path, "database/creds/app");
    assert_eq!(source.location.to_string(), "database/creds/app (dynamic)");
    for (from, field, words) in [
        (
            "{ vault: { engine: dynamic, mount: database, path: creds/app } }",
            "mount",
            "with engine: dynamic, path is the whole path",
        ),
        (
            "{ vault: { engine: dynamic, path: database/creds/app, kv: 2 } }",
            "kv",
            "kv is for KV secrets",
        ),
        (
            "{ vault: { engine: dynamic, path: database/creds/app, version: 3 } }",
            "version",
            "version is for KV secrets",
        ),
        (
            "{ vault: { engine: leased, path: database/creds/app } }",
            "engine",
            "expected one of kv, dynamic",
        ),
    ] {
        let error = Config::from_yaml(&with(from), Path::new("/x.yaml"))
            .expect_err(from)
            .to_string();
        assert!(
            error.contains(&format!("vault.{field}")) && error.contains(words),
            "{from}: {error}"
        );
    }
}

/// The whole life of a leased credential: issued, renewed, replaced before its max TTL,
/// published, the old lease revoked once the Secret moved on and the grace passed; every
/// credential the Secret ever held logs in to PostgreSQL. Then OpenBao goes down (sealed) past
/// the TTL: the credential is reported expired (metric, /readyz, Event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_login_is_renewed_replaced_before_it_ends_and_revoked_after_the_grace() {
    let (pg, bao) = database_fixture(6, 20).await;
    let fx = Fixture::start(Options::default()).await;
    fx.namespace("web", json!({}));
    let path = write_config(
        &fx,
        &bao,
        &format!(
            "registries:\n  db:\n    server: {SERVER}\n    \
             from: {{ vault: {{ engine: dynamic, path: database/creds/app }} }}\n\
             pullSecrets:\n  - name: db-pull\n    registries: [db]\n    projects: {{ names: [web] }}\n\
             \x20   rotation: {{ refresh: 1h, grace: 1s }}\n"
        ),
    );
    let running = start_daemon(&fx, &path).await;
    let address = running.address.expect("listener");

    // The sweeper: every credential the Secret holds, and whether it logs in right then.
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut switched_at: Option<Instant> = None;
    let mut refused: Vec<String> = Vec::new();
    let mut first_lease: Option<String> = None;
    let mut revoked_seen_at: Option<Instant> = None;
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "no replacement and revocation in time; seen {} credentials, refused {refused:?}",
            seen.len()
        );
        if let Some((user, password)) = fx.secret("web", "db-pull").as_ref().and_then(login_in) {
            if seen.last().is_none_or(|(last, _)| *last != user) {
                if !seen.is_empty() && switched_at.is_none() {
                    switched_at = Some(Instant::now());
                }
                seen.push((user.clone(), password.clone()));
            }
            if !pg.can_login(&user, &password) {
                // Only a violation if the Secret still holds it (it may have just moved on).
                let still = fx
                    .secret("web", "db-pull")
                    .as_ref()
                    .and_then(login_in)
                    .is_some_and(|(now_user, _)| now_user == user);
                if still {
                    refused.push(user.clone());
                }
            }
        }
        if first_lease.is_none() && seen.len() == 1 {
            let leases = bao.list_leases(LEASE_PREFIX).await;
            if leases.len() == 1 {
                first_lease = leases.into_iter().next();
            }
        }
        if let Some(first) = &first_lease
            && switched_at.is_some()
            && revoked_seen_at.is_none()
            && !bao.list_leases(LEASE_PREFIX).await.contains(first)
        {
            revoked_seen_at = Some(Instant::now());
        }
        if revoked_seen_at.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        refused.is_empty(),
        "the Secret held refused logins: {refused:?}"
    );
    assert_eq!(
        seen.len(),
        2,
        "one replacement, not a churn: {}",
        seen.len()
    );
    assert_ne!(seen[0].0, seen[1].0);
    let first = first_lease.expect("the first lease was listed");

    // The audit log: the first lease was renewed (more than once: 6 s TTL, replaced near its
    // 20 s max), then revoked by pullsecretd, successfully, and never renewed after that.
    let requests = bao.lease_requests_for(&first).await;
    let actions: Vec<LeaseAction> = requests.iter().map(|r| r.action).collect();
    let renewals = actions.iter().filter(|a| **a == LeaseAction::Renew).count();
    assert!(renewals >= 2, "{requests:#?}");
    assert_eq!(actions.last(), Some(&LeaseAction::Revoke), "{requests:#?}");
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == LeaseAction::Revoke)
            .count(),
        1,
        "{requests:#?}"
    );
    let revoke = requests.last().expect("a revoke");
    assert!(revoke.answered && revoke.error.is_none(), "{revoke:#?}");
    // Revoked only after the Secret moved on, and not before the grace (1 s) had passed.
    let moved_on = switched_at.expect("the Secret switched");
    let revoked = revoked_seen_at.expect("revoked");
    assert!(
        revoked.duration_since(moved_on) >= Duration::from_millis(500),
        "revoked {:?} after the switch was seen",
        revoked.duration_since(moved_on)
    );
    // The old login is gone, the new one works and its lease is listed.
    assert!(!pg.role_exists(&seen[0].0));
    assert!(pg.can_login(&seen[1].0, &seen[1].1));
    assert_eq!(bao.list_leases(LEASE_PREFIX).await.len(), 1);
    // Neither the audit log nor the Secret's annotations hold a password in clear.
    let log = std::fs::read_to_string(bao.audit_log()).expect("audit log");
    assert!(!log.contains(&seen[0].1) && !log.contains(&seen[1].1));

    // The expiry is shown while served.
    let (_, text) = http_get(address, "/metrics").await;
    let expiry = metric(
        &text,
        "pullsecretd_credential_expiry_seconds{registry=\"db\"}",
    )
    .expect("expiry metric");
    assert!(expiry > 0.0 && expiry <= 20.0, "{expiry}");

    // OpenBao goes down (sealed): no renewal, no new read. The credential is held until its
    // lease ends, then reported expired.
    bao.seal().await;
    eventually_async(WAIT, "the credential reported expired", async || {
        let (_, text) = http_get(address, "/metrics").await;
        metric(
            &text,
            "pullsecretd_credential_expiry_seconds{registry=\"db\"}",
        )
        .is_some_and(|seconds| seconds <= 0.0)
    })
    .await;
    let (status, body) = http_get(address, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("registry db has expired"), "{body}");
    // The Secret is held (not rewritten, not blanked) with an Event saying why.
    eventually_async(WAIT, "a Held Event in web", async || {
        fx.server.list("", "events", Some("web")).iter().any(|e| {
            e["reason"] == "Held"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("source failed: no credential for db"))
        })
    })
    .await;
    // And one that says it expired.
    eventually_async(WAIT, "a CredentialExpired Event in web", async || {
        fx.server.list("", "events", Some("web")).iter().any(|e| {
            e["reason"] == "CredentialExpired"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("the credential of registry db expired at "))
        })
    })
    .await;
    running.stop();
}

/// A KV v2 secret whose `custom_metadata.expires_at` is 3 s ahead is read again before then,
/// although `rotation.refresh` is an hour; the new version written meanwhile is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_secret_is_read_again_before_its_expiry_metadata_although_refresh_is_an_hour() {
    let bao = OpenBao::start().await;
    let fx = Fixture::start(Options::default()).await;
    fx.namespace("web", json!({}));
    let first_password = "SENTINEL-expiry-pw-1-6f0a";
    let second_password = "SENTINEL-expiry-pw-2-1c9e";
    bao.kv2_put(
        "secret",
        "registries/reg",
        json!({"username": "robot", "password": first_password}),
    )
    .await;
    let expires_at = SystemTime::now() + Duration::from_secs(3);
    let stamp = |at: SystemTime| {
        k8s_openapi::jiff::Timestamp::try_from(at)
            .expect("a time")
            .to_string()
    };
    bao.api(
        "POST",
        "secret/metadata/registries/reg",
        Some(json!({"custom_metadata": {"expires_at": stamp(expires_at)}})),
    )
    .await;
    let path = write_config(
        &fx,
        &bao,
        &format!(
            "registries:\n  reg:\n    server: {SERVER}\n    from: {{ vault: {{ path: registries/reg }} }}\n\
             pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    projects: {{ names: [web] }}\n\
             \x20   rotation: {{ refresh: 1h }}\n"
        ),
    );
    let running = start_daemon(&fx, &path).await;
    let address = running.address.expect("listener");
    let password = || {
        fx.secret("web", "reg-pull")
            .as_ref()
            .and_then(login_in)
            .map(|(_, password)| password)
    };
    eventually_async(WAIT, "the first password published", async || {
        password().as_deref() == Some(first_password)
    })
    .await;
    let (_, text) = http_get(address, "/metrics").await;
    let shown = metric(
        &text,
        "pullsecretd_credential_expiry_seconds{registry=\"reg\"}",
    )
    .expect("expiry metric");
    assert!(shown > 0.0 && shown <= 3.0, "{shown}");

    // An operator rotates it (new version, expiry an hour ahead) before the old one expires.
    bao.kv2_put(
        "secret",
        "registries/reg",
        json!({"username": "robot", "password": second_password}),
    )
    .await;
    bao.api(
        "POST",
        "secret/metadata/registries/reg",
        Some(json!({"custom_metadata": {"expires_at": stamp(SystemTime::now() + Duration::from_secs(3600))}})),
    )
    .await;
    eventually_async(WAIT, "the second password published", async || {
        password().as_deref() == Some(second_password)
    })
    .await;

    // The audit log: the daemon's first read, then a read of the metadata and the data again
    // before the expiry (the refresh alone would have waited an hour).
    let log = bao.audit_log();
    let data_reads: Vec<SystemTime> = audit_times(&log, "secret/data/registries/reg")
        .into_iter()
        .filter(|(operation, _)| operation == "read")
        .map(|(_, at)| at)
        .collect();
    assert_eq!(data_reads.len(), 2, "{data_reads:?}");
    assert!(
        data_reads[1] < expires_at,
        "re-read after the expiry: {data_reads:?}"
    );
    let polls = audit_times(&log, "secret/metadata/registries/reg")
        .into_iter()
        .filter(|(operation, at)| operation == "read" && *at < expires_at)
        .count();
    assert!(polls >= 1, "no metadata poll before the expiry");
    // The new expiry is an hour ahead: no further reads in a busy loop.
    let (_, text) = http_get(address, "/metrics").await;
    let shown = metric(
        &text,
        "pullsecretd_credential_expiry_seconds{registry=\"reg\"}",
    )
    .expect("expiry metric");
    assert!(shown > 3000.0, "{shown}");
    running.stop();
}

/// A JWT `{"exp": …}` with a dummy header and signature (the daemon never checks signatures:
/// the expiry only decides when to read again).
fn jwt_expiring_at(at: SystemTime, subject: &str) -> String {
    use base64::Engine as _;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let exp = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let claims = url.encode(json!({"sub": subject, "exp": exp}).to_string());
    format!(
        "{}.{claims}.{}",
        url.encode(r#"{"alg":"none"}"#),
        url.encode("sig")
    )
}

fn write_docker_config(path: &Path, server: &str, password: &str) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("robot:{password}"));
    // Written whole and renamed: the daemon never sees half a file.
    let partial = path.with_extension("partial");
    std::fs::write(
        &partial,
        json!({"auths": {server: {"auth": auth}}}).to_string(),
    )
    .expect("docker config written");
    std::fs::rename(&partial, path).expect("docker config renamed");
}

/// Any source: a password that is a JWT expiring in 6 s is read again before then, although
/// `rotation.refresh` is an hour (here a docker config file, replaced meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_password_is_read_again_before_its_exp_although_refresh_is_an_hour() {
    let fx = Fixture::start(Options::default()).await;
    fx.namespace("web", json!({}));
    let creds = fx.dir.path().join("creds");
    std::fs::create_dir(&creds).expect("creds dir");
    let file = creds.join("docker-config.json");
    let expires_at = SystemTime::now() + Duration::from_secs(6);
    let first = jwt_expiring_at(expires_at, "first");
    write_docker_config(&file, SERVER, &first);
    let yaml = format!(
        "registries:\n  reg:\n    server: {SERVER}\n    from: {{ dockerConfig: {} }}\n\
         pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    projects: {{ names: [web] }}\n\
         \x20   rotation: {{ refresh: 1h }}\n",
        file.display()
    );
    std::fs::write(fx.dir.path().join("config.yaml"), yaml).expect("config written");
    fx.namespace("pullsecretd", json!({}));
    let options = daemon::DaemonOptions {
        listen: Some("127.0.0.1:0".parse().expect("address")),
        ..fx.daemon_options(4)
    };
    let running = daemon::start(fx.client.clone(), options)
        .await
        .expect("daemon starts");
    let password = || {
        fx.secret("web", "reg-pull")
            .as_ref()
            .and_then(login_in)
            .map(|(_, password)| password)
    };
    eventually_async(WAIT, "the first token published", async || {
        password().as_deref() == Some(first.as_str())
    })
    .await;
    let (_, text) = http_get(running.address.expect("listener"), "/metrics").await;
    let shown = metric(
        &text,
        "pullsecretd_credential_expiry_seconds{registry=\"reg\"}",
    )
    .expect("expiry metric");
    assert!(shown > 0.0 && shown <= 6.0, "{shown}");

    let second = jwt_expiring_at(SystemTime::now() + Duration::from_secs(3600), "second");
    write_docker_config(&file, SERVER, &second);
    eventually_async(WAIT, "the second token published", async || {
        password().as_deref() == Some(second.as_str())
    })
    .await;
    assert!(
        SystemTime::now() < expires_at,
        "the new token arrived only after the old one expired"
    );
    running.stop();
}
