//! Resource requests after routing and authentication: get/list/create/update/patch/delete with
//! the registry semantics of docs/service-accounts.md and docs/api-server.md (admission order, optimistic concurrency, no-op
//! updates, finalizers, namespace lifecycle), plus the computed resources (projects, tokenreviews,
//! selfsubjectaccessreviews). Everything runs under the store lock, so each request is atomic.

use crate::UserInfo;
use crate::convert;
use crate::managed;
use crate::patch;
use crate::resources::{self, ResourceKey, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::Shared;
use crate::status::{ApiError, ApiResult, Cause};
use crate::store::{EventType, Store};
use crate::strategy;
use crate::util::{self, meta_mut, meta_str};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use std::collections::HashMap;

/// A parsed resource request.
#[derive(Debug)]
pub struct Request {
    pub rt: &'static ResourceType,
    /// The namespace of the path (namespaced resources only; None = all namespaces).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub verb: &'static str,
    pub query: HashMap<String, String>,
    pub content_type: String,
    pub body: bytes::Bytes,
    pub user: UserInfo,
    pub user_agent: String,
    /// The client asked for server-side printing (`Accept: ...;as=Table`).
    pub table: bool,
}

impl Request {
    pub(crate) fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("1" | "true" | "True" | ""))
    }

    pub(crate) fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }

    pub(crate) fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    pub(crate) fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// The field manager of a non-apply write: the parameter, else the user agent's first word.
    pub(crate) fn manager(&self) -> String {
        match self.q("fieldManager") {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => self
                .user_agent
                .split('/')
                .next()
                .unwrap_or("unknown")
                .to_string(),
        }
    }
}

/// What the HTTP layer sends back.
pub enum Reply {
    Json(u16, Value),
    /// Start a watch with these parameters.
    Watch(crate::watch::WatchSpec),
}

fn key(rt: &ResourceType) -> ResourceKey {
    rt.key()
}

fn ns_key() -> ResourceKey {
    resources::namespaces().key()
}

/// Entry point for resource requests.
pub fn serve(shared: &Shared, req: &Request) -> ApiResult<Reply> {
    if let Some(sub) = &req.subresource {
        let Some(served) = resources::subresource(req.rt, sub) else {
            return Err(ApiError::not_found(
                req.rt.group,
                &format!("{}/{sub}", req.rt.plural),
                req.name(),
            ));
        };
        if !served.verbs.contains(&req.verb) {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource".to_string(),
            ));
        }
        if sub == "scale" {
            return crate::subresource::scale(shared, req);
        }
        if sub == "token" {
            return crate::token_request::create(shared, req);
        }
    }
    if !req.rt.verbs.contains(&req.verb) && req.verb != "watch" {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource".to_string(),
        ));
    }
    match (req.rt.group, req.rt.plural) {
        ("authentication.k8s.io", "tokenreviews") => return token_review(shared, req),
        ("authorization.k8s.io", "selfsubjectaccessreviews") => {
            return self_subject_access_review(shared, req);
        }
        ("project.openshift.io", "projects" | "projectrequests") => return projects(shared, req),
        _ => {}
    }
    let reply = dispatch(shared, req)?;
    Ok(match reply {
        Reply::Json(code, mut v) if convert::is_events_v1(req.rt) => {
            convert::from_core(&mut v);
            Reply::Json(code, v)
        }
        other => other,
    })
}

fn dispatch(shared: &Shared, req: &Request) -> ApiResult<Reply> {
    match req.verb {
        "get" => get(shared, req),
        "list" => list(shared, req),
        "watch" => crate::watch::spec(shared, req).map(Reply::Watch),
        "create" => create(shared, req),
        "update" => update(shared, req),
        "patch" => patch_req(shared, req),
        "delete" => delete(shared, req),
        "deletecollection" => delete_collection(shared, req),
        v => Err(ApiError::method_not_allowed(format!(
            "verb {v} is not supported"
        ))),
    }
}

fn get(shared: &Shared, req: &Request) -> ApiResult<Reply> {
    let st = shared.lock_store();
    let obj = st
        .get(key(req.rt), req.ns(), req.name())
        .ok_or_else(|| ApiError::not_found(req.rt.group, req.rt.plural, req.name()))?;
    Ok(Reply::Json(200, obj.clone()))
}

/// Parsed `labelSelector` and `fieldSelector`.
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub kind: &'static str,
    pub name: Option<String>,
}

impl Selectors {
    pub fn from_request(req: &Request) -> ApiResult<Self> {
        let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(req.q("fieldSelector").unwrap_or(""), req.rt.kind)
            .map_err(ApiError::bad_request)?;
        // A watch on `/<resource>/<name>` sees only that object.
        let name = if req.verb == "watch" {
            req.name.clone()
        } else {
            None
        };
        Ok(Self {
            labels,
            fields,
            kind: req.rt.kind,
            name,
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(&util::labels(obj))
            && self.fields.matches(self.kind, obj)
            && self
                .name
                .as_deref()
                .is_none_or(|n| meta_str(obj, "name") == n)
    }
}

/// Items in a typed list carry no apiVersion/kind.
fn list_item(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

fn list(shared: &Shared, req: &Request) -> ApiResult<Reply> {
    let sel = Selectors::from_request(req)?;
    let limit: usize = req.q("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let st = shared.lock_store();
    let after = match req.q("continue").filter(|c| !c.is_empty()) {
        Some(c) => Some(decode_continue(c, st.compacted())?),
        None => None,
    };
    let mut items = Vec::new();
    let mut next = None;
    for obj in st.list_after(key(req.rt), req.namespace.as_deref(), after.as_ref()) {
        if !sel.matches(obj) {
            continue;
        }
        if limit > 0 && items.len() == limit {
            next = items.last().map(|_| ());
            break;
        }
        items.push(list_item(obj));
    }
    let mut meta = json!({"resourceVersion": st.rv().to_string()});
    if next.is_some()
        && let Some(last) = items.last()
    {
        let token = format!(
            "{}\n{}\n{}",
            st.rv(),
            meta_str(last, "namespace"),
            meta_str(last, "name")
        );
        meta["continue"] = json!(B64.encode(token));
    }
    Ok(Reply::Json(
        200,
        json!({"kind": format!("{}List", req.rt.kind), "apiVersion": req.rt.api_version(), "metadata": meta, "items": items}),
    ))
}

fn decode_continue(token: &str, compacted: u64) -> ApiResult<(String, String)> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token}"));
    let raw = B64.decode(token).map_err(|_| bad())?;
    let s = String::from_utf8(raw).map_err(|_| bad())?;
    let mut parts = s.splitn(3, '\n');
    let rv: u64 = parts.next().and_then(|r| r.parse().ok()).ok_or_else(bad)?;
    if rv < compacted {
        return Err(ApiError::gone(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
        ));
    }
    Ok((
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    ))
}

/// `fieldValidation`: unknown fields are an error with `Strict`, else dropped (Warn, Ignore).
fn field_validation(req: &Request, obj: &mut Value) -> ApiResult<()> {
    let unknown = strategy::unknown_fields(req.rt, obj);
    if unknown.is_empty() {
        return Ok(());
    }
    if req.q("fieldValidation") == Some("Strict") {
        let list: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect();
        return Err(ApiError::bad_request(format!(
            "{kind} in version {v:?} cannot be handled as a {kind}: strict decoding error: {}",
            list.join(", "),
            kind = req.rt.kind,
            v = req.rt.version,
        )));
    }
    strategy::prune(obj, &unknown);
    Ok(())
}

/// Decodes a request body into a JSON object (JSON or YAML), with the apiserver's 400s.
pub(crate) fn decode_object(req: &Request) -> ApiResult<Value> {
    let v: Value = if req.content_type.contains("yaml") {
        serde_yaml_ng::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else {
        serde_json::from_slice(&req.body).map_err(|e| {
            ApiError::bad_request(format!("the object provided is unrecognized: {e}"))
        })?
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}",
            req.rt.kind,
            match v {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                _ => "bool",
            }
        )));
    }
    Ok(v)
}

/// Checks apiVersion/kind against the URL and fills them in.
fn type_meta(req: &Request, obj: &mut Value) -> ApiResult<()> {
    let av = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let want_av = req.rt.api_version();
    if !av.is_empty() && av != want_av {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({want_av})"
        )));
    }
    if !kind.is_empty() && kind != req.rt.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            req.rt.kind
        )));
    }
    let (stored_av, stored_kind) = req.rt.stored_type();
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(want_av));
        m.insert("kind".into(), json!(stored_kind));
    }
    if convert::is_events_v1(req.rt) {
        convert::to_core(obj);
    }
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(stored_av));
    }
    Ok(())
}

/// Namespace of the body must match the URL's; it is then set (or cleared for cluster scope).
fn object_namespace(req: &Request, obj: &mut Value) -> ApiResult<()> {
    let body_ns = meta_str(obj, "namespace").to_string();
    if req.rt.namespaced {
        if !body_ns.is_empty() && body_ns != req.ns() {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta_mut(obj).insert("namespace".into(), json!(req.ns()));
    } else {
        meta_mut(obj).remove("namespace");
    }
    Ok(())
}

/// NamespaceLifecycle admission: 404 for a missing namespace, 403 while it terminates.
fn check_namespace(st: &Store, rt: &ResourceType, ns: &str) -> ApiResult<()> {
    if !rt.namespaced {
        return Ok(());
    }
    match st.get(ns_key(), "", ns) {
        None => Err(ApiError::not_found("", "namespaces", ns)),
        Some(n) if n.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") => {
            Err(ApiError::namespace_terminating(rt.group, rt.plural, ns))
        }
        Some(_) => Ok(()),
    }
}

fn create(shared: &Shared, req: &Request) -> ApiResult<Reply> {
    let mut obj = decode_object(req)?;
    type_meta(req, &mut obj)?;
    field_validation(req, &mut obj)?;
    object_namespace(req, &mut obj)?;
    if !meta_str(&obj, "resourceVersion").is_empty() {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let mut st = shared.lock_store();
    check_namespace(&st, req.rt, req.ns())?;
    crate::rbac::escalation::admit(shared, &st, req, &obj, None)?;
    let created = create_locked(shared, &mut st, req.rt, obj, &req.manager(), req.dry_run())?;
    Ok(Reply::Json(201, created))
}

/// Create with the store locked: generateName, strategy, validation, uniqueness, hooks.
pub(crate) fn create_locked(
    shared: &Shared,
    st: &mut Store,
    rt: &'static ResourceType,
    mut obj: Value,
    manager: &str,
    dry_run: bool,
) -> ApiResult<Value> {
    // Mutating and validating admission run before names are generated.
    crate::admission::admit_create(st, rt, &mut obj)?;
    let ns = if rt.namespaced {
        meta_str(&obj, "namespace").to_string()
    } else {
        String::new()
    };
    if meta_str(&obj, "name").is_empty() {
        let prefix = meta_str(&obj, "generateName").to_string();
        if prefix.is_empty() {
            return Err(ApiError::invalid(
                rt.group,
                rt.kind,
                "",
                vec![Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value: name or generateName is required".into(),
                    field: "metadata.name".into(),
                }],
            ));
        }
        // Retry on the (unlikely) collision, as the name generator's caller would see 409 instead.
        let mut name = format!("{prefix}{}", util::random_suffix(5));
        for _ in 0..8 {
            if st.get(key(rt), &ns, &name).is_none() {
                break;
            }
            name = format!("{prefix}{}", util::random_suffix(5));
        }
        meta_mut(&mut obj).insert("name".into(), json!(name));
    }
    strategy::prepare_create(rt, &mut obj);
    strategy::validate(rt, &obj, None)?;
    let name = meta_str(&obj, "name").to_string();
    if st.get(key(rt), &ns, &name).is_some() {
        return Err(ApiError::already_exists(rt.group, rt.plural, &name));
    }
    {
        let m = meta_mut(&mut obj);
        m.insert("uid".into(), json!(util::new_uid()));
        m.insert("creationTimestamp".into(), json!(util::now_rfc3339()));
        m.remove("managedFields");
        m.remove("deletionTimestamp");
    }
    managed::track_update(rt.kind, None, &mut obj, manager, &rt.api_version());
    if dry_run {
        return Ok(obj);
    }
    let stored = st.put(key(rt), &ns, &name, obj, EventType::Added);
    crate::hooks::after_create(shared, st, rt, &stored);
    Ok(st.get(key(rt), &ns, &name).cloned().unwrap_or(stored))
}

/// Takes a forced conflict if the test asked for one.
pub(crate) fn forced_conflict(shared: &Shared, req: &Request) -> ApiResult<()> {
    if shared.faults().take_forced_conflict() {
        return Err(ApiError::conflict(req.rt.group, req.rt.plural, req.name()));
    }
    Ok(())
}

fn update(shared: &Shared, req: &Request) -> ApiResult<Reply> {
    let mut obj = decode_object(req)?;
    type_meta(req, &mut obj)?;
    field_validation(req, &mut obj)?;
    object_namespace(req, &mut obj)?;
    let body_name = meta_str(&obj, "name").to_string();
    if body_name != req.name() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            req.name()
        )));
    }
    let mut st = shared.lock_store();
    let live = st.get(key(req.rt), req.ns(), req.name()).cloned();
    // The RBAC storage checks escalation before the registry looks for the object.
    crate::rbac::escalation::admit(shared, &st, req, &obj, live.as_ref())?;
    let old = live.ok_or_else(|| ApiError::not_found(req.rt.group, req.rt.plural, req.name()))?;
    forced_conflict(shared, req)?;
    let rv = meta_str(&obj, "resourceVersion");
    if !rv.is_empty() && rv != meta_str(&old, "resourceVersion") {
        return Err(ApiError::conflict(req.rt.group, req.rt.plural, req.name()));
    }
    // A uid in the body is a precondition (the object was deleted and recreated meanwhile).
    let uid = meta_str(&obj, "uid");
    if !uid.is_empty() && uid != meta_str(&old, "uid") {
        return Err(ApiError::conflict_msg(
            req.rt.group,
            req.rt.plural,
            req.name(),
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(&old, "uid")
            ),
        ));
    }
    if req.subresource.is_some() {
        // status/finalize write only those parts.
        let mut next = old.clone();
        if req.subresource.as_deref() == Some("status") {
            next["status"] = obj.get("status").cloned().unwrap_or(json!({}));
        } else {
            next["spec"] = obj.get("spec").cloned().unwrap_or(json!({}));
        }
        obj = next;
    } else {
        // Managed fields are the server's; a client's copy is taken only as a reset.
        if obj.pointer("/metadata/managedFields").is_none()
            && let Some(mf) = old.pointer("/metadata/managedFields")
        {
            meta_mut(&mut obj).insert("managedFields".into(), mf.clone());
        }
        strategy::prepare_update(req.rt, &old, &mut obj);
    }
    let out = write_update(&mut st, req.rt, &old, obj, &req.manager(), req.dry_run())?;
    Ok(Reply::Json(200, out))
}

/// Validates and stores an update; a write that changes nothing is not stored (no new
/// resourceVersion, no watch event), as in the apiserver's GuaranteedUpdate.
pub(crate) fn write_update(
    st: &mut Store,
    rt: &'static ResourceType,
    old: &Value,
    mut obj: Value,
    manager: &str,
    dry_run: bool,
) -> ApiResult<Value> {
    strategy::validate(rt, &obj, Some(old))?;
    managed::track_update(rt.kind, Some(old), &mut obj, manager, &rt.api_version());
    store_update(st, rt, old, obj, dry_run)
}

fn store_update(
    st: &mut Store,
    rt: &'static ResourceType,
    old: &Value,
    mut obj: Value,
    dry_run: bool,
) -> ApiResult<Value> {
    meta_mut(&mut obj).insert(
        "resourceVersion".into(),
        json!(meta_str(old, "resourceVersion")),
    );
    if obj == *old || dry_run {
        return Ok(obj);
    }
    let ns = if rt.namespaced {
        meta_str(old, "namespace").to_string()
    } else {
        String::new()
    };
    let name = meta_str(old, "name").to_string();
    // Last finalizer removed from an object being deleted: it goes away now.
    let finalizers_empty = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if obj.pointer("/metadata/deletionTimestamp").is_some()
        && finalizers_empty
        && rt.plural != "namespaces"
    {
        st.put(key(rt), &ns, &name, obj, EventType::Modified);
        return st
            .remove(key(rt), &ns, &name)
            .ok_or_else(|| ApiError::internal("object vanished"));
    }
    Ok(st.put(key(rt), &ns, &name, obj, EventType::Modified))
}

fn patch_req(shared: &Shared, req: &Request) -> ApiResult<Reply> {
    let ct = req
        .content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if ct == "application/apply-patch+yaml" || ct == "application/apply-patch+json" {
        return apply(shared, req);
    }
    if req.q("force").is_some() {
        return Err(patch_options_invalid(Cause::forbidden(
            "force",
            "may not be specified for non-apply patch",
        )));
    }
    let patch_doc: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if !matches!(
        ct.as_str(),
        "application/json-patch+json"
            | "application/merge-patch+json"
            | "application/strategic-merge-patch+json"
    ) {
        return Err(ApiError::unsupported_media_type(&ct));
    }
    let mut st = shared.lock_store();
    let old = st
        .get(key(req.rt), req.ns(), req.name())
        .cloned()
        .ok_or_else(|| ApiError::not_found(req.rt.group, req.rt.plural, req.name()))?;
    forced_conflict(shared, req)?;
    // The patch applies to the object as this API version shows it.
    let mut view = old.clone();
    if convert::is_events_v1(req.rt) {
        convert::from_core(&mut view);
    }
    let mut obj = match ct.as_str() {
        "application/json-patch+json" => patch::json_patch(&view, &patch_doc)?,
        "application/merge-patch+json" => patch::merge_patch(&view, &patch_doc)?,
        _ => patch::strategic_merge(req.rt.kind, &view, &patch_doc)?,
    };
    if convert::is_events_v1(req.rt) {
        convert::to_core(&mut obj);
    }
    field_validation(req, &mut obj)?;
    crate::rbac::escalation::admit(shared, &st, req, &obj, Some(&old))?;
    let rv = meta_str(&obj, "resourceVersion");
    if !rv.is_empty() && rv != meta_str(&old, "resourceVersion") {
        return Err(ApiError::conflict(req.rt.group, req.rt.plural, req.name()));
    }
    if meta_str(&obj, "name") != req.name()
        || (req.rt.namespaced && meta_str(&obj, "namespace") != req.ns())
    {
        return Err(ApiError::bad_request(
            "metadata.name and metadata.namespace cannot be changed by a patch",
        ));
    }
    if let Some(m) = obj.as_object_mut() {
        let (av, kind) = req.rt.stored_type();
        m.insert("apiVersion".into(), json!(av));
        m.insert("kind".into(), json!(kind));
    }
    if req.subresource.as_deref() == Some("status") {
        let mut next = old.clone();
        next["status"] = obj.get("status").cloned().unwrap_or(json!({}));
        obj = next;
    } else {
        strategy::prepare_update(req.rt, &old, &mut obj);
    }
    let out = write_update(&mut st, req.rt, &old, obj, &req.manager(), req.dry_run())?;
    Ok(Reply::Json(200, out))
}

fn patch_options_invalid(cause: Cause) -> ApiError {
    ApiError::invalid("meta.k8s.io", "PatchOptions", "", vec![cause])
}

/// Server-side apply (docs/api-server.md).
fn apply(shared: &Shared, req: &Request) -> ApiResult<Reply> {
    let manager = req.q("fieldManager").unwrap_or("").to_string();
    if manager.is_empty() {
        return Err(patch_options_invalid(Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value: is required for apply patch".into(),
            field: "fieldManager".into(),
        }));
    }
    if manager.chars().count() > 128 {
        return Err(patch_options_invalid(Cause::too_long("fieldManager", 128)));
    }
    let force = req.flag("force") && req.q("force") != Some("");
    let mut applied = decode_object(req)?;
    if applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
        || applied
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
    {
        return Err(ApiError::bad_request("invalid object type: /, Kind="));
    }
    type_meta(req, &mut applied)?;
    field_validation(req, &mut applied)?;
    let body_name = meta_str(&applied, "name").to_string();
    if !body_name.is_empty() && body_name != req.name() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            req.name()
        )));
    }
    object_namespace(req, &mut applied)?;
    let api_version = req.rt.api_version();
    let mut st = shared.lock_store();
    let live = st.get(key(req.rt), req.ns(), req.name()).cloned();
    let Some(live) = live else {
        check_namespace(&st, req.rt, req.ns())?;
        let mut obj = managed::apply(req.rt.kind, None, &applied, &manager, &api_version, force)?;
        {
            let m = meta_mut(&mut obj);
            m.insert("name".into(), json!(req.name()));
            if req.rt.namespaced {
                m.insert("namespace".into(), json!(req.ns()));
            }
        }
        if let Some(m) = obj.as_object_mut() {
            let (av, kind) = req.rt.stored_type();
            m.insert("apiVersion".into(), json!(av));
            m.insert("kind".into(), json!(kind));
        }
        crate::rbac::escalation::admit(shared, &st, req, &obj, None)?;
        let mf = obj.pointer("/metadata/managedFields").cloned();
        crate::admission::admit_create(&st, req.rt, &mut obj)?;
        strategy::prepare_create(req.rt, &mut obj);
        strategy::validate(req.rt, &obj, None)?;
        {
            let m = meta_mut(&mut obj);
            m.insert("uid".into(), json!(util::new_uid()));
            m.insert("creationTimestamp".into(), json!(util::now_rfc3339()));
            if let Some(mf) = mf {
                m.insert("managedFields".into(), mf);
            }
        }
        if req.dry_run() {
            return Ok(Reply::Json(201, obj));
        }
        let stored = st.put(key(req.rt), req.ns(), req.name(), obj, EventType::Added);
        crate::hooks::after_create(shared, &mut st, req.rt, &stored);
        let out = st
            .get(key(req.rt), req.ns(), req.name())
            .cloned()
            .unwrap_or(stored);
        return Ok(Reply::Json(201, out));
    };
    forced_conflict(shared, req)?;
    let rv = meta_str(&applied, "resourceVersion");
    if !rv.is_empty() && rv != meta_str(&live, "resourceVersion") {
        return Err(ApiError::conflict(req.rt.group, req.rt.plural, req.name()));
    }
    let mut obj = managed::apply(
        req.rt.kind,
        Some(&live),
        &applied,
        &manager,
        &api_version,
        force,
    )?;
    crate::rbac::escalation::admit(shared, &st, req, &obj, Some(&live))?;
    strategy::prepare_update(req.rt, &live, &mut obj);
    strategy::validate(req.rt, &obj, Some(&live))?;
    let out = store_update(&mut st, req.rt, &live, obj, req.dry_run())?;
    Ok(Reply::Json(200, out))
}

/// `DeleteOptions` from the body or query.
fn delete_preconditions(req: &Request) -> ApiResult<(Option<String>, Option<String>)> {
    if req.body.is_empty() {
        return Ok((None, None));
    }
    let v: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?;
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    Ok((s("/preconditions/resourceVersion"), s("/preconditions/uid")))
}

fn delete(shared: &Shared, req: &Request) -> ApiResult<Reply> {
    let (pre_rv, pre_uid) = delete_preconditions(req)?;
    let mut st = shared.lock_store();
    let obj = st
        .get(key(req.rt), req.ns(), req.name())
        .cloned()
        .ok_or_else(|| ApiError::not_found(req.rt.group, req.rt.plural, req.name()))?;
    if let Some(uid) = pre_uid
        && uid != meta_str(&obj, "uid")
    {
        return Err(ApiError::conflict_msg(
            req.rt.group,
            req.rt.plural,
            req.name(),
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(&obj, "uid")
            ),
        ));
    }
    if let Some(rv) = pre_rv
        && rv != meta_str(&obj, "resourceVersion")
    {
        return Err(ApiError::conflict_msg(
            req.rt.group,
            req.rt.plural,
            req.name(),
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                meta_str(&obj, "resourceVersion")
            ),
        ));
    }
    if req.dry_run() {
        return Ok(Reply::Json(200, obj));
    }
    if req.rt.group.is_empty()
        && req.rt.plural == "pods"
        && let Some(terminating) = graceful_pod_delete(&mut st, &obj, grace_period(req))
    {
        return Ok(Reply::Json(200, terminating));
    }
    delete_locked(shared, &mut st, req.rt, req.ns(), req.name(), orphans(req))
        .map(|r| Reply::Json(200, r))
}

/// `DeleteOptions.gracePeriodSeconds` from the query or the body.
fn grace_period(req: &Request) -> Option<i64> {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    req.q("gracePeriodSeconds")
        .and_then(|g| g.parse().ok())
        .or_else(|| body.get("gracePeriodSeconds").and_then(Value::as_i64))
}

/// Graceful pod deletion (`podStrategy.CheckGracefulDelete` and the registry's
/// `BeforeDelete`): a pod bound to a node and not finished gets `deletionTimestamp` = now +
/// grace period (the request's, else `terminationGracePeriodSeconds`) and stays until its kubelet
/// deletes it with grace 0. Unscheduled or finished pods, and grace 0, are removed at once
/// (returns None). A second delete may only shorten the period.
fn graceful_pod_delete(st: &mut Store, pod: &Value, requested: Option<i64>) -> Option<Value> {
    let scheduled = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    let default = pod
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let mut period = requested.unwrap_or(default);
    if !scheduled || matches!(phase, Some("Succeeded" | "Failed")) {
        period = 0;
    }
    if period < 0 {
        period = 1;
    }
    if period == 0 {
        return None;
    }
    let current = pod
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    if pod.pointer("/metadata/deletionTimestamp").is_some() && current.is_some_and(|c| c <= period)
    {
        return Some(pod.clone());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut next = pod.clone();
    let m = meta_mut(&mut next);
    m.insert(
        "deletionTimestamp".into(),
        json!(util::rfc3339(now + period.unsigned_abs())),
    );
    m.insert("deletionGracePeriodSeconds".into(), json!(period));
    let ns = meta_str(pod, "namespace").to_string();
    let name = meta_str(pod, "name").to_string();
    let key = resources::find("", "v1", "pods", false)?.key();
    Some(st.put(key, &ns, &name, next, EventType::Modified))
}

/// Deletes a pod as a DELETE with default options does: gracefully when it runs on a node.
pub(crate) fn delete_pod_locked(
    shared: &Shared,
    st: &mut Store,
    ns: &str,
    name: &str,
) -> ApiResult<Value> {
    let rt = resources::find("", "v1", "pods", false)
        .ok_or_else(|| ApiError::internal("pods are not served"))?;
    let pod = st
        .get(rt.key(), ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    if let Some(terminating) = graceful_pod_delete(st, &pod, None) {
        return Ok(terminating);
    }
    delete_locked(shared, st, rt, ns, name, false)
}

/// Deletes one object: finalizers defer it, namespaces terminate and cascade.
pub(crate) fn delete_locked(
    shared: &Shared,
    st: &mut Store,
    rt: &'static ResourceType,
    ns: &str,
    name: &str,
    orphan: bool,
) -> ApiResult<Value> {
    let obj = st
        .get(key(rt), ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(rt.group, rt.plural, name))?;
    if rt.plural == "namespaces" && rt.group.is_empty() {
        return Ok(crate::hooks::delete_namespace(shared, st, name));
    }
    let has_finalizers = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if has_finalizers {
        if obj.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(obj);
        }
        let mut next = obj.clone();
        let m = meta_mut(&mut next);
        m.insert("deletionTimestamp".into(), json!(util::now_rfc3339()));
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
        return Ok(st.put(key(rt), ns, name, next, EventType::Modified));
    }
    st.remove(key(rt), ns, name);
    if !orphan {
        collect_garbage(shared, st, ns, meta_str(&obj, "uid"));
    }
    Ok(
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
              "details": {"name": name, "group": rt.group, "kind": rt.plural, "uid": meta_str(&obj, "uid")}}),
    )
}

/// The garbage collector's background propagation: dependents in the owner's namespace go too.
fn collect_garbage(shared: &Shared, st: &mut Store, ns: &str, uid: &str) {
    if ns.is_empty() || uid.is_empty() {
        return;
    }
    let dependents: Vec<(ResourceKey, String)> = st
        .in_namespace(ns)
        .into_iter()
        .filter(|(k, n)| {
            st.get(*k, ns, n)
                .and_then(|o| o.pointer("/metadata/ownerReferences"))
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter()
                        .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                })
        })
        .collect();
    for (k, n) in dependents {
        if let Some(rt) = resources::RESOURCES.iter().find(|r| r.key() == k) {
            let _ = delete_locked(shared, st, rt, ns, &n, false);
        }
    }
}

/// `propagationPolicy: Orphan` (query or DeleteOptions body) keeps dependents.
fn orphans(req: &Request) -> bool {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    req.q("propagationPolicy") == Some("Orphan")
        || body.get("propagationPolicy").and_then(Value::as_str) == Some("Orphan")
        || body.get("orphanDependents").and_then(Value::as_bool) == Some(true)
}

fn delete_collection(shared: &Shared, req: &Request) -> ApiResult<Reply> {
    let sel = Selectors::from_request(req)?;
    let mut st = shared.lock_store();
    let targets: Vec<(String, String, Value)> = st
        .list(key(req.rt), req.namespace.as_deref())
        .into_iter()
        .filter(|o| sel.matches(o))
        .map(|o| {
            (
                meta_str(o, "namespace").to_string(),
                meta_str(o, "name").to_string(),
                o.clone(),
            )
        })
        .collect();
    let mut items = Vec::new();
    for (ns, name, obj) in targets {
        if !req.dry_run() {
            delete_locked(shared, &mut st, req.rt, &ns, &name, orphans(req))?;
        }
        items.push(list_item(&obj));
    }
    Ok(Reply::Json(
        200,
        json!({"kind": format!("{}List", req.rt.kind), "apiVersion": req.rt.api_version(),
               "metadata": {"resourceVersion": st.rv().to_string()}, "items": items}),
    ))
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews` (docs/api-server.md): `status` is always an object.
fn token_review(shared: &Shared, req: &Request) -> ApiResult<Reply> {
    let mut review = decode_object(req)?;
    type_meta(req, &mut review)?;
    let token = review
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let requested: Vec<String> = review
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    // A service-account token this server issued is reviewed against its claims and the store.
    let issued = {
        let st = shared.lock_store();
        shared
            .tokens
            .review(&st, &token, &requested, crate::tokens::now_secs())
    };
    let status = match issued {
        Some(Ok(r)) => {
            json!({"authenticated": true, "user": r.user.to_json(), "audiences": r.audiences})
        }
        Some(Err(e)) => json!({"user": {}, "error": format!("[invalid bearer token, {e}]")}),
        None => static_review(shared, &token, &requested),
    };
    if let Some(m) = review.as_object_mut() {
        m.insert("status".into(), status);
        let meta = m.entry("metadata").or_insert_with(|| json!({}));
        if let Some(mm) = meta.as_object_mut() {
            mm.entry("creationTimestamp").or_insert(Value::Null);
        }
    }
    Ok(Reply::Json(201, review))
}

/// TokenReview of the admin token and the configured identities.
fn static_review(shared: &Shared, token: &str, requested: &[String]) -> Value {
    match shared.identity(token) {
        Some(user) => {
            let own = if user.audiences.is_empty() {
                vec![crate::tokens::API_AUDIENCE.to_string()]
            } else {
                user.audiences.clone()
            };
            let audiences: Vec<String> = if requested.is_empty() {
                own.clone()
            } else {
                requested
                    .iter()
                    .filter(|a| user.audiences.is_empty() || own.contains(a))
                    .cloned()
                    .collect()
            };
            if !requested.is_empty() && audiences.is_empty() {
                json!({"user": {}, "error": format!("[invalid bearer token, token audiences {own:?} is invalid for the target audiences {requested:?}]")})
            } else {
                json!({"authenticated": true, "user": user.to_json(), "audiences": audiences})
            }
        }
        None => {
            json!({"user": {}, "error": "[invalid bearer token, square/go-jose: compact JWS format must have three parts]"})
        }
    }
}

/// Without RBAC enforcement every request is allowed; with it, the authorizer decides.
fn self_subject_access_review(shared: &Shared, req: &Request) -> ApiResult<Reply> {
    let mut review = decode_object(req)?;
    type_meta(req, &mut review)?;
    let attrs = review
        .pointer("/spec/resourceAttributes")
        .cloned()
        .unwrap_or(json!({}));
    let s = |k: &str| {
        attrs
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let allowed = shared
        .authorize(
            &req.user,
            &crate::rbac::Attributes {
                verb: s("verb"),
                group: s("group"),
                resource: s("resource"),
                subresource: s("subresource"),
                namespace: s("namespace"),
                name: s("name"),
            },
        )
        .allowed;
    if let Some(m) = review.as_object_mut() {
        m.insert("status".into(), json!({"allowed": allowed}));
    }
    Ok(Reply::Json(201, review))
}

/// A Namespace seen as an OpenShift Project.
pub fn project_of(ns: &Value) -> Value {
    let mut meta = ns.get("metadata").cloned().unwrap_or(json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.remove("managedFields");
    }
    json!({"kind": "Project", "apiVersion": "project.openshift.io/v1", "metadata": meta,
           "spec": ns.get("spec").cloned().unwrap_or(json!({})),
           "status": ns.get("status").cloned().unwrap_or(json!({}))})
}

/// `projects` are namespaces seen through project.openshift.io; `projectrequests` create them.
fn projects(shared: &Shared, req: &Request) -> ApiResult<Reply> {
    let nsrt = resources::namespaces();
    match req.verb {
        "get" => {
            let st = shared.lock_store();
            let ns = st
                .get(ns_key(), "", req.name())
                .ok_or_else(|| ApiError::not_found(req.rt.group, req.rt.plural, req.name()))?;
            Ok(Reply::Json(200, project_of(ns)))
        }
        "list" => {
            let sel = Selectors::from_request(req)?;
            let st = shared.lock_store();
            let items: Vec<Value> = st
                .list(ns_key(), None)
                .into_iter()
                .filter(|n| sel.matches(n))
                .map(|n| list_item(&project_of(n)))
                .collect();
            Ok(Reply::Json(
                200,
                json!({"kind": format!("{}List", req.rt.kind), "apiVersion": req.rt.api_version(),
                       "metadata": {"resourceVersion": st.rv().to_string()}, "items": items}),
            ))
        }
        "watch" => crate::watch::spec(shared, req).map(Reply::Watch),
        "create" => {
            let body = decode_object(req)?;
            let name = meta_str(&body, "name").to_string();
            let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "annotations": {
                "openshift.io/requester": req.user.username,
            }}});
            for (field, ann) in [
                ("displayName", "openshift.io/display-name"),
                ("description", "openshift.io/description"),
            ] {
                if let Some(v) = body.get(field).and_then(Value::as_str) {
                    ns["metadata"]["annotations"][ann] = json!(v);
                }
            }
            if let Some(l) = body.pointer("/metadata/labels") {
                ns["metadata"]["labels"] = l.clone();
            }
            let mut st = shared.lock_store();
            let created = create_locked(shared, &mut st, nsrt, ns, &req.manager(), req.dry_run())
                .map_err(|e| {
                if e.code == 409 {
                    ApiError::already_exists(req.rt.group, "projects", &name)
                } else {
                    e
                }
            })?;
            Ok(Reply::Json(201, project_of(&created)))
        }
        "delete" => {
            let mut st = shared.lock_store();
            if st.get(ns_key(), "", req.name()).is_none() {
                return Err(ApiError::not_found(req.rt.group, req.rt.plural, req.name()));
            }
            delete_locked(shared, &mut st, nsrt, "", req.name(), false)?;
            Ok(Reply::Json(
                200,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            ))
        }
        v => Err(ApiError::method_not_allowed(format!(
            "verb {v} is not supported on projects"
        ))),
    }
}
