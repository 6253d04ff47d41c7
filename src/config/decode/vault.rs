//! Config stage, schema layer for Vault (pure): the top-level `vault:` block and
//! `from: { vault: … }` sources.
//!
//! Reads no files and no environment. Secrets (tokens, secret IDs) are never accepted inline:
//! a key that looks like one is refused with where the secret belongs instead.

use super::{
    Context, Fields, Problem, Result, decode_duration, decode_path, expect_choice, expect_map,
    expect_string, expected, problem,
};
use crate::config::yaml::{FieldPath, Node};
use crate::config::{
    DEFAULT_VAULT_TIMEOUT, FieldMapping, KvVersion, OptionalField, VaultAuth, VaultConfig,
    VaultLocation, VaultMapping, VaultSource,
};

const VAULT_FIELDS: &[&str] = &[
    "address",
    "caCert",
    "tlsServerName",
    "namespace",
    "timeout",
    "auth",
];
const TOKEN_AUTH_FIELDS: &[&str] = &["method", "file"];
const APPROLE_AUTH_FIELDS: &[&str] = &["method", "roleId", "secretIdFile", "mount"];
const KUBERNETES_AUTH_FIELDS: &[&str] = &["method", "role", "mount", "tokenFile"];
const SOURCE_FIELDS: &[&str] = &[
    "engine",
    "mount",
    "path",
    "kv",
    "version",
    "fields",
    "dockerConfigField",
];
const MAPPING_FIELDS: &[&str] = &["username", "password", "email", "server"];

/// The mount a KV source uses when none is given: the dev server's KV v2 engine.
const DEFAULT_KV_MOUNT: &str = "secret";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Token,
    AppRole,
    Kubernetes,
}

/// The top-level `vault:` block.
pub fn decode_vault(node: &Node, path: &FieldPath, context: &Context) -> Result<VaultConfig> {
    let fields = Fields::read(node, path, VAULT_FIELDS)?;
    let address = decode_address(fields.required("address")?, &path.key("address"))?;
    let ca_cert = match fields.get("caCert") {
        Some(node) => Some(decode_path(node, &path.key("caCert"), context)?),
        None => None,
    };
    let tls_server_name = match fields.get("tlsServerName") {
        Some(node) => Some(decode_host_name(node, &path.key("tlsServerName"))?),
        None => None,
    };
    let namespace = match fields.get("namespace") {
        Some(node) => Some(decode_vault_path(
            node,
            &path.key("namespace"),
            "namespace",
        )?),
        None => None,
    };
    let timeout = match fields.get("timeout") {
        Some(node) => decode_duration(node, &path.key("timeout"))?,
        None => DEFAULT_VAULT_TIMEOUT,
    };
    let auth = decode_auth(fields.required("auth")?, &path.key("auth"), context)?;
    Ok(VaultConfig {
        address,
        ca_cert,
        tls_server_name,
        namespace,
        timeout,
        auth,
    })
}

/// An `http(s)://host[:port]` URL. Credentials, a query or a fragment are refused without
/// echoing the value (a URL with a password in it must not reach the logs).
fn decode_address(node: &Node, path: &FieldPath) -> Result<String> {
    const WANTED: &str = "expected the server's URL, such as https://vault.example.com:8200";
    let text = expect_string(node, path)?;
    let url = reqwest::Url::parse(text).map_err(|_| problem(node.mark, path, WANTED))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(problem(node.mark, path, WANTED));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(problem(
            node.mark,
            path,
            "the URL must not carry credentials; configure auth instead",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || url.path() != "/" {
        return Err(problem(
            node.mark,
            path,
            "expected only scheme, host and port; the API path /v1 is added by pullsecretd",
        ));
    }
    Ok(text.trim_end_matches('/').to_string())
}

fn decode_host_name(node: &Node, path: &FieldPath) -> Result<String> {
    let text = expect_string(node, path)?;
    let valid = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
    if !valid {
        return Err(problem(
            node.mark,
            path,
            "expected a DNS name such as vault.internal",
        ));
    }
    Ok(text.to_string())
}

/// A mount, secret path or namespace: `/`-separated segments, none empty, `.` or `..`, and no
/// characters that would change the request URL.
fn decode_vault_path(node: &Node, path: &FieldPath, what: &str) -> Result<String> {
    let text = expect_string(node, path)?;
    if text.is_empty() {
        return Err(problem(node.mark, path, format!("the {what} is empty")));
    }
    let bad_char = text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '%' | '\\'));
    let bad_segment = text
        .trim_matches('/')
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..");
    if bad_char || bad_segment {
        return Err(problem(
            node.mark,
            path,
            format!(
                "not a valid Vault {what}: use /-separated names without spaces, '?', '#', '%', \
                 '\\', empty, '.' or '..' segments"
            ),
        ));
    }
    Ok(text.trim_matches('/').to_string())
}

fn decode_nonempty(node: &Node, path: &FieldPath, what: &str) -> Result<String> {
    let text = expect_string(node, path)?;
    if text.trim().is_empty() {
        return Err(problem(node.mark, path, format!("the {what} is empty")));
    }
    Ok(text.to_string())
}

// ---------------------------------------------------------------------------------------------
// vault.auth

/// `auth: { method: token | approle | kubernetes, … }`; the fields allowed depend on the method.
fn decode_auth(node: &Node, path: &FieldPath, context: &Context) -> Result<VaultAuth> {
    let entries = expect_map(node, path)?;
    for entry in entries {
        if let Some(key) = entry.key.scalar_text()
            && let Some(message) = inline_secret_message(key)
        {
            return Err(problem(entry.key.mark, &path.key(key), message));
        }
    }
    let method_node = entries
        .iter()
        .find(|entry| entry.key.scalar_text() == Some("method"))
        .map(|entry| &entry.value)
        .filter(|value| !value.is_null())
        .ok_or_else(|| {
            problem(
                node.mark,
                &path.key("method"),
                "required field is missing (token, approle or kubernetes)",
            )
        })?;
    let method = expect_choice(
        method_node,
        &path.key("method"),
        &[
            ("token", Method::Token),
            ("approle", Method::AppRole),
            ("kubernetes", Method::Kubernetes),
        ],
    )?;
    match method {
        Method::Token => decode_token_auth(node, path, context),
        Method::AppRole => decode_approle_auth(node, path, context),
        Method::Kubernetes => decode_kubernetes_auth(node, path, context),
    }
}

/// Keys under which someone might paste a secret, and where the secret belongs instead.
fn inline_secret_message(key: &str) -> Option<&'static str> {
    let folded: String = key
        .chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect();
    match folded.as_str() {
        "secretid" => Some(
            "the AppRole secret ID is never written in the config; put it in a file readable \
             only by pullsecretd and name that file with secretIdFile",
        ),
        "token" | "clienttoken" => Some(
            "a Vault token is never written in the config; pullsecretd reads VAULT_TOKEN, else \
             ~/.vault-token, else the file named by file",
        ),
        "jwt" => Some(
            "the service-account token is never written in the config; name its file with \
             tokenFile",
        ),
        _ => None,
    }
}

fn decode_token_auth(node: &Node, path: &FieldPath, context: &Context) -> Result<VaultAuth> {
    let fields = Fields::read(node, path, TOKEN_AUTH_FIELDS)?;
    let file = match fields.get("file") {
        Some(node) => Some(decode_path(node, &path.key("file"), context)?),
        None => None,
    };
    Ok(VaultAuth::Token { file })
}

fn decode_approle_auth(node: &Node, path: &FieldPath, context: &Context) -> Result<VaultAuth> {
    let fields = Fields::read(node, path, APPROLE_AUTH_FIELDS)?;
    let role_id = decode_nonempty(fields.required("roleId")?, &path.key("roleId"), "role ID")?;
    let secret_id_file = decode_path(
        fields.required("secretIdFile")?,
        &path.key("secretIdFile"),
        context,
    )?;
    let mount = decode_auth_mount(&fields, path, "approle")?;
    Ok(VaultAuth::AppRole {
        role_id,
        secret_id_file,
        mount,
    })
}

fn decode_kubernetes_auth(node: &Node, path: &FieldPath, context: &Context) -> Result<VaultAuth> {
    let fields = Fields::read(node, path, KUBERNETES_AUTH_FIELDS)?;
    let role = decode_nonempty(fields.required("role")?, &path.key("role"), "role")?;
    let mount = decode_auth_mount(&fields, path, "kubernetes")?;
    let token_file = match fields.get("tokenFile") {
        Some(node) => decode_path(node, &path.key("tokenFile"), context)?,
        None => VaultAuth::DEFAULT_KUBERNETES_TOKEN_FILE.into(),
    };
    Ok(VaultAuth::Kubernetes {
        role,
        mount,
        token_file,
    })
}

pub(super) fn decode_auth_mount(
    fields: &Fields<'_>,
    path: &FieldPath,
    default: &str,
) -> Result<String> {
    match fields.get("mount") {
        Some(node) => decode_vault_path(node, &path.key("mount"), "auth mount"),
        None => Ok(default.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// registries.NAME.from.vault

/// `from: { vault: { mount, path, kv, version, fields | dockerConfigField } }`.
pub fn decode_vault_source(node: &Node, path: &FieldPath) -> Result<VaultSource> {
    let fields = Fields::read(node, path, SOURCE_FIELDS)?;
    if is_dynamic(&fields, path)? {
        return decode_dynamic_source(&fields, path);
    }
    let mount = match fields.get("mount") {
        Some(node) => decode_vault_path(node, &path.key("mount"), "mount")?,
        None => DEFAULT_KV_MOUNT.to_string(),
    };
    let secret_path = decode_vault_path(fields.required("path")?, &path.key("path"), "path")?;
    let kv = decode_kv(&fields, path)?;
    let mapping = decode_mapping(&fields, path)?;
    Ok(VaultSource {
        location: VaultLocation {
            mount,
            path: secret_path,
            kv,
        },
        mapping,
    })
}

/// `engine: kv` (the default) or `engine: dynamic`.
fn is_dynamic(fields: &Fields<'_>, path: &FieldPath) -> Result<bool> {
    let Some(node) = fields.get("engine") else {
        return Ok(false);
    };
    expect_choice(
        node,
        &path.key("engine"),
        &[("kv", false), ("dynamic", true)],
    )
}

/// `engine: dynamic`: `path` is the whole API path of a secrets engine that issues a leased
/// secret on each read (`database/creds/app`); KV's mount, engine version and pinned version
/// mean nothing there and are refused rather than ignored.
fn decode_dynamic_source(fields: &Fields<'_>, path: &FieldPath) -> Result<VaultSource> {
    for key in ["mount", "kv", "version"] {
        if let Some(node) = fields.get(key) {
            return Err(problem(
                node.mark,
                &path.key(key),
                format!(
                    "{key} is for KV secrets; with engine: dynamic, path is the whole path \
                     (e.g. database/creds/app)"
                ),
            ));
        }
    }
    let secret_path = decode_vault_path(fields.required("path")?, &path.key("path"), "path")?;
    Ok(VaultSource {
        location: VaultLocation {
            mount: String::new(),
            path: secret_path,
            kv: KvVersion::Dynamic,
        },
        mapping: decode_mapping(fields, path)?,
    })
}

fn decode_kv(fields: &Fields<'_>, path: &FieldPath) -> Result<KvVersion> {
    let engine = match fields.get("kv") {
        Some(node) => {
            decode_small_number(node, &path.key("kv"), "1 or 2").and_then(|n| match n {
                1 | 2 => Ok(n),
                _ => Err(problem(node.mark, &path.key("kv"), "expected 1 or 2")),
            })?
        }
        None => 2,
    };
    let pinned = match fields.get("version") {
        Some(node) if engine == 1 => {
            return Err(problem(
                node.mark,
                &path.key("version"),
                "KV v1 secrets have no versions; pin a version only with kv: 2",
            ));
        }
        Some(node) => Some(decode_small_number(
            node,
            &path.key("version"),
            "a version number (1 or more)",
        )?),
        None => None,
    };
    Ok(if engine == 1 {
        KvVersion::V1
    } else {
        KvVersion::V2 { pinned }
    })
}

/// A whole number of at least 1.
fn decode_small_number(node: &Node, path: &FieldPath, wanted: &str) -> Result<u64> {
    node.scalar_text()
        .and_then(|text| text.parse::<u64>().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| match node.scalar_text() {
            Some(_) => problem(node.mark, path, format!("expected {wanted}")),
            None => expected(node, path, wanted),
        })
}

fn decode_mapping(fields: &Fields<'_>, path: &FieldPath) -> Result<VaultMapping> {
    match (fields.get("fields"), fields.get("dockerConfigField")) {
        (Some(_), Some(second)) => Err(problem(
            second.mark,
            &path.key("dockerConfigField"),
            "give either fields or dockerConfigField, not both",
        )),
        (Some(node), None) => {
            decode_field_mapping(node, &path.key("fields")).map(VaultMapping::Fields)
        }
        (None, Some(node)) => Ok(VaultMapping::DockerConfig {
            field: decode_nonempty(node, &path.key("dockerConfigField"), "field name")?,
        }),
        (None, None) => Ok(VaultMapping::Fields(FieldMapping::default())),
    }
}

fn decode_field_mapping(node: &Node, path: &FieldPath) -> Result<FieldMapping> {
    let fields = Fields::read(node, path, MAPPING_FIELDS)?;
    let name = |key: &str| -> Result<Option<String>, Problem> {
        fields
            .get(key)
            .map(|node| decode_nonempty(node, &path.key(key), "field name"))
            .transpose()
    };
    let defaults = FieldMapping::default();
    let optional = |key: &str, default: OptionalField| -> Result<OptionalField, Problem> {
        Ok(match name(key)? {
            Some(name) => OptionalField {
                name,
                required: true,
            },
            None => default,
        })
    };
    Ok(FieldMapping {
        username: name("username")?.unwrap_or(defaults.username),
        password: name("password")?.unwrap_or(defaults.password),
        email: optional("email", defaults.email)?,
        server: optional("server", defaults.server)?,
    })
}
