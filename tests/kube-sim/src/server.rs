//! The HTTP layer: accept loop (HTTP or HTTPS), bearer-token authentication, the apiserver's
//! path parsing (`RequestInfo`), fault injection, counters, discovery, and JSON/Status replies.
//! Resource semantics are in `api`; this module never decides what a request does to objects.

use crate::api::{self, Reply};
use crate::faults::{Faults, InjectedError, RequestCounts};
use crate::resources;
use crate::status::ApiError;
use crate::store::Store;
use crate::{Options, UserInfo, discovery};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, StatusCode, header};
use serde_json::Value;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;
type Response = hyper::Response<Body>;

/// Largest accepted request body (the apiserver's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// State shared by every connection.
pub struct Shared {
    pub opts: Options,
    store: Mutex<Store>,
    faults: Mutex<Faults>,
    counts: Mutex<RequestCounts>,
    /// Authorized write requests, in arrival order (with `Options::record_writes`).
    writes: Mutex<Vec<crate::faults::WriteRecord>>,
    /// Requests tests hold at the server (see `pause`).
    pub pauses: crate::pause::Pauses,
    /// "host:port" the server listens on.
    pub address: String,
    /// Signs the service-account tokens of TokenRequest and reviews them.
    pub tokens: crate::tokens::Issuer,
    me: Weak<Shared>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Run-time fault controls, borrowed from the shared state.
pub struct FaultsGuard<'a>(MutexGuard<'a, Faults>);

impl FaultsGuard<'_> {
    pub fn take_forced_conflict(&mut self) -> bool {
        if self.0.forced_conflicts > 0 {
            self.0.forced_conflicts -= 1;
            true
        } else {
            false
        }
    }

    pub fn take_expired_watch(&mut self) -> bool {
        if self.0.expire_watches > 0 {
            self.0.expire_watches -= 1;
            true
        } else {
            false
        }
    }

    pub fn watch_limits(&self) -> (Option<u64>, Option<std::time::Duration>) {
        (self.0.watch_drop_after_events, self.0.watch_drop_after)
    }
}

impl Shared {
    pub fn new(opts: Options, address: String, tokens: crate::tokens::Issuer) -> Arc<Self> {
        let faults = opts.faults.clone();
        let history = opts.event_history;
        Arc::new_cyclic(|me| Shared {
            opts,
            store: Mutex::new(Store::new(history)),
            faults: Mutex::new(faults),
            counts: Mutex::new(RequestCounts::default()),
            writes: Mutex::new(Vec::new()),
            pauses: crate::pause::Pauses::default(),
            address,
            tokens,
            me: me.clone(),
            shutdown: tokio::sync::watch::channel(false).0,
        })
    }

    pub fn lock_store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    pub fn faults(&self) -> FaultsGuard<'_> {
        FaultsGuard(lock(&self.faults))
    }

    pub fn faults_mut(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    pub fn counts(&self) -> MutexGuard<'_, RequestCounts> {
        lock(&self.counts)
    }

    /// The write log so far (empty unless `Options::record_writes`).
    pub fn writes(&self) -> Vec<crate::faults::WriteRecord> {
        lock(&self.writes).clone()
    }

    pub fn count_watch_event(&self) {
        self.counts().watch_events += 1;
    }

    pub fn self_ref(&self) -> Option<Arc<Shared>> {
        self.me.upgrade()
    }

    pub fn shutdown_rx(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// The identity of a bearer token: the admin's, a configured one, or a service-account
    /// token this server issued that is still valid for the API audience.
    pub fn identity(&self, token: &str) -> Option<UserInfo> {
        if token.is_empty() {
            return None;
        }
        if token == self.opts.token {
            return Some(UserInfo::admin());
        }
        if let Some(u) = self.opts.identities.get(token) {
            return Some(u.clone());
        }
        let st = self.lock_store();
        let reviewed = self
            .tokens
            .review(&st, token, &[], crate::tokens::now_secs())?;
        reviewed.ok().map(|r| r.user)
    }

    /// RBAC decision (always yes unless `Options::rbac`).
    pub fn authorize(
        &self,
        user: &UserInfo,
        attrs: &crate::rbac::Attributes,
    ) -> crate::rbac::Decision {
        if !self.opts.rbac {
            return crate::rbac::Decision {
                allowed: true,
                reason: String::new(),
            };
        }
        let st = self.lock_store();
        crate::rbac::authorize(&st, user, attrs)
    }
}

fn json_response(code: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    hyper::Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .header("Cache-Control", "no-cache, private")
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(e.code, &e.to_status());
    if let Some(s) = e.retry_after
        && let Ok(v) = header::HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn text_429(retry_after: u32) -> Response {
    hyper::Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::RETRY_AFTER, retry_after.to_string())
        .header("X-Content-Type-Options", "nosniff")
        .body(
            Full::new(Bytes::from_static(
                b"Too many requests, please try again later.\n",
            ))
            .boxed_unsync(),
        )
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

/// Serves one HTTP request.
pub async fn handle(
    shared: Arc<Shared>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<Response, Infallible> {
    shared.counts().total += 1;
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = crate::util::parse_query(req.uri().query());
    let header = |h: header::HeaderName| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    tracing::debug!(%method, %path, query = ?req.uri().query(), accept = %header(header::ACCEPT), content_type = %header(header::CONTENT_TYPE), authenticated = req.headers().contains_key(header::AUTHORIZATION), "Request.");
    let auth = header(header::AUTHORIZATION);
    let content_type = header(header::CONTENT_TYPE);
    let user_agent = header(header::USER_AGENT);
    let accept = header(header::ACCEPT);

    let public = matches!(
        path.as_str(),
        "/version" | "/healthz" | "/livez" | "/readyz"
    );
    let user = match auth.strip_prefix("Bearer ").map(str::trim) {
        Some(token) => match shared.identity(token) {
            Some(u) => u,
            None => return Ok(error_response(&ApiError::unauthorized())),
        },
        None if public => UserInfo::anonymous(),
        None => return Ok(error_response(&ApiError::unauthorized())),
    };

    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let body = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            let e = ApiError {
                code: 413,
                reason: "RequestEntityTooLarge",
                message: "the request body is too large".into(),
                details: None,
                retry_after: None,
            };
            return Ok(error_response(&e));
        }
    };

    // kubectl's typed clients send protobuf; everything downstream works on JSON.
    let (body, content_type) = if content_type.starts_with("application/vnd.kubernetes.protobuf")
        && !body.is_empty()
    {
        match crate::proto::decode_body(&body) {
            Ok(v) => (Bytes::from(v.to_string()), "application/json".to_string()),
            Err(e) => {
                let msg = format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf: {e}"
                );
                return Ok(error_response(&ApiError {
                    code: 415,
                    reason: "UnsupportedMediaType",
                    message: msg,
                    details: None,
                    retry_after: None,
                }));
            }
        }
    } else {
        (body, content_type)
    };
    if let Some(resp) = non_resource(&shared, &method, &path) {
        return Ok(resp);
    }
    let parsed = match parse_resource_path(&shared, &method, &path, &query) {
        Ok(p) => p,
        Err(e) => return Ok(error_response(&e)),
    };
    let query: HashMap<String, String> = query.into_iter().collect();
    let request = api::Request {
        rt: parsed.rt,
        namespace: parsed.namespace,
        name: parsed.name,
        subresource: parsed.subresource,
        verb: parsed.verb,
        query,
        content_type,
        body,
        user,
        user_agent,
        table: accept.contains("as=Table"),
    };
    shared.counts().record(
        request.verb,
        request.rt.plural,
        request.namespace.as_deref().unwrap_or(""),
    );

    // Faults: latency first, then injected errors, as a slow overloaded server would behave.
    let (delay, injected) = {
        let mut f = shared.faults_mut();
        (
            f.delay(request.verb, request.rt.plural),
            f.pick_error(request.verb, request.rt.plural),
        )
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match injected {
        Some(InjectedError::Internal) => {
            return Ok(error_response(&ApiError::internal("injected fault")));
        }
        Some(InjectedError::Unavailable) => {
            return Ok(error_response(&ApiError::service_unavailable()));
        }
        Some(InjectedError::TooManyRequests { retry_after }) => return Ok(text_429(retry_after)),
        Some(InjectedError::TooManyRequestsStatus { retry_after }) => {
            return Ok(error_response(&ApiError::too_many_requests(retry_after)));
        }
        None => {}
    }

    let attrs = crate::rbac::Attributes::of_request(&request);
    let decision = shared.authorize(&request.user, &attrs);
    if !decision.allowed {
        let e = crate::rbac::forbidden(&request.user, &attrs, &decision.reason);
        shared
            .counts()
            .record_forbidden(request.verb, request.rt.plural);
        return Ok(error_response(&e));
    }

    let object_name = request.name.clone().unwrap_or_else(|| {
        serde_json::from_slice::<Value>(&request.body)
            .ok()
            .and_then(|v| v.pointer("/metadata/name")?.as_str().map(str::to_string))
            .unwrap_or_default()
    });
    if shared.opts.record_writes && crate::faults::WRITE_VERBS.contains(&request.verb) {
        lock(&shared.writes).push(crate::faults::WriteRecord {
            at: std::time::SystemTime::now(),
            user: request.user.username.clone(),
            verb: request.verb.to_string(),
            resource: request.rt.plural.to_string(),
            namespace: request.namespace.clone().unwrap_or_default(),
            name: object_name.clone(),
        });
    }
    let rt = request.rt;
    let verb = request.verb;
    let include = request.query.get("includeObject").cloned();
    let target = crate::pause::Target {
        verb: request.verb,
        resource: request.rt.plural,
        namespace: request.namespace.as_deref().unwrap_or(""),
        name: &object_name,
    };
    let reply = match shared.pauses.take(&target) {
        None => api::serve(&shared, &request),
        // Held in a task of its own: a client killed meanwhile does not cancel it, so a
        // released write lands whether anyone still waits for the answer or not.
        Some(pause) => {
            let shared = Arc::clone(&shared);
            let held = tokio::spawn(async move {
                match pause.hold().await {
                    crate::pause::Release::Proceed => Some(api::serve(&shared, &request)),
                    crate::pause::Release::Fail => None,
                }
            });
            match held.await {
                Ok(Some(reply)) => reply,
                _ => return Ok(error_response(&ApiError::service_unavailable())),
            }
        }
    };
    Ok(match reply {
        Ok(Reply::Json(code, v)) => {
            let v = if accept.contains("as=Table") {
                crate::table::to_table_with(
                    rt,
                    &v,
                    code,
                    crate::table::Include::from_query(include.as_deref()),
                )
            } else {
                v
            };
            json_response(code, &v)
        }
        Ok(Reply::Watch(spec)) => hyper::Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .header("Cache-Control", "no-cache, private")
            .body(crate::watch::stream(shared.clone(), spec))
            .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new()).boxed_unsync())),
        Err(e) => {
            if e.code == 403 {
                // The RBAC storage's escalation check (a RoleBinding to a role not held).
                shared.counts().record_forbidden(verb, rt.plural);
            }
            error_response(&e)
        }
    })
}

/// Discovery, version, health and OpenAPI.
fn non_resource(shared: &Shared, method: &Method, path: &str) -> Option<Response> {
    if method != Method::GET {
        return None;
    }
    let os = shared.opts.openshift;
    let p = path.trim_end_matches('/');
    let doc = match p {
        "/version" => Some(discovery::version()),
        "/api" => Some(discovery::api_versions(&shared.address)),
        "/api/v1" => discovery::resource_list("", "v1", os),
        "/apis" => Some(discovery::api_group_list(os)),
        "/openapi/v3" => Some(discovery::openapi_v3_index(os)),
        "/healthz" | "/livez" | "/readyz" => {
            return Some(
                hyper::Response::builder()
                    .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .body(Full::new(Bytes::from_static(b"ok")).boxed_unsync())
                    .unwrap_or_else(|_| {
                        hyper::Response::new(Full::new(Bytes::new()).boxed_unsync())
                    }),
            );
        }
        _ => {
            if let Some(rest) = p.strip_prefix("/openapi/v3/") {
                return Some(match discovery::openapi_v3_doc(rest, os) {
                    Some(d) => json_response(200, &d),
                    None => error_response(&ApiError::not_found("", "", rest)),
                });
            }
            let parts: Vec<&str> = p.trim_start_matches('/').split('/').collect();
            if let ["apis", g, ..] = parts.as_slice()
                && shared.faults_mut().failing_groups.iter().any(|f| f == g)
            {
                return Some(error_response(&ApiError::service_unavailable()));
            }
            match parts.as_slice() {
                ["apis", g] => discovery::api_group(g, os),
                ["apis", g, v] => discovery::resource_list(g, v, os),
                _ => return None,
            }
        }
    };
    Some(match doc {
        Some(d) => json_response(200, &d),
        None => error_response(&ApiError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: Some(serde_json::json!({})),
            retry_after: None,
        }),
    })
}

struct Parsed {
    rt: &'static resources::ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
    verb: &'static str,
}

/// apiserver `RequestInfoFactory.NewRequestInfo` for the resource paths we serve.
fn parse_resource_path(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &[(String, String)],
) -> Result<Parsed, ApiError> {
    let not_found = || ApiError {
        code: 404,
        reason: "NotFound",
        message: "the server could not find the requested resource".into(),
        details: Some(serde_json::json!({})),
        retry_after: None,
    };
    let parts: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(crate::util::percent_decode)
        .collect();
    let (group, version, rest) = match parts.first().map(String::as_str) {
        Some("api") if parts.len() >= 3 => ("", parts[1].as_str(), &parts[2..]),
        Some("apis") if parts.len() >= 4 => (parts[1].as_str(), parts[2].as_str(), &parts[3..]),
        _ => return Err(not_found()),
    };
    let mut rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let mut namespace = None;
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        namespace = Some(rest[1].to_string());
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = rest[2..].to_vec();
        }
    }
    let plural = rest.first().copied().unwrap_or("");
    let rt =
        resources::find(group, version, plural, shared.opts.openshift).ok_or_else(not_found)?;
    let name = rest.get(1).map(|s| (*s).to_string());
    let subresource = rest.get(2).map(|s| (*s).to_string());
    if rest.len() > 3 {
        return Err(not_found());
    }
    // A namespaced path for a cluster-scoped resource (other than namespaces itself) is unknown.
    if !rt.namespaced && namespace.is_some() && rt.plural != "namespaces" {
        return Err(not_found());
    }
    if rt.namespaced && namespace.is_none() && name.is_some() {
        return Err(not_found());
    }
    let namespace = if rt.namespaced { namespace } else { None };
    let watch = query
        .iter()
        .any(|(k, v)| k == "watch" && matches!(v.as_str(), "1" | "true"));
    let verb = match (method.as_str(), name.is_some()) {
        ("GET" | "HEAD", true) => {
            if watch {
                "watch"
            } else {
                "get"
            }
        }
        ("GET" | "HEAD", false) => {
            if watch {
                "watch"
            } else {
                "list"
            }
        }
        ("POST", false) => "create",
        // Subresources that create (`serviceaccounts/NAME/token`) are named.
        ("POST", true) if subresource.is_some() => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource".to_string(),
            ));
        }
    };
    Ok(Parsed {
        rt,
        namespace,
        name,
        subresource,
        verb,
    })
}
