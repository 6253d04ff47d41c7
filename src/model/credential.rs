//! Credential model (pure): what one registry login is, and how registry names are normalised.
//!
//! Nothing here does I/O. Secret values are held in [`SecretString`], which has no `Debug` or
//! `Display` of its content; the only places that expose them are the payload renderers in
//! `dockerconfig` and the credential-helper protocol output.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// The key docker writes for Docker Hub (`getAuthConfigKey` in docker/cli), and the server
/// `kubectl create secret docker-registry` uses when none is given.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Host names that all mean Docker Hub (docker/cli and containers/image, docs/docker-auth.md).
const DOCKER_HUB_ALIASES: &[&str] = &["docker.io", "index.docker.io", "registry-1.docker.io"];

/// The username Azure Container Registry documents for logging in with a token
/// (`docker login <acr> -u 00000000-0000-0000-0000-000000000000 --password <token>`).
pub const ACR_TOKEN_USERNAME: &str = "00000000-0000-0000-0000-000000000000";

/// A registry as a key of an `auths` map: Docker Hub, or `host[:port]` with an optional
/// repository namespace (containers `auth.json` allows `quay.io/org/repo`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegistryKey {
    /// `host[:port]`, exactly as given apart from scheme and path; Docker Hub aliases collapse
    /// to `index.docker.io`.
    host: String,
    /// Repository namespace below the host, without leading or trailing `/` (containers only).
    namespace: Option<String>,
}

/// Why a string cannot be a registry key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("registry name is empty")]
    Empty,
    #[error("registry name {0:?} contains whitespace or control characters")]
    BadCharacter(String),
    #[error("registry name {0:?} contains '@' (a digest or user part is not a registry)")]
    HasAt(String),
    #[error("registry name {0:?} has a tag; name a registry or repository, not an image")]
    HasTag(String),
    #[error("registry name {0:?} has a scheme; containers auth.json keys are host[/namespace]")]
    HasScheme(String),
    #[error("registry name {0:?} has a port that is not a number from 1 to 65535")]
    BadPort(String),
    /// A scheme other than `https://` or `http://` (`ftp://host`): docker would keep `ftp:` as
    /// the host, which no registry is.
    #[error("registry name {0:?} has a scheme other than https:// or http://")]
    UnsupportedScheme(String),
}

impl RegistryKey {
    /// Normalises a server the way `docker login` does (docs/docker-auth.md): Docker Hub aliases become
    /// Docker Hub, otherwise the scheme and any path are stripped and `host[:port]` is kept.
    pub fn from_docker(input: &str) -> Result<Self, KeyError> {
        let trimmed = input.trim();
        check_characters(trimmed)?;
        let without_scheme = strip_scheme(trimmed);
        if let Some((scheme, _)) = without_scheme.split_once("://")
            && !scheme.contains('/')
        {
            return Err(KeyError::UnsupportedScheme(trimmed.to_string()));
        }
        let host = without_scheme.split('/').next().unwrap_or_default();
        Self::from_host(host, None, trimmed)
    }

    /// Normalises a containers `auth.json` key (docs/docker-auth.md): `host[:port][/namespace…]`, no
    /// scheme, no `@`, no tag. Docker Hub aliases collapse to Docker Hub.
    pub fn from_containers(input: &str) -> Result<Self, KeyError> {
        let trimmed = input.trim();
        check_characters(trimmed)?;
        if strip_scheme(trimmed).len() != trimmed.len() {
            return Err(KeyError::HasScheme(trimmed.to_string()));
        }
        let (host, rest) = match trimmed.split_once('/') {
            Some((host, rest)) => (host, Some(rest.trim_matches('/'))),
            None => (trimmed, None),
        };
        let namespace = rest.filter(|r| !r.is_empty());
        if namespace.is_some_and(|ns| ns.contains(':')) {
            return Err(KeyError::HasTag(trimmed.to_string()));
        }
        Self::from_host(host, namespace.map(str::to_string), trimmed)
    }

    fn from_host(host: &str, namespace: Option<String>, original: &str) -> Result<Self, KeyError> {
        if host.is_empty() {
            return Err(KeyError::Empty);
        }
        check_port(host, original)?;
        let host = if DOCKER_HUB_ALIASES.contains(&host) {
            "index.docker.io"
        } else {
            host
        };
        Ok(Self {
            host: host.to_string(),
            namespace,
        })
    }

    /// True for Docker Hub, whichever alias named it.
    pub fn is_docker_hub(&self) -> bool {
        self.host == "index.docker.io"
    }

    /// `host[:port]` (`index.docker.io` for Docker Hub).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The repository namespace, for containers keys such as `quay.io/org`.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The same registry without a namespace.
    pub fn host_only(&self) -> Self {
        Self {
            host: self.host.clone(),
            namespace: None,
        }
    }

    /// Keys to try for a lookup, most specific first: `quay.io/org/repo`, `quay.io/org`,
    /// `quay.io` (containers/image `GetCredentialsForRef` order).
    pub fn lookup_order(&self) -> Vec<Self> {
        let mut keys = vec![self.clone()];
        let mut namespace = self.namespace.clone();
        while let Some(ns) = namespace {
            namespace = ns.rsplit_once('/').map(|(parent, _)| parent.to_string());
            keys.push(Self {
                host: self.host.clone(),
                namespace: namespace.clone(),
            });
        }
        keys
    }

    /// The key written into an `auths` map: [`DOCKER_HUB_KEY`] for Docker Hub (what docker and
    /// kubectl write), otherwise `host[:port][/namespace]`.
    pub fn auths_key(&self) -> String {
        match (&self.namespace, self.is_docker_hub()) {
            (None, true) => DOCKER_HUB_KEY.to_string(),
            (None, false) => self.host.clone(),
            (Some(ns), true) => format!("docker.io/{ns}"),
            (Some(ns), false) => format!("{}/{ns}", self.host),
        }
    }
}

impl fmt::Display for RegistryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.namespace, self.is_docker_hub()) {
            (None, true) => f.write_str("docker.io"),
            (None, false) => f.write_str(&self.host),
            (Some(ns), true) => write!(f, "docker.io/{ns}"),
            (Some(ns), false) => write!(f, "{}/{ns}", self.host),
        }
    }
}

fn strip_scheme(s: &str) -> &str {
    s.strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s)
}

fn check_characters(s: &str) -> Result<(), KeyError> {
    if s.is_empty() {
        return Err(KeyError::Empty);
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(KeyError::BadCharacter(s.to_string()));
    }
    if s.contains('@') {
        return Err(KeyError::HasAt(s.to_string()));
    }
    Ok(())
}

/// A `:port` suffix, if any, must be a valid port. IPv6 literals are bracketed (`[::1]:5000`).
fn check_port(host: &str, original: &str) -> Result<(), KeyError> {
    let after_brackets = host.rsplit_once(']').map_or(host, |(_, rest)| rest);
    let Some((_, port)) = after_brackets.rsplit_once(':') else {
        return Ok(());
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(KeyError::BadPort(original.to_string())),
    }
}

/// What a registry accepts as proof of identity.
#[derive(Clone)]
pub enum Secret {
    /// A password (or an access token used as a password).
    Password(SecretString),
    /// An OAuth2 refresh token (`identitytoken` in docker config). The kubelet ignores these
    /// (docs/pull-secrets.md), so they must be converted before they can go into a pull secret.
    IdentityToken(SecretString),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Password(_) => f.write_str("Password([REDACTED])"),
            Self::IdentityToken(_) => f.write_str("IdentityToken([REDACTED])"),
        }
    }
}

/// One registry login: the unit every source produces and every renderer consumes.
#[derive(Clone, Debug)]
pub struct Credential {
    pub registry: RegistryKey,
    /// Empty for identity-token logins where the source did not record a user.
    pub username: String,
    pub secret: Secret,
    /// Written into payloads only when set, as kubectl does with `--docker-email`.
    pub email: Option<String>,
}

/// Why a credential cannot be written into a pull secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnusableCredential {
    #[error(
        "registry {registry} has only an identity token, which the kubelet ignores; \
         no username/password form of it is documented for this registry. \
         Give pullsecretd a username and password (or robot-account token) instead"
    )]
    IdentityTokenOnly { registry: String },
    #[error("registry {registry}: username is empty")]
    EmptyUsername { registry: String },
    #[error("registry {registry}: username contains ':', which `auth` cannot encode")]
    ColonInUsername { registry: String },
    #[error("registry {registry}: password is empty")]
    EmptyPassword { registry: String },
}

/// A username and password a kubelet can use: what pull secrets carry.
#[derive(Clone, Debug)]
pub struct BasicAuth {
    pub username: String,
    pub password: SecretString,
}

impl Credential {
    pub fn with_password(
        registry: RegistryKey,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        Self {
            registry,
            username: username.into(),
            secret: Secret::Password(SecretString::from(password.into())),
            email: None,
        }
    }

    /// The username/password a kubelet will use for this credential.
    ///
    /// Identity tokens are converted only where the registry documents a password form:
    /// Azure Container Registry accepts its refresh token as the password of the user
    /// [`ACR_TOKEN_USERNAME`]. Every other identity token is refused with the reason.
    pub fn basic_auth(&self) -> Result<BasicAuth, UnusableCredential> {
        let registry = self.registry.to_string();
        let (username, password) = match &self.secret {
            Secret::Password(p) => (self.username.clone(), p.clone()),
            Secret::IdentityToken(t) if is_azure_container_registry(&self.registry) => {
                (ACR_TOKEN_USERNAME.to_string(), t.clone())
            }
            Secret::IdentityToken(_) => {
                return Err(UnusableCredential::IdentityTokenOnly { registry });
            }
        };
        if username.is_empty() {
            return Err(UnusableCredential::EmptyUsername { registry });
        }
        if username.contains(':') {
            return Err(UnusableCredential::ColonInUsername { registry });
        }
        if password.expose_secret().is_empty() {
            return Err(UnusableCredential::EmptyPassword { registry });
        }
        Ok(BasicAuth { username, password })
    }

    /// True when both credentials would render to the same pull-secret entry.
    pub fn same_login(&self, other: &Self) -> bool {
        let secret_eq = match (&self.secret, &other.secret) {
            (Secret::Password(a), Secret::Password(b))
            | (Secret::IdentityToken(a), Secret::IdentityToken(b)) => {
                a.expose_secret() == b.expose_secret()
            }
            _ => false,
        };
        self.registry == other.registry
            && self.username == other.username
            && self.email == other.email
            && secret_eq
    }
}

/// `*.azurecr.io`: the registries whose identity tokens have a documented password form.
fn is_azure_container_registry(registry: &RegistryKey) -> bool {
    let host = registry.host().split(':').next().unwrap_or_default();
    host.ends_with(".azurecr.io")
}

/// A credential as read from its source, with what identifies this version of it.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub credential: Credential,
    /// Changes whenever the credential changes (a content hash for files and helpers); never
    /// derived reversibly from the secret.
    pub version: String,
    /// When the credential stops working, where the source says so (a lease, KV metadata, a
    /// JWT `exp`); `None` when nothing is known. The daemon never serves it past this.
    pub expires_at: Option<std::time::SystemTime>,
    /// The lease a dynamic Vault secret came with: renewed while in use, revoked after.
    pub lease: Option<LeaseGrant>,
}

impl Resolved {
    /// A credential with no known expiry and no lease.
    pub fn new(credential: Credential, version: String) -> Self {
        Self {
            credential,
            version,
            expires_at: None,
            lease: None,
        }
    }
}

/// A Vault lease as granted (or last renewed). Its id is not the credential, but it lets anyone
/// with `sys/leases` rights renew or revoke it, so `Debug` never shows it and it is never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct LeaseGrant {
    pub id: String,
    /// The TTL granted by the read or the last renewal.
    pub ttl: std::time::Duration,
    pub renewable: bool,
}

impl fmt::Debug for LeaseGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGrant")
            .field("id", &"[REDACTED]")
            .field("ttl", &self.ttl)
            .field("renewable", &self.renewable)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case docs/docker-auth.md lists for docker's key normalisation.
    #[test]
    fn docker_normalisation_table() {
        let cases: &[(&str, &str)] = &[
            // Docker Hub aliases all become the key docker writes.
            ("docker.io", DOCKER_HUB_KEY),
            ("index.docker.io", DOCKER_HUB_KEY),
            ("registry-1.docker.io", DOCKER_HUB_KEY),
            ("https://index.docker.io/v1/", DOCKER_HUB_KEY),
            ("https://index.docker.io/v1", DOCKER_HUB_KEY),
            ("https://docker.io", DOCKER_HUB_KEY),
            ("http://index.docker.io/v2/", DOCKER_HUB_KEY),
            // Scheme and path are stripped (ConvertToHostname).
            ("https://quay.io", "quay.io"),
            ("http://quay.io/", "quay.io"),
            ("quay.io/org/repo", "quay.io"),
            ("https://registry.example.com/v2/", "registry.example.com"),
            ("https://registry.example.com/v1/", "registry.example.com"),
            // Ports are kept.
            ("localhost:5000", "localhost:5000"),
            (
                "https://registry.example.com:8443/v2/",
                "registry.example.com:8443",
            ),
            ("127.0.0.1:5000/some/path", "127.0.0.1:5000"),
            ("[::1]:5000", "[::1]:5000"),
            // Surrounding whitespace is trimmed, as the helper protocol does.
            ("  quay.io\n", "quay.io"),
        ];
        for (input, want) in cases {
            let key = RegistryKey::from_docker(input)
                .unwrap_or_else(|e| panic!("{input:?} should normalise: {e}"));
            assert_eq!(key.auths_key(), *want, "input {input:?}");
        }
    }

    #[test]
    fn docker_normalisation_rejects() {
        let cases: &[(&str, KeyError)] = &[
            ("", KeyError::Empty),
            ("   ", KeyError::Empty),
            ("https://", KeyError::Empty),
            ("quay .io", KeyError::BadCharacter("quay .io".into())),
            ("user@quay.io", KeyError::HasAt("user@quay.io".into())),
            ("quay.io:http", KeyError::BadPort("quay.io:http".into())),
            ("quay.io:0", KeyError::BadPort("quay.io:0".into())),
            ("quay.io:70000", KeyError::BadPort("quay.io:70000".into())),
        ];
        for (input, want) in cases {
            assert_eq!(
                RegistryKey::from_docker(input).as_ref(),
                Err(want),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn containers_keys_keep_namespaces_and_follow_validate_key() {
        let ok: &[(&str, &str)] = &[
            ("quay.io", "quay.io"),
            ("quay.io/org", "quay.io/org"),
            ("quay.io/org/repo", "quay.io/org/repo"),
            ("quay.io/org/", "quay.io/org"),
            ("docker.io", DOCKER_HUB_KEY),
            ("registry-1.docker.io", DOCKER_HUB_KEY),
            ("docker.io/library", "docker.io/library"),
            ("localhost:5000/team", "localhost:5000/team"),
        ];
        for (input, want) in ok {
            let key = RegistryKey::from_containers(input)
                .unwrap_or_else(|e| panic!("{input:?} should be accepted: {e}"));
            assert_eq!(key.auths_key(), *want, "input {input:?}");
        }
        let bad: &[(&str, KeyError)] = &[
            (
                "https://quay.io",
                KeyError::HasScheme("https://quay.io".into()),
            ),
            (
                "quay.io/org/repo@sha256:ab",
                KeyError::HasAt("quay.io/org/repo@sha256:ab".into()),
            ),
            (
                "quay.io/org/repo:tag",
                KeyError::HasTag("quay.io/org/repo:tag".into()),
            ),
        ];
        for (input, want) in bad {
            assert_eq!(
                RegistryKey::from_containers(input).as_ref(),
                Err(want),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn lookup_goes_from_most_to_least_specific() {
        let key = RegistryKey::from_containers("quay.io/org/repo").expect("valid key");
        let order: Vec<String> = key
            .lookup_order()
            .iter()
            .map(RegistryKey::auths_key)
            .collect();
        assert_eq!(order, ["quay.io/org/repo", "quay.io/org", "quay.io"]);
    }

    #[test]
    fn debug_never_shows_secret_values() {
        let key = RegistryKey::from_docker("quay.io").expect("valid key");
        let cred = Credential::with_password(key, "robot", "SENTINEL-PASSWORD-1234");
        let shown = format!("{cred:?}");
        assert!(!shown.contains("SENTINEL"), "{shown}");
        assert!(shown.contains("robot"));
    }

    #[test]
    fn identity_tokens_convert_only_for_acr() {
        let acr = Credential {
            registry: RegistryKey::from_docker("myreg.azurecr.io").expect("valid key"),
            username: String::new(),
            secret: Secret::IdentityToken(SecretString::from("refresh-token")),
            email: None,
        };
        let basic = acr.basic_auth().expect("ACR identity token converts");
        assert_eq!(basic.username, ACR_TOKEN_USERNAME);
        assert_eq!(basic.password.expose_secret(), "refresh-token");

        let other = Credential {
            registry: RegistryKey::from_docker("quay.io").expect("valid key"),
            ..acr
        };
        assert_eq!(
            other.basic_auth().map(|b| b.username),
            Err(UnusableCredential::IdentityTokenOnly {
                registry: "quay.io".into()
            })
        );
    }

    #[test]
    fn basic_auth_rejects_what_auth_cannot_encode() {
        let key = RegistryKey::from_docker("quay.io").expect("valid key");
        let colon = Credential::with_password(key.clone(), "a:b", "pw");
        assert!(matches!(
            colon.basic_auth(),
            Err(UnusableCredential::ColonInUsername { .. })
        ));
        let empty = Credential::with_password(key, "user", "");
        assert!(matches!(
            empty.basic_auth(),
            Err(UnusableCredential::EmptyPassword { .. })
        ));
    }
}
