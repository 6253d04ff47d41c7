//! Slim object stores (read-only caches, no I/O): what the daemon keeps of each watched Secret,
//! service account and RoleBinding, and of the objects it just wrote.
//!
//! Why not kube-runtime's reflector store: it keeps every object whole, one allocation tree
//! each, about 2-3 KiB for a managed Secret; at 10,000 namespaces that was most of the daemon's
//! memory. What the diff needs of an object is small, and mostly the same in every namespace:
//! a Secret named `quay-pull` with the same labels, annotations, type and content is identical
//! in 10,000 namespaces but for its namespace, uid, resourceVersion and creation time. So an
//! entry here is those four (per object) and a [`Shape`] (everything else, shared by every
//! object that has it, interned by a SHA-256 of its JSON). A Secret's payload is not kept at
//! all: its shape holds a digest of the data ([`crate::model::manifest::data_digest`]), which
//! still tells an edited payload from the desired one. Whole objects are rebuilt from an entry
//! when a reconcile asks (`objects`), so the diff keeps its k8s-openapi inputs.
//!
//! An entry's uid and resourceVersion are kept as [`Token`]s: a UUID as its 16 bytes, a decimal
//! resourceVersion as a number (what every API server sends), anything else as text, so the
//! usual entry makes no allocation of its own; a namespace's entries sit in a vector of exactly
//! their number. (The 30,000-namespace heap profile showed the two small strings and the
//! vectors' spare room at ~470 bytes a namespace.) Both are opaque to the daemon: a token is
//! only compared with what the server sent and given back as the very same text.
//!
//! The store also remembers what this daemon just wrote ([`SlimStore::remember_written`],
//! [`SlimStore::remember_deleted`]) until the watch delivers it: a namespace reconciled again
//! before its watch events arrive (its own Secret creates trigger that) must diff against its
//! own writes, or it writes again against a stale resourceVersion (409, GET) for nothing. A
//! write is remembered only if the store held exactly the version it was written against (so
//! it is newer than anything cached); any later watch event about the object ends the memory,
//! since it is that write or something newer (a delete of the object a recreate replaced is
//! the one exception: it is older), and so does a re-list.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::model::manifest::{DataDigest, data_digest};

/// A kind the slim store can hold: what of it is kept only as a digest.
pub trait Slim: Resource<DynamicType = ()> + Clone + Serialize + Send + Sync + 'static {
    /// Takes what is kept only as a digest out of `object` (a Secret's data) and returns that
    /// digest; `None` for kinds kept whole.
    fn take_digest(_object: &mut Self) -> Option<DataDigest> {
        None
    }
}

impl Slim for Secret {
    fn take_digest(secret: &mut Self) -> Option<DataDigest> {
        secret.string_data = None;
        secret.data.take().map(|data| data_digest(&data))
    }
}

impl Slim for ServiceAccount {}
impl Slim for RoleBinding {}

/// Everything of an object but its namespace, uid, resourceVersion and creation time (and
/// managedFields, never read): shared by every object that has the same.
struct Shape<K> {
    object: K,
    digest: Option<DataDigest>,
}

/// A uid or resourceVersion exactly as the server sent it, without an allocation in the usual
/// forms: a lowercase hyphenated UUID, a decimal number without leading zeros. One text has one
/// token, so tokens are equal exactly when their texts are.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Uuid([u8; 16]),
    Number(u64),
    Text(Box<str>),
}

impl Token {
    fn new(text: String) -> Self {
        if let Some(bytes) = parse_uuid(&text) {
            return Self::Uuid(bytes);
        }
        match canonical_number(&text) {
            Some(number) => Self::Number(number),
            None => Self::Text(text.into_boxed_str()),
        }
    }

    /// Whether this is exactly `text`.
    fn is(&self, text: &str) -> bool {
        match self {
            Self::Text(own) => **own == *text,
            Self::Uuid(bytes) => parse_uuid(text).is_some_and(|other| other == *bytes),
            Self::Number(number) => canonical_number(text) == Some(*number),
        }
    }

    /// The text the server sent.
    fn text(&self) -> String {
        match self {
            Self::Text(own) => own.to_string(),
            Self::Number(number) => number.to_string(),
            Self::Uuid(bytes) => {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let (a, rest) = hex.split_at(8);
                let (b, rest) = rest.split_at(4);
                let (c, rest) = rest.split_at(4);
                let (d, e) = rest.split_at(4);
                format!("{a}-{b}-{c}-{d}-{e}")
            }
        }
    }
}

/// A decimal number written the one way `u64::to_string` writes it (no sign, no leading zero).
fn canonical_number(text: &str) -> Option<u64> {
    let number = text.parse::<u64>().ok()?;
    (number.to_string() == text).then_some(number)
}

/// A lowercase, hyphenated UUID (`8-4-4-4-12` hex digits) as its bytes; `None` for anything else.
fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let chars = text.as_bytes();
    if chars.len() != 36 || [8, 13, 18, 23].iter().any(|&i| chars[i] != b'-') {
        return None;
    }
    let hex = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut digits = chars.iter().copied().filter(|c| *c != b'-');
    let mut bytes = [0u8; 16];
    for byte in &mut bytes {
        *byte = (hex(digits.next()?)? << 4) | hex(digits.next()?)?;
    }
    Some(bytes)
}

/// Whether `token` is `text` (both absent counts).
fn same(token: Option<&Token>, text: Option<&str>) -> bool {
    match (token, text) {
        (None, None) => true,
        (Some(token), Some(text)) => token.is(text),
        _ => false,
    }
}

/// Pushes `entry` without spare room: a namespace holds a handful of entries, and room for
/// four (what a growing vector takes) in every namespace is most of a store's memory.
fn push_exact<K>(entries: &mut Vec<Entry<K>>, entry: Entry<K>) {
    entries.reserve_exact(1);
    entries.push(entry);
}

/// One cached object.
struct Entry<K> {
    uid: Option<Token>,
    resource_version: Option<Token>,
    created: Option<Time>,
    shape: Arc<Shape<K>>,
}

impl<K: Slim> Entry<K> {
    fn name(&self) -> &str {
        self.shape.object.meta().name.as_deref().unwrap_or_default()
    }

    /// The object as read, rebuilt (data, for a Secret, only as its digest).
    fn object(&self, namespace: &str) -> K {
        let mut object = self.shape.object.clone();
        let meta = object.meta_mut();
        meta.namespace = Some(namespace.to_string());
        meta.uid = self.uid.as_ref().map(Token::text);
        meta.resource_version = self.resource_version.as_ref().map(Token::text);
        meta.creation_timestamp.clone_from(&self.created);
        object
    }
}

/// What this daemon wrote last to one object, until the watch delivers it.
enum Recent<K> {
    Written(Entry<K>),
    Deleted,
}

/// Shapes by the SHA-256 of their JSON. Shapes no entry uses any more are dropped whenever the
/// table has doubled since the last sweep, so rotations do not pile up old shapes.
struct Shapes<K> {
    by_digest: HashMap<[u8; 32], Arc<Shape<K>>>,
    after_sweep: usize,
}

impl<K: Slim> Shapes<K> {
    fn intern(&mut self, shape: Shape<K>) -> Arc<Shape<K>> {
        let key = shape_key(&shape);
        if let Some(shared) = self.by_digest.get(&key) {
            return Arc::clone(shared);
        }
        if self.by_digest.len() >= 2 * self.after_sweep.max(32) {
            self.by_digest
                .retain(|_, shape| Arc::strong_count(shape) > 1);
            self.after_sweep = self.by_digest.len();
        }
        let shape = Arc::new(shape);
        self.by_digest.insert(key, Arc::clone(&shape));
        shape
    }
}

fn shape_key<K: Serialize>(shape: &Shape<K>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    // A k8s-openapi object always serializes; should it not, its shape is not shared.
    match serde_json::to_vec(&shape.object) {
        Ok(json) => hasher.update(json),
        Err(_) => hasher.update(std::ptr::from_ref(shape).addr().to_le_bytes()),
    }
    if let Some(digest) = &shape.digest {
        hasher.update(digest);
    }
    hasher.finalize().into()
}

/// The objects of a re-list in progress.
pub struct Relist<K>(Vec<(Box<str>, Entry<K>)>);

impl<K> Default for Relist<K> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

/// Which objects one watch stream covers: a re-list replaces exactly these.
#[derive(Clone, Debug, Default)]
pub struct Coverage {
    /// One namespace (namespaced mode), or all.
    pub namespace: Option<String>,
    /// One object name (a service-account watch), or all.
    pub name: Option<String>,
}

impl Coverage {
    fn covers(&self, namespace: &str, name: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self.name.as_deref().is_none_or(|n| n == name)
    }
}

struct State<K> {
    by_namespace: HashMap<Box<str>, Vec<Entry<K>>>,
    /// This daemon's writes the watch has not delivered yet, by namespace and name (so a
    /// namespace's reconcile looks at its own, however many others are pending).
    recent: HashMap<Box<str>, HashMap<Box<str>, Recent<K>>>,
    shapes: Shapes<K>,
}

/// One kind's cached objects across namespaces (any number of watch streams feed it).
pub struct SlimStore<K>(Arc<Mutex<State<K>>>);

impl<K> Clone for SlimStore<K> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<K: Slim> Default for SlimStore<K> {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(State {
            by_namespace: HashMap::new(),
            recent: HashMap::new(),
            shapes: Shapes {
                by_digest: HashMap::new(),
                after_sweep: 0,
            },
        })))
    }
}

impl<K: Slim> SlimStore<K> {
    fn lock(&self) -> MutexGuard<'_, State<K>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `object` from a watch: cached (replacing the entry of that name). Returns its namespace.
    pub fn apply(&self, object: K) -> String {
        let namespace = namespace_of(&object);
        let mut state = self.lock();
        let entry = slim(&mut state.shapes, object);
        state.forget_recent(&namespace, entry.name(), entry.uid.as_ref(), false);
        let entries = state
            .by_namespace
            .entry(namespace.as_str().into())
            .or_default();
        match entries.iter_mut().find(|e| e.name() == entry.name()) {
            Some(slot) => *slot = entry,
            None => push_exact(entries, entry),
        }
        namespace
    }

    /// A delete from a watch. Returns the object's namespace.
    pub fn delete(&self, object: &K) -> String {
        let namespace = namespace_of(object);
        let name = object.meta().name.as_deref().unwrap_or_default();
        let mut state = self.lock();
        let uid = object.meta().uid.clone().map(Token::new);
        state.forget_recent(&namespace, name, uid.as_ref(), true);
        state.remove(&namespace, name);
        namespace
    }

    /// Adds `object` to `relist`, slimmed at once (a re-list of 10,000 namespaces is not held
    /// whole).
    pub fn add_to_relist(&self, relist: &mut Relist<K>, object: K) {
        let namespace = namespace_of(&object).into_boxed_str();
        let entry = slim(&mut self.lock().shapes, object);
        relist.0.push((namespace, entry));
    }

    /// The end of a re-list of `coverage`: replaces every entry it covers. Returns the
    /// namespaces whose objects it listed or that lost objects. Recent writes are forgotten:
    /// the list is at least as new as the write (or the write is rediscovered by a 409).
    pub fn replace(&self, coverage: &Coverage, relist: Relist<K>) -> BTreeSet<String> {
        let mut state = self.lock();
        let mut touched = BTreeSet::new();
        for (namespace, entries) in &mut state.by_namespace {
            let before = entries.len();
            entries.retain(|e| !coverage.covers(namespace, e.name()));
            if entries.len() != before {
                touched.insert(namespace.to_string());
            }
        }
        state.by_namespace.retain(|_, entries| !entries.is_empty());
        for (namespace, recent) in &mut state.recent {
            recent.retain(|name, _| !coverage.covers(namespace, name));
        }
        state.recent.retain(|_, recent| !recent.is_empty());
        for (namespace, entry) in relist.0 {
            touched.insert(namespace.to_string());
            push_exact(state.by_namespace.entry(namespace).or_default(), entry);
        }
        touched
    }

    /// Remembers `written`, the server's answer to a create (`before` = `None`) or an update
    /// against `before`, if the store holds exactly `before` now (otherwise it holds something
    /// newer already, or the write was not against it).
    pub fn remember_written(&self, before: Option<&str>, written: K) {
        let namespace = namespace_of(&written);
        let mut state = self.lock();
        let entry = slim(&mut state.shapes, written);
        let name = entry.name().to_string();
        if !same(state.current_version(&namespace, &name), before) {
            return;
        }
        state.insert_recent(&namespace, &name, Recent::Written(entry));
    }

    /// Remembers that `namespace/name`, read at `resource_version`, was deleted, if the store
    /// holds exactly that version now.
    pub fn remember_deleted(&self, namespace: &str, name: &str, resource_version: Option<&str>) {
        let mut state = self.lock();
        if resource_version.is_none()
            || !same(state.current_version(namespace, name), resource_version)
        {
            return;
        }
        state.insert_recent(namespace, name, Recent::Deleted);
    }

    /// `namespace`'s objects, this daemon's recent writes included, rebuilt; with the data
    /// digests of those kept as one (by name).
    pub fn objects(&self, namespace: &str) -> (Vec<K>, BTreeMap<String, DataDigest>) {
        let state = self.lock();
        let mut objects = Vec::new();
        let mut digests = BTreeMap::new();
        let mut take = |entry: &Entry<K>| {
            if let Some(digest) = entry.shape.digest {
                digests.insert(entry.name().to_string(), digest);
            }
            objects.push(entry.object(namespace));
        };
        let cached = state.by_namespace.get(namespace).map(Vec::as_slice);
        let recent = state.recent.get(namespace);
        for entry in cached.unwrap_or_default() {
            match recent.and_then(|r| r.get(entry.name())) {
                Some(Recent::Written(newer)) => take(newer),
                Some(Recent::Deleted) => {}
                None => take(entry),
            }
        }
        for (name, recent) in recent.into_iter().flatten() {
            let Recent::Written(created) = recent else {
                continue;
            };
            let cached_too = cached.is_some_and(|c| c.iter().any(|e| e.name() == &**name));
            if !cached_too {
                take(created);
            }
        }
        (objects, digests)
    }

    /// Every namespace holding an object (recent creates included).
    pub fn namespaces(&self) -> BTreeSet<String> {
        let state = self.lock();
        let mut names: BTreeSet<String> =
            state.by_namespace.keys().map(|n| n.to_string()).collect();
        names.extend(
            state
                .recent
                .iter()
                .filter(|(_, recent)| recent.values().any(|r| matches!(r, Recent::Written(_))))
                .map(|(ns, _)| ns.to_string()),
        );
        names
    }

    /// Every namespace's objects, rebuilt (for the rare whole-cluster reads).
    pub fn all(&self) -> Vec<K> {
        let namespaces = self.namespaces();
        namespaces
            .iter()
            .flat_map(|ns| self.objects(ns).0)
            .collect()
    }
}

impl<K: Slim> State<K> {
    /// The resourceVersion this store shows for `namespace/name` (recent writes first);
    /// `None` when it shows no such object.
    fn current_version(&self, namespace: &str, name: &str) -> Option<&Token> {
        match self.recent.get(namespace).and_then(|r| r.get(name)) {
            Some(Recent::Written(entry)) => return entry.resource_version.as_ref(),
            Some(Recent::Deleted) => return None,
            None => {}
        }
        self.by_namespace
            .get(namespace)
            .and_then(|entries| entries.iter().find(|e| e.name() == name))
            .and_then(|e| e.resource_version.as_ref())
    }

    /// A watch event about `namespace/name` (object `uid`) arrived: what was remembered of it
    /// is that write or older now, except when the event deletes another object than the one
    /// written (the old one a recreate replaced).
    fn forget_recent(&mut self, namespace: &str, name: &str, uid: Option<&Token>, deleted: bool) {
        let Some(recent) = self.recent.get_mut(namespace) else {
            return;
        };
        if let Some(Recent::Written(entry)) = recent.get(name)
            && deleted
            && entry.uid.as_ref() != uid
        {
            return;
        }
        recent.remove(name);
        if recent.is_empty() {
            self.recent.remove(namespace);
        }
    }

    fn insert_recent(&mut self, namespace: &str, name: &str, recent: Recent<K>) {
        self.recent
            .entry(namespace.into())
            .or_default()
            .insert(name.into(), recent);
    }

    fn remove(&mut self, namespace: &str, name: &str) {
        if let Some(entries) = self.by_namespace.get_mut(namespace) {
            entries.retain(|e| e.name() != name);
            if entries.is_empty() {
                self.by_namespace.remove(namespace);
            }
        }
    }
}

/// `object` as an entry: its identity kept, the rest interned.
fn slim<K: Slim>(shapes: &mut Shapes<K>, mut object: K) -> Entry<K> {
    let digest = K::take_digest(&mut object);
    let meta = object.meta_mut();
    meta.managed_fields = None;
    meta.namespace = None;
    let uid = meta.uid.take().map(Token::new);
    let resource_version = meta.resource_version.take().map(Token::new);
    let created = meta.creation_timestamp.take();
    Entry {
        uid,
        resource_version,
        created,
        shape: shapes.intern(Shape { object, digest }),
    }
}

fn namespace_of<K: Resource>(object: &K) -> String {
    object.meta().namespace.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use kube::api::ObjectMeta;

    fn secret(namespace: &str, name: &str, rv: &str, payload: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                uid: Some(format!("uid-{namespace}-{name}")),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_string(),
                ByteString(payload.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }

    fn versions(store: &SlimStore<Secret>, namespace: &str) -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = store
            .objects(namespace)
            .0
            .into_iter()
            .map(|s| {
                (
                    s.metadata.name.unwrap_or_default(),
                    s.metadata.resource_version.unwrap_or_default(),
                )
            })
            .collect();
        found.sort();
        found
    }

    #[test]
    fn equal_objects_share_one_shape_and_keep_their_identity_and_only_a_digest() {
        let store = SlimStore::default();
        store.apply(secret("a", "pull", "1", "same"));
        store.apply(secret("b", "pull", "2", "same"));
        store.apply(secret("c", "pull", "3", "edited"));
        assert_eq!(store.lock().shapes.by_digest.len(), 2);
        let (objects, digests) = store.objects("b");
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].data, None, "no payload is kept");
        assert_eq!(objects[0].metadata.uid.as_deref(), Some("uid-b-pull"));
        assert_eq!(objects[0].metadata.namespace.as_deref(), Some("b"));
        let expected = crate::model::manifest::payload_digest(".dockerconfigjson", b"same");
        assert_eq!(digests.get("pull"), Some(&expected));
        assert_ne!(store.objects("c").1.get("pull"), Some(&expected));
    }

    #[test]
    fn a_write_is_seen_until_the_watch_delivers_it_or_something_newer() {
        let store = SlimStore::default();
        store.apply(secret("a", "pull", "1", "old"));
        store.remember_written(Some("1"), secret("a", "pull", "2", "new"));
        store.remember_written(None, secret("a", "extra", "3", "x"));
        assert_eq!(
            versions(&store, "a"),
            [("extra".into(), "3".into()), ("pull".into(), "2".into())]
        );
        // Written against a version the store does not hold: not remembered.
        store.remember_written(Some("7"), secret("a", "other", "8", "x"));
        assert_eq!(versions(&store, "a").len(), 2);
        // The watch delivers someone else's later write: that wins.
        store.apply(secret("a", "pull", "5", "theirs"));
        store.apply(secret("a", "extra", "3", "x"));
        assert_eq!(
            versions(&store, "a"),
            [("extra".into(), "3".into()), ("pull".into(), "5".into())]
        );
        assert!(store.lock().recent.is_empty());
    }

    #[test]
    fn a_delete_hides_the_object_until_the_watch_says_so_and_a_namespace_is_released() {
        let store = SlimStore::default();
        store.apply(secret("a", "pull", "1", "old"));
        store.remember_deleted("a", "pull", Some("0"));
        assert_eq!(versions(&store, "a").len(), 1, "not the version held");
        store.remember_deleted("a", "pull", Some("1"));
        assert!(versions(&store, "a").is_empty());
        store.delete(&secret("a", "pull", "1", "old"));
        let state = store.lock();
        assert!(state.recent.is_empty() && state.by_namespace.is_empty());
    }

    #[test]
    fn a_recreate_outlives_the_delete_event_of_the_object_it_replaced() {
        let store = SlimStore::default();
        let old = secret("a", "pull", "1", "old");
        store.apply(old.clone());
        store.remember_deleted("a", "pull", Some("1"));
        let mut new = secret("a", "pull", "2", "new");
        new.metadata.uid = Some("uid-new".into());
        store.remember_written(None, new.clone());
        store.delete(&old);
        assert_eq!(versions(&store, "a"), [("pull".into(), "2".into())]);
        store.apply(new);
        assert!(store.lock().recent.is_empty());
    }

    /// A token gives back exactly the text it was made of, and is equal to that text only.
    #[test]
    fn tokens_keep_the_exact_text_in_any_form() {
        let texts = [
            "0f8fe2a4-6c1e-4d43-9a3b-51c8d1e0a7f2",
            "0F8FE2A4-6C1E-4D43-9A3B-51C8D1E0A7F2",
            "0f8fe2a46c1e4d439a3b51c8d1e0a7f2",
            "0f8fe2a4-6c1e-4d43-9a3b-51c8d1e0a7g2",
            "0f8fe2a4-6c1e-4d43-9a3b-51c8d1e0a7f-",
            "12345",
            "0",
            "007",
            "+5",
            "18446744073709551616",
            "",
            "rv-opaque",
        ];
        for text in texts {
            let token = Token::new(text.to_string());
            assert_eq!(token.text(), text);
            for other in texts {
                assert_eq!(token.is(other), text == other, "{text:?} is {other:?}");
                assert_eq!(
                    token == Token::new(other.to_string()),
                    text == other,
                    "{text:?} == {other:?}"
                );
            }
        }
        assert!(matches!(Token::new(texts[0].into()), Token::Uuid(_)));
        assert!(matches!(Token::new("12345".into()), Token::Number(12345)));
        assert!(matches!(Token::new("007".into()), Token::Text(_)));
    }

    #[test]
    fn a_namespace_holds_its_entries_without_spare_room() {
        let store = SlimStore::default();
        for name in ["a", "b", "c"] {
            store.apply(secret("ns", name, "1", "x"));
        }
        let state = store.lock();
        let entries = state.by_namespace.get("ns").map(Vec::capacity);
        assert_eq!(entries, Some(3));
    }

    #[test]
    fn a_relist_replaces_only_what_its_stream_covers() {
        let store: SlimStore<Secret> = SlimStore::default();
        store.apply(secret("a", "pull", "1", "x"));
        store.apply(secret("b", "pull", "1", "x"));
        let coverage = Coverage {
            namespace: Some("a".into()),
            name: None,
        };
        let mut relist = Relist::default();
        store.add_to_relist(&mut relist, secret("a", "new", "4", "x"));
        let touched = store.replace(&coverage, relist);
        assert_eq!(touched, BTreeSet::from(["a".to_string()]));
        assert_eq!(versions(&store, "a"), [("new".into(), "4".into())]);
        assert_eq!(versions(&store, "b"), [("pull".into(), "1".into())]);
    }
}
