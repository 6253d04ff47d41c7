//! The namespace cache (read-only, no I/O of its own): what the daemon keeps of each
//! namespace, which is its name, its labels and whether it is terminating.
//!
//! Why not kube-runtime's reflector store: it keeps a whole `Namespace` per entry (about
//! 540 bytes even stripped to name, labels and phase, plus a second copy during a re-list),
//! and at 10,000 namespaces that was the largest single part of the daemon's heap. Here an
//! entry is the name and a pointer to a label set shared by every namespace that has the same
//! labels. The API server gives every namespace the label `kubernetes.io/metadata.name` with
//! its own name (the `NamespaceDefaultLabelName` admission, Kubernetes 1.21 and later), which
//! alone would make every label set unique; an entry holding that label with its own name
//! keeps only a flag for it, and the label is put back whenever the namespace is read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::core::v1::Namespace;

use crate::plan::NamespaceInfo;

/// The label the API server sets to each namespace's own name.
pub const NAME_LABEL: &str = "kubernetes.io/metadata.name";

type Labels = BTreeMap<String, String>;

/// One cached namespace.
#[derive(Clone)]
pub struct CachedNamespace {
    /// Its labels but [`NAME_LABEL`] when that holds its own name (shared).
    labels: Arc<Labels>,
    /// It carries [`NAME_LABEL`] with its own name.
    name_label: bool,
    /// Its phase is `Terminating`: nothing can be created in it.
    terminating: bool,
}

/// Label sets shared between namespaces. Sets no namespace uses any more are dropped whenever
/// the table has doubled since the last sweep.
#[derive(Default)]
struct LabelSets {
    shared: HashSet<Arc<Labels>>,
    after_sweep: usize,
}

impl LabelSets {
    fn intern(&mut self, labels: Labels) -> Arc<Labels> {
        if let Some(shared) = self.shared.get(&labels) {
            return Arc::clone(shared);
        }
        if self.shared.len() >= 2 * self.after_sweep.max(32) {
            self.shared.retain(|set| Arc::strong_count(set) > 1);
            self.after_sweep = self.shared.len();
        }
        let labels = Arc::new(labels);
        self.shared.insert(Arc::clone(&labels));
        labels
    }
}

#[derive(Default)]
struct State {
    by_name: HashMap<Box<str>, CachedNamespace>,
    label_sets: LabelSets,
}

/// The namespaces of a re-list in progress.
#[derive(Default)]
pub struct NamespaceRelist(Vec<(Box<str>, CachedNamespace)>);

impl NamespaceRelist {
    /// The names listed so far.
    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|(name, _)| name.to_string()).collect()
    }
}

/// Every cached namespace, by name (any number of clones share one cache).
#[derive(Clone, Default)]
pub struct NamespaceStore(Arc<Mutex<State>>);

impl NamespaceStore {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A store holding `names` (no labels, none terminating), for namespaced mode.
    pub fn fixed(names: &[String]) -> Self {
        let store = Self::default();
        let mut relist = NamespaceRelist::default();
        for name in names {
            store.add_to_relist(&mut relist, name, Labels::new(), None);
        }
        store.replace(relist);
        store
    }

    /// A namespace from a watch: cached, replacing what was cached of that name. Returns its
    /// name.
    pub fn apply(&self, namespace: Namespace) -> String {
        let (name, labels, phase) = parts(namespace);
        let mut state = self.lock();
        let cached = cache_entry(&mut state.label_sets, &name, labels, phase.as_deref());
        state.by_name.insert(name.as_str().into(), cached);
        name
    }

    /// A namespace the watch saw deleted: forgotten. Returns its name.
    pub fn delete(&self, namespace: &Namespace) -> String {
        let name = namespace.metadata.name.clone().unwrap_or_default();
        self.lock().by_name.remove(name.as_str());
        name
    }

    /// A namespace of a re-list in progress, kept aside until [`Self::replace`].
    pub fn add_to_relist_from(&self, relist: &mut NamespaceRelist, namespace: Namespace) {
        let (name, labels, phase) = parts(namespace);
        self.add_to_relist(relist, &name, labels, phase.as_deref());
    }

    fn add_to_relist(
        &self,
        relist: &mut NamespaceRelist,
        name: &str,
        labels: Labels,
        phase: Option<&str>,
    ) {
        let cached = cache_entry(&mut self.lock().label_sets, name, labels, phase);
        relist.0.push((name.into(), cached));
    }

    /// A finished re-list replaces the cache. Returns the names of the namespaces that were
    /// cached before and are gone now (their deletes were not seen).
    pub fn replace(&self, relist: NamespaceRelist) -> Vec<String> {
        let fresh: HashMap<Box<str>, CachedNamespace> = relist.0.into_iter().collect();
        let mut state = self.lock();
        let before = std::mem::replace(&mut state.by_name, fresh);
        before
            .into_keys()
            .filter(|name| !state.by_name.contains_key(name))
            .map(String::from)
            .collect()
    }

    /// The namespace as the planner sees it; `None` when it is not cached or terminates.
    pub fn info(&self, name: &str) -> Option<NamespaceInfo> {
        let cached = self.lock().by_name.get(name).cloned()?;
        namespace_info(name, &cached)
    }

    /// Whether `name` is cached at all (terminating or not).
    pub fn contains(&self, name: &str) -> bool {
        self.lock().by_name.contains_key(name)
    }

    /// How many namespaces are cached.
    pub fn len(&self) -> usize {
        self.lock().by_name.len()
    }

    /// Whether no namespace is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `visit` with each cached namespace that does not terminate, in no set order,
    /// building one namespace's labels at a time (the cache is not locked during `visit`).
    pub fn for_each(&self, mut visit: impl FnMut(NamespaceInfo)) {
        let entries: Vec<(Box<str>, CachedNamespace)> = self
            .lock()
            .by_name
            .iter()
            .map(|(name, cached)| (name.clone(), cached.clone()))
            .collect();
        for (name, cached) in entries {
            if let Some(info) = namespace_info(&name, &cached) {
                visit(info);
            }
        }
    }
}

/// A namespace's name, labels and phase; the rest of it is dropped here.
fn parts(namespace: Namespace) -> (String, Labels, Option<String>) {
    let name = namespace.metadata.name.unwrap_or_default();
    let labels = namespace.metadata.labels.unwrap_or_default();
    let phase = namespace.status.and_then(|status| status.phase);
    (name, labels, phase)
}

fn cache_entry(
    label_sets: &mut LabelSets,
    name: &str,
    mut labels: Labels,
    phase: Option<&str>,
) -> CachedNamespace {
    let name_label = labels.get(NAME_LABEL).is_some_and(|value| value == name);
    if name_label {
        labels.remove(NAME_LABEL);
    }
    CachedNamespace {
        labels: label_sets.intern(labels),
        name_label,
        terminating: phase == Some("Terminating"),
    }
}

fn namespace_info(name: &str, cached: &CachedNamespace) -> Option<NamespaceInfo> {
    if cached.terminating {
        return None;
    }
    let mut labels = Labels::clone(&cached.labels);
    if cached.name_label {
        labels.insert(NAME_LABEL.to_string(), name.to_string());
    }
    Some(NamespaceInfo {
        name: name.to_string(),
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceStatus;
    use kube::api::ObjectMeta;

    fn namespace(name: &str, labels: &[(&str, &str)], phase: Option<&str>) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            status: phase.map(|phase| NamespaceStatus {
                phase: Some(phase.to_string()),
                conditions: None,
            }),
            ..Namespace::default()
        }
    }

    #[test]
    fn labels_read_back_as_written_and_equal_sets_are_shared() {
        let store = NamespaceStore::default();
        store.apply(namespace("a", &[(NAME_LABEL, "a"), ("team", "x")], None));
        store.apply(namespace("b", &[(NAME_LABEL, "b"), ("team", "x")], None));
        // A name label that is not its own name is an ordinary label.
        store.apply(namespace(
            "c",
            &[(NAME_LABEL, "other"), ("team", "x")],
            None,
        ));
        let a = store.info("a").expect("a is cached");
        assert_eq!(
            a.labels,
            Labels::from([
                (NAME_LABEL.to_string(), "a".to_string()),
                ("team".to_string(), "x".to_string()),
            ])
        );
        let c = store.info("c").expect("c is cached");
        assert_eq!(c.labels.get(NAME_LABEL).map(String::as_str), Some("other"));
        let state = store.lock();
        let (a, b) = (&state.by_name["a"], &state.by_name["b"]);
        assert!(Arc::ptr_eq(&a.labels, &b.labels));
        assert!(!Arc::ptr_eq(&a.labels, &state.by_name["c"].labels));
    }

    #[test]
    fn terminating_namespaces_are_cached_but_not_planned() {
        let store = NamespaceStore::default();
        store.apply(namespace("going", &[], Some("Terminating")));
        store.apply(namespace("here", &[], Some("Active")));
        assert!(store.contains("going"));
        assert!(store.info("going").is_none());
        let mut seen = Vec::new();
        store.for_each(|info| seen.push(info.name));
        assert_eq!(seen, vec!["here".to_string()]);
    }

    #[test]
    fn a_relist_reports_the_namespaces_it_no_longer_has() {
        let store = NamespaceStore::default();
        store.apply(namespace("stays", &[], None));
        store.apply(namespace("vanished", &[], None));
        let mut relist = NamespaceRelist::default();
        store.add_to_relist_from(&mut relist, namespace("stays", &[("new", "1")], None));
        store.add_to_relist_from(&mut relist, namespace("arrived", &[], None));
        // Until the re-list ends, the cache is as it was.
        assert!(store.contains("vanished"));
        assert!(!store.contains("arrived"));
        assert_eq!(store.replace(relist), vec!["vanished".to_string()]);
        assert_eq!(store.len(), 2);
        let stays = store.info("stays").expect("stays is cached");
        assert_eq!(stays.labels.get("new").map(String::as_str), Some("1"));
    }

    #[test]
    fn deleted_namespaces_are_forgotten_and_unused_label_sets_dropped() {
        let store = NamespaceStore::default();
        for i in 0..200 {
            let name = format!("ns-{i}");
            let value = i.to_string();
            store.apply(namespace(&name, &[("unique", &value)], None));
            store.delete(&namespace(&name, &[], None));
        }
        assert!(store.is_empty());
        // Sweeps run as the table doubles: far fewer sets than were ever interned are left.
        assert!(store.lock().label_sets.shared.len() < 100);
    }
}
