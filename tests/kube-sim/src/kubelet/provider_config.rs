//! The kubelet's `--image-credential-provider-config` and `--image-credential-provider-bin-dir`
//! as kubernetes/kubernetes `pkg/credentialprovider/plugin/config.go` reads and validates them
//! (`readCredentialProviderConfig`, `decode`, `validateCredentialProviderConfig`) and
//! `plugin.go` `RegisterCredentialProviderPlugins` registers them, for the types of
//! `staging/src/k8s.io/kubelet/config/v1/types.go` (`CredentialProviderConfig`):
//!
//! - the path is a file, or a directory whose `*.json`, `*.yaml` and `*.yml` files are read in
//!   lexicographic order and merged (a provider name twice is an error); each is YAML or JSON,
//!   `kind: CredentialProviderConfig` of `kubelet.config.k8s.io/{v1,v1beta1,v1alpha1}`, decoded
//!   strictly (an unknown field is an error);
//! - validation is upstream's, with its texts (aggregated as `[a, b]` when several); the
//!   `KubeletServiceAccountTokenForCredentialProviders` gate is on (beta since 1.34);
//! - the bin dir must exist, and each provider's executable `<bin dir>/<name>` too (else the
//!   kubelet does not start).
//!
//! Pure parsing: no process is run here, nothing is logged.

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The config group.
const GROUP: &str = "kubelet.config.k8s.io";
/// Versions of the config group that serve CredentialProviderConfig.
const CONFIG_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha1"];
/// `apiVersions` of plugin.go, sorted (the order `field.NotSupported` lists them in).
pub const PLUGIN_API_VERSIONS: &[&str] = &[
    "credentialprovider.kubelet.k8s.io/v1",
    "credentialprovider.kubelet.k8s.io/v1alpha1",
    "credentialprovider.kubelet.k8s.io/v1beta1",
];
/// The only plugin API version that carries service-account tokens.
pub const PLUGIN_V1: &str = "credentialprovider.kubelet.k8s.io/v1";

/// `ServiceAccountTokenCacheType`: how credentials obtained with a token are cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCacheType {
    /// Per token: a new token (another pod, a refreshed token) means a new exec.
    Token,
    /// Per service account (namespace, name, uid, annotations).
    ServiceAccount,
}

/// `ServiceAccountTokenAttributes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAttributes {
    /// `serviceAccountTokenAudience`: the audience of the token the plugin gets.
    pub audience: String,
    /// `cacheType` (None only while invalid: validation refuses it).
    pub cache_type: Option<TokenCacheType>,
    /// `cacheType` as written, for the validation message.
    pub cache_type_raw: String,
    /// `requireServiceAccount` (None only while invalid).
    pub require_service_account: Option<bool>,
    /// `requiredServiceAccountAnnotationKeys`.
    pub required_annotation_keys: Vec<String>,
    /// `optionalServiceAccountAnnotationKeys`.
    pub optional_annotation_keys: Vec<String>,
}

/// One `providers[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// `name`: the executable's file name in the bin dir.
    pub name: String,
    /// `matchImages`.
    pub match_images: Vec<String>,
    /// `defaultCacheDuration` in nanoseconds (None: missing, which validation refuses).
    pub default_cache_duration: Option<i64>,
    /// `apiVersion` of the CredentialProviderRequest/Response exchanged with the plugin.
    pub api_version: String,
    /// `args`.
    pub args: Vec<String>,
    /// `env`: (name, value), added to the kubelet's own environment.
    pub env: Vec<(String, String)>,
    /// `tokenAttributes`.
    pub token_attributes: Option<TokenAttributes>,
}

impl ProviderConfig {
    /// `defaultCacheDuration` (validated: present and not negative).
    pub fn default_cache(&self) -> Duration {
        Duration::from_nanos(self.default_cache_duration.unwrap_or(0).unsigned_abs())
    }
}

/// Reads, merges, validates the config at `config_path` and checks the executables in `bin_dir`
/// (`RegisterCredentialProviderPlugins`). The error is the kubelet's startup error.
pub fn register(config_path: &Path, bin_dir: &Path) -> Result<Vec<ProviderConfig>, String> {
    if !bin_dir.exists() {
        return Err(format!(
            "plugin binary directory {} did not exist",
            bin_dir.display()
        ));
    }
    let providers = read(config_path)?;
    let errors = validate(&providers);
    if !errors.is_empty() {
        return Err(format!(
            "failed to validate credential provider config: {}",
            aggregate(&errors)
        ));
    }
    for p in &providers {
        check_executable(&bin_dir.join(&p.name))?;
    }
    Ok(providers)
}

/// `exec.LookPath` of a path with a slash: it must exist and be executable. LookPath returns an
/// empty path on error, so upstream's message names no file.
fn check_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::metadata(path) {
        Err(_) => Err("plugin binary executable  did not exist".to_string()),
        Ok(m) if m.is_dir() || m.permissions().mode() & 0o111 == 0 => Err(format!(
            "error inspecting binary executable : exec: {}: permission denied",
            crate::status::go_quote(&path.display().to_string())
        )),
        Ok(_) => Ok(()),
    }
}

/// `utilerrors.NewAggregate(errs).Error()`.
fn aggregate(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// `readCredentialProviderConfig`: one file, or the config files of a directory in order.
pub fn read(config_path: &Path) -> Result<Vec<ProviderConfig>, String> {
    if config_path.as_os_str().is_empty() {
        return Err("credential provider config path is empty".into());
    }
    let meta = std::fs::metadata(config_path).map_err(|e| {
        format!(
            "unable to access path {}: {}",
            quote_path(config_path),
            go_io_error("stat", config_path, &e)
        )
    })?;
    let files = if meta.is_dir() {
        config_files(config_path)?
    } else {
        vec![config_path.to_path_buf()]
    };
    let mut merged: Vec<ProviderConfig> = Vec::new();
    for file in files {
        let data = std::fs::read(&file).map_err(|e| {
            format!(
                "unable to read file {}: {}",
                quote_path(&file),
                go_io_error("open", &file, &e)
            )
        })?;
        let providers = decode(&data)
            .map_err(|e| format!("error decoding config {}: {e}", quote_path(&file)))?;
        for p in providers {
            if merged.iter().any(|m| m.name == p.name) {
                return Err(format!(
                    "duplicate provider name {} found in configuration file(s)",
                    crate::status::go_quote(&p.name)
                ));
            }
            merged.push(p);
        }
    }
    Ok(merged)
}

fn quote_path(p: &Path) -> String {
    crate::status::go_quote(&p.display().to_string())
}

/// Go's `*PathError` text (`stat /x: no such file or directory`).
fn go_io_error(op: &str, path: &Path, e: &std::io::Error) -> String {
    let what = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    format!("{op} {}: {what}", path.display())
}

/// The `*.json`, `*.yaml`, `*.yml` files of a directory, sorted.
fn config_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "unable to read directory {}: {}",
            quote_path(dir),
            go_io_error("open", dir, &e)
        )
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| !p.is_dir())
        .filter(|p| {
            matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("json" | "yaml" | "yml")
            )
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "no configuration files found in directory {}",
            quote_path(dir)
        ));
    }
    Ok(files)
}

/// `decode`: YAML or JSON, the type, then the fields, strictly.
pub fn decode(data: &[u8]) -> Result<Vec<ProviderConfig>, String> {
    let value: Value = serde_yaml_ng::from_slice(data).map_err(|e| e.to_string())?;
    let Value::Object(top) = value else {
        return Err("couldn't get version/kind; json parse error: expected an object".into());
    };
    let api_version = top.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = top.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        return Err(format!(
            "Object 'Kind' is missing in '{}'",
            String::from_utf8_lossy(data).trim()
        ));
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    if group != GROUP || !CONFIG_VERSIONS.contains(&version) {
        return Err(format!(
            "no kind {} is registered for version {}",
            crate::status::go_quote(kind),
            crate::status::go_quote(api_version)
        ));
    }
    if kind != "CredentialProviderConfig" {
        return Err(format!(
            "no kind {} is registered for version {}",
            crate::status::go_quote(kind),
            crate::status::go_quote(api_version)
        ));
    }
    let mut strict = Strict::default();
    strict.known(&top, "", &["apiVersion", "kind", "providers"]);
    let mut providers = Vec::new();
    for (i, p) in list(top.get("providers"), "providers")?.iter().enumerate() {
        providers.push(provider(p, &format!("providers[{i}]"), &mut strict)?);
    }
    strict.finish()?;
    Ok(providers)
}

/// Unknown fields, collected as the strict decoder reports them.
#[derive(Default)]
struct Strict(Vec<String>);

impl Strict {
    fn known(&mut self, m: &Map<String, Value>, path: &str, fields: &[&str]) {
        for k in m.keys() {
            if !fields.contains(&k.as_str()) {
                let full = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                self.0
                    .push(format!("unknown field {}", crate::status::go_quote(&full)));
            }
        }
    }

    fn finish(self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("strict decoding error: {}", self.0.join(", ")))
        }
    }
}

fn type_error(path: &str, want: &str, got: &Value) -> String {
    let kind = match got {
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Object(_) => "object",
        Value::Null => "null",
    };
    format!("json: cannot unmarshal {kind} into Go struct field {path} of type {want}")
}

fn list<'a>(v: Option<&'a Value>, path: &str) -> Result<&'a [Value], String> {
    match v {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(type_error(path, "[]", other)),
    }
}

fn string(v: Option<&Value>, path: &str) -> Result<String, String> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(type_error(path, "string", other)),
    }
}

fn strings(v: Option<&Value>, path: &str) -> Result<Vec<String>, String> {
    list(v, path)?
        .iter()
        .map(|x| string(Some(x), path))
        .collect()
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object().ok_or_else(|| type_error(path, "struct", v))
}

fn provider(v: &Value, path: &str, strict: &mut Strict) -> Result<ProviderConfig, String> {
    let m = object(v, path)?;
    strict.known(
        m,
        path,
        &[
            "name",
            "matchImages",
            "defaultCacheDuration",
            "apiVersion",
            "args",
            "env",
            "tokenAttributes",
        ],
    );
    let default_cache_duration = match m.get("defaultCacheDuration") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_go_duration(s)?),
        Some(other) => {
            return Err(type_error(
                &format!("{path}.defaultCacheDuration"),
                "string",
                other,
            ));
        }
    };
    let mut env = Vec::new();
    for (i, e) in list(m.get("env"), &format!("{path}.env"))?
        .iter()
        .enumerate()
    {
        let ep = format!("{path}.env[{i}]");
        let em = object(e, &ep)?;
        strict.known(em, &ep, &["name", "value"]);
        env.push((
            string(em.get("name"), &format!("{ep}.name"))?,
            string(em.get("value"), &format!("{ep}.value"))?,
        ));
    }
    let token_attributes = match m.get("tokenAttributes") {
        None | Some(Value::Null) => None,
        Some(t) => Some(token_attributes(
            t,
            &format!("{path}.tokenAttributes"),
            strict,
        )?),
    };
    Ok(ProviderConfig {
        name: string(m.get("name"), &format!("{path}.name"))?,
        match_images: strings(m.get("matchImages"), &format!("{path}.matchImages"))?,
        default_cache_duration,
        api_version: string(m.get("apiVersion"), &format!("{path}.apiVersion"))?,
        args: strings(m.get("args"), &format!("{path}.args"))?,
        env,
        token_attributes,
    })
}

fn token_attributes(v: &Value, path: &str, strict: &mut Strict) -> Result<TokenAttributes, String> {
    let m = object(v, path)?;
    strict.known(
        m,
        path,
        &[
            "serviceAccountTokenAudience",
            "cacheType",
            "requireServiceAccount",
            "requiredServiceAccountAnnotationKeys",
            "optionalServiceAccountAnnotationKeys",
        ],
    );
    let cache_type_raw = string(m.get("cacheType"), &format!("{path}.cacheType"))?;
    let cache_type = match cache_type_raw.as_str() {
        "Token" => Some(TokenCacheType::Token),
        "ServiceAccount" => Some(TokenCacheType::ServiceAccount),
        _ => None,
    };
    let require_service_account = match m.get("requireServiceAccount") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            return Err(type_error(
                &format!("{path}.requireServiceAccount"),
                "bool",
                other,
            ));
        }
    };
    Ok(TokenAttributes {
        audience: string(
            m.get("serviceAccountTokenAudience"),
            &format!("{path}.serviceAccountTokenAudience"),
        )?,
        cache_type,
        cache_type_raw,
        require_service_account,
        required_annotation_keys: strings(
            m.get("requiredServiceAccountAnnotationKeys"),
            &format!("{path}.requiredServiceAccountAnnotationKeys"),
        )?,
        optional_annotation_keys: strings(
            m.get("optionalServiceAccountAnnotationKeys"),
            &format!("{path}.optionalServiceAccountAnnotationKeys"),
        )?,
    })
}

/// Go's `time.ParseDuration`, in nanoseconds.
pub fn parse_go_duration(s: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", crate::status::go_quote(s));
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(invalid());
        }
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: f64 = match unit {
            "" => {
                return Err(format!(
                    "time: missing unit in duration {}",
                    crate::status::go_quote(s)
                ));
            }
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            other => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    crate::status::go_quote(other),
                    crate::status::go_quote(s)
                ));
            }
        };
        let value: f64 = num.parse().map_err(|_| invalid())?;
        total += value * scale;
    }
    if total > 9.223_372_036_854_775e18 {
        return Err(invalid());
    }
    #[allow(clippy::cast_possible_truncation)]
    let nanos = total.round() as i64;
    Ok(if neg { -nanos } else { nanos })
}

/// Go's `time.Duration.String()` (`1h2m3.5s`, `-1m0s`, `500ms`, `0s`).
pub fn format_go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (unit, div) = if n < 1_000 {
            ("ns", 1)
        } else if n < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", fraction(n, div));
    }
    let h = n / 3_600_000_000_000;
    let m = (n / 60_000_000_000) % 60;
    let secs = fraction(n % 60_000_000_000, 1_000_000_000);
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&secs);
    out.push('s');
    out
}

/// `n / div` with Go's trailing-zero-free decimal fraction.
fn fraction(n: u64, div: u64) -> String {
    let whole = n / div;
    let frac = n % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// `field.Invalid` with a string value.
fn invalid(field: &str, value: &str, detail: &str) -> String {
    format!(
        "{field}: Invalid value: {}: {detail}",
        crate::status::go_quote(value)
    )
}

/// `validateCredentialProviderConfig` (with the service-account token feature on).
pub fn validate(providers: &[ProviderConfig]) -> Vec<String> {
    let mut errs = Vec::new();
    if providers.is_empty() {
        errs.push("providers: Required value: at least 1 item in plugins is required".into());
    }
    let mut seen: Vec<&str> = Vec::new();
    for p in providers {
        validate_name(p, &seen, &mut errs);
        seen.push(&p.name);
        if p.api_version.is_empty() {
            errs.push("providers.apiVersion: Required value".into());
        } else if !PLUGIN_API_VERSIONS.contains(&p.api_version.as_str()) {
            let valid: Vec<String> = PLUGIN_API_VERSIONS
                .iter()
                .map(|v| crate::status::go_quote(v))
                .collect();
            errs.push(format!(
                "providers.apiVersion: Unsupported value: {}: supported values: {}",
                crate::status::go_quote(&p.api_version),
                valid.join(", ")
            ));
        }
        if p.match_images.is_empty() {
            errs.push(
                "providers.matchImages: Required value: at least 1 item in matchImages is required"
                    .into(),
            );
        }
        for m in &p.match_images {
            if let Err(e) = super::keyring::parse_schemeless_url(m) {
                errs.push(invalid(
                    "providers.matchImages",
                    m,
                    &format!("match image is invalid: {e}"),
                ));
            }
        }
        match p.default_cache_duration {
            None => errs.push("providers.defaultCacheDuration: Required value".into()),
            Some(d) if d < 0 => errs.push(invalid(
                "providers.defaultCacheDuration",
                &format_go_duration(d),
                "must be greater than or equal to 0",
            )),
            Some(_) => {}
        }
        if let Some(t) = &p.token_attributes {
            validate_token_attributes(p, t, &mut errs);
        }
    }
    errs
}

fn validate_name(p: &ProviderConfig, seen: &[&str], errs: &mut Vec<String>) {
    let field = "providers.name";
    if p.name.contains('/') {
        errs.push(invalid(field, &p.name, "provider name cannot contain '/'"));
    }
    if p.name.contains(' ') {
        errs.push(invalid(
            field,
            &p.name,
            "provider name cannot contain spaces",
        ));
    }
    if p.name == "." {
        errs.push(invalid(field, &p.name, "provider name cannot be '.'"));
    }
    if p.name == ".." {
        errs.push(invalid(field, &p.name, "provider name cannot be '..'"));
    }
    if seen.contains(&p.name.as_str()) {
        errs.push(format!(
            "{field}: Duplicate value: {}",
            crate::status::go_quote(&p.name)
        ));
    }
}

fn validate_token_attributes(p: &ProviderConfig, t: &TokenAttributes, errs: &mut Vec<String>) {
    let path = "providers.tokenAttributes";
    if t.audience.is_empty() {
        errs.push(format!(
            "{path}.serviceAccountTokenAudience: Required value"
        ));
    }
    if t.require_service_account.is_none() {
        errs.push(format!("{path}.requireServiceAccount: Required value"));
    }
    if p.api_version != PLUGIN_V1 {
        errs.push(format!(
            "{path}: Forbidden: tokenAttributes is only supported for {PLUGIN_V1} API version"
        ));
    }
    if t.require_service_account == Some(false) && !t.required_annotation_keys.is_empty() {
        errs.push(format!(
            "{path}.requiredServiceAccountAnnotationKeys: Forbidden: requireServiceAccount cannot be false when requiredServiceAccountAnnotationKeys is set"
        ));
    }
    validate_annotation_keys(
        &format!("{path}.requiredServiceAccountAnnotationKeys"),
        &t.required_annotation_keys,
        errs,
    );
    validate_annotation_keys(
        &format!("{path}.optionalServiceAccountAnnotationKeys"),
        &t.optional_annotation_keys,
        errs,
    );
    let mut both: Vec<&String> = t
        .required_annotation_keys
        .iter()
        .filter(|k| t.optional_annotation_keys.contains(k))
        .collect();
    both.sort();
    both.dedup();
    if !both.is_empty() {
        let listed: Vec<String> = both.iter().map(|k| crate::status::go_quote(k)).collect();
        errs.push(format!(
            "{path}: Invalid value: []string{{{}}}: annotation keys cannot be both required and optional",
            listed.join(", ")
        ));
    }
    if t.cache_type_raw.is_empty() {
        errs.push(format!(
            "{path}.cacheType: Required value: cacheType is required to be set when tokenAttributes is specified. Supported values are: ServiceAccount, Token"
        ));
    } else if t.cache_type.is_none() {
        errs.push(format!(
            "{path}.cacheType: Unsupported value: {}: supported values: \"ServiceAccount\", \"Token\"",
            crate::status::go_quote(&t.cache_type_raw)
        ));
    }
}

/// Annotation keys are qualified names (case-insensitively) and unique.
fn validate_annotation_keys(field: &str, keys: &[String], errs: &mut Vec<String>) {
    let mut seen: Vec<&String> = Vec::new();
    for k in keys {
        for msg in qualified_name_errors(&k.to_lowercase()) {
            errs.push(invalid(field, k, &msg));
        }
        if seen.contains(&k) {
            errs.push(format!(
                "{field}: Duplicate value: {}",
                crate::status::go_quote(k)
            ));
        }
        seen.push(k);
    }
}

/// apimachinery `validation.IsQualifiedName`: `[prefix/]name`, a DNS-1123 subdomain prefix and
/// a name of at most 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn qualified_name_errors(value: &str) -> Vec<String> {
    const NAME_FMT: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    let parts: Vec<&str> = value.split('/').collect();
    let (prefix, name) = match parts.as_slice() {
        [name] => (None, *name),
        [prefix, name] => (Some(*prefix), *name),
        _ => {
            return vec![
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".into(),
            ];
        }
    };
    let mut errs = Vec::new();
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else if !is_dns1123_subdomain(p) {
            errs.push(("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')").to_string());
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".into());
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    let edges = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    let name_ok = name.is_empty() || (ok_chars && edges);
    if !name_ok {
        errs.push(format!("name part {NAME_FMT}"));
    }
    errs
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(yaml: &str) -> Result<Vec<ProviderConfig>, String> {
        decode(yaml.as_bytes())
    }

    const VALID: &str = "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n- name: vault\n  matchImages: [\"*.example.com\", \"127.0.0.1:5000/team\"]\n  defaultCacheDuration: 10m\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  args: [--mode, plugin]\n  env: [{name: A, value: b}]\n";

    #[test]
    fn a_valid_config_decodes_from_yaml_and_json() {
        let p = one(VALID).expect("valid");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name, "vault");
        assert_eq!(p[0].default_cache(), Duration::from_secs(600));
        assert_eq!(p[0].args, ["--mode", "plugin"]);
        assert_eq!(p[0].env, [("A".to_string(), "b".to_string())]);
        assert!(validate(&p).is_empty());
        let json = r#"{"kind":"CredentialProviderConfig","apiVersion":"kubelet.config.k8s.io/v1beta1","providers":[{"name":"x","matchImages":["r.io"],"defaultCacheDuration":"1m30s","apiVersion":"credentialprovider.kubelet.k8s.io/v1beta1"}]}"#;
        let p = one(json).expect("json");
        assert_eq!(p[0].default_cache(), Duration::from_secs(90));
    }

    #[test]
    fn decoding_is_strict_and_typed() {
        let e = one(&VALID.replace("  args:", "  argz:")).err();
        assert_eq!(
            e.as_deref(),
            Some("strict decoding error: unknown field \"providers[0].argz\"")
        );
        let e = one(&VALID.replace("kind: CredentialProviderConfig", "kind: WrongKind")).err();
        assert_eq!(
            e.as_deref(),
            Some("no kind \"WrongKind\" is registered for version \"kubelet.config.k8s.io/v1\"")
        );
        assert!(one(&VALID.replace("10m", "10")).is_err());
    }

    #[test]
    fn validation_texts_are_upstream_s() {
        let base = one(VALID).expect("valid").remove(0);
        let check = |f: &dyn Fn(&mut ProviderConfig), want: &str| {
            let mut p = base.clone();
            f(&mut p);
            assert_eq!(validate(&[p]), [want.to_string()]);
        };
        check(
            &|p| p.match_images.clear(),
            "providers.matchImages: Required value: at least 1 item in matchImages is required",
        );
        check(
            &|p| p.default_cache_duration = None,
            "providers.defaultCacheDuration: Required value",
        );
        check(
            &|p| p.name = "foo/../bar".into(),
            "providers.name: Invalid value: \"foo/../bar\": provider name cannot contain '/'",
        );
        check(
            &|p| p.api_version = "credentialprovider.kubelet.k8s.io/v1alpha0".into(),
            "providers.apiVersion: Unsupported value: \"credentialprovider.kubelet.k8s.io/v1alpha0\": supported values: \"credentialprovider.kubelet.k8s.io/v1\", \"credentialprovider.kubelet.k8s.io/v1alpha1\", \"credentialprovider.kubelet.k8s.io/v1beta1\"",
        );
        check(
            &|p| p.default_cache_duration = Some(-60_000_000_000),
            "providers.defaultCacheDuration: Invalid value: \"-1m0s\": must be greater than or equal to 0",
        );
        check(
            &|p| p.match_images = vec!["%invalid%".into()],
            "providers.matchImages: Invalid value: \"%invalid%\": match image is invalid: parse \"https://%invalid%\": invalid URL escape \"%in\"",
        );
        assert_eq!(
            validate(&[]),
            ["providers: Required value: at least 1 item in plugins is required"]
        );
        assert_eq!(
            validate(&[base.clone(), base.clone()]),
            ["providers.name: Duplicate value: \"vault\""]
        );
    }

    #[test]
    fn token_attribute_validation() {
        let mut p = one(VALID).expect("valid").remove(0);
        p.token_attributes = Some(TokenAttributes {
            audience: String::new(),
            cache_type: None,
            cache_type_raw: String::new(),
            require_service_account: Some(false),
            required_annotation_keys: vec!["prefix.io/a".into()],
            optional_annotation_keys: vec!["prefix.io/a".into(), "bad key".into()],
        });
        assert_eq!(
            validate(&[p]),
            [
                "providers.tokenAttributes.serviceAccountTokenAudience: Required value",
                "providers.tokenAttributes.requiredServiceAccountAnnotationKeys: Forbidden: requireServiceAccount cannot be false when requiredServiceAccountAnnotationKeys is set",
                "providers.tokenAttributes.optionalServiceAccountAnnotationKeys: Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                "providers.tokenAttributes: Invalid value: []string{\"prefix.io/a\"}: annotation keys cannot be both required and optional",
                "providers.tokenAttributes.cacheType: Required value: cacheType is required to be set when tokenAttributes is specified. Supported values are: ServiceAccount, Token",
            ]
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10m"), Ok(600_000_000_000));
        assert_eq!(parse_go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-1m"), Ok(-60_000_000_000));
        assert_eq!(
            parse_go_duration("5").err().as_deref(),
            Some("time: missing unit in duration \"5\"")
        );
        assert_eq!(
            parse_go_duration("5d").err().as_deref(),
            Some("time: unknown unit \"d\" in duration \"5d\"")
        );
        assert_eq!(
            parse_go_duration("").err().as_deref(),
            Some("time: invalid duration \"\"")
        );
        assert_eq!(format_go_duration(-60_000_000_000), "-1m0s");
        assert_eq!(format_go_duration(5_400_000_000_000), "1h30m0s");
        assert_eq!(format_go_duration(1_500_000_000), "1.5s");
        assert_eq!(format_go_duration(500_000_000), "500ms");
        assert_eq!(format_go_duration(0), "0s");
    }
}
