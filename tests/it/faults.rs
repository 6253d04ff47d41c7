//! The fault matrix: `pullsecretd run` (the binary) against kube-sim and a real OpenBao while
//! faults are injected — Vault down, 403, sealed, its token revoked; API 5xx/429/409 storms;
//! watch drops and 410; `kill -9` at each step of a versioned rotation and of a type change; an
//! auth file half-written, then deleted; the config reloaded to an invalid file and to fewer
//! pull secrets. Throughout each scenario the invariant sweeper (tests/it/support/invariants.rs)
//! checks that no service account names a missing Secret, that nothing without this instance's
//! identity changes and that no managed Secret is emptied; once the fault clears, the cluster
//! must converge to the source's current credential. README "Safety" has the table.

use crate::support::kube as kube_cluster;
use crate::support::process;
use crate::support::{invariants, seed};
use pullsecretd_testkit::openbao;

use std::path::PathBuf;
use std::time::Duration;

use kube_sim::{ErrorRule, InjectedError, Options, Release};
use serde_json::json;

use invariants::Sweeper;
use kube_cluster::{Cluster, password_of, path};
use openbao::OpenBao;
use process::{Daemon, wait_until};

const SENTINEL: &str = "SENTINEL-pw-faults-77a0";
const SERVER: &str = "registry.example.com";
const CONVERGE: Duration = Duration::from_secs(60);

/// Where the registry's credential comes from.
enum Source {
    File(PathBuf),
    /// OpenBao; pullsecretd reads its token from `token_file`.
    Vault {
        bao: Box<OpenBao>,
        token_file: PathBuf,
    },
}

/// kube-sim with three labelled namespaces, one credential source, one config and `run`.
struct Rig {
    c: Cluster,
    namespaces: Vec<String>,
    source: Source,
    config: PathBuf,
    strategy: &'static str,
    daemon: Option<Daemon>,
    starts: u32,
}

impl Rig {
    fn cluster() -> (Cluster, Vec<String>) {
        let c = Cluster::start(Options::default());
        let namespaces: Vec<String> = (1..=3).map(|i| format!("web-{i}")).collect();
        for ns in &namespaces {
            seed::namespace(&c.server, ns, json!({"team": "web"}));
            // A user's own pull secret, linked first: it must stay, in place.
            seed::object(
                &c.server,
                "",
                "secrets",
                json!({"metadata": {"name": "users-own", "namespace": ns},
                       "type": "kubernetes.io/dockerconfigjson",
                       "data": {".dockerconfigjson": "eyJhdXRocyI6e319"}}),
            );
        }
        (c, namespaces)
    }

    /// A docker-config-file source with `password`.
    fn with_file(strategy: &'static str, password: &str) -> Self {
        let (c, namespaces) = Self::cluster();
        let auth = c.docker_config("config.json", SERVER, password);
        let mut rig = Self {
            config: PathBuf::new(),
            c,
            namespaces,
            source: Source::File(auth),
            strategy,
            daemon: None,
            starts: 0,
        };
        rig.write_config("kubernetes.io/dockerconfigjson", true);
        rig.link_users_own();
        rig
    }

    /// An OpenBao source with `password`, read with a token of a policy that may read it.
    async fn with_vault(strategy: &'static str, password: &str) -> Self {
        let bao = OpenBao::start().await;
        bao.put_policy(
            "reader",
            "path \"secret/data/registries/*\" { capabilities = [\"read\"] }\n\
             path \"secret/metadata/registries/*\" { capabilities = [\"read\"] }\n",
        )
        .await;
        let token = bao
            .create_token(json!({"policies": ["reader"], "ttl": "1h"}))
            .await;
        let (c, namespaces) = Self::cluster();
        let token_file = c.file("vault-token", &token);
        let mut rig = Self {
            config: PathBuf::new(),
            c,
            namespaces,
            source: Source::Vault {
                bao: Box::new(bao),
                token_file,
            },
            strategy,
            daemon: None,
            starts: 0,
        };
        rig.put_password(password).await;
        rig.write_config("kubernetes.io/dockerconfigjson", true);
        rig.link_users_own();
        rig
    }

    fn bao(&mut self) -> &mut OpenBao {
        match &mut self.source {
            Source::Vault { bao, .. } => bao,
            Source::File(_) => panic!("not a Vault rig"),
        }
    }

    /// Sets the source's credential to `password`.
    async fn put_password(&mut self, password: &str) {
        match &mut self.source {
            Source::Vault { bao, .. } => {
                bao.kv2_put(
                    "secret",
                    "registries/reg",
                    json!({"username": "robot", "password": password}),
                )
                .await;
            }
            Source::File(_) => {
                self.c.docker_config("config.json", SERVER, password);
            }
        }
    }

    /// The config: pull secret `reg-pull` of `secret_type` in every `team=web` namespace, and
    /// (when `extra`) a second one, `extra-pull`, for the same registry.
    fn write_config(&mut self, secret_type: &str, extra: bool) {
        let (vault, from) = match &self.source {
            Source::File(auth) => (
                String::new(),
                format!("{{ dockerConfig: {} }}", auth.display()),
            ),
            Source::Vault { bao, token_file } => (
                format!(
                    "vault:\n  address: {}\n  timeout: 1s\n  auth: {{ method: token, file: {} }}\n",
                    bao.address,
                    token_file.display()
                ),
                "{ vault: { path: registries/reg } }".to_string(),
            ),
        };
        let pull_secret = |name: &str| {
            format!(
                "  - name: {name}\n    type: {secret_type}\n    registries: [reg]\n    \
                 projects: {{ selector: \"team=web\" }}\n    link: {{ default: [pull] }}\n    \
                 rotation: {{ strategy: {}, refresh: 300ms, grace: 1s, keep: 1 }}\n",
                self.strategy
            )
        };
        let mut yaml = format!(
            "{vault}registries:\n  reg:\n    server: {SERVER}\n    from: {from}\npullSecrets:\n{}",
            pull_secret("reg-pull")
        );
        if extra {
            yaml.push_str(&pull_secret("extra-pull"));
        }
        self.config = self.c.file("pullsecretd.yaml", &yaml);
    }

    /// Sets each `default` account's pull list to just the user's own Secret (removing ours:
    /// drift the daemon repairs).
    fn link_users_own(&self) {
        for ns in &self.namespaces {
            seed::account(&self.c.server, ns, "default", &["users-own"], &[]);
        }
    }

    fn start(&mut self) {
        self.starts += 1;
        let args = [
            "--config",
            path(&self.config),
            "--no-leader-election",
            "--reload-debounce",
            "100ms",
            "--retries",
            "2",
        ];
        self.daemon = Some(Daemon::start(
            self.c.dir.path(),
            &format!("run-{}", self.starts),
            &args,
            &self.c.env(&[]),
            SENTINEL,
        ));
    }

    fn kill9(&mut self) {
        if let Some(daemon) = self.daemon.as_mut() {
            daemon.kill9();
        }
    }

    fn log(&self) -> String {
        self.daemon.as_ref().map(Daemon::log).unwrap_or_default()
    }

    /// Our Secrets each namespace's `default` links, after the user's own.
    fn linked(&self, ns: &str) -> Vec<String> {
        let list = self.c.pull_list(ns, "default");
        assert_eq!(
            list.first().map(String::as_str),
            Some("users-own"),
            "{ns}: {list:?}"
        );
        list.into_iter().skip(1).collect()
    }

    /// Every namespace links exactly one `reg-pull` Secret, of `secret_type`, holding
    /// `password`; of the replaced versions at most `keep` remain.
    fn converged(&self, password: &str, secret_type: &str) -> bool {
        self.namespaces.iter().all(|ns| {
            let ours: Vec<String> = self
                .linked(ns)
                .into_iter()
                .filter(|n| n.starts_with("reg-pull"))
                .collect();
            let [name] = ours.as_slice() else {
                return false;
            };
            let Some(secret) = self.c.secret(ns, name) else {
                return false;
            };
            let versions = self
                .c
                .server
                .list("", "secrets", Some(ns))
                .iter()
                .filter(|s| {
                    s["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("reg-pull"))
                })
                .count();
            secret["type"] == secret_type
                && (secret_type != "kubernetes.io/dockerconfigjson"
                    || password_of(&secret, SERVER).as_deref() == Some(password))
                && versions <= 2
        })
    }

    fn wait_converged(&self, password: &str, what: &str) {
        self.wait_converged_as(password, "kubernetes.io/dockerconfigjson", what);
    }

    fn wait_converged_as(&self, password: &str, secret_type: &str, what: &str) {
        let started = std::time::Instant::now();
        while !self.converged(password, secret_type) {
            assert!(
                started.elapsed() < CONVERGE,
                "timed out after {CONVERGE:?}: {what}; the daemon's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{what}: converged in {:?}", started.elapsed());
    }

    /// Every Secret and its resourceVersion: what must not move while a source is down.
    fn secret_versions(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self
            .c
            .server
            .list("", "secrets", None)
            .iter()
            .map(|s| {
                (
                    format!("{}/{}", s["metadata"]["namespace"], s["metadata"]["name"]),
                    s["metadata"]["resourceVersion"].to_string(),
                )
            })
            .collect();
        all.sort();
        all
    }

    fn sweep(&self) -> Sweeper {
        Sweeper::start(self.c.server.reader(), Some("default"))
    }

    /// Waits until the daemon has logged `n` more failed reads.
    fn wait_failed_reads(&self, n: usize) {
        let start = self.log().matches("Reading a registry failed").count();
        wait_until(Duration::from_secs(30), "failed reads logged", || {
            self.log().matches("Reading a registry failed").count() >= start + n
        });
    }
}

/// A source fault: converged, then the fault, during which nothing moves; then it clears and
/// the new credential arrives.
async fn source_outage(
    name: &str,
    rig: &mut Rig,
    fault: impl AsyncFnOnce(&mut Rig),
    clear: impl AsyncFnOnce(&mut Rig),
) {
    rig.start();
    rig.wait_converged(SENTINEL, &format!("{name}: first credential"));
    let sweeper = rig.sweep();
    fault(rig).await;
    let before = rig.secret_versions();
    rig.wait_failed_reads(3);
    assert_eq!(
        rig.secret_versions(),
        before,
        "{name}: nothing moved while the source failed"
    );
    assert!(
        rig.log().contains("last_good_age_seconds"),
        "{name}: {}",
        rig.log()
    );
    clear(rig).await;
    rig.wait_converged("after-the-fault", &format!("{name}: recovered"));
    sweeper.finish().assert_clean(name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_down() {
    let mut rig = Rig::with_vault("versioned", SENTINEL).await;
    source_outage(
        "Vault down",
        &mut rig,
        async |rig| rig.bao().kill(),
        async |rig| {
            // A dev server forgets everything: seed it again, as the operator would restore it.
            let bao = rig.bao();
            bao.restart().await;
            bao.put_policy(
                "reader",
                "path \"secret/data/registries/*\" { capabilities = [\"read\"] }\n\
                 path \"secret/metadata/registries/*\" { capabilities = [\"read\"] }\n",
            )
            .await;
            let token = bao
                .create_token(json!({"policies": ["reader"], "ttl": "1h"}))
                .await;
            rig.c.file("vault-token", &token);
            // A restarted dev server numbers versions from 1 again, which a real Vault never
            // does (its storage survives): write twice so the version moves past the old one.
            rig.put_password("not-yet").await;
            rig.put_password("after-the-fault").await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_denies_by_policy() {
    let mut rig = Rig::with_vault("in-place", SENTINEL).await;
    source_outage(
        "Vault 403",
        &mut rig,
        async |rig| {
            rig.bao()
                .put_policy(
                    "reader",
                    "path \"secret/data/other/*\" { capabilities = [\"read\"] }\n",
                )
                .await;
        },
        async |rig| {
            rig.bao()
                .put_policy(
                    "reader",
                    "path \"secret/data/registries/*\" { capabilities = [\"read\"] }\n\
                     path \"secret/metadata/registries/*\" { capabilities = [\"read\"] }\n",
                )
                .await;
            rig.put_password("after-the-fault").await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_sealed() {
    let mut rig = Rig::with_vault("versioned", SENTINEL).await;
    source_outage(
        "Vault sealed",
        &mut rig,
        async |rig| rig.bao().seal().await,
        async |rig| {
            rig.bao().unseal().await;
            rig.put_password("after-the-fault").await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_token_revoked() {
    let mut rig = Rig::with_vault("in-place", SENTINEL).await;
    source_outage(
        "Vault token revoked",
        &mut rig,
        async |rig| {
            let token =
                std::fs::read_to_string(rig.c.dir.path().join("vault-token")).expect("token file");
            rig.bao()
                .api("POST", "auth/token/revoke", Some(json!({"token": token})))
                .await;
        },
        async |rig| {
            let token = rig
                .bao()
                .create_token(json!({"policies": ["reader"], "ttl": "1h"}))
                .await;
            rig.c.file("vault-token", &token);
            rig.put_password("after-the-fault").await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_error_storms_during_a_rotation() {
    let mut rig = Rig::with_vault("versioned", SENTINEL).await;
    rig.start();
    rig.wait_converged(SENTINEL, "storms: first credential");
    let sweeper = rig.sweep();
    rig.c.server.set_faults(|f| {
        for error in [
            InjectedError::Internal,
            InjectedError::Unavailable,
            InjectedError::TooManyRequests { retry_after: 0 },
        ] {
            f.rules
                .push(ErrorRule::new(None, None, error, None).with_rate(0.1));
        }
        f.forced_conflicts = 20;
    });
    rig.put_password("during-the-storm").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    rig.c.server.set_faults(|f| {
        f.rules.clear();
        f.forced_conflicts = 0;
    });
    rig.wait_converged("during-the-storm", "storms: recovered");
    sweeper.finish().assert_clean("API 5xx/429/409 storms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_drops_and_expired_watches() {
    let mut rig = Rig::with_vault("in-place", SENTINEL).await;
    rig.c.server.set_faults(|f| {
        f.watch_drop_after = Some(Duration::from_millis(700));
        f.expire_watches = 10;
    });
    rig.start();
    rig.wait_converged(SENTINEL, "watch drops: first credential");
    let sweeper = rig.sweep();
    rig.c.server.compact();
    // Drift while watches come and go: a link removed by hand comes back.
    rig.link_users_own();
    rig.put_password("after-the-fault").await;
    rig.wait_converged("after-the-fault", "watch drops: recovered");
    sweeper.finish().assert_clean("watch drops and 410");
}

/// `kill -9` while the request of `verb` on `resource` is held at the server, once with the
/// write landing (after the kill) and once without; then a restart converges.
async fn kill_during_rotation(verb: &str, resource: &str) {
    let mut rig = Rig::with_vault("versioned", SENTINEL).await;
    rig.start();
    rig.wait_converged(SENTINEL, "first version");
    let sweeper = rig.sweep();
    for (round, release) in [Release::Proceed, Release::Fail].into_iter().enumerate() {
        let password = format!("rotation-{round}");
        let pause = rig.c.server.pause(verb, resource, None);
        rig.put_password(&password).await;
        assert!(
            pause.wait_arrived(CONVERGE),
            "{verb} {resource} arrived during the rotation:\n{}",
            rig.log()
        );
        rig.kill9();
        pause.release(release);
        rig.start();
        rig.wait_converged(
            &password,
            &format!("killed at {verb} {resource} ({release:?})"),
        );
    }
    sweeper.finish().assert_clean(&format!(
        "kill -9 at {verb} {resource} of a versioned rotation"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_a_new_version_is_created() {
    kill_during_rotation("create", "secrets").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_links_swap_to_the_new_version() {
    kill_during_rotation("update", "serviceaccounts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_an_old_version_is_deleted() {
    kill_during_rotation("delete", "secrets").await;
}

/// `kill -9` at the `step`-th request of a type change (dockerconfigjson → dockercfg, by a
/// config reload): unlink, delete, create, relink.
fn kill_during_type_change(step: usize) {
    let steps = [
        ("update", "serviceaccounts"),
        ("delete", "secrets"),
        ("create", "secrets"),
        ("update", "serviceaccounts"),
    ];
    let mut rig = Rig::with_file("in-place", SENTINEL);
    rig.start();
    rig.wait_converged(SENTINEL, "dockerconfigjson");
    let sweeper = rig.sweep();
    // Every request before the step proceeds; the step's is held.
    let mut pauses = Vec::new();
    for (verb, resource) in &steps[..=step] {
        pauses.push(rig.c.server.pause_in(verb, resource, "web-1", None));
    }
    rig.write_config("kubernetes.io/dockercfg", true);
    for (index, pause) in pauses.iter().enumerate() {
        assert!(
            pause.wait_arrived(CONVERGE),
            "step {index} of the type change arrived:\n{}",
            rig.log()
        );
        if index < step {
            pause.release(Release::Proceed);
        }
    }
    rig.kill9();
    pauses[step].release(Release::Proceed);
    rig.start();
    rig.wait_converged_as(
        SENTINEL,
        "kubernetes.io/dockercfg",
        "type change after kill -9",
    );
    let (verb, resource) = steps[step];
    sweeper.finish().assert_clean(&format!(
        "kill -9 at step {step} ({verb} {resource}) of a type change"
    ));
}

#[test]
fn kill9_while_a_type_change_unlinks() {
    kill_during_type_change(0);
}

#[test]
fn kill9_while_a_type_change_deletes() {
    kill_during_type_change(1);
}

#[test]
fn kill9_while_a_type_change_creates() {
    kill_during_type_change(2);
}

#[test]
fn kill9_while_a_type_change_relinks() {
    kill_during_type_change(3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_file_half_written_then_deleted() {
    let mut rig = Rig::with_file("versioned", SENTINEL);
    rig.start();
    rig.wait_converged(SENTINEL, "auth file: first credential");
    let sweeper = rig.sweep();
    let before = rig.secret_versions();
    rig.c.file(
        "config.json",
        "{\"auths\": {\"registry.example.com\": {\"auth\":",
    );
    rig.wait_failed_reads(2);
    std::fs::remove_file(rig.c.dir.path().join("config.json")).expect("deleted");
    rig.wait_failed_reads(2);
    assert_eq!(
        rig.secret_versions(),
        before,
        "nothing moved while the file was broken"
    );
    rig.put_password("after-the-fault").await;
    rig.wait_converged("after-the-fault", "auth file: recovered");
    sweeper
        .finish()
        .assert_clean("auth file half-written, then deleted");
}

#[test]
fn config_reloaded_to_an_invalid_file_then_to_fewer_pull_secrets() {
    let mut rig = Rig::with_file("in-place", SENTINEL);
    rig.start();
    rig.wait_converged(SENTINEL, "reload: first credential");
    wait_until(CONVERGE, "extra-pull linked", || {
        rig.namespaces
            .iter()
            .all(|ns| rig.linked(ns).contains(&"extra-pull".to_string()))
    });
    let sweeper = rig.sweep();
    let before = rig.secret_versions();
    let valid = std::fs::read_to_string(&rig.config).expect("config");
    rig.c
        .file("pullsecretd.yaml", "pullSecrets: [ {name: broken");
    let daemon = rig.daemon.as_ref().expect("daemon");
    daemon.wait_for_log(CONVERGE, "New config rejected");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        rig.secret_versions(),
        before,
        "an invalid config changes nothing"
    );
    rig.c.file("pullsecretd.yaml", &valid);
    rig.write_config("kubernetes.io/dockerconfigjson", false);
    wait_until(CONVERGE, "extra-pull unlinked and deleted", || {
        rig.namespaces.iter().all(|ns| {
            !rig.linked(ns).contains(&"extra-pull".to_string())
                && rig.c.secret(ns, "extra-pull").is_none()
        })
    });
    assert!(rig.converged(SENTINEL, "kubernetes.io/dockerconfigjson"));
    for ns in &rig.namespaces {
        let list = rig.c.pull_list(ns, "default");
        assert_eq!(list, ["users-own", "reg-pull"], "{ns}");
    }
    sweeper
        .finish()
        .assert_clean("config reloaded: invalid, then fewer pull secrets");
}
