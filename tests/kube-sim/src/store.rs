//! In-memory storage with one global resourceVersion counter, a bounded event history (the
//! "etcd compaction window" of watches) and the fan-out to open watches. It stores what it is
//! given: validation, strategies and admission happen before, in `api`.

use crate::resources::ResourceKey;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in history and sent to watches.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub key: ResourceKey,
    pub namespace: String,
    pub kind: EventType,
    pub object: Value,
    /// The object before a MODIFIED, so selector watches can turn it into ADDED/DELETED.
    pub old: Option<Value>,
}

/// What a watch receives, in store order.
#[derive(Debug, Clone)]
pub enum WatchMsg {
    Event(Arc<Event>),
    /// A bookmark at this resourceVersion: every event up to it has been sent before.
    Bookmark(u64),
}

struct Watcher {
    key: ResourceKey,
    namespace: Option<String>,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<WatchMsg>,
}

/// Objects are keyed by (namespace, name); cluster-scoped objects have namespace "".
type Objects = BTreeMap<(String, String), Value>;

pub struct Store {
    rv: u64,
    objects: HashMap<ResourceKey, Objects>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// Every event with rv <= compacted is gone from history.
    compacted: u64,
    watchers: Vec<Watcher>,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        Self {
            rv: 0,
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            watchers: Vec::new(),
        }
    }

    /// The current (latest) resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch may still start from.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    pub fn get(&self, key: ResourceKey, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&key)?
            .get(&(ns.to_string(), name.to_string()))
    }

    /// Objects of a resource, in one namespace or all, in (namespace, name) order.
    pub fn list(&self, key: ResourceKey, ns: Option<&str>) -> Vec<&Value> {
        self.list_after(key, ns, None).collect()
    }

    /// Objects of a resource, in one namespace or all, in (namespace, name) order, from just
    /// past `after` (where a continue token left off): a page of a list costs its own length,
    /// as an etcd range read does, not the whole resource's.
    pub fn list_after<'a>(
        &'a self,
        key: ResourceKey,
        ns: Option<&str>,
        after: Option<&(String, String)>,
    ) -> Box<dyn Iterator<Item = &'a Value> + 'a> {
        let Some(objs) = self.objects.get(&key) else {
            return Box::new(std::iter::empty());
        };
        let namespace_start = ns.map(|ns| (ns.to_string(), String::new()));
        let ns = ns.map(str::to_string);
        let start = match (after, namespace_start) {
            (Some(after), Some(first)) if *after < first => Bound::Included(first),
            (Some(after), _) => Bound::Excluded(after.clone()),
            (None, Some(first)) => Bound::Included(first),
            (None, None) => Bound::Unbounded,
        };
        let entries = objs.range((start, Bound::Unbounded));
        match ns {
            Some(ns) => Box::new(
                entries
                    .take_while(move |((n, _), _)| *n == ns)
                    .map(|(_, v)| v),
            ),
            None => Box::new(entries.map(|(_, v)| v)),
        }
    }

    /// Number of objects of a resource.
    pub fn count(&self, key: ResourceKey) -> usize {
        self.objects.get(&key).map_or(0, BTreeMap::len)
    }

    /// Writes an object (create or update), stamping a new resourceVersion; returns the stored copy.
    pub fn put(
        &mut self,
        key: ResourceKey,
        ns: &str,
        name: &str,
        mut obj: Value,
        kind: EventType,
    ) -> Value {
        self.rv += 1;
        crate::util::meta_mut(&mut obj)
            .insert("resourceVersion".into(), Value::String(self.rv.to_string()));
        let old = self
            .objects
            .entry(key)
            .or_default()
            .insert((ns.to_string(), name.to_string()), obj.clone());
        self.emit(Event {
            rv: self.rv,
            key,
            namespace: ns.to_string(),
            kind,
            object: obj.clone(),
            old: if kind == EventType::Modified {
                old
            } else {
                None
            },
        });
        obj
    }

    /// Removes an object; the returned copy carries the deletion's resourceVersion.
    pub fn remove(&mut self, key: ResourceKey, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self
            .objects
            .get_mut(&key)?
            .remove(&(ns.to_string(), name.to_string()))?;
        self.rv += 1;
        crate::util::meta_mut(&mut obj)
            .insert("resourceVersion".into(), Value::String(self.rv.to_string()));
        self.emit(Event {
            rv: self.rv,
            key,
            namespace: ns.to_string(),
            kind: EventType::Deleted,
            object: obj.clone(),
            old: None,
        });
        Some(obj)
    }

    /// Every namespaced object in `ns`, across resources, as (key, name).
    pub fn in_namespace(&self, ns: &str) -> Vec<(ResourceKey, String)> {
        let mut out = Vec::new();
        for (key, objs) in &self.objects {
            for (n, name) in objs.keys() {
                if n == ns {
                    out.push((*key, name.clone()));
                }
            }
        }
        out
    }

    fn emit(&mut self, ev: Event) {
        let ev = Arc::new(ev);
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        self.watchers.retain(|w| {
            if w.key != ev.key || w.namespace.as_deref().is_some_and(|ns| ns != ev.namespace) {
                return !w.tx.is_closed();
            }
            w.tx.send(WatchMsg::Event(ev.clone())).is_ok()
        });
    }

    /// Forgets all history: every resourceVersion before now becomes "too old" for a watch.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// Opens a watch from `since` (exclusive). Returns `Err(oldest)` if history no longer reaches it.
    pub fn watch(
        &mut self,
        key: ResourceKey,
        namespace: Option<&str>,
        since: u64,
        bookmarks: bool,
    ) -> Result<mpsc::UnboundedReceiver<WatchMsg>, u64> {
        if since < self.compacted {
            return Err(self.compacted);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        for ev in self.history.iter().filter(|e| e.rv > since) {
            if ev.key == key && namespace.is_none_or(|ns| ns == ev.namespace) {
                let _ = tx.send(WatchMsg::Event(ev.clone()));
            }
        }
        self.watchers.push(Watcher {
            key,
            namespace: namespace.map(str::to_string),
            bookmarks,
            tx,
        });
        Ok(rx)
    }

    /// Sends a bookmark at the current resourceVersion to every watch that asked for them.
    pub fn send_bookmarks(&mut self) {
        let rv = self.rv;
        self.watchers
            .retain(|w| !w.bookmarks || w.tx.send(WatchMsg::Bookmark(rv)).is_ok());
        self.watchers.retain(|w| !w.tx.is_closed());
    }

    /// Open watches (for tests).
    pub fn watcher_count(&self) -> usize {
        self.watchers.iter().filter(|w| !w.tx.is_closed()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRETS: ResourceKey = ResourceKey {
        group: "",
        plural: "secrets",
    };

    fn store_with(objects: &[(&str, &str)]) -> Store {
        let mut store = Store::new(10);
        for (ns, name) in objects {
            let object = json!({"metadata": {"namespace": ns, "name": name}});
            store.put(SECRETS, ns, name, object, EventType::Added);
        }
        store
    }

    fn positions<'a>(values: impl Iterator<Item = &'a Value>) -> Vec<String> {
        values
            .map(|v| {
                let field = |f: &str| v["metadata"][f].as_str().unwrap_or_default().to_string();
                format!("{}/{}", field("namespace"), field("name"))
            })
            .collect()
    }

    #[test]
    fn a_page_starts_just_past_where_the_last_one_left_off() {
        let store = store_with(&[("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("c", "x")]);
        let after = |ns: &str, name: &str| (ns.to_string(), name.to_string());
        let all = positions(store.list_after(SECRETS, None, None));
        assert_eq!(all, ["a/x", "a/y", "b/x", "b/y", "c/x"]);
        let rest = positions(store.list_after(SECRETS, None, Some(&after("a", "y"))));
        assert_eq!(rest, ["b/x", "b/y", "c/x"]);
        let in_b = positions(store.list_after(SECRETS, Some("b"), None));
        assert_eq!(in_b, ["b/x", "b/y"]);
        let rest_of_b = positions(store.list_after(SECRETS, Some("b"), Some(&after("b", "x"))));
        assert_eq!(rest_of_b, ["b/y"]);
        // A position before the namespace starts it from its first object, one past it ends it.
        let from_a = positions(store.list_after(SECRETS, Some("b"), Some(&after("a", "z"))));
        assert_eq!(from_a, ["b/x", "b/y"]);
        let past = positions(store.list_after(SECRETS, Some("b"), Some(&after("c", ""))));
        assert!(past.is_empty(), "{past:?}");
        let unknown = ResourceKey {
            group: "",
            plural: "configmaps",
        };
        assert_eq!(store.list_after(unknown, None, None).count(), 0);
    }
}
