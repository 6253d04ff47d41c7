//! The daemon's dispatcher (orchestration): turns new credential snapshots, config reloads and
//! leadership gains into namespace reconcile requests — exactly the namespaces a changed
//! credential concerns, every namespace after a reload, a shard's namespaces when this replica
//! comes to lead it. Writes nothing.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::controller::Context;
use super::stopped;
use crate::cluster::cache::Caches;
use crate::cluster::view;
use crate::config::Config;
use crate::model::shard;
use crate::plan::{self, PlanInputs};
use crate::source::service::Snapshot;

/// Turns new snapshots, config reloads and leadership gains into namespace requests.
pub async fn dispatch(context: Arc<Context>, touched: mpsc::UnboundedSender<String>) {
    let mut snapshot = context.snapshot.clone();
    let mut config = context.config.clone();
    let mut leading = context.leadership.changes();
    let mut stopping = context.stopping.clone();
    let mut elected = true;
    let mut led = leading.borrow().clone();
    // Snapshots also change when only read times moved (every refresh): act on new
    // generations only, or an idle daemon re-reconciles every namespace at every refresh.
    let mut seen_generation = 0u64;
    // Whatever arrived before the caches synced counts as new now.
    snapshot.mark_changed();
    record_leadership(&context, &led);
    let send_all = |caches: &Caches| {
        for name in caches.namespace_names() {
            let _ = touched.send(name);
        }
    };
    // The namespaces of shards just gained (all of them without shards).
    let send_shards = |caches: &Caches, gained: &BTreeSet<u32>| {
        let shards = context.leadership.shards();
        for name in caches.namespace_names() {
            if gained.contains(&shard::shard_of(&name, shards)) {
                let _ = touched.send(name);
            }
        }
    };
    loop {
        tokio::select! {
            changed = snapshot.changed() => {
                if changed.is_err() { return; }
                let current = Arc::clone(&snapshot.borrow_and_update());
                if current.generation == seen_generation {
                    continue;
                }
                seen_generation = current.generation;
                if current.generation == 1 {
                    send_all(&context.caches);
                    continue;
                }
                let config = Arc::clone(&context.config.borrow());
                for namespace in namespaces_using(&context, &config, &current) {
                    let _ = touched.send(namespace);
                }
            }
            changed = config.changed() => {
                if changed.is_err() { return; }
                let current = Arc::clone(&config.borrow_and_update());
                context
                    .metrics
                    .zero_series(current.registries.keys().map(String::as_str));
                for store in context.caches.watch_accounts(&view::account_names(&current, [], &[])) {
                    let _ = store.wait_until_ready().await;
                }
                send_all(&context.caches);
            }
            changed = leading.changed(), if elected => {
                if changed.is_err() {
                    // No election (or it ended): leadership no longer changes.
                    elected = false;
                    continue;
                }
                let now_leading = leading.borrow_and_update().clone();
                record_leadership(&context, &now_leading);
                let gained = gained_shards(&led, &now_leading);
                led = now_leading;
                if !gained.is_empty() {
                    send_shards(&context.caches, &gained);
                }
            }
            () = stopped(&mut stopping) => return,
        }
    }
}

/// The shards led in `now` and not in `before`.
fn gained_shards(before: &[bool], now: &[bool]) -> BTreeSet<u32> {
    now.iter()
        .enumerate()
        .filter(|(index, leading)| **leading && !before.get(*index).copied().unwrap_or(false))
        .filter_map(|(index, _)| u32::try_from(index).ok())
        .collect()
}

/// The leader gauge (any shard led) and the count of shards led.
fn record_leadership(context: &Context, leading: &[bool]) {
    let led = leading.iter().filter(|l| **l).count();
    context.metrics.leader.set(i64::from(led > 0));
    context
        .metrics
        .shards_led
        .set(i64::try_from(led).unwrap_or(i64::MAX));
}

/// Namespaces planned to hold a Secret of a pull secret using a registry in
/// `snapshot.changed` (rendered, or held because that registry has no credential now).
/// Planned one namespace at a time, each plan dropped before the next: the whole desired
/// state at once cost about 1.4 KiB per namespace at every rotation (the benchmark's heap
/// profile), for a set of names.
fn namespaces_using(
    context: &Context,
    config: &Arc<Config>,
    snapshot: &Snapshot,
) -> BTreeSet<String> {
    if snapshot.changed.is_empty() {
        return BTreeSet::new();
    }
    let uses_changed = |pull_secret: &str| {
        config
            .pull_secrets
            .iter()
            .find(|p| p.name == pull_secret)
            .is_some_and(|p| p.registries.iter().any(|r| snapshot.changed.contains(r)))
    };
    let prepared = context.prepared(config, snapshot);
    // Which namespaces hold a registry's Secrets depends neither on image pullers nor on the
    // other namespaces: planned as off OpenShift, with no namespace list.
    let inputs = PlanInputs {
        config,
        credentials: &snapshot.credentials,
        namespaces: &[],
        openshift: Some(false),
    };
    let mut using = BTreeSet::new();
    context.caches.for_each_namespace(|namespace| {
        let project = plan::plan_namespace(inputs, &prepared, &namespace);
        if project.secrets.iter().any(|s| uses_changed(&s.pull_secret))
            || project.held.iter().any(|h| uses_changed(&h.pull_secret))
        {
            using.insert(namespace.name);
        }
    });
    using
}
