//! Kubelet image credential provider (a trigger): `pullsecretd credential-provider` reads one
//! `CredentialProviderRequest` on stdin and writes one `CredentialProviderResponse` on stdout,
//! as the kubelet's exec plugin protocol wants (kubernetes/kubernetes
//! `staging/src/k8s.io/kubelet/pkg/apis/credentialprovider/v1/types.go`, and the same shapes in
//! `v1beta1`/`v1alpha1`), so pods pull with credentials from the config's sources without any
//! Secret in the cluster.
//!
//! This module is the pure part: decoding the request, finding the registry the config serves
//! for an image, naming the Vault role in service-account mode, and encoding the response. The
//! binary (`commands::credential_provider`) does the reading and the lookups.
//!
//! Must not: answer a failure with an empty success (the kubelet would cache "no
//! credentials"; it must see a non-zero exit and fall back by itself), put a credential or a
//! token in an error, or answer an image of a registry the config does not serve with anything
//! but a valid response with no `auth` (an anonymous pull is the kubelet's business).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::config::{CacheKeyType, Config, RegistryConfig, Rotation};
use crate::model::credential::{Credential, RegistryKey, Secret};

/// The program name that makes the binary answer as the provider (`argv[0]`), as the
/// kubelet runs `<bin dir>/<provider name>`.
pub const PROVIDER_NAME: &str = "pullsecretd-credential-provider";
/// Largest request read from stdin; a real one (with a token) is a few KiB.
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;

const REQUEST_KIND: &str = "CredentialProviderRequest";
const RESPONSE_KIND: &str = "CredentialProviderResponse";

/// The `credentialprovider.kubelet.k8s.io` versions the kubelet speaks; the response is
/// written in the request's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    V1Beta1,
    V1Alpha1,
}

impl ApiVersion {
    pub const ALL: [Self; 3] = [Self::V1, Self::V1Beta1, Self::V1Alpha1];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "credentialprovider.kubelet.k8s.io/v1",
            Self::V1Beta1 => "credentialprovider.kubelet.k8s.io/v1beta1",
            Self::V1Alpha1 => "credentialprovider.kubelet.k8s.io/v1alpha1",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == text)
    }
}

/// One decoded request. The token is kept as a secret: never shown, zeroed on drop.
pub struct Request {
    pub api_version: ApiVersion,
    /// The image as the kubelet names it (`host[:port]/path`, maybe with a tag or digest).
    pub image: String,
    pub service_account_token: Option<SecretString>,
    pub service_account_annotations: BTreeMap<String, String>,
}

/// Why a request cannot be answered. Texts name fields and versions, never values.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(
        "the request on stdin is not complete JSON ({0}); the kubelet sends one CredentialProviderRequest"
    )]
    NotJson(String),
    #[error("the request on stdin is not a JSON object")]
    NotAnObject,
    #[error("the request's kind is not {REQUEST_KIND}")]
    WrongKind,
    #[error(
        "the request's apiVersion is not one this provider speaks ({}); set apiVersion in the kubelet's CredentialProviderConfig to one of them",
        ApiVersion::ALL.map(ApiVersion::as_str).join(", ")
    )]
    UnknownApiVersion,
    #[error("the request names no image")]
    NoImage,
    #[error("the request's {0} is not of the type the kubelet's API gives it")]
    BadField(&'static str),
}

/// Decodes one request, checking what the upstream type requires.
pub fn parse_request(input: &[u8]) -> Result<Request, RequestError> {
    let value: Value = serde_json::from_slice(input).map_err(|e| {
        // serde_json's message names a line and column and what it expected, never the text.
        RequestError::NotJson(e.to_string())
    })?;
    let object = value.as_object().ok_or(RequestError::NotAnObject)?;
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(ApiVersion::parse)
        .ok_or(RequestError::UnknownApiVersion)?;
    if object.get("kind").and_then(Value::as_str) != Some(REQUEST_KIND) {
        return Err(RequestError::WrongKind);
    }
    let image = match object.get("image") {
        Some(Value::String(image)) if !image.trim().is_empty() => image.trim().to_string(),
        Some(Value::String(_)) | None | Some(Value::Null) => return Err(RequestError::NoImage),
        Some(_) => return Err(RequestError::BadField("image")),
    };
    let service_account_token = match object.get("serviceAccountToken") {
        Some(Value::String(token)) if !token.is_empty() => {
            Some(SecretString::from(token.to_string()))
        }
        Some(Value::String(_) | Value::Null) | None => None,
        Some(_) => return Err(RequestError::BadField("serviceAccountToken")),
    };
    let service_account_annotations = match object.get("serviceAccountAnnotations") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(v) => Ok((k.clone(), v.clone())),
                _ => Err(RequestError::BadField("serviceAccountAnnotations")),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Null) | None => BTreeMap::new(),
        Some(_) => return Err(RequestError::BadField("serviceAccountAnnotations")),
    };
    Ok(Request {
        api_version,
        image,
        service_account_token,
        service_account_annotations,
    })
}

/// The image's repository as a registry key (`host[:port]/path`, no tag or digest), with
/// Docker Hub short names (`nginx`, `team/app`) on Docker Hub as the kubelet reads them.
pub fn image_repository(image: &str) -> Option<RegistryKey> {
    let name = image.split('@').next().unwrap_or_default();
    let name = match name.rsplit_once(':') {
        // A colon after the last `/` is a tag; one before it is a port.
        Some((repository, tag)) if !tag.contains('/') => repository,
        _ => name,
    };
    let first = name.split('/').next().unwrap_or_default();
    let has_host =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let full = if has_host {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    RegistryKey::from_containers(&full).ok()
}

/// The registry of `config` serving `image`: the one whose server (with its namespace, if it
/// has one) is the longest prefix of the image's repository.
pub fn registry_for_image<'c>(config: &'c Config, image: &str) -> Option<&'c RegistryConfig> {
    let repository = image_repository(image)?;
    repository
        .lookup_order()
        .iter()
        .find_map(|key| config.registries.values().find(|r| r.server == *key))
}

/// How long the kubelet may keep the answer for `registry`: `credentialProvider.cacheDuration`,
/// else the shortest `rotation.refresh` of the pull secrets using it (a rotated password is
/// then picked up as soon as a Secret would have been), else the default refresh.
pub fn cache_duration(config: &Config, registry: &str) -> Duration {
    config
        .credential_provider
        .cache_duration
        .unwrap_or_else(|| {
            config
                .pull_secrets
                .iter()
                .filter(|p| p.registries.iter().any(|r| r == registry))
                .map(|p| p.rotation.refresh)
                .min()
                .unwrap_or(Rotation::default().refresh)
        })
}

/// The service account a kubelet-minted token is for, from its `kubernetes.io` claim. The
/// signature is not checked here: Vault checks the token (TokenReview) when it is presented;
/// this only names the role to present it under.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenSubject {
    pub namespace: String,
    pub name: String,
}

/// Reads the subject of a service-account token. The error never holds any part of it.
pub fn token_subject(token: &SecretString) -> Result<TokenSubject, String> {
    const NOT_A_TOKEN: &str =
        "the request's serviceAccountToken is not a Kubernetes service-account token (JWT)";
    let mut parts = token.expose_secret().split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(NOT_A_TOKEN.into());
    };
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| NOT_A_TOKEN.to_string())?,
    );
    let claims: Value = serde_json::from_slice(&decoded).map_err(|_| NOT_A_TOKEN.to_string())?;
    let claim = &claims["kubernetes.io"];
    let namespace = claim["namespace"].as_str();
    let name = claim["serviceaccount"]["name"].as_str();
    match (namespace, name) {
        (Some(namespace), Some(name)) if !namespace.is_empty() && !name.is_empty() => {
            Ok(TokenSubject {
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
        }
        _ => Err(
            "the request's serviceAccountToken has no kubernetes.io namespace and \
                  service-account name claims"
                .into(),
        ),
    }
}

/// What the response says: credentials for `auth` keys, or none (an anonymous pull).
pub struct Answer {
    pub cache_key_type: CacheKeyType,
    /// `None`: leave it to the kubelet's `defaultCacheDuration`.
    pub cache_duration: Option<Duration>,
    /// Match string (`host[:port][/path]`) → (username, password).
    pub auth: BTreeMap<String, (String, SecretString)>,
}

/// Why a credential cannot go into a response.
#[derive(Debug, thiserror::Error)]
#[error(
    "registry {0}: its credential is an identity token, which the kubelet cannot use (it \
     takes a username and password)"
)]
pub struct UnusableForKubelet(pub String);

impl Answer {
    /// No credentials: the kubelet pulls without this provider's help.
    pub fn anonymous(cache_key_type: CacheKeyType) -> Self {
        Self {
            cache_key_type,
            cache_duration: None,
            auth: BTreeMap::new(),
        }
    }

    /// The credential of `registry` under its server as the match string.
    pub fn with_credential(
        cache_key_type: CacheKeyType,
        cache_duration: Duration,
        registry: &RegistryConfig,
        credential: &Credential,
    ) -> Result<Self, UnusableForKubelet> {
        let Secret::Password(password) = &credential.secret else {
            return Err(UnusableForKubelet(registry.name.clone()));
        };
        let auth = BTreeMap::from([(
            registry.server.to_string(),
            (credential.username.clone(), password.clone()),
        )]);
        Ok(Self {
            cache_key_type,
            cache_duration: Some(cache_duration),
            auth,
        })
    }
}

/// `CredentialProviderResponse` as the kubelet's JSON decoder reads it: the upstream field
/// names, `cacheDuration` as a Go duration (`metav1.Duration`), `auth` left out when empty.
#[derive(Serialize)]
struct WireResponse<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    #[serde(rename = "cacheKeyType")]
    cache_key_type: &'static str,
    #[serde(rename = "cacheDuration", skip_serializing_if = "Option::is_none")]
    cache_duration: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    auth: BTreeMap<&'a str, WireAuth<'a>>,
}

#[derive(Serialize)]
struct WireAuth<'a> {
    username: &'a str,
    password: &'a str,
}

/// The response bytes (one JSON object and a newline), zeroed when dropped.
pub fn render_response(version: ApiVersion, answer: &Answer) -> Zeroizing<Vec<u8>> {
    let wire = WireResponse {
        kind: RESPONSE_KIND,
        api_version: version.as_str(),
        cache_key_type: answer.cache_key_type.as_str(),
        cache_duration: answer.cache_duration.map(go_duration),
        auth: answer
            .auth
            .iter()
            .map(|(key, (username, password))| {
                (
                    key.as_str(),
                    WireAuth {
                        username,
                        password: password.expose_secret(),
                    },
                )
            })
            .collect(),
    };
    // Serialising plain strings and maps cannot fail.
    let mut bytes = Zeroizing::new(serde_json::to_vec(&wire).unwrap_or_default());
    bytes.push(b'\n');
    bytes
}

/// A duration as Go's `time.Duration.String` writes it ("5m0s", "1h0m0s", "30s", "1.5s",
/// "250ms", "0s"), which is what `metav1.Duration` puts in JSON.
pub fn go_duration(duration: Duration) -> String {
    let total_ms = duration.as_millis();
    if total_ms == 0 {
        return "0s".into();
    }
    if total_ms < 1000 {
        return format!("{total_ms}ms");
    }
    let secs = duration.as_secs();
    let millis = duration.subsec_millis();
    let (hours, minutes, seconds) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let seconds = if millis == 0 {
        format!("{seconds}s")
    } else {
        let fraction = format!("{millis:03}");
        format!("{seconds}.{}s", fraction.trim_end_matches('0'))
    };
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml, Path::new("/nonexistent/config.yaml")).expect("valid config")
    }

    #[test]
    fn durations_are_written_as_go_writes_them() {
        for (secs, millis, text) in [
            (0, 0, "0s"),
            (0, 250, "250ms"),
            (1, 500, "1.5s"),
            (30, 0, "30s"),
            (300, 0, "5m0s"),
            (90, 0, "1m30s"),
            (3600, 0, "1h0m0s"),
            (3661, 0, "1h1m1s"),
            (86400, 0, "24h0m0s"),
        ] {
            let duration = Duration::from_secs(secs) + Duration::from_millis(millis);
            assert_eq!(go_duration(duration), text);
        }
    }

    /// Field by field against `CredentialProviderResponse` in
    /// k8s.io/kubelet/pkg/apis/credentialprovider/v1/types.go: TypeMeta's `kind` and
    /// `apiVersion`, `cacheKeyType`, `cacheDuration` (a `*metav1.Duration`: a Go duration
    /// string, omitted when nil), `auth` (`map[string]AuthConfig`, omitempty) whose values
    /// have exactly `username` and `password`.
    #[test]
    fn the_response_has_exactly_the_upstream_fields() {
        let config = config(
            "registries:\n  app:\n    server: 127.0.0.1:5000\n    from: { dockerConfig: /x.json }\n",
        );
        let registry = &config.registries["app"];
        let credential = Credential {
            registry: registry.server.clone(),
            username: "robot".into(),
            secret: Secret::Password(SecretString::from("pw".to_string())),
            email: Some("a@b.c".into()),
        };
        for version in ApiVersion::ALL {
            let answer = Answer::with_credential(
                CacheKeyType::Registry,
                Duration::from_secs(300),
                registry,
                &credential,
            )
            .expect("a password credential");
            let bytes = render_response(version, &answer);
            assert_eq!(bytes.last(), Some(&b'\n'), "one line");
            let value: Value = serde_json::from_slice(&bytes).expect("JSON");
            let object = value.as_object().expect("an object");
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                [
                    "apiVersion",
                    "auth",
                    "cacheDuration",
                    "cacheKeyType",
                    "kind"
                ]
            );
            assert_eq!(value["kind"], "CredentialProviderResponse");
            assert_eq!(value["apiVersion"], version.as_str());
            assert_eq!(value["cacheKeyType"], "Registry");
            assert_eq!(value["cacheDuration"], "5m0s");
            let auth = value["auth"].as_object().expect("auth map");
            assert_eq!(auth.len(), 1);
            let entry = auth["127.0.0.1:5000"].as_object().expect("AuthConfig");
            let fields: Vec<&str> = entry.keys().map(String::as_str).collect();
            assert_eq!(fields, ["password", "username"]);
            assert_eq!(entry["username"], "robot");
            assert_eq!(entry["password"], "pw");
        }
        // No credential: no auth, no cacheDuration (the kubelet's default applies).
        let bytes = render_response(ApiVersion::V1, &Answer::anonymous(CacheKeyType::Image));
        let value: Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(
            value,
            serde_json::json!({
                "kind": "CredentialProviderResponse",
                "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                "cacheKeyType": "Image"
            })
        );
    }

    #[test]
    fn requests_are_decoded_strictly_enough() {
        let ok = br#"{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1beta1","image":"r.io/a/b:v1"}"#;
        let request = parse_request(ok).expect("valid");
        assert_eq!(request.api_version, ApiVersion::V1Beta1);
        assert_eq!(request.image, "r.io/a/b:v1");
        assert!(request.service_account_token.is_none());
        let truncated = &ok[..ok.len() - 5];
        assert!(matches!(
            parse_request(truncated),
            Err(RequestError::NotJson(_))
        ));
        let unknown = br#"{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v2","image":"r.io/a"}"#;
        assert!(matches!(
            parse_request(unknown),
            Err(RequestError::UnknownApiVersion)
        ));
        let kind = br#"{"kind":"Pod","apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":"r.io/a"}"#;
        assert!(matches!(parse_request(kind), Err(RequestError::WrongKind)));
        let no_image = br#"{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1"}"#;
        assert!(matches!(
            parse_request(no_image),
            Err(RequestError::NoImage)
        ));
        let token = br#"{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":"r.io/a","serviceAccountToken":"SECRET-TOKEN","serviceAccountAnnotations":{"k":"v"}}"#;
        let request = parse_request(token).expect("valid");
        assert_eq!(
            request
                .service_account_token
                .as_ref()
                .map(|t| t.expose_secret().to_string()),
            Some("SECRET-TOKEN".into())
        );
        assert_eq!(request.service_account_annotations["k"], "v");
    }

    #[test]
    fn images_find_their_registry_by_longest_prefix() {
        let config = config(
            "registries:\n\
             \x20 local: { server: 127.0.0.1:5000, from: { dockerConfig: /x.json } }\n\
             \x20 quay: { server: quay.io, from: { dockerConfig: /x.json } }\n\
             \x20 hub: { server: docker.io, from: { dockerConfig: /x.json } }\n",
        );
        let name = |image: &str| registry_for_image(&config, image).map(|r| r.name.as_str());
        assert_eq!(name("127.0.0.1:5000/team/app:v1"), Some("local"));
        assert_eq!(name("127.0.0.1:5000/team/app@sha256:abc"), Some("local"));
        assert_eq!(name("127.0.0.1:5001/team/app"), None);
        assert_eq!(name("quay.io/team/app"), Some("quay"));
        assert_eq!(name("quay.io/other/app:v2"), Some("quay"));
        assert_eq!(name("nginx"), Some("hub"));
        assert_eq!(name("gcr.io/x/y"), None);
    }

    #[test]
    fn token_subjects_come_from_the_kubernetes_claim() {
        let encode = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        let claims = serde_json::json!({
            "kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "builder", "uid": "u"}}
        });
        let token = SecretString::from(format!("h.{}.SIGNATURE", encode(&claims)));
        assert_eq!(
            token_subject(&token),
            Ok(TokenSubject {
                namespace: "team-a".into(),
                name: "builder".into()
            })
        );
        for bad in ["not-a-jwt", "a.b.c", "a.!!.c"] {
            let error = token_subject(&SecretString::from(bad.to_string())).expect_err("refused");
            assert!(!error.contains(bad), "{error}");
        }
    }

    #[test]
    fn cache_duration_follows_the_refresh_policy() {
        let config_text = "registries:\n  app: { server: r.io, from: { dockerConfig: /x.json } }\n\
                           pullSecrets:\n  - name: p\n    registries: [app]\n    projects: { names: [a] }\n    rotation: { refresh: 2m }\n";
        assert_eq!(
            cache_duration(&config(config_text), "app"),
            Duration::from_secs(120)
        );
        let overridden = format!("{config_text}credentialProvider: {{ cacheDuration: 45s }}\n");
        assert_eq!(
            cache_duration(&config(&overridden), "app"),
            Duration::from_secs(45)
        );
        let bare = "registries:\n  app: { server: r.io, from: { dockerConfig: /x.json } }\n";
        assert_eq!(
            cache_duration(&config(bare), "app"),
            Duration::from_secs(300)
        );
    }
}
