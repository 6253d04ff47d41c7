//! The kubelet's docker keyring built from a pod's pull secrets (kubernetes/kubernetes
//! `pkg/credentialprovider/secrets/secrets.go` `MakeDockerKeyring`, `config.go`
//! `DockerConfigEntry.UnmarshalJSON`, `keyring.go` `BasicDockerKeyring.Add`/`Lookup`):
//!
//! - only `.dockerconfigjson` of type `kubernetes.io/dockerconfigjson` and `.dockercfg` of type
//!   `kubernetes.io/dockercfg` are read; any other secret is ignored;
//! - a payload that does not decode fails the whole keyring (and so the pull) with Go's error;
//! - `auth` (padded or unpadded base64 of `user:password`) overrides `username`/`password`;
//!   `identitytoken`/`registrytoken` are not read;
//! - keys lose their scheme and a `/v1/` or `/v2/` path prefix; all secrets' keys are merged
//!   into one index, deduplicated and reverse-sorted so longer paths come first;
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

/// One credential of the keyring.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// Sent as the user of HTTP Basic (to the registry or the token realm).
    pub username: String,
    /// Never printed (see `Debug`).
    pub password: String,
    /// The Secret it came from (for logs and tests).
    pub secret: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("secret", &self.secret)
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
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    // An invalid port is a parse error (the entry is then skipped).
    if !host.starts_with('[')
        && let Some((_, port)) = host.rsplit_once(':')
        && !port.chars().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    Some((host.to_string(), path.to_string()))
}

impl Keyring {
    /// `BasicDockerKeyring.Add` for one secret's entries.
    fn add(&mut self, secret: &str, entries: &Map<String, Value>) -> Result<(), String> {
        // Every entry must decode before any is added (json.Unmarshal fails as a whole).
        let mut decoded = Vec::new();
        for (loc, v) in entries {
            decoded.push((loc.clone(), entry(v)?));
        }
        for (loc, (username, password)) in decoded {
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
                secret: secret.to_string(),
            });
            self.index.push(key);
        }
        self.index.sort();
        self.index.dedup();
        self.index.reverse();
        Ok(())
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
fn urls_match(glob: &str, target: &str) -> bool {
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
