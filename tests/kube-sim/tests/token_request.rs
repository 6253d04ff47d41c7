//! TokenRequest (`serviceaccounts/NAME/token`) driven by the real `kubectl create token` (on
//! PATH, or these tests fail): the tokens kube-sim signs are JWTs with the apiserver's claims,
//! its TokenReview and bearer authentication accept them for their audiences only and only while
//! the account and bound pod live, and the refusals are the apiserver's Status texts. Each test
//! starts its own HTTPS server (kubectl sends tokens over TLS only).

#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use kube_sim::{Handle, Options, Server};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

struct Cluster {
    handle: Handle,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start(rbac: bool) -> Self {
        let mut opts = Options::default().tls();
        opts.rbac = rbac;
        let handle = Server::start_in_thread(opts).expect("server starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Self { handle, dir };
        std::fs::write(c.kubeconfig("admin"), c.handle.kubeconfig_yaml()).unwrap();
        c
    }

    fn kubeconfig(&self, who: &str) -> PathBuf {
        self.dir.path().join(format!("{who}.kubeconfig"))
    }

    /// A kubeconfig that authenticates with `token` (namespace `default`).
    fn login(&self, who: &str, token: &str) {
        let yaml = self.handle.kubeconfig_yaml_for(token, "default");
        std::fs::write(self.kubeconfig(who), yaml).unwrap();
    }

    fn run(&self, who: &str, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .arg("--kubeconfig")
            .arg(self.kubeconfig(who))
            .arg("--cache-dir")
            .arg(self.dir.path().join(format!("cache-{who}")))
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("kubectl must be installed and on PATH")
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_as("admin", args)
    }

    fn ok_as(&self, who: &str, args: &[&str]) -> String {
        let out = self.run(who, args);
        assert!(
            out.status.success(),
            "kubectl {args:?} as {who} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn fails(&self, who: &str, args: &[&str]) -> String {
        let out = self.run(who, args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} as {who} unexpectedly succeeded"
        );
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    }

    /// `kubectl create -f` of a TokenReview; its `status`.
    fn review(&self, token: &str, audiences: &[&str]) -> Value {
        let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token, "audiences": audiences}});
        let f = self.dir.path().join("review.json");
        std::fs::write(&f, body.to_string()).unwrap();
        let out = self.ok(&["create", "-f", f.to_str().unwrap(), "-o", "json"]);
        serde_json::from_str::<Value>(&out).unwrap()["status"].clone()
    }

    fn uid(&self, resource: &str, name: &str) -> String {
        self.handle.get("", resource, "default", name).unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// The JWT's payload.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn kubectl_create_token_issues_a_jwt_that_token_review_accepts_for_its_audience_only() {
    let c = Cluster::start(false);
    let token = c.ok(&[
        "create",
        "token",
        "default",
        "--audience=vault",
        "--duration=20m",
    ]);
    let sa_uid = c.uid("serviceaccounts", "default");
    let cl = claims(&token);
    assert_eq!(cl["sub"], "system:serviceaccount:default:default");
    assert_eq!(cl["aud"], json!(["vault"]));
    assert_eq!(cl["iss"], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(
        cl["exp"].as_u64().unwrap() - cl["iat"].as_u64().unwrap(),
        1200
    );
    assert_eq!(
        cl["kubernetes.io"],
        json!({"namespace": "default", "serviceaccount": {"name": "default", "uid": sa_uid}})
    );

    let status = c.review(&token, &["vault", "other"]);
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(status["audiences"], json!(["vault"]));
    assert_eq!(
        status["user"]["username"],
        "system:serviceaccount:default:default"
    );
    assert_eq!(status["user"]["uid"], json!(sa_uid));
    assert_eq!(
        status["user"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ])
    );
    assert_eq!(
        status["user"]["extra"]["authentication.kubernetes.io/credential-id"],
        json!([format!("JTI={}", cl["jti"].as_str().unwrap())])
    );

    // No audience asked: the API's own, which a `vault` token lacks.
    let status = c.review(&token, &[]);
    assert_eq!(status.get("authenticated"), None, "{status}");
    assert_eq!(
        status["error"],
        "[invalid bearer token, token audiences [\"vault\"] is invalid for the target audiences [\"https://kubernetes.default.svc.cluster.local\"]]"
    );
    // Nor does the API server take it as a bearer token.
    c.login("vault-token", &token);
    let err = c.fails("vault-token", &["get", "serviceaccounts"]);
    assert!(err.contains("You must be logged in to the server"), "{err}");

    // A token for the API audience (the default) is a login; deleting the account ends it.
    let api_token = c.ok(&["create", "token", "default"]);
    assert_eq!(
        claims(&api_token)["aud"],
        json!(["https://kubernetes.default.svc.cluster.local"])
    );
    c.login("sa", &api_token);
    assert!(
        c.ok_as("sa", &["get", "serviceaccounts"])
            .contains("default")
    );
    c.ok(&["delete", "serviceaccount", "default"]);
    let err = c.fails("sa", &["get", "serviceaccounts"]);
    assert!(err.contains("You must be logged in to the server"), "{err}");
    let status = c.review(&api_token, &[]);
    assert_eq!(
        status["error"],
        "[invalid bearer token, serviceaccounts \"default\" not found]"
    );
}

#[test]
fn a_pod_bound_token_names_the_pod_and_dies_with_it() {
    let c = Cluster::start(false);
    c.ok(&["run", "app", "--image=127.0.0.1:5000/team/app:v1"]);
    let pod_uid = c.uid("pods", "app");
    let token = c.ok(&[
        "create",
        "token",
        "default",
        "--audience=registry",
        "--bound-object-kind=Pod",
        "--bound-object-name=app",
        &format!("--bound-object-uid={pod_uid}"),
    ]);
    assert_eq!(
        claims(&token)["kubernetes.io"]["pod"],
        json!({"name": "app", "uid": pod_uid})
    );
    let status = c.review(&token, &["registry"]);
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(
        status["user"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["app"])
    );
    assert_eq!(
        status["user"]["extra"]["authentication.kubernetes.io/pod-uid"],
        json!([pod_uid])
    );

    // Without a kubelet nothing holds the pod: deletion removes it, and the token with it.
    c.ok(&["delete", "pod", "app"]);
    let status = c.review(&token, &["registry"]);
    assert_eq!(
        status["error"],
        "[invalid bearer token, service account token has been invalidated]"
    );
}

#[test]
fn token_requests_are_refused_with_the_apiserver_s_texts() {
    let c = Cluster::start(false);
    c.ok(&["create", "serviceaccount", "other"]);
    c.ok(&["run", "app", "--image=127.0.0.1:5000/team/app:v1"]);
    let err = c.fails("admin", &["create", "token", "default", "--duration=1m"]);
    assert_eq!(
        err,
        "error: failed to create token: TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"
    );
    let err = c.fails("admin", &["create", "token", "nosuch"]);
    assert_eq!(
        err,
        "error: failed to create token: serviceaccounts \"nosuch\" not found"
    );
    let bound = |sa: &str, name: &str, uid: Option<&str>| {
        let mut args = vec![
            "create".to_string(),
            "token".into(),
            sa.into(),
            "--bound-object-kind=Pod".into(),
            format!("--bound-object-name={name}"),
        ];
        if let Some(u) = uid {
            args.push(format!("--bound-object-uid={u}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        c.fails("admin", &args)
    };
    assert_eq!(
        bound("default", "nope", None),
        "error: failed to create token: pods \"nope\" not found"
    );
    assert_eq!(
        bound("other", "app", None),
        "error: failed to create token: cannot bind token for serviceaccount \"other\" to pod running with different serviceaccount name."
    );
    assert_eq!(
        bound("default", "app", Some("0000")),
        "error: failed to create token: Operation cannot be fulfilled on Pod \"app\": the UID in the bound object reference (0000) does not match the UID in record. The object might have been deleted and then recreated"
    );
}

#[test]
fn with_rbac_creating_tokens_takes_create_on_serviceaccounts_token() {
    let c = Cluster::start(true);
    c.ok(&["create", "serviceaccount", "minter"]);
    c.ok(&[
        "create",
        "clusterrole",
        "sa-reader",
        "--verb=get,list",
        "--resource=serviceaccounts",
    ]);
    c.ok(&[
        "create",
        "rolebinding",
        "minter-read",
        "--clusterrole=sa-reader",
        "--serviceaccount=default:minter",
    ]);
    let minter = c.ok(&["create", "token", "minter"]);
    c.login("minter", &minter);
    assert!(
        c.ok_as("minter", &["get", "serviceaccounts"])
            .contains("minter")
    );
    let err = c.fails("minter", &["create", "token", "default"]);
    assert_eq!(
        err,
        "error: failed to create token: serviceaccounts \"default\" is forbidden: User \"system:serviceaccount:default:minter\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"default\""
    );
    c.ok(&[
        "create",
        "role",
        "token-creator",
        "--verb=create",
        "--resource=serviceaccounts/token",
    ]);
    c.ok(&[
        "create",
        "rolebinding",
        "minter-tokens",
        "--role=token-creator",
        "--serviceaccount=default:minter",
    ]);
    let token = c.ok_as(
        "minter",
        &["create", "token", "default", "--audience=vault"],
    );
    assert_eq!(
        claims(&token)["sub"],
        "system:serviceaccount:default:default"
    );
}
