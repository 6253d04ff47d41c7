//! The Vault block's transport options against a REAL OpenBao serving HTTPS
//! (tests/it/support/openbao.rs `start_tls`): `caCert` trusts the server, a missing or wrong CA
//! is a clear certificate error, `tlsServerName` verifies the certificate under another name
//! than the address's host, and `namespace` reads from an OpenBao namespace
//! (`X-Vault-Namespace`).

use pullsecretd_testkit::openbao;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde_json::json;

use openbao::{NAMED_HOST, OpenBao, ROOT_TOKEN};
use pullsecretd::config::Config;
use pullsecretd::model::credential::Secret;
use pullsecretd::source::vault::{RetryPolicy, TokenEnvironment};
use pullsecretd::source::{self, Resolved, SourceContext, VaultSession};

const SENTINEL: &str = "SENTINEL-vault-tls-pw-2d8c";

const FAST_RETRY: RetryPolicy = RetryPolicy {
    retries: 1,
    min_delay: Duration::from_millis(20),
    max_delay: Duration::from_millis(50),
};

/// A config reading `secret/registries/reg` through the given `vault:` options.
fn config(address: &str, options: &str) -> Config {
    let text = format!(
        "vault:\n  address: {address}\n  timeout: 5s\n{options}  auth: {{ method: token }}\n\
         registries:\n  reg:\n    server: registry.example.com\n    \
         from: {{ vault: {{ path: registries/reg }} }}\n"
    );
    Config::from_yaml(&text, Path::new("/tmp/vault-tls-test.yaml"))
        .unwrap_or_else(|e| panic!("test config is valid: {e}\n{text}"))
}

/// Reads the config's one registry with the root token.
async fn read(config: &Config) -> Result<Resolved, String> {
    let vault = config.vault.as_ref().expect("vault block");
    let session = VaultSession::with_environment(
        vault,
        TokenEnvironment {
            vault_token: Some(SecretString::from(ROOT_TOKEN.to_string())),
            home: None,
        },
    )
    .map_err(|e| e.to_string())?
    .with_retry(FAST_RETRY);
    let context = SourceContext {
        vault: Some(Arc::new(session)),
        ..SourceContext::default()
    };
    source::resolve(&config.registries["reg"], &context)
        .await
        .map_err(|e| error_chain(&e))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        text.push_str(": ");
        text.push_str(&next.to_string());
        source = next.source();
    }
    text
}

fn password(resolved: &Resolved) -> &str {
    match &resolved.credential.secret {
        Secret::Password(p) => p.expose_secret(),
        Secret::IdentityToken(_) => panic!("expected a password"),
    }
}

fn ca_option(path: &Path) -> String {
    format!("  caCert: {}\n", path.display())
}

#[tokio::test]
async fn https_reads_need_the_ca_and_tls_server_name_checks_the_certificate_under_that_name() {
    let bao = OpenBao::start_tls().await;
    assert!(bao.address.starts_with("https://127.0.0.1:"));
    bao.kv2_put(
        "secret",
        "registries/reg",
        json!({"username": "robot", "password": SENTINEL}),
    )
    .await;
    let dev_ca = bao.ca_cert.clone().expect("TLS server has a CA");

    // caCert: the dev listener's CA → the read works over HTTPS.
    let resolved = read(&config(&bao.address, &ca_option(&dev_ca)))
        .await
        .expect("read over HTTPS with caCert");
    assert_eq!(password(&resolved), SENTINEL);

    // No caCert: the certificate is not trusted, and the error says so (and no value).
    let error = read(&config(&bao.address, ""))
        .await
        .expect_err("an untrusted certificate is refused");
    assert!(
        error
            .contains("TLS certificate was not accepted (invalid peer certificate: UnknownIssuer)")
            && error.contains("check vault.caCert and vault.tlsServerName"),
        "error names the certificate problem and the options: {error}"
    );
    assert!(!error.contains(SENTINEL));

    // The named listener's certificate names only NAMED_HOST: at 127.0.0.1 it fails even with
    // its CA trusted…
    let named = bao.named.as_ref().expect("named listener");
    let error = read(&config(&named.address, &ca_option(&named.ca_cert)))
        .await
        .expect_err("the certificate does not name 127.0.0.1");
    assert!(
        error.contains("TLS certificate was not accepted")
            && error.contains("not valid for name \"127.0.0.1\""),
        "{error}"
    );

    // …and works with tlsServerName: connect to 127.0.0.1, verify as NAMED_HOST.
    let with_name = format!(
        "{}  tlsServerName: {NAMED_HOST}\n",
        ca_option(&named.ca_cert)
    );
    let resolved = read(&config(&named.address, &with_name))
        .await
        .expect("read with tlsServerName");
    assert_eq!(password(&resolved), SENTINEL);

    // tlsServerName is what is verified: a name the certificate lacks fails, though the
    // address alone (dev certificate: 127.0.0.1 and localhost) would have passed.
    let wrong = format!(
        "{}  tlsServerName: not-in-the-cert.test\n",
        ca_option(&dev_ca)
    );
    let error = read(&config(&bao.address, &wrong))
        .await
        .expect_err("the dev certificate does not name not-in-the-cert.test");
    assert!(
        error.contains("not valid for name \"not-in-the-cert.test\""),
        "{error}"
    );
    let right = format!("{}  tlsServerName: localhost\n", ca_option(&dev_ca));
    let resolved = read(&config(&bao.address, &right))
        .await
        .expect("the dev certificate names localhost");
    assert_eq!(password(&resolved), SENTINEL);
}

#[tokio::test]
async fn the_namespace_option_reads_from_that_openbao_namespace() {
    let bao = OpenBao::start_tls().await;
    let ca = ca_option(bao.ca_cert.as_deref().expect("CA"));
    // The same path in the root namespace and in team-a, with different passwords.
    bao.kv2_put(
        "secret",
        "registries/reg",
        json!({"username": "robot", "password": "root-namespace-pw"}),
    )
    .await;
    bao.api("POST", "sys/namespaces/team-a", None).await;
    bao.api_in_namespace(
        "team-a",
        "POST",
        "sys/mounts/secret",
        Some(json!({"type": "kv", "options": {"version": "2"}})),
    )
    .await;
    bao.api_in_namespace(
        "team-a",
        "POST",
        "secret/data/registries/reg",
        Some(json!({"data": {"username": "team-robot", "password": SENTINEL}})),
    )
    .await;

    let resolved = read(&config(&bao.address, &format!("{ca}  namespace: team-a\n")))
        .await
        .expect("read in namespace team-a");
    assert_eq!(password(&resolved), SENTINEL);
    assert_eq!(resolved.credential.username, "team-robot");

    let resolved = read(&config(&bao.address, &ca))
        .await
        .expect("read in the root namespace");
    assert_eq!(password(&resolved), "root-namespace-pw");

    // A namespace that does not exist: the login in it is answered 404.
    let error = read(&config(&bao.address, &format!("{ca}  namespace: team-b\n")))
        .await
        .expect_err("no such namespace");
    assert!(
        error.contains("Vault login") && error.contains("404"),
        "{error}"
    );
    assert!(!error.contains(SENTINEL));
}
