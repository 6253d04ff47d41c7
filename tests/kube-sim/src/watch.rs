//! Watch streams: `?watch=1&resourceVersion=RV&allowWatchBookmarks=true[&sendInitialEvents=true]`
//! as chunked newline-delimited JSON. Too-old versions get HTTP 200 and one ERROR 410 Expired event
//! (docs/api-server.md); selectors turn MODIFIED into ADDED/DELETED at the selector edge, as the cacher does.

use crate::api::{Request, Selectors, project_of};
use crate::resources::ResourceType;
use crate::server::Shared;
use crate::status::{ApiError, ApiResult};
use crate::store::{EventType, WatchMsg};
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Everything a watch stream needs, prepared under the store lock.
pub struct WatchSpec {
    rt: &'static ResourceType,
    selectors: Selectors,
    /// Lines sent first (initial ADDED events, the initial-events-end bookmark, or the 410 error).
    initial: VecDeque<Bytes>,
    /// How many of `initial` are ADDED events (they count towards a watch-drop fault).
    initial_events: usize,
    rx: Option<mpsc::UnboundedReceiver<WatchMsg>>,
    timeout: Option<Duration>,
    /// Objects are namespaces shown as projects.
    as_project: bool,
    /// Objects are stored v1 Events shown as events.k8s.io/v1.
    events_v1: bool,
    /// Objects are sent as one-row Tables (`kubectl get -w`).
    table: bool,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn bookmark_object(rt: &ResourceType, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta})
}

/// Opens the watch in the store (or prepares the 410 reply).
pub fn spec(shared: &Shared, req: &Request) -> ApiResult<WatchSpec> {
    let selectors = Selectors::from_request(req)?;
    let as_project = req.rt.plural == "projects";
    let key = if as_project {
        crate::resources::namespaces().key()
    } else {
        req.rt.key()
    };
    let bookmarks = matches!(
        req.query.get("allowWatchBookmarks").map(String::as_str),
        Some("true" | "1")
    );
    let send_initial = matches!(
        req.query.get("sendInitialEvents").map(String::as_str),
        Some("true" | "1")
    );
    let timeout = req
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let rv_param = req
        .query
        .get("resourceVersion")
        .cloned()
        .unwrap_or_default();
    let mut st = shared.lock_store();
    let mut initial = VecDeque::new();
    let events_v1 = crate::convert::is_events_v1(req.rt);
    let convert = |o: &Value| show(o, as_project, events_v1);
    let since = if rv_param.is_empty() || rv_param == "0" || send_initial {
        for obj in st.list(key, req.namespace.as_deref()) {
            if selectors.matches(obj) {
                let shown = convert(obj);
                let shown = if req.table {
                    crate::table::to_table(req.rt, &shown, 200)
                } else {
                    shown
                };
                initial.push_back(line("ADDED", &shown));
            }
        }
        if send_initial && bookmarks {
            initial.push_back(line("BOOKMARK", &bookmark_object(req.rt, st.rv(), true)));
        }
        st.rv()
    } else {
        let rv: u64 = rv_param.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: {rv_param:?}: must be a non-negative integer"
            ))
        })?;
        rv.min(st.rv())
    };
    // Fault: this watch finds its resourceVersion compacted away, as after an etcd compaction.
    let explicit_rv = !(rv_param.is_empty() || rv_param == "0" || send_initial);
    if explicit_rv && shared.faults().take_expired_watch() {
        let status =
            ApiError::gone(format!("too old resource version: {since} ({})", st.rv())).to_status();
        initial.push_back(line("ERROR", &status));
        return Ok(WatchSpec {
            rt: req.rt,
            selectors,
            initial,
            initial_events: 0,
            rx: None,
            timeout,
            as_project,
            events_v1,
            table: req.table,
        });
    }
    let initial_events = initial.len();
    let rx = match st.watch(key, req.namespace.as_deref(), since, bookmarks) {
        Ok(rx) => Some(rx),
        Err(oldest) => {
            let status =
                ApiError::gone(format!("too old resource version: {since} ({oldest})")).to_status();
            initial.push_back(line("ERROR", &status));
            None
        }
    };
    Ok(WatchSpec {
        rt: req.rt,
        selectors,
        initial,
        initial_events,
        rx,
        timeout,
        as_project,
        events_v1,
        table: req.table,
    })
}

/// A stored object as the watched API version shows it.
fn show(o: &Value, as_project: bool, events_v1: bool) -> Value {
    if as_project {
        return project_of(o);
    }
    let mut v = o.clone();
    if events_v1 {
        crate::convert::from_core(&mut v);
    }
    v
}

struct State {
    spec: WatchSpec,
    shared: Arc<Shared>,
    sent: u64,
    deadline: tokio::time::Instant,
    shutdown: tokio::sync::watch::Receiver<bool>,
    done: bool,
}

impl State {
    fn render(&self, msg: WatchMsg) -> Option<Bytes> {
        let convert = |o: &Value| show(o, self.spec.as_project, self.spec.events_v1);
        match msg {
            WatchMsg::Bookmark(rv) => {
                Some(line("BOOKMARK", &bookmark_object(self.spec.rt, rv, false)))
            }
            WatchMsg::Event(ev) => {
                let now = self.spec.selectors.matches(&ev.object);
                let kind = match ev.kind {
                    EventType::Modified => {
                        let before = ev
                            .old
                            .as_ref()
                            .is_some_and(|o| self.spec.selectors.matches(o));
                        match (before, now) {
                            (true, true) => "MODIFIED",
                            (false, true) => "ADDED",
                            (true, false) => "DELETED",
                            (false, false) => return None,
                        }
                    }
                    other if now => other.as_str(),
                    _ => return None,
                };
                let obj = convert(&ev.object);
                if self.spec.table {
                    return Some(line(kind, &crate::table::to_table(self.spec.rt, &obj, 200)));
                }
                Some(line(kind, &obj))
            }
        }
    }
}

/// The chunked body of a watch.
pub fn stream(shared: Arc<Shared>, spec: WatchSpec) -> crate::server::Body {
    use futures_util::StreamExt;
    use http_body_util::BodyExt;
    let faults = shared.faults().watch_limits();
    let timeout = match (spec.timeout, faults.1) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let deadline =
        tokio::time::Instant::now() + timeout.unwrap_or(Duration::from_secs(365 * 86_400));
    let shutdown = shared.shutdown_rx();
    let mut spec = spec;
    let drop_after = faults.0;
    let mut done = spec.rx.is_none();
    let mut sent = 0;
    if let Some(n) = drop_after {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if spec.initial_events >= n {
            spec.initial.truncate(n);
            done = true;
        }
        sent = spec.initial_events.min(n) as u64;
    }
    let state = State {
        spec,
        shared,
        sent,
        deadline,
        shutdown,
        done,
    };
    let s = futures_util::stream::unfold(state, move |mut s| async move {
        loop {
            if let Some(b) = s.spec.initial.pop_front() {
                return Some((Ok(hyper::body::Frame::data(b)), s));
            }
            if s.done {
                return None;
            }
            let msg = {
                let rx = s.spec.rx.as_mut()?;
                tokio::select! {
                    m = rx.recv() => m,
                    () = tokio::time::sleep_until(s.deadline) => None,
                    _ = s.shutdown.changed() => None,
                }
            };
            let Some(msg) = msg else {
                s.done = true;
                continue;
            };
            let is_event = matches!(msg, WatchMsg::Event(_));
            if let Some(b) = s.render(msg) {
                if is_event {
                    s.sent += 1;
                    s.shared.count_watch_event();
                    if drop_after.is_some_and(|n| s.sent >= n) {
                        s.done = true;
                    }
                }
                return Some((Ok(hyper::body::Frame::data(b)), s));
            }
        }
    });
    BodyExt::boxed_unsync(http_body_util::StreamBody::new(StreamExt::boxed(s)))
}
