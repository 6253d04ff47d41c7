//! Pause points: a request held at the server until the test lets it go, so a test can kill a
//! client at an exact step (before its write lands, or after it landed but before the client
//! heard back). One-shot: a point holds the first request it matches, then is gone. Decisions
//! and waiting only; the HTTP layer calls [`Pauses::hold`].

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What a held request does when released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Serve it as if nothing happened (the write lands).
    Proceed,
    /// Answer 503 without serving it (the write never lands).
    Fail,
}

/// One pause point, shared by the test and the server.
#[derive(Debug)]
pub struct Pause {
    verb: String,
    resource: String,
    /// Only requests in this namespace.
    namespace: Option<String>,
    /// Only requests for this object name (path name, or `metadata.name` of a create body).
    name: Option<String>,
    state: Mutex<PauseState>,
    changed: Condvar,
    released: tokio::sync::watch::Sender<Option<Release>>,
}

#[derive(Debug, Default)]
struct PauseState {
    /// A request is being held (or was).
    arrived: bool,
}

impl Pause {
    /// Waits (blocking the thread) until a request is held here, at most `limit`.
    pub fn wait_arrived(&self, limit: Duration) -> bool {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (state, _) = self
            .changed
            .wait_timeout_while(state, limit, |s| !s.arrived)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.arrived
    }

    /// Whether a request has been held here.
    pub fn arrived(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .arrived
    }

    /// Lets the held request (and any later one this point would have held) go.
    pub fn release(&self, how: Release) {
        self.released.send_replace(Some(how));
    }

    /// Holds the request until the test releases it.
    pub async fn hold(&self) -> Release {
        let mut released = self.released.subscribe();
        {
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            state.arrived = true;
            self.changed.notify_all();
        }
        tracing::debug!(verb = %self.verb, resource = %self.resource, "Request held at a pause point.");
        match released.wait_for(Option::is_some).await {
            Ok(how) => how.unwrap_or(Release::Proceed),
            Err(_) => Release::Proceed,
        }
    }

    fn matches(&self, request: &Target<'_>) -> bool {
        self.verb == request.verb
            && self.resource == request.resource
            && self
                .namespace
                .as_deref()
                .is_none_or(|n| n == request.namespace)
            && self.name.as_deref().is_none_or(|n| n == request.name)
    }
}

/// What a request is about, for matching pause points.
pub struct Target<'a> {
    pub verb: &'a str,
    pub resource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// The armed pause points of a server.
#[derive(Debug, Default)]
pub struct Pauses {
    armed: Mutex<Vec<Arc<Pause>>>,
}

impl Pauses {
    /// Arms a point for the next `verb` on `resource` (in `namespace` and named `name`, if
    /// given).
    pub fn arm(
        &self,
        verb: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Arc<Pause> {
        let pause = Arc::new(Pause {
            verb: verb.to_string(),
            resource: resource.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            state: Mutex::default(),
            changed: Condvar::new(),
            released: tokio::sync::watch::channel(None).0,
        });
        self.lock().push(Arc::clone(&pause));
        pause
    }

    /// The armed point matching this request, disarmed (`None`: serve it at once).
    pub fn take(&self, request: &Target<'_>) -> Option<Arc<Pause>> {
        let mut armed = self.lock();
        let index = armed.iter().position(|p| p.matches(request))?;
        Some(armed.remove(index))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Pause>>> {
        self.armed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
