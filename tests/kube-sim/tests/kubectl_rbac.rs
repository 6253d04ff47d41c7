//! kube-sim's RBAC escalation check and resourceNames, driven by the real `kubectl` (must be on
//! PATH: these tests fail, never skip, without it). Each test starts its own HTTPS server with
//! RBAC enforced, an admin kubeconfig for setup and one kubeconfig per restricted identity.

#![allow(clippy::unwrap_used)]

use kube_sim::{Handle, Options, Server, UserInfo};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// `%q` of a service account's groups in namespace `team`.
const TEAM_SA_GROUPS: &str =
    r#"["system:serviceaccounts" "system:serviceaccounts:team" "system:authenticated"]"#;

struct Cluster {
    handle: Handle,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// A TLS server with RBAC on, `team`/`other` namespaces and `cluster-admin`.
    fn start(openshift: bool, users: &[(&str, UserInfo)]) -> Self {
        let mut opts = Options::default().tls();
        if openshift {
            opts = opts.openshift();
        }
        for (token, user) in users {
            opts = opts.identity(token, user.clone());
        }
        opts.rbac = true;
        let handle = Server::start_in_thread(opts).expect("server starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Self { handle, dir };
        std::fs::write(c.kubeconfig("admin"), c.handle.kubeconfig_yaml()).unwrap();
        for (token, _) in users {
            let yaml = c.handle.kubeconfig_yaml_for(token, "team");
            std::fs::write(c.kubeconfig(token), yaml).unwrap();
        }
        c.admin(&["create", "namespace", "team"]);
        c.admin(&["create", "namespace", "other"]);
        c.admin(&[
            "create",
            "clusterrole",
            "cluster-admin",
            "--verb=*",
            "--resource=*.*",
        ]);
        c
    }

    fn kubeconfig(&self, who: &str) -> PathBuf {
        self.dir.path().join(format!("{who}.kubeconfig"))
    }

    /// kubectl as `who` (a token given to `start`, or "admin").
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

    fn ok(&self, who: &str, args: &[&str]) -> String {
        let out = self.run(who, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "kubectl {args:?} as {who} failed: {stderr}"
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn admin(&self, args: &[&str]) -> String {
        self.ok("admin", args)
    }

    /// kubectl expected to fail; its stderr.
    fn fails(&self, who: &str, args: &[&str]) -> String {
        let out = self.run(who, args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} as {who} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn assert_contains(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected\n{needle}\nin\n{haystack}"
    );
}

#[test]
fn kubectl_cannot_bind_cluster_admin_with_create_rolebindings_alone() {
    let c = Cluster::start(
        false,
        &[("binder", UserInfo::service_account("team", "binder"))],
    );
    c.admin(&[
        "create",
        "role",
        "binder",
        "-n",
        "team",
        "--verb=create",
        "--resource=rolebindings.rbac.authorization.k8s.io",
    ]);
    c.admin(&[
        "create",
        "rolebinding",
        "binder",
        "-n",
        "team",
        "--role=binder",
        "--serviceaccount=team:binder",
    ]);
    let err = c.fails(
        "binder",
        &[
            "create",
            "rolebinding",
            "grab",
            "--clusterrole=cluster-admin",
            "--serviceaccount=team:binder",
        ],
    );
    assert_contains(
        &err,
        &format!(
            "rolebindings.rbac.authorization.k8s.io \"grab\" is forbidden: user \"system:serviceaccount:team:binder\" (groups={TEAM_SA_GROUPS}) is attempting to grant RBAC permissions not currently held:\n{{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}}"
        ),
    );
    let none = c.run("admin", &["get", "rolebinding", "grab", "-n", "team"]);
    assert!(!none.status.success(), "the refused binding was not stored");
}

#[test]
fn kubectl_binds_system_image_puller_by_resource_name_only() {
    let c = Cluster::start(
        true,
        &[("puller", UserInfo::service_account("team", "puller"))],
    );
    let role = c.dir.path().join("puller.yaml");
    std::fs::write(
        &role,
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: puller}
rules:
  - apiGroups: [rbac.authorization.k8s.io]
    resources: [rolebindings, clusterrolebindings]
    verbs: [list, watch, create, update, delete]
  - apiGroups: [rbac.authorization.k8s.io]
    resources: [clusterroles]
    resourceNames: ["system:image-puller"]
    verbs: [bind]
"#,
    )
    .unwrap();
    c.admin(&["apply", "-f", role.to_str().unwrap()]);
    c.admin(&[
        "create",
        "clusterrolebinding",
        "puller",
        "--clusterrole=puller",
        "--serviceaccount=team:puller",
    ]);
    c.admin(&[
        "create",
        "clusterrole",
        "secret-reader",
        "--verb=get,list",
        "--resource=secrets",
    ]);
    c.ok(
        "puller",
        &[
            "create",
            "rolebinding",
            "system:image-puller",
            "-n",
            "other",
            "--clusterrole=system:image-puller",
            "--serviceaccount=team:default",
        ],
    );
    assert_eq!(
        c.admin(&[
            "get",
            "rolebinding",
            "system:image-puller",
            "-n",
            "other",
            "-o",
            "jsonpath={.roleRef.name}"
        ]),
        "system:image-puller"
    );
    let err = c.fails(
        "puller",
        &[
            "create",
            "rolebinding",
            "reader",
            "-n",
            "other",
            "--clusterrole=secret-reader",
            "--serviceaccount=team:default",
        ],
    );
    assert_contains(
        &err,
        &format!(
            "rolebindings.rbac.authorization.k8s.io \"reader\" is forbidden: user \"system:serviceaccount:team:puller\" (groups={TEAM_SA_GROUPS}) is attempting to grant RBAC permissions not currently held:\n{{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"list\"]}}"
        ),
    );
    let err = c.fails(
        "puller",
        &[
            "create",
            "clusterrolebinding",
            "everyone",
            "--clusterrole=cluster-admin",
            "--group=system:authenticated",
        ],
    );
    assert_contains(
        &err,
        "clusterrolebindings.rbac.authorization.k8s.io \"everyone\" is forbidden: user \"system:serviceaccount:team:puller\"",
    );
    c.ok(
        "puller",
        &[
            "create",
            "clusterrolebinding",
            "pullers",
            "--clusterrole=system:image-puller",
            "--group=system:authenticated",
        ],
    );
    // `auth can-i` asks the same authorizer: bind by name only.
    let can = |args: &[&str]| c.run("puller", args).stdout;
    assert_eq!(
        can(&["auth", "can-i", "bind", "clusterroles/system:image-puller"]),
        b"yes\n"
    );
    assert_eq!(
        can(&["auth", "can-i", "bind", "clusterroles/cluster-admin"]),
        b"no\n"
    );
    assert_eq!(can(&["auth", "can-i", "bind", "clusterroles"]), b"no\n");
}

#[test]
fn kubectl_resource_names_limit_every_verb_to_that_name() {
    let c = Cluster::start(
        false,
        &[("reader", UserInfo::service_account("team", "reader"))],
    );
    c.admin(&[
        "create",
        "role",
        "reader",
        "-n",
        "team",
        "--verb=*",
        "--resource=secrets",
        "--resource-name=reg",
    ]);
    c.admin(&[
        "create",
        "rolebinding",
        "reader",
        "-n",
        "team",
        "--role=reader",
        "--serviceaccount=team:reader",
    ]);
    for name in ["reg", "other"] {
        c.admin(&[
            "create",
            "secret",
            "generic",
            name,
            "-n",
            "team",
            "--from-literal=k=v",
        ]);
    }
    let denied = |verb: &str, what: &str| {
        format!(
            "Error from server (Forbidden): {what} is forbidden: User \"system:serviceaccount:team:reader\" cannot {verb} resource \"secrets\" in API group \"\" in the namespace \"team\""
        )
    };
    assert_eq!(
        c.ok("reader", &["get", "secret", "reg", "-o", "name"]),
        "secret/reg\n"
    );
    assert_contains(
        &c.fails("reader", &["get", "secret", "other"]),
        &denied("get", "secrets \"other\""),
    );
    assert_contains(
        &c.fails("reader", &["get", "secrets"]),
        &denied("list", "secrets"),
    );
    assert_eq!(
        c.ok(
            "reader",
            &[
                "get",
                "secrets",
                "--field-selector=metadata.name=reg",
                "-o",
                "name"
            ]
        ),
        "secret/reg\n"
    );
    assert_contains(
        &c.fails(
            "reader",
            &["get", "secrets", "--field-selector=metadata.name=other"],
        ),
        &denied("list", "secrets \"other\""),
    );
    c.ok("reader", &["label", "secret", "reg", "seen=yes"]);
    // kubectl label reads the object first.
    assert_contains(
        &c.fails("reader", &["label", "secret", "other", "seen=yes"]),
        &denied("get", "secrets \"other\""),
    );
    assert_contains(
        &c.fails(
            "reader",
            &["create", "secret", "generic", "reg2", "--from-literal=k=v"],
        ),
        "secrets is forbidden: User \"system:serviceaccount:team:reader\" cannot create resource \"secrets\"",
    );
    let can = |args: &[&str]| c.run("reader", args).stdout;
    assert_eq!(can(&["auth", "can-i", "get", "secrets/reg"]), b"yes\n");
    assert_eq!(can(&["auth", "can-i", "get", "secrets"]), b"no\n");
    assert_eq!(can(&["auth", "can-i", "create", "secrets"]), b"no\n");
    c.ok("reader", &["delete", "secret", "reg"]);
    assert_contains(
        &c.fails("reader", &["delete", "secret", "other"]),
        &denied("delete", "secrets \"other\""),
    );
}
