//! kube-sim through the real `kube::Client`: CRUD with the exact Status shapes of docs/api-server.md,
//! optimistic concurrency, pull-secret validation, server-side apply conflicts, watch resumption
//! and 410 handling (also by kube-runtime's watcher), TokenReview over HTTPS, fault injection.

#![allow(clippy::unwrap_used)]

use futures_util::{StreamExt as _, TryStreamExt as _};
use http_body_util::BodyExt as _;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Client, Error};
use kube_sim::{ErrorRule, Handle, InjectedError, Options, Server, UserInfo};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn start(opts: Options) -> (Handle, Client) {
    let h = Server::start(opts).await.expect("server starts");
    let client = Client::try_from(h.kube_config()).expect("client");
    (h, client)
}

/// A client that does not retry, to see each fault as it is.
fn no_retry(h: &Handle) -> Client {
    let mut cfg = h.kube_config();
    cfg.default_retry = false;
    Client::try_from(cfg).expect("client")
}

/// Raw request: (status, headers, body).
async fn raw(
    c: &Client,
    method: &str,
    uri: &str,
    content_type: &str,
    body: &str,
) -> (u16, hyper::HeaderMap, String) {
    let req = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(kube::client::Body::from(body.as_bytes().to_vec()))
        .unwrap();
    let resp = c.send(req).await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn api_err(r: Result<impl std::fmt::Debug, Error>) -> kube::core::Status {
    match r {
        Err(Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn secret(name: &str, ty: &str, data: Value) -> Secret {
    serde_json::from_value(json!({"metadata": {"name": name}, "type": ty, "data": data})).unwrap()
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn crud_conflicts_and_status_shapes() {
    let (h, c) = start(Options::default()).await;
    let api: Api<Secret> = Api::namespaced(c.clone(), "default");

    let (code, _, body) = raw(
        &c,
        "GET",
        "/api/v1/namespaces/default/secrets/x",
        "application/json",
        "",
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
               "message":"secrets \"x\" not found","reason":"NotFound",
               "details":{"name":"x","group":"","kind":"secrets"},"code":404})
    );

    let s = api
        .create(
            &PostParams::default(),
            &secret("s", "Opaque", json!({"a": b64("1")})),
        )
        .await
        .unwrap();
    let rv1 = s.metadata.resource_version.clone().unwrap();
    let e = api_err(api.create(&PostParams::default(), &s).await);
    // The object carries a resourceVersion: the apiserver refuses that before checking existence.
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            400,
            "resourceVersion should not be set on objects to be created"
        )
    );
    let e = api_err(
        api.create(&PostParams::default(), &secret("s", "Opaque", json!({})))
            .await,
    );
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (409, "AlreadyExists", "secrets \"s\" already exists")
    );

    let missing: Api<Secret> = Api::namespaced(c.clone(), "nope");
    let e = api_err(
        missing
            .create(&PostParams::default(), &secret("s", "Opaque", json!({})))
            .await,
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"nope\" not found")
    );
    assert_eq!(e.details.map(|d| d.kind), Some("namespaces".to_string()));

    // Update with the current RV, then with the stale one.
    let mut s2 = s.clone();
    s2.data = Some(serde_json::from_value(json!({"a": b64("2")})).unwrap());
    let s3 = api.replace("s", &PostParams::default(), &s2).await.unwrap();
    assert_ne!(s3.metadata.resource_version.as_deref(), Some(rv1.as_str()));
    let e = api_err(api.replace("s", &PostParams::default(), &s2).await);
    assert_eq!(e.code, 409);
    assert_eq!(e.reason, "Conflict");
    assert_eq!(
        e.message,
        "Operation cannot be fulfilled on secrets \"s\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // A PUT without resourceVersion is unconditional.
    s2.metadata.resource_version = None;
    s2.data = Some(serde_json::from_value(json!({"a": b64("3")})).unwrap());
    let s4 = api.replace("s", &PostParams::default(), &s2).await.unwrap();
    // A no-op update stores nothing: same resourceVersion, no event.
    let before = h.resource_version();
    let s5 = api.replace("s", &PostParams::default(), &s4).await.unwrap();
    assert_eq!(s5.metadata.resource_version, s4.metadata.resource_version);
    assert_eq!(h.resource_version(), before);
    // PUT of a missing object: 404 (no create on update).
    let e = api_err(
        api.replace(
            "gone",
            &PostParams::default(),
            &secret("gone", "Opaque", json!({})),
        )
        .await,
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "secrets \"gone\" not found")
    );

    // A uid from an earlier incarnation is a failed precondition.
    let mut other = s4.clone();
    other.metadata.resource_version = None;
    other.metadata.uid = Some("not-the-uid".into());
    let e = api_err(api.replace("s", &PostParams::default(), &other).await);
    assert_eq!(e.code, 409);
    assert!(
        e.message
            .contains("Precondition failed: UID in precondition: not-the-uid"),
        "{}",
        e.message
    );

    let deleted = api.delete("s", &DeleteParams::default()).await.unwrap();
    let status = deleted.right().expect("a Status for a deleted secret");
    assert_eq!(
        status.status,
        Some(kube::core::response::StatusSummary::Success)
    );
    assert_eq!(api_err(api.get("s").await).code, 404);
    assert_eq!(
        api_err(api.delete("s", &DeleteParams::default()).await).code,
        404
    );
}

#[tokio::test]
async fn pull_secret_validation_and_update_rules() {
    let (_h, c) = start(Options::default()).await;
    let api: Api<Secret> = Api::namespaced(c.clone(), "default");
    let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "p"},
                      "type": "kubernetes.io/dockerconfigjson", "data": {"x": b64("{}")}});
    let (code, _, text) = raw(
        &c,
        "POST",
        "/api/v1/namespaces/default/secrets",
        "application/json",
        &body.to_string(),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
               "message":"Secret \"p\" is invalid: data[.dockerconfigjson]: Required value",
               "reason":"Invalid","code":422,
               "details":{"name":"p","group":"","kind":"Secret",
                          "causes":[{"reason":"FieldValueRequired","message":"Required value","field":"data[.dockerconfigjson]"}]}})
    );
    let e = api_err(
        api.create(
            &PostParams::default(),
            &secret(
                "p",
                "kubernetes.io/dockercfg",
                json!({".dockercfg": b64("\"str\"")}),
            ),
        )
        .await,
    );
    assert_eq!(e.code, 422);
    assert_eq!(
        e.message,
        "Secret \"p\" is invalid: data[.dockercfg]: Invalid value: \"<secret contents redacted>\": json: cannot unmarshal string into Go value of type map[string]interface {}"
    );
    // {"auths":...} in a .dockercfg secret passes: nothing else is checked.
    let ok = api
        .create(
            &PostParams::default(),
            &secret(
                "p",
                "kubernetes.io/dockercfg",
                json!({".dockercfg": b64(r#"{"auths":{}}"#)}),
            ),
        )
        .await
        .unwrap();
    let mut changed = ok.clone();
    changed.type_ = Some("kubernetes.io/dockerconfigjson".into());
    changed.data = Some(serde_json::from_value(json!({".dockerconfigjson": b64("{}")})).unwrap());
    let e = api_err(api.replace("p", &PostParams::default(), &changed).await);
    assert_eq!(e.code, 422);
    assert_eq!(
        e.message,
        "Secret \"p\" is invalid: type: Invalid value: \"kubernetes.io/dockerconfigjson\": field is immutable"
    );

    let mut frozen = secret("f", "Opaque", json!({"a": b64("1")}));
    frozen.immutable = Some(true);
    let frozen = api.create(&PostParams::default(), &frozen).await.unwrap();
    let mut thaw = frozen.clone();
    thaw.data = Some(serde_json::from_value(json!({"a": b64("2")})).unwrap());
    let e = api_err(api.replace("f", &PostParams::default(), &thaw).await);
    assert_eq!(
        e.message,
        "Secret \"f\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
    );
    let e = api_err(
        api.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"immutable": false})),
        )
        .await,
    );
    assert!(
        e.message
            .contains("immutable: Forbidden: field is immutable when `immutable` is set"),
        "{}",
        e.message
    );
    // Malformed body: 400, never a panic.
    let (code, _, _) = raw(
        &c,
        "POST",
        "/api/v1/namespaces/default/secrets",
        "application/json",
        "{not json",
    )
    .await;
    assert_eq!(code, 400);
    let (code, _, _) = raw(
        &c,
        "POST",
        "/api/v1/namespaces/default/secrets",
        "application/json",
        "[1]",
    )
    .await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn generate_name_sa_strategy_and_namespace_cascade() {
    let opts = Options {
        namespace_deletion_delay: Duration::from_millis(300),
        ..Default::default()
    };
    let (h, c) = start(opts).await;
    let nss: Api<Namespace> = Api::all(c.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
    )
    .await
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "team");
    let g: Secret =
        serde_json::from_value(json!({"metadata": {"generateName": "pull-"}, "type": "Opaque"}))
            .unwrap();
    let made = secrets.create(&PostParams::default(), &g).await.unwrap();
    let name = made.metadata.name.unwrap();
    assert!(name.starts_with("pull-") && name.len() == 10, "{name}");

    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "team");
    assert!(
        sas.get("default").await.is_ok(),
        "the default SA exists in every namespace"
    );
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "bot"},
        "secrets": [{"name": "s1", "namespace": "elsewhere", "uid": "123", "kind": "Secret"}]}))
    .unwrap();
    let sa = sas.create(&PostParams::default(), &sa).await.unwrap();
    assert_eq!(
        serde_json::to_value(&sa.secrets).unwrap(),
        json!([{"name": "s1"}])
    );

    let gone = nss.delete("team", &DeleteParams::default()).await.unwrap();
    let ns = gone.left().expect("the namespace, now terminating");
    assert_eq!(
        ns.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    let e = api_err(
        secrets
            .create(&PostParams::default(), &secret("late", "Opaque", json!({})))
            .await,
    );
    assert_eq!(e.code, 403);
    assert_eq!(
        e.message,
        "secrets is forbidden: unable to create new content in namespace team because it is being terminated"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(api_err(nss.get("team").await).code, 404);
    assert!(
        h.get("", "serviceaccounts", "team", "bot").is_none(),
        "cascade removed the namespace's objects"
    );
    let e = api_err(
        secrets
            .create(&PostParams::default(), &secret("late", "Opaque", json!({})))
            .await,
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"team\" not found")
    );
}

#[tokio::test]
async fn watch_resumes_from_resource_version_and_gets_410_when_expired() {
    let opts = Options {
        bookmark_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let (h, c) = start(opts).await;
    let api: Api<Secret> = Api::namespaced(c.clone(), "default");
    let rv0 = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&PostParams::default(), &secret("a", "Opaque", json!({})))
        .await
        .unwrap();
    api.create(&PostParams::default(), &secret("b", "Opaque", json!({})))
        .await
        .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
    )
    .await
    .unwrap();

    // Resume from rv0: the three changes since, in order, then a bookmark.
    let stream = api.watch(&WatchParams::default(), &rv0).await.unwrap();
    let mut stream = Box::pin(stream);
    let mut seen = Vec::new();
    let mut bookmark_rv = None;
    while bookmark_rv.is_none() {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(s) => seen.push(format!("ADDED {}", s.metadata.name.unwrap())),
            WatchEvent::Modified(s) => seen.push(format!("MODIFIED {}", s.metadata.name.unwrap())),
            WatchEvent::Deleted(s) => seen.push(format!("DELETED {}", s.metadata.name.unwrap())),
            WatchEvent::Bookmark(b) => bookmark_rv = Some(b.metadata.resource_version),
            WatchEvent::Error(e) => panic!("unexpected error event {e:?}"),
        }
    }
    assert_eq!(seen, ["ADDED a", "ADDED b", "MODIFIED a"]);
    assert_eq!(bookmark_rv, Some(h.resource_version().to_string()));
    drop(stream);

    // A selector watch sees an object leave the selection as DELETED.
    let sel = api
        .watch(
            &WatchParams::default().labels("x=1"),
            &bookmark_rv.clone().unwrap(),
        )
        .await
        .unwrap();
    let mut sel = Box::pin(sel);
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "2"}}})),
    )
    .await
    .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), sel.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Deleted(s) => assert_eq!(s.metadata.name.as_deref(), Some("a")),
        other => panic!("expected DELETED, got {other:?}"),
    }

    // History compacted: 200, one ERROR event with a 410 Expired Status, then the stream ends.
    h.compact();
    let (code, _, body) = raw(
        &c,
        "GET",
        &format!("/api/v1/namespaces/default/secrets?watch=1&resourceVersion={rv0}"),
        "",
        "",
    )
    .await;
    assert_eq!(code, 200);
    let compacted = h.resource_version();
    assert_eq!(
        serde_json::from_str::<Value>(body.trim()).unwrap(),
        json!({"type": "ERROR", "object": {"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
               "message": format!("too old resource version: {rv0} ({compacted})"),"reason":"Expired","code":410}})
    );
    let stream = api.watch(&WatchParams::default(), &rv0).await.unwrap();
    let events: Vec<_> = stream.collect().await;
    assert_eq!(events.len(), 1);
    match &events[0] {
        Ok(WatchEvent::Error(s)) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 error event, got {other:?}"),
    }
}

async fn wait_for(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, name: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
            && n == name
        {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn runtime_watcher_recovers_from_drops_and_expiry() {
    let (h, c) = start(Options::default()).await;
    // Every watch stream ends after one event; history is then compacted, so re-watching from
    // the last seen version gets 410 and the watcher must re-list to see later objects.
    h.set_faults(|f| {
        f.watch_drop_after_events = Some(1);
        f.expire_watches = 1;
    });
    let api: Api<Secret> = Api::namespaced(c.clone(), "default");
    let stream = kube::runtime::watcher(api.clone(), kube::runtime::watcher::Config::default());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        while let Some(ev) = stream.next().await {
            if let Ok(
                kube::runtime::watcher::Event::Apply(s)
                | kube::runtime::watcher::Event::InitApply(s),
            ) = ev
            {
                let _ = tx.send(s.metadata.name.unwrap_or_default());
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.watch_count() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.create(&PostParams::default(), &secret("one", "Opaque", json!({})))
        .await
        .unwrap();
    assert!(
        wait_for(&mut rx, "one").await,
        "watcher saw the first object"
    );
    // The stream dropped after "one"; the re-watch got 410 and the watcher re-listed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.counts().count("list", "secrets") < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.create(&PostParams::default(), &secret("two", "Opaque", json!({})))
        .await
        .unwrap();
    assert!(
        wait_for(&mut rx, "two").await,
        "watcher re-listed after 410 and saw the second object"
    );
    assert!(h.counts().count("list", "secrets") >= 2, "{:?}", h.counts());
    task.abort();
}

#[tokio::test]
async fn server_side_apply_conflicts_name_the_fields() {
    let (_h, c) = start(Options::default()).await;
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "default");
    let apply = |mgr: &str, force: bool| {
        let mut p = PatchParams::apply(mgr);
        p.force = force;
        p
    };
    let a = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bot", "labels": {"team": "a"}},
                   "imagePullSecrets": [{"name": "one"}], "secrets": [{"name": "x"}]});
    let created = sas
        .patch("bot", &apply("mgr-a", false), &Patch::Apply(&a))
        .await
        .unwrap();
    assert_eq!(
        created.metadata.managed_fields.unwrap()[0]
            .operation
            .as_deref(),
        Some("Apply")
    );

    // secrets is a map keyed by name: another manager adds its own item without conflict.
    let b = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bot"}, "secrets": [{"name": "y"}]});
    let merged = sas
        .patch("bot", &apply("mgr-b", false), &Patch::Apply(&b))
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(merged.secrets).unwrap(),
        json!([{"name": "x"}, {"name": "y"}])
    );

    // imagePullSecrets is atomic and labels are per key: both conflict.
    let b2 = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bot", "labels": {"team": "b"}},
                    "imagePullSecrets": [{"name": "two"}], "secrets": [{"name": "y"}]});
    let (code, _, body) = raw(
        &c,
        "PATCH",
        "/api/v1/namespaces/default/serviceaccounts/bot?fieldManager=mgr-b",
        "application/apply-patch+yaml",
        &b2.to_string(),
    )
    .await;
    assert_eq!(code, 409);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
               "message":"Apply failed with 2 conflicts: conflicts with \"mgr-a\":\n- .imagePullSecrets\n- .metadata.labels.team",
               "reason":"Conflict","code":409,
               "details":{"causes":[
                   {"reason":"FieldManagerConflict","message":"conflict with \"mgr-a\"","field":".imagePullSecrets"},
                   {"reason":"FieldManagerConflict","message":"conflict with \"mgr-a\"","field":".metadata.labels.team"}]}})
    );
    let forced = sas
        .patch("bot", &apply("mgr-b", true), &Patch::Apply(&b2))
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(forced.image_pull_secrets).unwrap(),
        json!([{"name": "two"}])
    );

    // An Update manager is printed with its apiVersion and time; data keys are granular.
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "default");
    let pp = PostParams {
        field_manager: Some("editor".into()),
        ..Default::default()
    };
    secrets
        .create(
            &pp,
            &secret("d", "Opaque", json!({"k": b64("1"), "other": b64("x")})),
        )
        .await
        .unwrap();
    let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "d"}, "data": {"k": b64("2")}});
    let e = api_err(
        secrets
            .patch("d", &apply("pullsecretd", false), &Patch::Apply(&s))
            .await,
    );
    assert_eq!(e.code, 409);
    assert!(
        e.message
            .starts_with("Apply failed with 1 conflict: conflict with \"editor\" using v1 at "),
        "{}",
        e.message
    );
    assert!(e.message.ends_with(": .data.k"), "{}", e.message);

    // subjects of a RoleBinding are atomic.
    let rbs: Api<RoleBinding> = Api::namespaced(c.clone(), "default");
    let rb = |who: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "pullers"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": who, "namespace": "default"}]})
    };
    rbs.patch("pullers", &apply("one", false), &Patch::Apply(rb("a")))
        .await
        .unwrap();
    let e = api_err(
        rbs.patch("pullers", &apply("two", false), &Patch::Apply(rb("b")))
            .await,
    );
    assert_eq!(
        e.message,
        "Apply failed with 1 conflict: conflict with \"one\": .subjects"
    );

    // fieldManager is required for apply; force only for apply.
    let (code, _, body) = raw(
        &c,
        "PATCH",
        "/api/v1/namespaces/default/secrets/d",
        "application/apply-patch+yaml",
        &s.to_string(),
    )
    .await;
    assert_eq!(code, 422);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    let (code, _, body) = raw(
        &c,
        "PATCH",
        "/api/v1/namespaces/default/secrets/d?force=true",
        "application/merge-patch+json",
        "{}",
    )
    .await;
    assert_eq!(code, 422);
    assert!(
        body.contains("force: Forbidden: may not be specified for non-apply patch"),
        "{body}"
    );
}

#[tokio::test]
async fn fault_injection_and_counters() {
    let (h, c) = start(Options::default()).await;
    let strict = no_retry(&h);
    let api: Api<Secret> = Api::namespaced(strict.clone(), "default");
    api.create(&PostParams::default(), &secret("s", "Opaque", json!({})))
        .await
        .unwrap();
    h.reset_counts();
    api.get("s").await.unwrap();
    api.list(&ListParams::default()).await.unwrap();
    let counts = h.counts();
    assert_eq!(
        (
            counts.writes(),
            counts.count("get", "secrets"),
            counts.count_in("list", "secrets", "default")
        ),
        (0, 1, 1)
    );

    // Priority-and-fairness 429: plain text with Retry-After, not a Status.
    h.set_faults(|f| {
        f.rules.push(ErrorRule::new(
            Some("get"),
            Some("secrets"),
            InjectedError::TooManyRequests { retry_after: 1 },
            Some(1),
        ))
    });
    let (code, headers, body) = raw(
        &strict,
        "GET",
        "/api/v1/namespaces/default/secrets/s",
        "",
        "",
    )
    .await;
    assert_eq!(
        (code, body.as_str()),
        (429, "Too many requests, please try again later.\n")
    );
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert!(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/plain"))
    );
    // kube's default retry honours it: one 429, then success.
    h.set_faults(|f| {
        f.rules = vec![ErrorRule::new(
            Some("get"),
            None,
            InjectedError::TooManyRequests { retry_after: 1 },
            Some(1),
        )]
    });
    h.reset_counts();
    let retrying: Api<Secret> = Api::namespaced(c.clone(), "default");
    retrying.get("s").await.unwrap();
    assert_eq!(h.counts().count("get", "secrets"), 2);

    h.set_faults(|f| {
        f.rules = vec![
            ErrorRule::new(Some("update"), None, InjectedError::Internal, Some(1)),
            ErrorRule::new(Some("delete"), None, InjectedError::Unavailable, Some(1)),
        ];
    });
    let s = api.get("s").await.unwrap();
    let e = api_err(api.replace("s", &PostParams::default(), &s).await);
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    let e = api_err(api.delete("s", &DeleteParams::default()).await);
    assert_eq!((e.code, e.reason.as_str()), (503, "ServiceUnavailable"));

    // Forced conflicts on the next two writes.
    h.force_conflicts(2);
    assert_eq!(
        api_err(api.replace("s", &PostParams::default(), &s).await).code,
        409
    );
    assert_eq!(
        api_err(
            api.patch("s", &PatchParams::default(), &Patch::Merge(json!({})))
                .await
        )
        .code,
        409
    );
    api.replace("s", &PostParams::default(), &s).await.unwrap();

    // Latency.
    h.set_faults(|f| f.latency = Duration::from_millis(150));
    let t = Instant::now();
    api.get("s").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));
    h.set_faults(|f| f.latency = Duration::ZERO);

    // Watch drop after N events: the stream ends by itself.
    h.set_faults(|f| f.watch_drop_after_events = Some(2));
    let stream = api.watch(&WatchParams::default(), "0").await.unwrap();
    api.create(&PostParams::default(), &secret("t", "Opaque", json!({})))
        .await
        .unwrap();
    let events: Vec<_> = tokio::time::timeout(Duration::from_secs(5), stream.collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(events.len(), 2);

    // ... or after a while.
    h.set_faults(|f| {
        f.watch_drop_after_events = None;
        f.watch_drop_after = Some(Duration::from_millis(300));
    });
    let t = Instant::now();
    let stream = api.watch(&WatchParams::default(), "0").await.unwrap();
    let events: Vec<_> = tokio::time::timeout(Duration::from_secs(5), stream.collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(events.len(), 2, "the current state, then the stream ends");
}

#[tokio::test]
async fn token_review_over_https() {
    let mut user = UserInfo::service_account("vault", "reviewer");
    user.uid = "11111111-2222-3333-4444-555555555555".into();
    let (h, c) = start(Options::default().tls().identity("reviewer-jwt", user)).await;
    assert!(h.url().starts_with("https://127.0.0.1:"));
    assert!(
        h.ca_pem()
            .is_some_and(|p| p.starts_with("-----BEGIN CERTIFICATE-----"))
    );
    let review = |token: &str, aud: Value| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token, "audiences": aud}})
            .to_string()
    };
    let (code, _, body) = raw(
        &c,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        "application/json",
        &review("reviewer-jwt", json!([])),
    )
    .await;
    assert_eq!(code, 201);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kind"], "TokenReview");
    assert_eq!(v["status"]["authenticated"], true);
    assert_eq!(
        v["status"]["user"]["username"],
        "system:serviceaccount:vault:reviewer"
    );
    assert_eq!(
        v["status"]["user"]["uid"],
        "11111111-2222-3333-4444-555555555555"
    );
    assert_eq!(
        v["status"]["user"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:vault",
            "system:authenticated"
        ])
    );
    assert!(v["status"]["user"]["extra"]["authentication.kubernetes.io/pod-name"].is_array());
    assert_eq!(
        v["status"]["user"]["username"]
            .as_str()
            .unwrap()
            .split(':')
            .count(),
        4
    );

    let (code, _, body) = raw(
        &c,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        "application/json",
        &review("bogus", json!(["vault"])),
    )
    .await;
    assert_eq!(code, 201);
    let v: Value = serde_json::from_str(&body).unwrap();
    // `status` is an object, so Vault's attempt to read the body as a metav1.Status fails.
    assert!(v["status"].is_object());
    assert!(v["status"].get("authenticated").is_none());
    assert!(!v["status"]["error"].as_str().unwrap_or("").is_empty());

    // The reviewer's token itself authenticates API calls; a wrong one gets 401.
    let mut cfg = h.kube_config();
    cfg.auth_info.token = Some("reviewer-jwt".to_string().into());
    let as_reviewer = Client::try_from(cfg).unwrap();
    assert!(
        Api::<Secret>::namespaced(as_reviewer, "default")
            .list(&ListParams::default())
            .await
            .is_ok()
    );
    let mut cfg = h.kube_config();
    cfg.auth_info.token = Some("wrong".to_string().into());
    let e = api_err(
        Api::<Secret>::namespaced(Client::try_from(cfg).unwrap(), "default")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (401, "Unauthorized"));
}

#[tokio::test]
async fn selectors_and_pagination() {
    let (h, c) = start(Options::default()).await;
    let api: Api<Secret> = Api::namespaced(c.clone(), "default");
    for (name, ty, app) in [
        ("a", "kubernetes.io/dockerconfigjson", "web"),
        ("b", "Opaque", "web"),
        ("c", "kubernetes.io/dockerconfigjson", "db"),
    ] {
        let mut s = secret(
            name,
            ty,
            if ty == "Opaque" {
                json!({})
            } else {
                json!({".dockerconfigjson": b64("{}")})
            },
        );
        s.metadata.labels = Some([("app".to_string(), app.to_string())].into());
        api.create(&PostParams::default(), &s).await.unwrap();
    }
    let names = |l: kube::core::ObjectList<Secret>| {
        l.items
            .into_iter()
            .map(|s| s.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    let lp = ListParams::default()
        .labels("app in (web)")
        .fields("type=kubernetes.io/dockerconfigjson");
    assert_eq!(names(api.list(&lp).await.unwrap()), ["a"]);
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app!=web"))
                .await
                .unwrap()
        ),
        ["c"]
    );
    let e = api_err(api.list(&ListParams::default().fields("spec.nope=1")).await);
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "field label not supported: spec.nope")
    );
    let e = api_err(api.list(&ListParams::default().labels("app in web")).await);
    assert_eq!(e.code, 400);
    let page1 = api.list(&ListParams::default().limit(2)).await.unwrap();
    let token = page1.metadata.continue_.clone().unwrap();
    assert_eq!(names(page1), ["a", "b"]);
    let page2 = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert!(page2.metadata.continue_.as_deref().unwrap_or("").is_empty());
    assert_eq!(names(page2), ["c"]);
    // An expired continue token: 410.
    h.compact();
    api.create(&PostParams::default(), &secret("d", "Opaque", json!({})))
        .await
        .unwrap();
    h.compact();
    let e = api_err(
        api.list(&ListParams::default().limit(2).continue_token(&token))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn garbage_collection_leases_and_initial_events() {
    let (h, c) = start(Options::default().openshift()).await;
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "default");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "bot"}})).unwrap(),
    )
    .await
    .unwrap();
    let sa = sas.get("bot").await.unwrap();
    let managed = sa.metadata.annotations.unwrap()[kube_sim::PULL_SECRET_REF].clone();
    assert!(h.get("", "secrets", "default", &managed).is_some());
    // The managed secret is owned by the SA: the garbage collector removes it with the SA.
    sas.delete("bot", &DeleteParams::default()).await.unwrap();
    assert!(h.get("", "secrets", "default", &managed).is_none());

    use k8s_openapi::api::coordination::v1::Lease;
    let leases: Api<Lease> = Api::namespaced(c.clone(), "default");
    let l: Lease = serde_json::from_value(json!({"metadata": {"name": "pullsecretd"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}))
    .unwrap();
    let l = leases.create(&PostParams::default(), &l).await.unwrap();
    let mut mine = l.clone();
    mine.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("pullsecretd", &PostParams::default(), &mine)
        .await
        .unwrap();
    let e = api_err(
        leases
            .replace("pullsecretd", &PostParams::default(), &l)
            .await,
    );
    assert_eq!(
        e.message,
        "Operation cannot be fulfilled on leases.coordination.k8s.io \"pullsecretd\": the object has been modified; please apply your changes to the latest version and try again"
    );

    // sendInitialEvents: current state as ADDED, then a bookmark marking the end of it.
    let (code, _, body) = raw(
        &c,
        "GET",
        "/api/v1/namespaces/default/serviceaccounts?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1",
        "",
        "",
    )
    .await;
    assert_eq!(code, 200);
    let events: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        &kinds[..4],
        ["ADDED", "ADDED", "ADDED", "BOOKMARK"],
        "{body}"
    );
    assert_eq!(
        events[3]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(events[3]["object"]["kind"], "ServiceAccount");
}

#[tokio::test]
async fn malformed_requests_get_status_replies() {
    let (_h, c) = start(Options::default()).await;
    let cases: &[(&str, &str, &str, &str, u16)] = &[
        (
            "POST",
            "/api/v1/namespaces/default/secrets",
            "application/json",
            "",
            400,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/secrets",
            "application/json",
            "\"str\"",
            400,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/secrets",
            "application/json",
            r#"{"kind":"ConfigMap"}"#,
            400,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/secrets",
            "application/json",
            r#"{"metadata":{"name":"x"},"data":{"a":"!!"}}"#,
            400,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/secrets",
            "application/json",
            r#"{"metadata":{}}"#,
            422,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/secrets",
            "application/vnd.kubernetes.protobuf",
            "k8s\0\u{1}",
            415,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/serviceaccounts/default",
            "application/json-patch+json",
            "{}",
            400,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/serviceaccounts/default",
            "application/merge-patch+json",
            "[]",
            400,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/serviceaccounts/default",
            "application/strategic-merge-patch+json",
            r#"{"secrets":[{"nokey":1}]}"#,
            400,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/serviceaccounts/default",
            "text/plain",
            "{}",
            415,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/serviceaccounts/default?fieldManager=m",
            "application/apply-patch+yaml",
            "a: [",
            400,
        ),
        (
            "PUT",
            "/api/v1/namespaces/default/serviceaccounts/default",
            "application/json",
            r#"{"metadata":{"name":"other"}}"#,
            400,
        ),
        (
            "GET",
            "/api/v1/namespaces/default/secrets?labelSelector=a%20in%20b",
            "",
            "",
            400,
        ),
        (
            "GET",
            "/api/v1/namespaces/default/secrets?watch=1&resourceVersion=abc",
            "",
            "",
            400,
        ),
        ("GET", "/api/v1/namespaces/default/nothings", "", "", 404),
        ("GET", "/apis/nope.io/v1", "", "", 404),
        (
            "GET",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            "",
            "",
            405,
        ),
        (
            "DELETE",
            "/api/v1/namespaces/default/secrets/x",
            "application/json",
            "{bad",
            400,
        ),
    ];
    for (method, path, ct, body, want) in cases {
        let (code, _, text) = raw(&c, method, path, ct, body).await;
        assert_eq!(code, *want, "{method} {path} {body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(v["kind"], "Status", "{method} {path}: {text}");
        assert_eq!(v["code"], *want, "{method} {path}: {text}");
    }
}

#[tokio::test]
async fn discovery_finds_openshift_and_survives_a_failing_group() {
    let (h, c) = start(Options::default().openshift()).await;
    let groups = c.list_api_groups().await.unwrap();
    let names: Vec<&str> = groups.groups.iter().map(|g| g.name.as_str()).collect();
    assert!(
        names.contains(&"project.openshift.io") && names.contains(&"image.openshift.io"),
        "{names:?}"
    );
    let (_p, plain) = start(Options::default()).await;
    let plain_groups = plain.list_api_groups().await.unwrap();
    assert!(
        plain_groups
            .groups
            .iter()
            .all(|g| !g.name.ends_with("openshift.io"))
    );

    h.set_faults(|f| f.failing_groups = vec!["image.openshift.io".into()]);
    let strict = no_retry(&h);
    let e = api_err(
        strict
            .list_api_group_resources("image.openshift.io/v1")
            .await,
    );
    assert_eq!(e.code, 503);
    // The group list itself still answers, as with an aggregated API that is down.
    assert!(
        c.list_api_groups()
            .await
            .unwrap()
            .groups
            .iter()
            .any(|g| g.name == "image.openshift.io")
    );
    let core = c.list_core_api_resources("v1").await.unwrap();
    assert!(
        core.resources
            .iter()
            .any(|r| r.name == "secrets" && r.namespaced)
    );
}

#[tokio::test]
async fn runtime_watcher_with_streaming_lists() {
    let (h, c) = start(Options::default()).await;
    let api: Api<Secret> = Api::namespaced(c.clone(), "default");
    api.create(
        &PostParams::default(),
        &secret("before", "Opaque", json!({})),
    )
    .await
    .unwrap();
    let cfg = kube::runtime::watcher::Config::default().streaming_lists();
    let stream = kube::runtime::watcher(api.clone(), cfg);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(
                    kube::runtime::watcher::Event::InitApply(s)
                    | kube::runtime::watcher::Event::Apply(s),
                ) => {
                    let _ = tx.send(s.metadata.name.unwrap_or_default());
                }
                Ok(kube::runtime::watcher::Event::InitDone) => {
                    let _ = tx.send("<init-done>".to_string());
                }
                _ => {}
            }
        }
    });
    assert!(wait_for(&mut rx, "before").await);
    assert!(wait_for(&mut rx, "<init-done>").await);
    api.create(
        &PostParams::default(),
        &secret("after", "Opaque", json!({})),
    )
    .await
    .unwrap();
    assert!(wait_for(&mut rx, "after").await);
    // No list request: the initial state came through the watch.
    assert_eq!(h.counts().count("list", "secrets"), 0);
    task.abort();
}

#[tokio::test]
async fn recorder_events_are_v1_events_too() {
    use kube::runtime::events::{Event as RecEvent, EventType, Recorder, Reporter};
    let (h, c) = start(Options::default()).await;
    let recorder = Recorder::new(
        c.clone(),
        Reporter {
            controller: "pullsecretd".into(),
            instance: None,
        },
    );
    let sa = Api::<ServiceAccount>::namespaced(c.clone(), "default")
        .get("default")
        .await
        .unwrap();
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ServiceAccount".into()),
        name: sa.metadata.name.clone(),
        namespace: Some("default".into()),
        uid: sa.metadata.uid.clone(),
        ..Default::default()
    };
    let ev = RecEvent {
        type_: EventType::Normal,
        reason: "Linked".into(),
        note: Some("linked reg".into()),
        action: "Link".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    // One storage: the v1 API shows the same Event with v1 field names.
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(c.clone(), "default");
    let list = core.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let e = &list.items[0];
    assert_eq!(e.message.as_deref(), Some("linked reg"));
    assert_eq!(e.involved_object.name.as_deref(), Some("default"));
    assert_eq!(e.reporting_component.as_deref(), Some("pullsecretd"));
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(Some(2)));
    let new: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c.clone(), "default");
    let got = new.get(e.metadata.name.as_deref().unwrap()).await.unwrap();
    assert_eq!(got.note.as_deref(), Some("linked reg"));
    assert_eq!(
        got.regarding.and_then(|r| r.name).as_deref(),
        Some("default")
    );
    assert!(h.counts().count("patch", "events") >= 1);
}
