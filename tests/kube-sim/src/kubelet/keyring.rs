//! The kubelet's docker keyrings: one built from a pod's pull secrets and one from what the
//! credential provider plugins returned (kubernetes/kubernetes
//! `pkg/credentialprovider/secrets/secrets.go` `MakeDockerKeyring`, `config.go`
//! `DockerConfigEntry.UnmarshalJSON`, `keyring.go` `BasicDockerKeyring.Add`/`Lookup`,
//! `URLsMatchStr`, `ParseSchemelessURL`):
//!
//! - only `.dockerconfigjson` of type `kubernetes.io/dockerconfigjson` and `.dockercfg` of type
//!   `kubernetes.io/dockercfg` are read; any other secret is ignored;
//! - a payload that does not decode fails the whole keyring (and so the pull) with Go's error;
//! - `auth` (padded or unpadded base64 of `user:password`) overrides `username`/`password`;
//!   `identitytoken`/`registrytoken` are not read;
//! - keys lose their scheme and a `/v1/` or `/v2/` path prefix; a key Go's `url.Parse` refuses
//!   is skipped; all secrets' keys are merged into one index, deduplicated and reverse-sorted so
//!   longer paths come first; credentials under the same key keep the order they were added in
//!   (secrets in the pod's order, providers in the config's order);
//! - an image matches a key when ports are equal, the host has as many labels, each label
//!   matches the key's glob (`filepath.Match`) and the key's path is a prefix of the image's;
//!   every matching credential is returned, in index order; with no match, Docker Hub images
//!   fall back to the `index.docker.io` key.
//!
//! Pure data: no store access, no network. Passwords never leave this module but through
//! [`Credential`], whose `Debug` hides them.

use base64::Engine as _;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Where a credential came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A pull secret of the pod, by name.
    Secret(String),
    /// A credential provider plugin, by its `name` in the config.
    Provider(String),
}

/// One credential of the keyring.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// Sent as the user of HTTP Basic (to the registry or the token realm).
    pub username: String,
    /// Never printed (see `Debug`).
    pub password: String,
    /// The Secret or provider it came from (for logs and tests).
    pub source: Source,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A `BasicDockerKeyring`.
#[derive(Debug, Default)]
pub struct Keyring {
    /// Keys, reverse-sorted.
    index: Vec<String>,
    creds: BTreeMap<String, Vec<Credential>>,
}

const DOCKERCFG: &str = "kubernetes.io/dockercfg";
const DOCKERCONFIGJSON: &str = "kubernetes.io/dockerconfigjson";
const DEFAULT_REGISTRY_HOST: &str = "index.docker.io";

/// `MakeDockerKeyring` over the pod's Secrets, in the pod's order. The error is the text the
/// kubelet reports (the Go `json.Unmarshal` or auth-decoding error).
pub fn from_secrets(secrets: &[Value]) -> Result<Keyring, String> {
    let mut keyring = Keyring::default();
    for secret in secrets {
        let ty = secret.get("type").and_then(Value::as_str).unwrap_or("");
        let name = crate::util::meta_str(secret, "name").to_string();
        let data = |key: &str| {
            secret
                .pointer(&format!("/data/{key}"))
                .and_then(Value::as_str)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .filter(|b| !b.is_empty())
        };
        if ty == DOCKERCONFIGJSON
            && let Some(bytes) = data(".dockerconfigjson")
        {
            let auths = parse_config_json(&bytes)?;
            keyring.add(&name, &auths)?;
        } else if ty == DOCKERCFG
            && let Some(bytes) = data(".dockercfg")
        {
            let entries = parse_json(&bytes, "credentialprovider.DockerConfig")?;
            keyring.add(&name, &entries)?;
        }
    }
    Ok(keyring)
}

/// Go's JSON kind name of a value, as `json: cannot unmarshal <kind>` prints it.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Object(_) => "object",
        Value::Null => "null",
    }
}

/// Decodes a JSON object (or null) into its map, with Go's error texts.
fn parse_json(bytes: &[u8], go_type: &str) -> Result<Map<String, Value>, String> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| crate::strategy::go_json_syntax_error(bytes, &e))?;
    match v {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        other => Err(format!(
            "json: cannot unmarshal {} into Go value of type {go_type}",
            kind(&other)
        )),
    }
}

/// `{"auths": {...}}` of a `.dockerconfigjson` (`DockerConfigJSON`).
fn parse_config_json(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    let top = parse_json(bytes, "credentialprovider.DockerConfigJSON")?;
    // encoding/json matches field names case-insensitively.
    match field(&top, "auths") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(other) => Err(format!(
            "json: cannot unmarshal {} into Go struct field DockerConfigJSON.auths of type credentialprovider.DockerConfig",
            kind(other)
        )),
    }
}

/// A struct field as encoding/json finds it: the exact key, else a case-insensitive match.
fn field<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    m.get(name).or_else(|| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// `DockerConfigEntry.UnmarshalJSON`: (username, password).
fn entry(v: &Value) -> Result<(String, String), String> {
    let m = match v {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type credentialprovider.dockerConfigEntryWithAuth",
                kind(other)
            ));
        }
    };
    let text = |name: &str| -> Result<String, String> {
        match field(&m, name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!(
                "json: cannot unmarshal {} into Go struct field dockerConfigEntryWithAuth.{name} of type string",
                kind(other)
            )),
        }
    };
    let (username, password, auth) = (text("username")?, text("password")?, text("auth")?);
    let _email = text("email")?;
    if auth.is_empty() {
        return Ok((username, password));
    }
    decode_auth(&auth)
}

/// `decodeDockerConfigFieldAuth`: padded base64 if it ends in `=`, else unpadded.
fn decode_auth(field: &str) -> Result<(String, String), String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    let decoded = if field.trim().ends_with('=') {
        STANDARD.decode(field)
    } else {
        STANDARD_NO_PAD.decode(field)
    }
    .map_err(|e| {
        let at = match e {
            base64::DecodeError::InvalidByte(i, _)
            | base64::DecodeError::InvalidLastSymbol(i, _) => i,
            _ => field.len(),
        };
        format!("illegal base64 data at input byte {at}")
    })?;
    let text = String::from_utf8_lossy(&decoded).into_owned();
    match text.split_once(':') {
        Some((u, p)) => Ok((u.to_string(), p.to_string())),
        None => {
            Err("unable to parse auth field, must be formatted as base64(username:password)".into())
        }
    }
}

/// `url.Parse("https://" + key)` reduced to (host, path); None where Go's parser errors.
fn split_url(key: &str) -> Option<(String, String)> {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    parse_schemeless_url(rest).ok()
}

/// `ParseSchemelessURL`: what Go's `url.Parse("https://" + s)` makes of `s`, as (host with port,
/// unescaped path), or its error text (`parse "https://…": …`). Covers the errors a registry
/// key or `matchImages` entry can hit: control characters, bad `%` escapes, characters a host
/// may not hold, an unclosed IPv6 bracket and a port that is not digits.
pub fn parse_schemeless_url(s: &str) -> Result<(String, String), String> {
    let full = format!("https://{s}");
    let fail = |e: String| format!("parse {}: {e}", crate::status::go_quote(&full));
    if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(format!(
            "parse {}: net/url: invalid control character in URL",
            crate::status::go_quote(&full)
        ));
    }
    let s = s.split('#').next().unwrap_or("");
    let s = s.split('?').next().unwrap_or("");
    let (authority, path) = match s.find('/') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    check_host(host).map_err(fail)?;
    let path = unescape(path).map_err(fail)?;
    let host = unescape(host).map_err(fail)?;
    Ok((host, path))
}

/// `parseHost`'s checks: brackets, the port, and the characters of the name.
fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = if host.starts_with('[') {
        let Some(end) = host.find(']') else {
            return Err("missing ']' in host".into());
        };
        (&host[..=end], &host[end + 1..])
    } else {
        match host.rfind(':') {
            Some(i) => (&host[..i], &host[i..]),
            None => (host, ""),
        }
    };
    let port_ok =
        port.is_empty() || (port.starts_with(':') && port[1..].bytes().all(|b| b.is_ascii_digit()));
    if !port_ok {
        return Err(format!(
            "invalid port {} after host",
            crate::status::go_quote(port)
        ));
    }
    for c in name.chars() {
        let allowed =
            c.is_ascii_alphanumeric() || !c.is_ascii() || "-._~!$&'()*+,;=:[]<>\"%".contains(c);
        if !allowed {
            return Err(format!(
                "invalid character {} in host name",
                crate::status::go_quote(&c.to_string())
            ));
        }
    }
    Ok(())
}

/// Go's `unescape`: every `%` starts two hex digits.
fn unescape(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !hex(i + 1) || !hex(i + 2) {
                let bad: String = s[i..].chars().take(3).collect();
                return Err(format!(
                    "invalid URL escape {}",
                    crate::status::go_quote(&bad)
                ));
            }
            let v = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'%');
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

impl Keyring {
    /// `BasicDockerKeyring.Add` for one secret's entries.
    fn add(&mut self, secret: &str, entries: &Map<String, Value>) -> Result<(), String> {
        // Every entry must decode before any is added (json.Unmarshal fails as a whole).
        let mut decoded = Vec::new();
        for (loc, v) in entries {
            let (username, password) = entry(v)?;
            decoded.push((loc.clone(), username, password));
        }
        self.add_entries(&Source::Secret(secret.to_string()), decoded);
        Ok(())
    }

    /// `BasicDockerKeyring.Add` of a DockerConfig: (key, username, password) entries.
    pub fn add_entries(&mut self, source: &Source, entries: Vec<(String, String, String)>) {
        for (loc, username, password) in entries {
            let Some((host, path)) = split_url(&loc) else {
                continue;
            };
            let path = if path.starts_with("/v2/") || path.starts_with("/v1/") {
                path[3..].to_string()
            } else {
                path
            };
            let key = if path.is_empty() || path == "/" {
                host
            } else {
                format!("{host}{path}")
            };
            self.creds.entry(key.clone()).or_default().push(Credential {
                username,
                password,
                source: source.clone(),
            });
            self.index.push(key);
        }
        self.index.sort();
        self.index.dedup();
        self.index.reverse();
    }

    /// `BasicDockerKeyring.Lookup` for a normalised repository name (`host/path`).
    pub fn lookup(&self, image: &str) -> Vec<Credential> {
        let mut out = Vec::new();
        for key in &self.index {
            if urls_match(key, image) {
                out.extend(self.creds.get(key).into_iter().flatten().cloned());
            }
        }
        if out.is_empty() && is_default_registry_match(image) {
            out.extend(
                self.creds
                    .get(DEFAULT_REGISTRY_HOST)
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
        out
    }
}

/// `isDefaultRegistryMatch`.
fn is_default_registry_match(image: &str) -> bool {
    let Some((first, _)) = image.split_once('/') else {
        return !image.is_empty();
    };
    if first.is_empty() {
        return false;
    }
    first == "docker.io" || first == "index.docker.io" || !first.contains(['.', ':'])
}

/// `SplitURL`: host labels and port.
fn host_parts(host: &str) -> (Vec<String>, String) {
    let (h, port) = if let Some(inner) = host.strip_prefix('[') {
        match inner.split_once("]:") {
            Some((ip, p)) => (ip.to_string(), p.to_string()),
            None => (host.to_string(), String::new()),
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_string(), p.to_string()),
            _ => (host.to_string(), String::new()),
        }
    };
    (h.split('.').map(str::to_string).collect(), port)
}

/// `URLsMatchStr(glob, target)`.
pub fn urls_match(glob: &str, target: &str) -> bool {
    let (Some((gh, gp)), Some((th, tp))) = (split_url(glob), split_url(target)) else {
        return false;
    };
    let (glob_parts, glob_port) = host_parts(&gh);
    let (target_parts, target_port) = host_parts(&th);
    glob_port == target_port
        && glob_parts.len() == target_parts.len()
        && tp.starts_with(&gp)
        && glob_parts
            .iter()
            .zip(&target_parts)
            .all(|(g, t)| glob_match(g.as_bytes(), t.as_bytes()).unwrap_or(false))
}

/// Go's `filepath.Match` for one host label: `*`, `?`, `[...]` classes (with ranges and `^`),
/// `\` escapes. `None` is `ErrBadPattern`.
fn glob_match(pattern: &[u8], name: &[u8]) -> Option<bool> {
    match pattern.first() {
        None => Some(name.is_empty()),
        Some(b'*') => {
            for i in 0..=name.len() {
                if glob_match(&pattern[1..], &name[i..])? {
                    return Some(true);
                }
            }
            Some(false)
        }
        Some(b'?') => match name.first() {
            Some(_) => glob_match(&pattern[1..], &name[1..]),
            None => Some(false),
        },
        Some(b'[') => {
            let (matched, rest) = class(&pattern[1..], *name.first()?)?;
            if matched {
                glob_match(rest, &name[1..])
            } else {
                Some(false)
            }
        }
        Some(b'\\') => {
            let c = *pattern.get(1)?;
            if name.first() == Some(&c) {
                glob_match(&pattern[2..], &name[1..])
            } else {
                Some(false)
            }
        }
        Some(c) => {
            if name.first() == Some(c) {
                glob_match(&pattern[1..], &name[1..])
            } else {
                Some(false)
            }
        }
    }
}

/// A `[...]` class after its `[`: whether `c` is in it, and the pattern after `]`.
fn class(p: &[u8], c: u8) -> Option<(bool, &[u8])> {
    let (negated, mut p) = match p.first() {
        Some(b'^') => (true, &p[1..]),
        _ => (false, p),
    };
    let mut matched = false;
    let mut first = true;
    loop {
        match p.first() {
            None => return None,
            Some(b']') if !first => return Some((matched != negated, &p[1..])),
            _ => {}
        }
        first = false;
        let (lo, rest) = class_char(p)?;
        p = rest;
        let hi = if p.first() == Some(&b'-') && p.get(1) != Some(&b']') {
            let (hi, rest) = class_char(&p[1..])?;
            p = rest;
            hi
        } else {
            lo
        };
        if lo <= c && c <= hi {
            matched = true;
        }
    }
}

fn class_char(p: &[u8]) -> Option<(u8, &[u8])> {
    match p.first()? {
        b'\\' => Some((*p.get(1)?, &p[2..])),
        c => Some((*c, &p[1..])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(name: &str, ty: &str, key: &str, payload: &str) -> Value {
        json!({"metadata": {"name": name}, "type": ty,
               "data": {key: base64::engine::general_purpose::STANDARD.encode(payload)}})
    }

    fn users(k: &Keyring, image: &str) -> Vec<String> {
        k.lookup(image).into_iter().map(|c| c.username).collect()
    }

    #[test]
    fn only_the_typed_key_is_read_and_auth_wins() {
        let a = secret(
            "a",
            DOCKERCONFIGJSON,
            ".dockerconfigjson",
            r#"{"auths":{"r.io":{"username":"plain","password":"p","auth":"dTE6cDE="}}}"#,
        );
        // Wrong key for its type: ignored.
        let b = secret(
            "b",
            DOCKERCFG,
            ".dockerconfigjson",
            r#"{"auths":{"r.io":{"auth":"dTI6cDI="}}}"#,
        );
        let c = secret(
            "c",
            DOCKERCFG,
            ".dockercfg",
            r#"{"https://r.io/v1/":{"auth":"dTM6cDM"}}"#,
        );
        let k = from_secrets(&[a, b, c]).expect("keyring");
        assert_eq!(users(&k, "r.io/team/app"), ["u1", "u3"]);
        let creds = k.lookup("r.io/x");
        assert_eq!(creds[0].password, "p1");
        assert!(!format!("{creds:?}").contains("p1"));
    }

    #[test]
    fn specific_paths_first_and_globs() {
        let s = secret(
            "s",
            DOCKERCONFIGJSON,
            ".dockerconfigjson",
            r#"{"auths":{"q.io":{"username":"host","password":"x"},
                          "q.io/team":{"username":"team","password":"x"},
                          "*.q.io":{"username":"glob","password":"x"},
                          "q.io:5000":{"username":"port","password":"x"}}}"#,
        );
        let k = from_secrets(&[s]).expect("keyring");
        assert_eq!(users(&k, "q.io/team/app"), ["team", "host"]);
        assert_eq!(users(&k, "q.io/other/app"), ["host"]);
        assert_eq!(users(&k, "eu.q.io/app"), ["glob"]);
        assert_eq!(users(&k, "a.b.q.io/app"), Vec::<String>::new());
        assert_eq!(users(&k, "q.io:5000/app"), ["port"]);
    }

    #[test]
    fn docker_hub_falls_back_to_index_docker_io() {
        let s = secret(
            "s",
            DOCKERCONFIGJSON,
            ".dockerconfigjson",
            r#"{"auths":{"https://index.docker.io/v1/":{"username":"hub","password":"x"}}}"#,
        );
        let k = from_secrets(&[s]).expect("keyring");
        assert_eq!(users(&k, "docker.io/library/busybox"), ["hub"]);
        assert_eq!(users(&k, "quay.io/x"), Vec::<String>::new());
    }

    #[test]
    fn bad_payloads_fail_with_go_errors() {
        let bad = |payload: &str| {
            from_secrets(&[secret("s", DOCKERCONFIGJSON, ".dockerconfigjson", payload)]).err()
        };
        assert_eq!(
            bad("{x").as_deref(),
            Some("invalid character 'x' looking for beginning of object key string")
        );
        assert_eq!(
            bad("[]").as_deref(),
            Some(
                "json: cannot unmarshal array into Go value of type credentialprovider.DockerConfigJSON"
            )
        );
        assert_eq!(
            bad(r#"{"auths":{"r":{"auth":"bm9jb2xvbg=="}}}"#).as_deref(),
            Some("unable to parse auth field, must be formatted as base64(username:password)")
        );
        assert!(
            bad(r#"{"auths":{"r":{"auth":"!!"}}}"#)
                .is_some_and(|e| e.starts_with("illegal base64 data"))
        );
        assert!(bad("null").is_none());
    }

    #[test]
    fn glob_semantics() {
        assert_eq!(glob_match(b"*", b"abc"), Some(true));
        assert_eq!(glob_match(b"a?c", b"abc"), Some(true));
        assert_eq!(glob_match(b"[a-c]x", b"bx"), Some(true));
        assert_eq!(glob_match(b"[^a-c]x", b"bx"), Some(false));
        assert_eq!(glob_match(b"[", b"a"), None);
    }
}
