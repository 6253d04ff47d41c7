//! The invariant sweeper of the safety and fault tests: a thread that reads kube-sim's store
//! directly (no requests, nothing counted) over and over while a scenario runs, and records
//! every moment the cluster breaks pullsecretd's promise:
//!
//! - **dangling**: a service account names a Secret that does not exist (references that were
//!   already dangling before the sweeper started are the user's, and allowed);
//! - **foreign changed**: a Secret or RoleBinding without this instance's identity label changed
//!   or vanished, or a service-account entry that did not name one of this instance's Secrets
//!   disappeared or moved relative to the other such entries;
//! - **emptied**: one of this instance's Secrets has no payload under its type's key, or a
//!   payload that is not a JSON object with at least one registry.
//!
//! "This instance's" is judged here from the labels alone (managed-by and instance), on
//! purpose independently of pullsecretd's own ownership code.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use kube_sim::StoreReader;
use serde_json::Value;

/// What the sweeper saw.
#[derive(Debug, Default)]
pub struct Report {
    pub sweeps: u64,
    pub dangling: BTreeSet<String>,
    pub foreign_changed: BTreeSet<String>,
    pub emptied: BTreeSet<String>,
}

impl Report {
    /// Prints the figures and panics on any violation.
    pub fn assert_clean(&self, scenario: &str) {
        eprintln!(
            "invariants [{scenario}]: {} sweeps, dangling references seen: {}, foreign objects \
             changed: {}, managed Secrets emptied: {}",
            self.sweeps,
            self.dangling.len(),
            self.foreign_changed.len(),
            self.emptied.len()
        );
        assert!(self.sweeps > 0, "[{scenario}] the sweeper never ran");
        assert!(
            self.dangling.is_empty(),
            "[{scenario}] dangling references: {:?}",
            self.dangling
        );
        assert!(
            self.foreign_changed.is_empty(),
            "[{scenario}] foreign objects changed: {:?}",
            self.foreign_changed
        );
        assert!(
            self.emptied.is_empty(),
            "[{scenario}] managed Secrets emptied: {:?}",
            self.emptied
        );
    }
}

/// A running sweeper; [`Sweeper::finish`] stops it and returns what it saw.
pub struct Sweeper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Report>>,
}

impl Sweeper {
    /// Starts sweeping for `instance` (`None`: any object with pullsecretd's managed-by label
    /// counts as the instance's, for tests of one instance that predates identities). Takes
    /// its baseline first, then returns.
    pub fn start(reader: StoreReader, instance: Option<&str>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut state = State::new(reader, instance.map(str::to_string));
        state.sweep();
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                state.sweep();
                std::thread::sleep(Duration::from_millis(2));
            }
            state.sweep();
            state.report
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

type Key = (String, String);

struct State {
    reader: StoreReader,
    instance: Option<String>,
    report: Report,
    /// Dangling references present before anything ran: the user's own.
    preexisting_dangling: Option<BTreeSet<(String, String, String)>>,
    /// Foreign Secrets and RoleBindings at first sight: resourceVersion by (kind, ns/name).
    foreign: BTreeMap<(&'static str, Key), String>,
    /// Per service account (ns/name): its entries that did not name this instance's Secrets,
    /// per list, at first sight.
    foreign_entries: BTreeMap<Key, [Vec<String>; 2]>,
}

fn meta_str<'a>(object: &'a Value, path: &str) -> &'a str {
    object.pointer(path).and_then(Value::as_str).unwrap_or("")
}

fn key_of(object: &Value) -> Key {
    (
        meta_str(object, "/metadata/namespace").to_string(),
        meta_str(object, "/metadata/name").to_string(),
    )
}

impl State {
    fn new(reader: StoreReader, instance: Option<String>) -> Self {
        Self {
            reader,
            instance,
            report: Report::default(),
            preexisting_dangling: None,
            foreign: BTreeMap::new(),
            foreign_entries: BTreeMap::new(),
        }
    }

    fn is_ours(&self, object: &Value) -> bool {
        is_ours(self.instance.as_deref(), object)
    }

    fn sweep(&mut self) {
        self.report.sweeps += 1;
        // One moment of the store: lists taken one after the other could see a link to a
        // Secret created after the Secrets were listed, and call it dangling.
        let mut lists = self
            .reader
            .list_at_once(&[
                ("", "secrets"),
                ("", "serviceaccounts"),
                ("rbac.authorization.k8s.io", "rolebindings"),
            ])
            .into_iter();
        let mut next = || lists.next().unwrap_or_default();
        let (secrets, accounts, bindings) = (next(), next(), next());
        let existing: BTreeSet<Key> = secrets.iter().map(key_of).collect();
        let ours: BTreeSet<Key> = secrets
            .iter()
            .filter(|s| self.is_ours(s))
            .map(key_of)
            .collect();

        self.check_dangling(&accounts, &existing);
        self.check_foreign("secret", &secrets);
        self.check_foreign("rolebinding", &bindings);
        self.check_entries(&accounts, &ours);
        self.check_payloads(&secrets);
    }

    fn check_dangling(&mut self, accounts: &[Value], existing: &BTreeSet<Key>) {
        let mut dangling = BTreeSet::new();
        for account in accounts {
            let (namespace, name) = key_of(account);
            for list in ["imagePullSecrets", "secrets"] {
                for entry in entries(account, list) {
                    if !existing.contains(&(namespace.clone(), entry.clone())) {
                        dangling.insert((namespace.clone(), name.clone(), entry));
                    }
                }
            }
        }
        match &self.preexisting_dangling {
            None => self.preexisting_dangling = Some(dangling),
            Some(before) => {
                for (namespace, account, secret) in dangling.difference(before) {
                    self.report
                        .dangling
                        .insert(format!("{namespace}/{account} -> {secret}"));
                }
            }
        }
    }

    fn check_foreign(&mut self, kind: &'static str, objects: &[Value]) {
        let mut seen = BTreeSet::new();
        let instance = self.instance.clone();
        for object in objects.iter().filter(|o| !is_ours(instance.as_deref(), o)) {
            let key = key_of(object);
            seen.insert(key.clone());
            let rv = meta_str(object, "/metadata/resourceVersion").to_string();
            match self.foreign.get(&(kind, key.clone())) {
                None => {
                    self.foreign.insert((kind, key), rv);
                }
                Some(before) if *before != rv => {
                    self.report
                        .foreign_changed
                        .insert(format!("{kind} {}/{} changed", key.0, key.1));
                }
                Some(_) => {}
            }
        }
        for (k, key) in self.foreign.keys() {
            if *k == kind && !seen.contains(key) {
                self.report
                    .foreign_changed
                    .insert(format!("{kind} {}/{} vanished", key.0, key.1));
            }
        }
    }

    fn check_entries(&mut self, accounts: &[Value], ours: &BTreeSet<Key>) {
        for account in accounts {
            let key = key_of(account);
            let now: [Vec<String>; 2] = ["imagePullSecrets", "secrets"].map(|list| {
                entries(account, list)
                    .into_iter()
                    .filter(|e| !ours.contains(&(key.0.clone(), e.clone())))
                    .collect()
            });
            let Some(before) = self.foreign_entries.get(&key) else {
                self.foreign_entries.insert(key, now);
                continue;
            };
            for (list, (was, is)) in before.iter().zip(&now).enumerate() {
                if !is_subsequence(was, is) {
                    self.report.foreign_changed.insert(format!(
                        "serviceaccount {}/{} list {list}: {was:?} became {is:?}",
                        key.0, key.1
                    ));
                }
            }
        }
    }

    fn check_payloads(&mut self, secrets: &[Value]) {
        let instance = self.instance.clone();
        for secret in secrets.iter().filter(|s| is_ours(instance.as_deref(), s)) {
            let (namespace, name) = key_of(secret);
            let data_key = match meta_str(secret, "/type") {
                "kubernetes.io/dockerconfigjson" => ".dockerconfigjson",
                "kubernetes.io/dockercfg" => ".dockercfg",
                // Not a pull secret: not one pullsecretd writes (the label was copied).
                _ => continue,
            };
            if !payload_ok(secret, data_key) {
                self.report.emptied.insert(format!("{namespace}/{name}"));
            }
        }
    }
}

/// The labels say the object is `instance`'s (any pullsecretd object when `None`).
fn is_ours(instance: Option<&str>, object: &Value) -> bool {
    let labels = object.pointer("/metadata/labels");
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    if label("app.kubernetes.io/managed-by") != Some("pullsecretd") {
        return false;
    }
    match instance {
        Some(instance) => label("pullsecretd.io/instance") == Some(instance),
        None => true,
    }
}

/// Names on one list of a service account, in order.
pub fn entries(account: &Value, list: &str) -> Vec<String> {
    account
        .get(list)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("name").and_then(Value::as_str).map(String::from))
        .collect()
}

/// Every element of `was` is in `is`, in the same order.
fn is_subsequence(was: &[String], is: &[String]) -> bool {
    let mut rest = is.iter();
    was.iter().all(|w| rest.any(|i| i == w))
}

fn payload_ok(secret: &Value, data_key: &str) -> bool {
    let Some(encoded) = secret
        .pointer("/data")
        .and_then(|d| d.get(data_key))
        .and_then(Value::as_str)
    else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
        return false;
    };
    let Ok(payload) = serde_json::from_slice::<Value>(&bytes) else {
        return false;
    };
    let registries = if data_key == ".dockerconfigjson" {
        payload.get("auths").and_then(Value::as_object)
    } else {
        payload.as_object()
    };
    registries.is_some_and(|r| !r.is_empty())
}
