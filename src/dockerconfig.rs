//! Docker auth formats (pure): parses docker `config.json`, legacy `.dockercfg` and containers
//! `auth.json`, looks registries up in them, and renders/decodes pull-secret payloads.
//!
//! No I/O here. Errors name the registry key and the field, never a value from the file: input
//! is parsed into a [`serde_json::Value`] (whose errors are syntax errors with fixed texts) and
//! every type check after that writes its own message, because serde's typed errors echo values.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::config::SecretType;
use crate::model::credential::{
    BasicAuth, Credential, KeyError, RegistryKey, Secret, UnusableCredential,
};

/// Reads `auth` as docker and the kubelet do: standard alphabet, padded or not, with Go's
/// default leniency about trailing bits.
const AUTH_DECODER: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Writes `auth` as kubectl does: standard alphabet, padded.
const AUTH_ENCODER: GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The three files a credential can be read from (docs/docker-auth.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthFileFormat {
    /// docker `config.json`: `auths`, `credsStore`, `credHelpers`.
    DockerConfig,
    /// Legacy `~/.dockercfg`: a bare map of registry → entry.
    Dockercfg,
    /// containers `auth.json`: `auths` (keys may carry a namespace) and `credHelpers`.
    ContainersAuth,
}

impl fmt::Display for AuthFileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DockerConfig => "docker config.json",
            Self::Dockercfg => "legacy .dockercfg",
            Self::ContainersAuth => "containers auth.json",
        })
    }
}

/// Why an `auth` field cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthProblem {
    #[error("is not valid base64")]
    NotBase64,
    #[error("decodes to bytes that are not UTF-8")]
    NotUtf8,
    #[error("decodes to a value without ':' (expected base64 of username:password)")]
    NoColon,
}

/// Why a file or payload cannot be read. Never carries a value from the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not valid UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("invalid JSON at line {line}, column {column}: {problem}")]
    Syntax {
        line: usize,
        column: usize,
        /// serde_json's fixed description of the syntax error, without the position.
        problem: String,
    },
    #[error("the top level must be a JSON object, found {found}")]
    NotAnObject { found: &'static str },
    #[error("{field} must be {expected}, found {found}")]
    WrongType {
        /// Where the value sits, e.g. `auths["quay.io"].auth`.
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{field} {problem}")]
    BadAuth { field: String, problem: AuthProblem },
    #[error(
        "the legacy `auth = …` text form of .dockercfg is not supported; \
         log in again to write a JSON config"
    )]
    LegacyTextForm,
    #[error("has a top-level \"auths\" key, so it is a config.json, not a legacy .dockercfg")]
    AuthsInDockercfg,
    #[error("registry key {key:?} is not a registry name: {source}")]
    BadKey {
        key: String,
        #[source]
        source: KeyError,
    },
}

/// Why credentials cannot be rendered into a payload.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Unusable(#[from] UnusableCredential),
    #[error("two credentials are for registry {0}; a pull secret holds one entry per registry")]
    DuplicateRegistry(String),
}

/// A parsed auth file. Its `Debug` shows keys and helper names, never credential values.
#[derive(Clone, Debug)]
pub struct AuthFile {
    format: AuthFileFormat,
    /// Sorted by key as stored in the file.
    entries: Vec<Entry>,
    /// `credsStore`: the helper for every registry without a `credHelpers` entry (docker only).
    creds_store: Option<String>,
    /// `credHelpers`: stored key → helper suffix.
    cred_helpers: BTreeMap<String, String>,
}

/// One `auths` entry.
#[derive(Clone, Debug)]
struct Entry {
    /// The key exactly as stored; helpers are asked for this string.
    key: String,
    /// The key normalised by the format's rules; `None` if it names no registry.
    registry: Option<RegistryKey>,
    content: EntryContent,
}

#[derive(Clone, Debug)]
enum EntryContent {
    Login {
        username: String,
        secret: Secret,
        email: Option<String>,
    },
    /// `{}`: docker keeps this stub when the credential lives in a native store.
    Stub,
    /// An entry that holds something, but nothing a pull secret can carry.
    Unusable(&'static str),
}

/// What an auth file says about one registry.
#[derive(Clone, Debug)]
pub enum Lookup {
    /// The file holds the credential (its `registry` is the server that was asked for).
    Found(Credential),
    /// A credential helper holds it: run `docker-credential-<helper> get` with `server_url`.
    Helper { helper: String, server_url: String },
    /// The file has an entry for the registry, but no credential in it.
    Unusable { key: String, reason: &'static str },
    /// The file knows nothing about the registry.
    NotPresent,
}

/// Which fields an entry is read with: each consumer reads a different subset (docs/pull-secrets.md and docs/docker-auth.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Semantics {
    /// docker/cli `AuthConfig`.
    Docker,
    /// containers/image: `auth` and `identitytoken` only.
    Containers,
    /// The kubelet: `auth`, `username`, `password`, `email`; tokens are ignored.
    Kubelet,
}

impl Semantics {
    const fn fields(self) -> &'static [&'static str] {
        match self {
            Self::Docker => &[
                "auth",
                "username",
                "password",
                "email",
                "identitytoken",
                "registrytoken",
                "serveraddress",
            ],
            Self::Containers => &["auth", "identitytoken"],
            Self::Kubelet => &["auth", "username", "password", "email"],
        }
    }
}

/// Parses an auth file of the given format.
pub fn parse_auth_file(format: AuthFileFormat, bytes: &[u8]) -> Result<AuthFile, ParseError> {
    let text = utf8(bytes)?;
    if format == AuthFileFormat::Dockercfg && is_legacy_text_form(text) {
        return Err(ParseError::LegacyTextForm);
    }
    let root = json_object(text)?;
    match format {
        AuthFileFormat::DockerConfig => parse_docker_config(&root),
        AuthFileFormat::Dockercfg => Ok(AuthFile {
            format,
            entries: parse_dockercfg_entries(&root, Semantics::Docker)?,
            creds_store: None,
            cred_helpers: BTreeMap::new(),
        }),
        AuthFileFormat::ContainersAuth => parse_containers_auth(&root),
    }
}

fn parse_docker_config(root: &Map<String, Value>) -> Result<AuthFile, ParseError> {
    let entries = match object_field(root, "auths")? {
        Some(auths) => parse_entries(auths, Some("auths"), Semantics::Docker)?,
        None => Vec::new(),
    };
    Ok(AuthFile {
        format: AuthFileFormat::DockerConfig,
        entries,
        creds_store: string_field(root, "credsStore", "credsStore")?
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        cred_helpers: parse_cred_helpers(root)?,
    })
}

fn parse_containers_auth(root: &Map<String, Value>) -> Result<AuthFile, ParseError> {
    let entries = match object_field(root, "auths")? {
        Some(auths) => parse_entries(auths, Some("auths"), Semantics::Containers)?,
        None => Vec::new(),
    };
    Ok(AuthFile {
        format: AuthFileFormat::ContainersAuth,
        entries,
        // containers/image does not read credsStore from auth.json (docs/docker-auth.md).
        creds_store: None,
        cred_helpers: parse_cred_helpers(root)?,
    })
}

fn parse_dockercfg_entries(
    root: &Map<String, Value>,
    semantics: Semantics,
) -> Result<Vec<Entry>, ParseError> {
    if root.contains_key("auths") {
        return Err(ParseError::AuthsInDockercfg);
    }
    parse_entries(root, None, semantics)
}

fn parse_cred_helpers(root: &Map<String, Value>) -> Result<BTreeMap<String, String>, ParseError> {
    let Some(helpers) = object_field(root, "credHelpers")? else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for (key, value) in helpers {
        match value {
            Value::String(helper) => {
                out.insert(key.clone(), helper.clone());
            }
            Value::Null => {}
            other => {
                return Err(wrong_type(
                    field_path(Some("credHelpers"), key, None),
                    "a string",
                    other,
                ));
            }
        }
    }
    Ok(out)
}

fn parse_entries(
    map: &Map<String, Value>,
    section: Option<&str>,
    semantics: Semantics,
) -> Result<Vec<Entry>, ParseError> {
    let mut entries = Vec::with_capacity(map.len());
    for (key, value) in map {
        let content = match value {
            // Go decodes `null` into an empty struct.
            Value::Null => EntryContent::Stub,
            Value::Object(fields) => parse_entry(fields, section, key, semantics)?,
            other => {
                return Err(wrong_type(
                    field_path(section, key, None),
                    "an object",
                    other,
                ));
            }
        };
        let registry = match semantics {
            Semantics::Docker => RegistryKey::from_docker(key).ok(),
            Semantics::Containers | Semantics::Kubelet => containers_key(key).ok(),
        };
        entries.push(Entry {
            key: key.clone(),
            registry,
            content,
        });
    }
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(entries)
}

/// The typed, checked fields of one entry, before a consumer's precedence rules apply.
struct RawEntry<'a> {
    /// `auth` decoded into username and password.
    auth: Option<(String, SecretString)>,
    username: &'a str,
    password: &'a str,
    email: &'a str,
    identity_token: &'a str,
    registry_token: &'a str,
}

fn parse_entry(
    fields: &Map<String, Value>,
    section: Option<&str>,
    key: &str,
    semantics: Semantics,
) -> Result<EntryContent, ParseError> {
    let mut strings: BTreeMap<&str, &str> = BTreeMap::new();
    for name in semantics.fields() {
        let path = || field_path(section, key, Some(name));
        if let Some(value) = string_field(fields, name, &path())? {
            strings.insert(*name, value);
        }
    }
    let get = |name: &str| strings.get(name).copied().unwrap_or_default();
    let auth = match get("auth") {
        "" => None,
        encoded => Some(decode_auth(encoded).map_err(|problem| ParseError::BadAuth {
            field: field_path(section, key, Some("auth")),
            problem,
        })?),
    };
    let raw = RawEntry {
        auth,
        username: get("username"),
        password: get("password"),
        email: get("email"),
        identity_token: get("identitytoken"),
        registry_token: get("registrytoken"),
    };
    Ok(match semantics {
        Semantics::Docker => docker_content(raw),
        Semantics::Containers => containers_content(raw, has_plain_login(fields)),
        Semantics::Kubelet => kubelet_content(raw),
    })
}

/// docker/cli: an identity token wins; otherwise `auth` beats the plain fields. The one
/// exception is for pull secrets' sake: a non-empty password in `auth` beside a token (docker
/// itself blanks it) is kept, since the kubelet reads `auth` and ignores the token.
fn docker_content(raw: RawEntry<'_>) -> EntryContent {
    let email = non_empty(raw.email);
    if let Some((username, password)) = &raw.auth
        && !raw.identity_token.is_empty()
        && !password.expose_secret().is_empty()
    {
        return login(username.clone(), Secret::Password(password.clone()), email);
    }
    if !raw.identity_token.is_empty() {
        let username = raw
            .auth
            .map_or_else(|| raw.username.to_string(), |(user, _)| user);
        return login(username, identity_token(raw.identity_token), email);
    }
    if let Some((username, password)) = raw.auth {
        return login(username, Secret::Password(password), email);
    }
    if !raw.username.is_empty() || !raw.password.is_empty() {
        return login(raw.username.to_string(), password(raw.password), email);
    }
    if !raw.registry_token.is_empty() {
        return EntryContent::Unusable(
            "the entry holds only a registrytoken (a short-lived bearer token), \
             which pull secrets cannot carry",
        );
    }
    EntryContent::Stub
}

/// containers/image: only `auth` and `identitytoken` count (docs/docker-auth.md).
fn containers_content(raw: RawEntry<'_>, has_plain_login: bool) -> EntryContent {
    if !raw.identity_token.is_empty() {
        let username = raw.auth.map(|(user, _)| user).unwrap_or_default();
        return login(username, identity_token(raw.identity_token), None);
    }
    if let Some((username, password)) = raw.auth {
        return login(username, Secret::Password(password), None);
    }
    if has_plain_login {
        return EntryContent::Unusable(
            "the entry has only plain username/password fields, which containers tools \
             ignore in auth.json; log in again so that `auth` is written",
        );
    }
    EntryContent::Stub
}

/// The kubelet: `auth` overrides `username`/`password`; every entry is a login, even empty.
fn kubelet_content(raw: RawEntry<'_>) -> EntryContent {
    let (username, secret) = match raw.auth {
        Some((username, password)) => (username, Secret::Password(password)),
        None => (raw.username.to_string(), password(raw.password)),
    };
    login(username, secret, non_empty(raw.email))
}

fn has_plain_login(fields: &Map<String, Value>) -> bool {
    ["username", "password"]
        .iter()
        .any(|name| matches!(fields.get(*name), Some(Value::String(s)) if !s.is_empty()))
}

fn login(username: String, secret: Secret, email: Option<String>) -> EntryContent {
    EntryContent::Login {
        username,
        secret,
        email,
    }
}

fn password(value: &str) -> Secret {
    Secret::Password(SecretString::from(value.to_string()))
}

fn identity_token(value: &str) -> Secret {
    Secret::IdentityToken(SecretString::from(value.to_string()))
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

/// Decodes `auth` into username and password, split at the first `:`.
fn decode_auth(encoded: &str) -> Result<(String, SecretString), AuthProblem> {
    // Go's base64 decoder skips line breaks.
    let cleaned: Zeroizing<String> = Zeroizing::new(
        encoded
            .chars()
            .filter(|c| !matches!(c, '\r' | '\n'))
            .collect(),
    );
    let decoded = Zeroizing::new(
        AUTH_DECODER
            .decode(cleaned.as_bytes())
            .map_err(|_| AuthProblem::NotBase64)?,
    );
    let text = std::str::from_utf8(&decoded).map_err(|_| AuthProblem::NotUtf8)?;
    let (username, password) = text.split_once(':').ok_or(AuthProblem::NoColon)?;
    Ok((
        username.to_string(),
        SecretString::from(password.to_string()),
    ))
}

/// A key as containers/image reads it: legacy keys with a scheme are reduced to the host,
/// others keep their namespace.
fn containers_key(key: &str) -> Result<RegistryKey, KeyError> {
    if has_scheme(key) {
        RegistryKey::from_docker(key)
    } else {
        RegistryKey::from_containers(key)
    }
}

fn has_scheme(key: &str) -> bool {
    let key = key.trim_start();
    key.starts_with("http://") || key.starts_with("https://")
}

impl AuthFile {
    pub fn format(&self) -> AuthFileFormat {
        self.format
    }

    /// The `auths` keys as stored, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.key.as_str())
    }

    /// `credsStore` (docker `config.json` only).
    pub fn creds_store(&self) -> Option<&str> {
        self.creds_store.as_deref()
    }

    /// `credHelpers`: stored key → helper suffix.
    pub fn cred_helpers(&self) -> &BTreeMap<String, String> {
        &self.cred_helpers
    }

    /// What the file says about `server`, by the rules of its format.
    pub fn lookup(&self, server: &RegistryKey) -> Lookup {
        match self.format {
            AuthFileFormat::DockerConfig | AuthFileFormat::Dockercfg => self.lookup_docker(server),
            AuthFileFormat::ContainersAuth => self.lookup_containers(server),
        }
    }

    /// docker/cli: `credHelpers[key]`, else `credsStore`, else `auths` (exact key first, then
    /// every stored key reduced to `host[:port]`).
    fn lookup_docker(&self, server: &RegistryKey) -> Lookup {
        let host = server.host_only();
        let wanted = host.auths_key();
        let entry = self.entries.iter().find(|e| e.key == wanted).or_else(|| {
            self.entries
                .iter()
                .find(|e| e.registry.as_ref() == Some(&host))
        });
        let helper = self.cred_helpers.get(&wanted).or(self.creds_store.as_ref());
        if let Some(helper) = helper {
            return Lookup::Helper {
                helper: helper.clone(),
                server_url: entry.map_or(wanted, |e| e.key.clone()),
            };
        }
        entry.map_or(Lookup::NotPresent, |e| e.lookup_result(server, false))
    }

    /// containers/image: `credHelpers[host]` alone if present, else `auths` from the most to
    /// the least specific key; Docker Hub aliases are one registry.
    fn lookup_containers(&self, server: &RegistryKey) -> Lookup {
        let host = server.host_only();
        let helper = self
            .cred_helpers
            .iter()
            .find(|(key, _)| containers_key(key).is_ok_and(|k| k.host_only() == host));
        if let Some((key, helper)) = helper {
            return Lookup::Helper {
                helper: helper.clone(),
                server_url: key.clone(),
            };
        }
        for wanted in server.lookup_order() {
            // Native keys beat legacy `https://…` keys that reduce to the same registry.
            let entry = self
                .entries
                .iter()
                .filter(|e| e.registry.as_ref() == Some(&wanted))
                .min_by_key(|e| has_scheme(&e.key));
            if let Some(entry) = entry {
                return entry.lookup_result(server, true);
            }
        }
        Lookup::NotPresent
    }

    /// Every entry that is a login, as credentials keyed by their normalised registry.
    fn credentials(&self) -> Result<Vec<Credential>, ParseError> {
        let mut out = Vec::new();
        for entry in &self.entries {
            let EntryContent::Login {
                username,
                secret,
                email,
            } = &entry.content
            else {
                continue;
            };
            let registry = entry
                .registry
                .clone()
                .map_or_else(|| containers_key(&entry.key), Ok)
                .map_err(|source| ParseError::BadKey {
                    key: entry.key.clone(),
                    source,
                })?;
            out.push(Credential {
                registry,
                username: username.clone(),
                secret: secret.clone(),
                email: email.clone(),
            });
        }
        Ok(out)
    }
}

impl Entry {
    fn lookup_result(&self, server: &RegistryKey, containers: bool) -> Lookup {
        match &self.content {
            EntryContent::Login {
                username,
                secret,
                email,
            } => Lookup::Found(Credential {
                registry: server.clone(),
                username: username.clone(),
                secret: secret.clone(),
                email: email.clone(),
            }),
            EntryContent::Stub if containers => Lookup::Unusable {
                key: self.key.clone(),
                reason: "the entry is empty and the file names no credHelpers entry for it",
            },
            EntryContent::Stub => Lookup::Unusable {
                key: self.key.clone(),
                reason: "the entry is empty (a credential-store stub) and the file names no \
                         credsStore or credHelpers entry for it",
            },
            EntryContent::Unusable(reason) => Lookup::Unusable {
                key: self.key.clone(),
                reason,
            },
        }
    }
}

/// Renders the Secret data value for `ty`, byte for byte what
/// `kubectl create secret docker-registry` writes (docs/pull-secrets.md): entries sorted by key, fields
/// `username`, `password`, `email` (only when set), `auth`, escaped as Go's `json.Marshal` does.
pub fn encode_payload(ty: SecretType, creds: &[Credential]) -> Result<Vec<u8>, RenderError> {
    let mut entries: BTreeMap<String, (BasicAuth, Option<&str>)> = BTreeMap::new();
    for cred in creds {
        let basic = cred.basic_auth()?;
        let key = cred.registry.auths_key();
        if entries.contains_key(&key) {
            return Err(RenderError::DuplicateRegistry(key));
        }
        entries.insert(key, (basic, cred.email.as_deref()));
    }
    let mut out = String::new();
    if ty == SecretType::DockerConfigJson {
        out.push_str("{\"auths\":");
    }
    out.push('{');
    for (index, (key, (basic, email))) in entries.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        push_go_json_string(&mut out, key);
        out.push(':');
        push_entry(&mut out, basic, *email);
    }
    out.push('}');
    if ty == SecretType::DockerConfigJson {
        out.push('}');
    }
    Ok(out.into_bytes())
}

fn push_entry(out: &mut String, basic: &BasicAuth, email: Option<&str>) {
    let password = basic.password.expose_secret();
    out.push_str("{\"username\":");
    push_go_json_string(out, &basic.username);
    out.push_str(",\"password\":");
    push_go_json_string(out, password);
    if let Some(email) = email.filter(|e| !e.is_empty()) {
        out.push_str(",\"email\":");
        push_go_json_string(out, email);
    }
    let joined = Zeroizing::new(format!("{}:{password}", basic.username));
    out.push_str(",\"auth\":\"");
    out.push_str(&AUTH_ENCODER.encode(joined.as_bytes()));
    out.push_str("\"}");
}

/// Appends `s` as a JSON string escaped exactly as Go's `encoding/json` does with HTML
/// escaping on: `\b \f \n \r \t` short forms, other controls and `< > &` U+2028 U+2029 as
/// lowercase `\u00XX`/`\u20XX`.
fn push_go_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\u{0}'..='\u{1f}' => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Reads a Secret data value of type `ty` as the kubelet does: `auth` overrides
/// `username`/`password`, identity and registry tokens are ignored, every entry is a login.
pub fn decode_payload(ty: SecretType, bytes: &[u8]) -> Result<Vec<Credential>, ParseError> {
    let root = json_object(utf8(bytes)?)?;
    let entries = match ty {
        SecretType::DockerConfigJson => match object_field(&root, "auths")? {
            Some(auths) => parse_entries(auths, Some("auths"), Semantics::Kubelet)?,
            None => Vec::new(),
        },
        SecretType::Dockercfg => parse_dockercfg_entries(&root, Semantics::Kubelet)?,
    };
    AuthFile {
        format: AuthFileFormat::DockerConfig,
        entries,
        creds_store: None,
        cred_helpers: BTreeMap::new(),
    }
    .credentials()
}

fn utf8(bytes: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(bytes).map_err(|e| ParseError::NotUtf8 {
        offset: e.valid_up_to(),
    })
}

/// `auth = …` lines: the pre-JSON `.dockercfg` form.
fn is_legacy_text_form(text: &str) -> bool {
    let trimmed = text.trim_start();
    trimmed.starts_with("auth") && !trimmed.starts_with('{')
}

fn json_object(text: &str) -> Result<Map<String, Value>, ParseError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ParseError::NotAnObject {
            found: json_kind(&other),
        }),
        Err(error) => Err(syntax_error(&error)),
    }
}

/// serde_json's syntax and end-of-input messages are fixed texts; anything else (which parsing
/// into a `Value` should never produce) gets a generic message, in case it quotes input.
fn syntax_error(error: &serde_json::Error) -> ParseError {
    let problem = match error.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            let full = error.to_string();
            let mut problem = match full.rfind(" at line ") {
                Some(end) => full[..end].to_string(),
                None => full,
            };
            if error.is_eof() {
                problem.push_str(" (the input ends early; is the file truncated?)");
            }
            problem
        }
        serde_json::error::Category::Data | serde_json::error::Category::Io => {
            "invalid JSON".to_string()
        }
    };
    ParseError::Syntax {
        line: error.line(),
        column: error.column(),
        problem,
    }
}

/// An optional object-valued field; `null` counts as absent, as in Go.
fn object_field<'a>(
    map: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a Map<String, Value>>, ParseError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(other) => Err(wrong_type(name.to_string(), "an object", other)),
    }
}

/// An optional string-valued field; `null` counts as absent, as in Go.
fn string_field<'a>(
    map: &'a Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<Option<&'a str>, ParseError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(path.to_string(), "a string", other)),
    }
}

fn wrong_type(field: String, expected: &'static str, found: &Value) -> ParseError {
    ParseError::WrongType {
        field,
        expected,
        found: json_kind(found),
    }
}

/// `auths["quay.io"].auth`, `["quay.io"]` (bare `.dockercfg` map), `credHelpers["gcr.io"]`.
fn field_path(section: Option<&str>, key: &str, field: Option<&str>) -> String {
    let mut path = section.unwrap_or_default().to_string();
    let _ = write!(path, "[{key:?}]");
    if let Some(field) = field {
        path.push('.');
        path.push_str(field);
    }
    path
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SENTINEL: &str = "SENTINEL-pw-93f1";

    fn b64(s: &str) -> String {
        AUTH_ENCODER.encode(s)
    }

    fn docker(server: &str) -> RegistryKey {
        RegistryKey::from_docker(server).expect("valid server")
    }

    fn containers(server: &str) -> RegistryKey {
        RegistryKey::from_containers(server).expect("valid key")
    }

    fn parse(format: AuthFileFormat, json: &str) -> AuthFile {
        parse_auth_file(format, json.as_bytes()).expect("file parses")
    }

    fn parse_err(format: AuthFileFormat, bytes: &[u8]) -> ParseError {
        let err = parse_auth_file(format, bytes).expect_err("file is refused");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(SENTINEL), "error leaks a value: {shown}");
        err
    }

    /// (username, password or token, is identity token, email) of a found credential.
    fn found(lookup: Lookup) -> (String, String, bool, Option<String>) {
        match lookup {
            Lookup::Found(c) => {
                let (secret, token) = match &c.secret {
                    Secret::Password(p) => (p.expose_secret().to_string(), false),
                    Secret::IdentityToken(t) => (t.expose_secret().to_string(), true),
                };
                (c.username, secret, token, c.email)
            }
            other => panic!("expected a credential, got {other:?}"),
        }
    }

    fn helper(lookup: Lookup) -> (String, String) {
        match lookup {
            Lookup::Helper { helper, server_url } => (helper, server_url),
            other => panic!("expected a helper, got {other:?}"),
        }
    }

    fn login(user: &str, pass: &str, token: bool) -> (String, String, bool, Option<String>) {
        (user.to_string(), pass.to_string(), token, None)
    }

    #[test]
    fn docker_config_entries_follow_docker_precedence() {
        let json = format!(
            r#"{{
              "auths": {{
                "quay.io": {{"auth": "{}"}},
                "https://index.docker.io/v1/": {{"auth": "{}", "username": "ignored", "password": "ignored"}},
                "https://registry.example.com/v2/": {{"username": "plain", "password": "pw"}},
                "token.example.com": {{"auth": "{}", "identitytoken": "tok"}},
                "both.example.com": {{"auth": "{}", "identitytoken": "tok"}},
                "unpadded.example.com": {{"auth": "{}"}},
                "bearer.example.com": {{"registrytoken": "short-lived"}},
                "legacy.example.com": {{"auth": "{}", "email": "me@example.com"}}
              }},
              "HttpHeaders": {{"User-Agent": "x"}},
              "psFormat": "table"
            }}"#,
            b64("robot:pa:ss"),
            b64("hubuser:hubpw"),
            b64("tokuser:"),
            b64("bothuser:real-pw"),
            b64("u:p1").trim_end_matches('='),
            b64("old:pw"),
        );
        let file = parse(AuthFileFormat::DockerConfig, &json);
        // `auth` splits at the first ':'.
        assert_eq!(
            found(file.lookup(&docker("quay.io"))),
            login("robot", "pa:ss", false)
        );
        // `auth` wins over the plain fields; docker.io finds Docker Hub's key.
        assert_eq!(
            found(file.lookup(&docker("docker.io"))),
            login("hubuser", "hubpw", false)
        );
        // A URL key is found by reducing it to host[:port].
        assert_eq!(
            found(file.lookup(&docker("registry.example.com"))),
            login("plain", "pw", false)
        );
        assert_eq!(
            found(file.lookup(&docker("token.example.com"))),
            login("tokuser", "tok", true)
        );
        // A real password beside a token is the form the kubelet can use.
        assert_eq!(
            found(file.lookup(&docker("both.example.com"))),
            login("bothuser", "real-pw", false)
        );
        assert_eq!(
            found(file.lookup(&docker("unpadded.example.com"))),
            login("u", "p1", false)
        );
        assert!(matches!(
            file.lookup(&docker("bearer.example.com")),
            Lookup::Unusable { ref key, .. } if key == "bearer.example.com"
        ));
        assert_eq!(
            found(file.lookup(&docker("legacy.example.com")))
                .3
                .as_deref(),
            Some("me@example.com")
        );
        assert!(matches!(
            file.lookup(&docker("ghcr.io")),
            Lookup::NotPresent
        ));
        assert_eq!(file.keys().count(), 8);
    }

    #[test]
    fn exact_docker_key_beats_reduced_key() {
        let json = format!(
            r#"{{"auths": {{"https://quay.io/v1/": {{"auth": "{}"}}, "quay.io": {{"auth": "{}"}}}}}}"#,
            b64("reduced:a"),
            b64("exact:b"),
        );
        let file = parse(AuthFileFormat::DockerConfig, &json);
        assert_eq!(found(file.lookup(&docker("quay.io"))).0, "exact");
    }

    #[test]
    fn docker_helpers_cred_helpers_win_then_creds_store() {
        let json = r#"{
            "auths": {"https://quay.io": {}, "ghcr.io": {"auth": "dTpw"}},
            "credsStore": "desktop",
            "credHelpers": {"gcr.example.com": "gcloud", "https://index.docker.io/v1/": "hub"}
        }"#;
        let file = parse(AuthFileFormat::DockerConfig, json);
        assert_eq!(file.creds_store(), Some("desktop"));
        assert_eq!(
            helper(file.lookup(&docker("gcr.example.com"))),
            ("gcloud".into(), "gcr.example.com".into())
        );
        assert_eq!(
            helper(file.lookup(&docker("docker.io"))),
            ("hub".into(), DOCKER_HUB_KEY_STR.into())
        );
        // The stub's stored key is what the helper was given at login.
        assert_eq!(
            helper(file.lookup(&docker("quay.io"))),
            ("desktop".into(), "https://quay.io".into())
        );
        // With a credsStore, docker asks the store even where `auths` holds a login.
        assert_eq!(
            helper(file.lookup(&docker("ghcr.io"))),
            ("desktop".into(), "ghcr.io".into())
        );
        assert_eq!(
            helper(file.lookup(&docker("other.example.com"))),
            ("desktop".into(), "other.example.com".into())
        );
    }

    const DOCKER_HUB_KEY_STR: &str = crate::model::credential::DOCKER_HUB_KEY;

    #[test]
    fn stub_without_helper_is_unusable_and_empty_creds_store_is_none() {
        let json = r#"{"auths": {"quay.io": {}, "null.example.com": null}, "credsStore": ""}"#;
        let file = parse(AuthFileFormat::DockerConfig, json);
        assert_eq!(file.creds_store(), None);
        for server in ["quay.io", "null.example.com"] {
            assert!(
                matches!(file.lookup(&docker(server)), Lookup::Unusable { .. }),
                "{server}"
            );
        }
    }

    #[test]
    fn legacy_dockercfg_is_a_bare_map() {
        let json = format!(
            r#"{{"quay.io": {{"auth": "{}", "email": "x@example.com"}}}}"#,
            b64("u:p")
        );
        let file = parse(AuthFileFormat::Dockercfg, &json);
        assert_eq!(
            found(file.lookup(&docker("quay.io"))),
            ("u".into(), "p".into(), false, Some("x@example.com".into()))
        );
        assert!(matches!(
            parse_err(AuthFileFormat::Dockercfg, b"auth = dTpw\nemail = a@b"),
            ParseError::LegacyTextForm
        ));
        assert!(matches!(
            parse_err(AuthFileFormat::Dockercfg, br#"{"auths": {}}"#),
            ParseError::AuthsInDockercfg
        ));
    }

    #[test]
    fn containers_auth_follows_containers_rules() {
        let json = format!(
            r#"{{
              "auths": {{
                "quay.io/org/repo": {{"auth": "{}"}},
                "quay.io": {{"auth": "{}"}},
                "docker.io": {{"auth": "{}"}},
                "https://legacy.example.com/v1/": {{"auth": "{}"}},
                "plain.example.com": {{"username": "u", "password": "{SENTINEL}"}},
                "token.example.com": {{"identitytoken": "tok"}}
              }},
              "credsStore": "ignored-in-auth-json",
              "credHelpers": {{"helped.example.com": "secretservice"}}
            }}"#,
            b64("repo:1"),
            b64("host:2"),
            b64("hub:3"),
            b64("legacy:4"),
        );
        let file = parse(AuthFileFormat::ContainersAuth, &json);
        assert_eq!(file.creds_store(), None);
        assert_eq!(
            found(file.lookup(&containers("quay.io/org/repo"))).0,
            "repo"
        );
        assert_eq!(
            found(file.lookup(&containers("quay.io/org/other"))).0,
            "host"
        );
        assert_eq!(found(file.lookup(&containers("quay.io"))).0, "host");
        // Docker Hub aliases are one registry.
        assert_eq!(found(file.lookup(&docker("registry-1.docker.io"))).0, "hub");
        assert_eq!(
            found(file.lookup(&docker("legacy.example.com"))).0,
            "legacy"
        );
        assert_eq!(
            found(file.lookup(&docker("token.example.com"))),
            login("", "tok", true)
        );
        // Plain username/password are ignored in auth.json, with a reason.
        match file.lookup(&docker("plain.example.com")) {
            Lookup::Unusable { reason, .. } => assert!(reason.contains("ignore"), "{reason}"),
            other => panic!("expected unusable, got {other:?}"),
        }
        assert_eq!(
            helper(file.lookup(&docker("helped.example.com"))),
            ("secretservice".into(), "helped.example.com".into())
        );
        // credsStore is not read from auth.json.
        assert!(matches!(
            file.lookup(&docker("ghcr.io")),
            Lookup::NotPresent
        ));
    }

    #[test]
    fn containers_auth_does_not_type_check_fields_it_ignores() {
        let json = format!(
            r#"{{"auths": {{"quay.io": {{"auth": "{}", "username": 7}}}}}}"#,
            b64("a:b")
        );
        let file = parse(AuthFileFormat::ContainersAuth, &json);
        assert_eq!(found(file.lookup(&docker("quay.io"))).0, "a");
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let input = format!("{{\n  \"auths\": {{\n    \"quay.io\": {{\"auth\": \"{SENTINEL}");
        match parse_err(AuthFileFormat::DockerConfig, input.as_bytes()) {
            ParseError::Syntax { line, .. } => assert_eq!(line, 3),
            other => panic!("expected a syntax error, got {other:?}"),
        }
        let trailing = format!("{{\"auths\": {{}}}} {SENTINEL}");
        assert!(matches!(
            parse_err(AuthFileFormat::DockerConfig, trailing.as_bytes()),
            ParseError::Syntax { line: 1, .. }
        ));
    }

    #[test]
    fn wrong_types_name_the_field_not_the_value() {
        let cases: &[(AuthFileFormat, String, &str)] = &[
            (
                AuthFileFormat::DockerConfig,
                format!(r#"["{SENTINEL}"]"#),
                "top level",
            ),
            (
                AuthFileFormat::DockerConfig,
                format!(r#"{{"auths": "{SENTINEL}"}}"#),
                "auths must be an object, found a string",
            ),
            (
                AuthFileFormat::DockerConfig,
                format!(r#"{{"auths": {{"quay.io": "{SENTINEL}"}}}}"#),
                r#"auths["quay.io"] must be an object, found a string"#,
            ),
            (
                AuthFileFormat::DockerConfig,
                r#"{"auths": {"quay.io": {"auth": 93}}}"#.to_string(),
                r#"auths["quay.io"].auth must be a string, found a number"#,
            ),
            (
                AuthFileFormat::DockerConfig,
                format!(r#"{{"auths": {{"quay.io": {{"password": ["{SENTINEL}"]}}}}}}"#),
                r#"auths["quay.io"].password must be a string, found an array"#,
            ),
            (
                AuthFileFormat::DockerConfig,
                r#"{"credsStore": 1}"#.to_string(),
                "credsStore must be a string, found a number",
            ),
            (
                AuthFileFormat::DockerConfig,
                r#"{"credHelpers": {"gcr.io": true}}"#.to_string(),
                r#"credHelpers["gcr.io"] must be a string, found a boolean"#,
            ),
            (
                AuthFileFormat::Dockercfg,
                format!(r#"{{"quay.io": {{"email": {{"x": "{SENTINEL}"}}}}}}"#),
                r#"["quay.io"].email must be a string, found an object"#,
            ),
            (
                AuthFileFormat::ContainersAuth,
                r#"{"auths": {"quay.io": {"identitytoken": false}}}"#.to_string(),
                r#"auths["quay.io"].identitytoken must be a string, found a boolean"#,
            ),
        ];
        for (format, input, want) in cases {
            let shown = parse_err(*format, input.as_bytes()).to_string();
            assert!(shown.contains(want), "{input}: {shown}");
        }
    }

    #[test]
    fn bad_auth_fields_are_refused_without_values() {
        let cases: &[(String, AuthProblem)] = &[
            (format!("{SENTINEL}!!"), AuthProblem::NotBase64),
            (b64(&format!("no-colon-{SENTINEL}")), AuthProblem::NoColon),
            (
                AUTH_ENCODER.encode([0xff, 0xfe, b':', b'x']),
                AuthProblem::NotUtf8,
            ),
        ];
        for format in [AuthFileFormat::DockerConfig, AuthFileFormat::ContainersAuth] {
            for (auth, problem) in cases {
                let input = format!(r#"{{"auths": {{"quay.io": {{"auth": "{auth}"}}}}}}"#);
                assert_eq!(
                    parse_err(format, input.as_bytes()),
                    ParseError::BadAuth {
                        field: r#"auths["quay.io"].auth"#.into(),
                        problem: *problem
                    }
                );
            }
        }
    }

    #[test]
    fn non_utf8_input_is_refused() {
        let mut input = br#"{"auths": {"quay.io": {"password": "SENTINEL-pw-93f1"#.to_vec();
        input.extend_from_slice(&[0xc3, 0x28, b'"', b'}', b'}', b'}']);
        assert!(matches!(
            parse_err(AuthFileFormat::DockerConfig, &input),
            ParseError::NotUtf8 { offset } if offset == input.len() - 6
        ));
    }

    #[test]
    fn render_matches_kubectl_shape() {
        let mut cred = Credential::with_password(docker("quay.io"), "robot", "p<&>\u{2028}\"\\");
        cred.email = Some("me@example.com".into());
        let hub = Credential::with_password(docker("docker.io"), "hub", "pw");
        let json = encode_payload(SecretType::DockerConfigJson, &[cred.clone(), hub.clone()])
            .expect("renders");
        let want = format!(
            concat!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"username":"hub","password":"pw","auth":"{}"}},"#,
                r#""quay.io":{{"username":"robot","password":"p\u003c\u0026\u003e\u2028\"\\","#,
                r#""email":"me@example.com","auth":"{}"}}}}}}"#
            ),
            b64("hub:pw"),
            b64("robot:p<&>\u{2028}\"\\"),
        );
        assert_eq!(String::from_utf8(json).expect("UTF-8"), want);

        let cfg = encode_payload(SecretType::Dockercfg, &[hub]).expect("renders");
        assert_eq!(
            String::from_utf8(cfg).expect("UTF-8"),
            format!(
                r#"{{"https://index.docker.io/v1/":{{"username":"hub","password":"pw","auth":"{}"}}}}"#,
                b64("hub:pw")
            )
        );
        assert_eq!(
            encode_payload(SecretType::DockerConfigJson, &[]).expect("renders"),
            br#"{"auths":{}}"#
        );
    }

    #[test]
    fn go_escaping_covers_controls() {
        let mut out = String::new();
        push_go_json_string(&mut out, "a\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f}\u{2029}é");
        // DEL is not escaped by Go.
        assert_eq!(out, "\"a\\b\\f\\n\\r\\t\\u0001\\u001f\u{7f}\\u2029é\"");
    }

    #[test]
    fn render_refuses_duplicates_and_unusable_credentials() {
        let a = Credential::with_password(docker("docker.io"), "a", "1");
        let b = Credential::with_password(docker("index.docker.io"), "b", "2");
        assert_eq!(
            encode_payload(SecretType::DockerConfigJson, &[a, b]).expect_err("duplicate"),
            RenderError::DuplicateRegistry(DOCKER_HUB_KEY_STR.into())
        );
        let token = Credential {
            registry: docker("quay.io"),
            username: String::new(),
            secret: Secret::IdentityToken(SecretString::from(SENTINEL)),
            email: None,
        };
        let err = encode_payload(SecretType::Dockercfg, &[token]).expect_err("unusable");
        assert!(matches!(
            err,
            RenderError::Unusable(UnusableCredential::IdentityTokenOnly { .. })
        ));
        assert!(!format!("{err} {err:?}").contains(SENTINEL));
    }

    #[test]
    fn decode_reads_payloads_as_the_kubelet_does() {
        let payload = format!(
            r#"{{"auths":{{"quay.io":{{"username":"x","password":"y","auth":"{}","identitytoken":"ignored"}},
                "quay.io/org":{{"username":"plain","password":"pw","email":"e@x"}},
                "localhost:5000":{{}}}}}}"#,
            b64("a:b")
        );
        let creds =
            decode_payload(SecretType::DockerConfigJson, payload.as_bytes()).expect("decodes");
        let summary: Vec<(String, String, String)> = creds
            .iter()
            .map(|c| {
                let Secret::Password(p) = &c.secret else {
                    panic!("kubelet reads passwords only")
                };
                (
                    c.registry.auths_key(),
                    c.username.clone(),
                    p.expose_secret().to_string(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("localhost:5000".into(), String::new(), String::new()),
                ("quay.io".into(), "a".into(), "b".into()),
                ("quay.io/org".into(), "plain".into(), "pw".into()),
            ]
        );
        assert_eq!(creds[2].email.as_deref(), Some("e@x"));
        assert!(
            decode_payload(SecretType::DockerConfigJson, b"{}")
                .expect("decodes")
                .is_empty()
        );
        assert!(matches!(
            decode_payload(SecretType::Dockercfg, br#"{"auths":{}}"#),
            Err(ParseError::AuthsInDockercfg)
        ));
        assert!(matches!(
            decode_payload(SecretType::Dockercfg, br#"{"quay.io:tag/x":{}}"#),
            Err(ParseError::BadKey { .. })
        ));
    }

    fn tricky_string(min: usize) -> impl Strategy<Value = String> {
        let tricky = prop_oneof![
            any::<char>(),
            Just(':'),
            Just('"'),
            Just('\\'),
            Just('<'),
            Just('>'),
            Just('&'),
            Just('\u{2028}'),
            Just('\u{2029}'),
            Just('\u{8}'),
        ];
        proptest::collection::vec(tricky, min..24).prop_map(String::from_iter)
    }

    fn registry() -> impl Strategy<Value = RegistryKey> {
        prop_oneof![
            Just(docker("docker.io")),
            "[a-z][a-z0-9-]{0,10}\\.example\\.com(:[1-9][0-9]{0,3})?".prop_map(|s| docker(&s)),
            "[a-z]{1,8}\\.io/[a-z]{1,8}".prop_map(|s| containers(&s)),
        ]
    }

    fn credential() -> impl Strategy<Value = Credential> {
        (
            registry(),
            tricky_string(1).prop_filter("no ':' in usernames", |u| !u.contains(':')),
            tricky_string(1),
            proptest::option::of(tricky_string(1)),
        )
            .prop_map(|(registry, username, password, email)| Credential {
                email,
                ..Credential::with_password(registry, username, password)
            })
    }

    proptest! {
        #[test]
        fn render_then_decode_gives_the_same_logins(
            creds in proptest::collection::btree_map(registry(), credential(), 0..4),
            dockercfg in any::<bool>(),
        ) {
            let ty = if dockercfg { SecretType::Dockercfg } else { SecretType::DockerConfigJson };
            let creds: Vec<Credential> = creds
                .into_iter()
                .map(|(registry, cred)| Credential { registry, ..cred })
                .collect();
            let payload = encode_payload(ty, &creds).expect("renders");
            // Valid JSON for any JSON reader, not only ours.
            prop_assert!(serde_json::from_slice::<Value>(&payload).is_ok());
            let decoded = decode_payload(ty, &payload).expect("decodes");
            prop_assert_eq!(decoded.len(), creds.len());
            for cred in &creds {
                prop_assert!(
                    decoded.iter().any(|d| d.same_login(cred)),
                    "lost {:?}", cred
                );
            }
            // And the docker file parser reads the same payload to the same logins.
            if ty == SecretType::DockerConfigJson {
                let file = parse_auth_file(AuthFileFormat::DockerConfig, &payload).expect("parses");
                for cred in &creds {
                    // Namespaced keys are not docker lookups: docker reduces `auths` keys to
                    // host[:port], so `y.io/a` and `y.io/b` answer one login for `y.io`.
                    if cred.registry.namespace().is_some() {
                        continue;
                    }
                    let Lookup::Found(found) = file.lookup(&cred.registry) else {
                        prop_assert!(false, "lost {:?}", cred.registry);
                        continue;
                    };
                    prop_assert!(found.same_login(cred));
                }
            }
        }

        #[test]
        fn go_escaping_round_trips_through_any_json_reader(s in tricky_string(0)) {
            let mut out = String::new();
            push_go_json_string(&mut out, &s);
            let raw_html_or_separator = out.contains(['<', '>', '&', '\u{2028}', '\u{2029}']);
            prop_assert!(!raw_html_or_separator);
            prop_assert_eq!(serde_json::from_str::<String>(&out).expect("valid JSON"), s);
        }

        #[test]
        fn arbitrary_bytes_never_panic_or_leak(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for format in [AuthFileFormat::DockerConfig, AuthFileFormat::Dockercfg, AuthFileFormat::ContainersAuth] {
                let _ = parse_auth_file(format, &bytes);
            }
        }
    }
}
