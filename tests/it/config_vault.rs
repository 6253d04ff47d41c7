//! The `vault:` block and `from: { vault: … }` sources: typed config out, or a
//! `file:line:column: path: message` error naming the field, never a secret. Pure: reads no
//! Vault and sets no environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pullsecretd::config::{
    Config, DEFAULT_VAULT_TIMEOUT, FieldMapping, KvVersion, OptionalField, SourceConfig, VaultAuth,
    VaultConfig, VaultLocation, VaultMapping, VaultSource,
};

fn load(text: &str) -> Config {
    Config::from_yaml(text, Path::new("/etc/pullsecretd/x.yaml"))
        .unwrap_or_else(|e| panic!("expected a valid config, got {e}"))
}

fn error_for(text: &str) -> String {
    match Config::from_yaml(text, Path::new("config/x.yaml")) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(error) => error.to_string(),
    }
}

const TOKEN_VAULT: &str = "vault:\n  address: http://127.0.0.1:8200\n  auth: { method: token }\n";

fn with_registry(from: &str) -> String {
    format!("{TOKEN_VAULT}registries:\n  r:\n    server: quay.io\n    from: {from}\n")
}

fn source_of(config: &Config) -> &VaultSource {
    match &config.registries["r"].from {
        SourceConfig::Vault(source) => source,
        other => panic!("expected a Vault source, got {other:?}"),
    }
}

#[test]
fn full_vault_block_decodes() {
    let config = load(
        "vault:\n  address: https://vault.example.com:8200/\n  caCert: ca.pem\n  \
         tlsServerName: vault.internal\n  namespace: team-a\n  timeout: 3s\n  auth:\n    \
         method: approle\n    roleId: 1b2c-role\n    secretIdFile: /run/secrets/secret-id\n",
    );
    assert_eq!(
        config.vault,
        Some(VaultConfig {
            address: "https://vault.example.com:8200".into(),
            ca_cert: Some(PathBuf::from("/etc/pullsecretd/ca.pem")),
            tls_server_name: Some("vault.internal".into()),
            namespace: Some("team-a".into()),
            timeout: Duration::from_secs(3),
            auth: VaultAuth::AppRole {
                role_id: "1b2c-role".into(),
                secret_id_file: PathBuf::from("/run/secrets/secret-id"),
                mount: "approle".into(),
            },
        })
    );
}

#[test]
fn auth_methods_and_their_defaults() {
    let config = load(TOKEN_VAULT);
    let vault = config.vault.expect("vault block");
    assert_eq!(vault.auth, VaultAuth::Token { file: None });
    assert_eq!(vault.timeout, DEFAULT_VAULT_TIMEOUT);

    let config = load("vault:\n  address: http://v:8200\n  auth: { method: token, file: t }\n");
    assert_eq!(
        config.vault.expect("vault").auth,
        VaultAuth::Token {
            file: Some(PathBuf::from("/etc/pullsecretd/t"))
        }
    );

    let config =
        load("vault:\n  address: http://v:8200\n  auth: { method: kubernetes, role: psd }\n");
    assert_eq!(
        config.vault.expect("vault").auth,
        VaultAuth::Kubernetes {
            role: "psd".into(),
            mount: "kubernetes".into(),
            token_file: PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        }
    );

    let config = load(
        "vault:\n  address: http://v:8200\n  auth: { method: kubernetes, role: psd, mount: \
         k8s/prod, tokenFile: /t }\n",
    );
    assert_eq!(
        config.vault.expect("vault").auth,
        VaultAuth::Kubernetes {
            role: "psd".into(),
            mount: "k8s/prod".into(),
            token_file: PathBuf::from("/t"),
        }
    );
}

#[test]
fn vault_sources_decode_with_defaults_and_mappings() {
    let config = load(&with_registry("{ vault: { path: registries/private } }"));
    assert_eq!(
        source_of(&config),
        &VaultSource {
            location: VaultLocation {
                mount: "secret".into(),
                path: "registries/private".into(),
                kv: KvVersion::V2 { pinned: None },
            },
            mapping: VaultMapping::Fields(FieldMapping::default()),
        }
    );

    let config = load(&with_registry(
        "{ vault: { mount: kv, path: a/b, kv: 1, fields: { username: user, email: mail } } }",
    ));
    let source = source_of(&config);
    assert_eq!(source.location.kv, KvVersion::V1);
    assert_eq!(
        source.mapping,
        VaultMapping::Fields(FieldMapping {
            username: "user".into(),
            password: "password".into(),
            email: OptionalField {
                name: "mail".into(),
                required: true
            },
            server: OptionalField {
                name: "server".into(),
                required: false
            },
        })
    );

    let config = load(&with_registry("{ vault: { path: a, version: 3 } }"));
    assert_eq!(
        source_of(&config).location.kv,
        KvVersion::V2 { pinned: Some(3) }
    );

    let config = load(&with_registry(
        "{ vault: { path: a, dockerConfigField: .dockerconfigjson } }",
    ));
    assert_eq!(
        source_of(&config).mapping,
        VaultMapping::DockerConfig {
            field: ".dockerconfigjson".into()
        }
    );
}

#[test]
fn vault_errors_name_line_column_and_field() {
    let cases: Vec<(String, &str)> = vec![
        (
            "registries:\n  r:\n    server: quay.io\n    from: { vault: { path: x } }\n".into(),
            "config/x.yaml:4:20: registries.r.from.vault: a Vault source needs a top-level \
             vault: block (address and auth)",
        ),
        (
            "vault:\n  auth: { method: token }\n".into(),
            "config/x.yaml:2:3: vault.address: required field is missing",
        ),
        (
            "vault:\n  address: vault.example.com\n  auth: { method: token }\n".into(),
            "config/x.yaml:2:12: vault.address: expected the server's URL, such as \
             https://vault.example.com:8200",
        ),
        (
            "vault:\n  address: https://u:SENTINEL@v:8200\n  auth: { method: token }\n".into(),
            "config/x.yaml:2:12: vault.address: the URL must not carry credentials; configure \
             auth instead",
        ),
        (
            "vault:\n  address: http://v\n  auth: { method: ldap }\n".into(),
            "config/x.yaml:3:19: vault.auth.method: expected one of token, approle, kubernetes",
        ),
        (
            "vault:\n  address: http://v\n  auth: { role: x }\n".into(),
            "config/x.yaml:3:9: vault.auth.method: required field is missing (token, approle \
             or kubernetes)",
        ),
        (
            "vault:\n  address: http://v\n  auth:\n    method: approle\n    roleId: r\n    \
             secretId: SENTINEL-secret-id\n"
                .into(),
            "config/x.yaml:6:5: vault.auth.secretId: the AppRole secret ID is never written in \
             the config; put it in a file readable only by pullsecretd and name that file with \
             secretIdFile",
        ),
        (
            "vault:\n  address: http://v\n  auth: { method: token, token: SENTINEL }\n".into(),
            "config/x.yaml:3:26: vault.auth.token: a Vault token is never written in the \
             config; pullsecretd reads VAULT_TOKEN, else ~/.vault-token, else the file named \
             by file",
        ),
        (
            "vault:\n  address: http://v\n  auth: { method: approle, roleId: r }\n".into(),
            "config/x.yaml:3:9: vault.auth.secretIdFile: required field is missing",
        ),
        (
            "vault:\n  address: http://v\n  auth: { method: token, role: r }\n".into(),
            "config/x.yaml:3:26: vault.auth.role: unknown field (expected one of: method, file)",
        ),
        (
            "vault:\n  address: http://v\n  auth: { method: kubernetes }\n".into(),
            "config/x.yaml:3:9: vault.auth.role: required field is missing",
        ),
        (
            "vault:\n  address: http://v\n  timeout: 0s\n  auth: { method: token }\n".into(),
            "config/x.yaml:3:12: vault.timeout: must be longer than zero",
        ),
        (
            with_registry("{ vault: { mount: secret } }"),
            "config/x.yaml:7:20: registries.r.from.vault.path: required field is missing",
        ),
        (
            with_registry("{ vault: { path: a/../b } }"),
            "config/x.yaml:7:28: registries.r.from.vault.path: not a valid Vault path: use \
             /-separated names without spaces, '?', '#', '%', '\\', empty, '.' or '..' segments",
        ),
        (
            with_registry("{ vault: { path: a, kv: 3 } }"),
            "config/x.yaml:7:35: registries.r.from.vault.kv: expected 1 or 2",
        ),
        (
            with_registry("{ vault: { path: a, kv: 1, version: 2 } }"),
            "config/x.yaml:7:47: registries.r.from.vault.version: KV v1 secrets have no \
             versions; pin a version only with kv: 2",
        ),
        (
            with_registry("{ vault: { path: a, version: 0 } }"),
            "config/x.yaml:7:40: registries.r.from.vault.version: expected a version number \
             (1 or more)",
        ),
        (
            with_registry("{ vault: { path: a, fields: {}, dockerConfigField: x } }"),
            "config/x.yaml:7:62: registries.r.from.vault.dockerConfigField: give either fields \
             or dockerConfigField, not both",
        ),
        (
            with_registry("{ vault: { path: a, fields: { user: u } } }"),
            "config/x.yaml:7:41: registries.r.from.vault.fields.user: unknown field (expected \
             one of: username, password, email, server)",
        ),
        (
            with_registry("{ vault: { path: a, fields: { password: '' } } }"),
            "config/x.yaml:7:51: registries.r.from.vault.fields.password: the field name is \
             empty",
        ),
    ];
    let mut mismatches = Vec::new();
    for (text, want) in cases {
        let got = error_for(&text);
        assert!(!got.contains("SENTINEL"), "{got}");
        if got != want {
            mismatches.push(format!("config:\n{text}\n  want: {want}\n  got:  {got}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn shipped_vault_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/vault.yaml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.vault.is_some());
    assert!(
        config
            .registries
            .values()
            .any(|r| matches!(r.from, SourceConfig::Vault(_)))
    );
}
