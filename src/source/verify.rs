//! Verified rotation (source I/O): a changed credential of a registry with `verify:` is tried
//! against the registry before any Secret gets it, so a typo in Vault does not break every pod
//! at once.
//!
//! The check is what a client does before its first pull (docker/distribution's "ping",
//! containers/image's `detectProperties`):
//!
//! 1. `GET /v2/` without credentials. A 200 means the registry wants none: nothing to check.
//!    A 401 names the scheme in `WWW-Authenticate`.
//! 2. `Basic`: `GET /v2/` again with the credential as Basic auth.
//! 3. `Bearer realm=…,service=…[,scope=…]`: the credential goes to the realm as Basic auth with
//!    `service` and `scope` as query parameters (the token flow of distribution's token auth
//!    spec); the token it answers is sent to `GET /v2/` as `Authorization: Bearer`.
//!
//! A 401 or 403 from the registry or the realm rejects the credential; no answer (connection,
//! TLS, timeout, a 5xx, an unreadable challenge) is "unreachable", which the registry's
//! `verify.unreachable` policy settles. Loopback registries are tried over https first and
//! over plain http when that fails, as docker does for its default insecure range
//! (127.0.0.0/8); every other registry is https only, and a realm is sent a credential only
//! over https (or on loopback). Verdicts carry statuses and reasons, never a credential.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Client, StatusCode, Url};
use secrecy::ExposeSecret as _;

use super::{Error, Resolved};
use crate::config::{RegistryConfig, UnreachablePolicy, VerifyConfig};
use crate::model::credential::{BasicAuth, RegistryKey};

/// The host Docker Hub's API is served from (its `auths` key is `https://index.docker.io/v1/`).
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// Largest token response read (real ones are a few kilobytes).
const MAX_TOKEN_RESPONSE: usize = 1 << 20;

/// What the registry said about a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It authenticated (or the registry asks for no credentials at all).
    Accepted,
    /// The registry or its token realm refused it with this HTTP status (401 or 403).
    Rejected { status: u16, by: Refuser },
    /// No usable answer; why, without any credential.
    Unreachable { reason: String },
}

/// Who refused a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refuser {
    Registry,
    TokenRealm,
}

impl Refuser {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registry => "the registry",
            Self::TokenRealm => "its token realm",
        }
    }
}

/// What verification decided about a changed credential.
pub enum Gate {
    Publish,
    /// Not published: the previous credential (if any) stays.
    Hold(Error),
}

/// One check that was made, for the metric (`accepted`, `rejected`, `unreachable`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRecord {
    pub registry: String,
    pub result: &'static str,
}

/// A version the registry refused, remembered so it is not tried again (a registry that locks
/// accounts after failed logins must not be asked on every retry).
#[derive(Clone, Debug)]
pub struct Rejection {
    pub version: String,
    pub status: u16,
    pub by: Refuser,
}

impl Rejection {
    /// "registry reg: the registry refused the new credential (HTTP 401); …"
    pub fn describe(&self, registry: &str) -> String {
        self.error(registry).to_string()
    }

    fn error(&self, registry: &str) -> Error {
        Error::CredentialRejected {
            registry: registry.to_string(),
            status: self.status,
            by: self.by.as_str(),
        }
    }
}

/// Decides whether `resolved`, a changed credential of `registry`, may be published: checks
/// it (unless this very version was refused before) and logs the outcome by registry and
/// status. `rejected` remembers refused versions per registry.
pub async fn gate(
    registry: &RegistryConfig,
    verify: &VerifyConfig,
    resolved: &Resolved,
    rejected: &mut BTreeMap<String, Rejection>,
    checks: &mut Vec<CheckRecord>,
) -> Gate {
    let name = &registry.name;
    if let Some(known) = rejected.get(name)
        && known.version == resolved.version
    {
        return Gate::Hold(known.error(name));
    }
    // A credential with no username/password form is not checked: rendering reports it.
    let Ok(login) = resolved.credential.basic_auth() else {
        return Gate::Publish;
    };
    let verdict = check(&registry.server, &login, verify.timeout).await;
    let record = |result| CheckRecord {
        registry: name.clone(),
        result,
    };
    match verdict {
        Verdict::Accepted => {
            tracing::info!(registry = %name, "The registry accepted the new credential.");
            rejected.remove(name);
            checks.push(record("accepted"));
            Gate::Publish
        }
        Verdict::Rejected { status, by } => {
            tracing::warn!(
                registry = %name,
                status,
                refused_by = by.as_str(),
                "The registry refused the new credential; the previous one stays published."
            );
            let rejection = Rejection {
                version: resolved.version.clone(),
                status,
                by,
            };
            let error = rejection.error(name);
            rejected.insert(name.clone(), rejection);
            checks.push(record("rejected"));
            Gate::Hold(error)
        }
        Verdict::Unreachable { reason } => {
            checks.push(record("unreachable"));
            match verify.unreachable {
                UnreachablePolicy::Publish => {
                    tracing::warn!(
                        registry = %name,
                        reason = %reason,
                        "The new credential could not be checked; publishing it (verify.unreachable: publish)."
                    );
                    Gate::Publish
                }
                UnreachablePolicy::Hold => {
                    tracing::warn!(
                        registry = %name,
                        reason = %reason,
                        "The new credential could not be checked; holding it (verify.unreachable: hold)."
                    );
                    Gate::Hold(Error::VerifyUnreachable {
                        registry: name.clone(),
                        reason,
                    })
                }
            }
        }
    }
}

/// Counts `checks` in `pullsecretd_credential_checks_total`.
pub fn count_checks(metrics: &crate::telemetry::Metrics, checks: &[CheckRecord]) {
    for check in checks {
        metrics
            .credential_checks
            .get_or_create(&crate::telemetry::CheckLabels {
                registry: check.registry.clone(),
                result: check.result,
            })
            .inc();
    }
}

/// Checks `login` against `registry`'s `/v2/` within `timeout`.
pub async fn check(registry: &RegistryKey, login: &BasicAuth, timeout: Duration) -> Verdict {
    let host = api_host(registry);
    let loopback = is_loopback(&host);
    let client = match http_client(timeout, loopback) {
        Ok(client) => client,
        Err(reason) => return Verdict::Unreachable { reason },
    };
    let attempt = tokio::time::timeout(timeout, async {
        let https = check_at(&client, &format!("https://{host}/v2/"), login).await;
        match https {
            Verdict::Unreachable { .. } if loopback => {
                check_at(&client, &format!("http://{host}/v2/"), login).await
            }
            verdict => verdict,
        }
    })
    .await;
    attempt.unwrap_or_else(|_| Verdict::Unreachable {
        reason: format!("no answer within {}", humantime::format_duration(timeout)),
    })
}

/// The `host[:port]` the registry's API answers on.
fn api_host(registry: &RegistryKey) -> String {
    if registry.is_docker_hub() {
        DOCKER_HUB_API_HOST.to_string()
    } else {
        registry.host_only().host().to_string()
    }
}

/// `localhost`, `127.0.0.0/8` or `[::1]`, with or without a port.
fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A client with the check's timeout; loopback is never sent through a proxy.
fn http_client(timeout: Duration, loopback: bool) -> Result<Client, String> {
    let mut builder = Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if loopback {
        builder = builder.no_proxy();
    }
    builder
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// The ping, then Basic or the token flow, at `v2` (`scheme://host/v2/`).
async fn check_at(client: &Client, v2: &str, login: &BasicAuth) -> Verdict {
    let ping = match client.get(v2).send().await {
        Ok(response) => response,
        Err(error) => return unreachable("GET /v2/", &error),
    };
    match ping.status() {
        StatusCode::UNAUTHORIZED => {}
        status if status.is_success() => return Verdict::Accepted,
        status => return unexpected("GET /v2/", status),
    }
    let challenge = ping
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|value| value.to_str().ok())
        .and_then(Challenge::parse);
    match challenge {
        Some(Challenge::Basic) => {
            let request = client
                .get(v2)
                .basic_auth(&login.username, Some(login.password.expose_secret()));
            authenticated_ping(request).await
        }
        Some(Challenge::Bearer {
            realm,
            service,
            scope,
        }) => {
            let token = match fetch_token(client, &realm, service, scope, login).await {
                Ok(token) => token,
                Err(verdict) => return verdict,
            };
            let request = client
                .get(v2)
                .header(AUTHORIZATION, format!("Bearer {token}"));
            authenticated_ping(request).await
        }
        None => Verdict::Unreachable {
            reason: "GET /v2/ answered 401 without a Basic or Bearer challenge".into(),
        },
    }
}

/// `GET /v2/` with credentials: 2xx accepts, 401/403 rejects.
async fn authenticated_ping(request: reqwest::RequestBuilder) -> Verdict {
    match request.send().await {
        Ok(response) => judge(response.status(), Refuser::Registry, "GET /v2/"),
        Err(error) => unreachable("GET /v2/", &error),
    }
}

fn judge(status: StatusCode, by: Refuser, what: &str) -> Verdict {
    match status {
        status if status.is_success() => Verdict::Accepted,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Verdict::Rejected {
            status: status.as_u16(),
            by,
        },
        status => unexpected(what, status),
    }
}

/// The realm's token for `login`, or the verdict that ends the check.
async fn fetch_token(
    client: &Client,
    realm: &str,
    service: Option<String>,
    scope: Option<String>,
    login: &BasicAuth,
) -> Result<String, Verdict> {
    let mut url = Url::parse(realm).map_err(|_| Verdict::Unreachable {
        reason: "the registry's token realm is not a URL".into(),
    })?;
    let safe = url.scheme() == "https"
        || (url.scheme() == "http" && url.host_str().is_some_and(is_loopback));
    if !safe {
        return Err(Verdict::Unreachable {
            reason: format!(
                "the registry's token realm ({}://{}) is neither https nor loopback; the \
                 credential is not sent there",
                url.scheme(),
                url.host_str().unwrap_or_default()
            ),
        });
    }
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = &service {
            query.append_pair("service", service);
        }
        if let Some(scope) = &scope {
            query.append_pair("scope", scope);
        }
    }
    let response = client
        .get(url)
        .basic_auth(&login.username, Some(login.password.expose_secret()))
        .send()
        .await
        .map_err(|error| unreachable("the token request", &error))?;
    match judge(response.status(), Refuser::TokenRealm, "the token request") {
        Verdict::Accepted => {}
        verdict => return Err(verdict),
    }
    let body = response
        .bytes()
        .await
        .map_err(|error| unreachable("the token response", &error))?;
    token_of(&body).ok_or_else(|| Verdict::Unreachable {
        reason: "the token realm answered without a token".into(),
    })
}

/// `token` (or the OAuth2 name `access_token`) of a token response.
fn token_of(body: &[u8]) -> Option<String> {
    if body.len() > MAX_TOKEN_RESPONSE {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    ["token", "access_token"]
        .iter()
        .filter_map(|key| value.get(*key)?.as_str())
        .find(|token| !token.is_empty())
        .map(str::to_string)
}

/// The reason of a failed request, without the URL's query (reqwest's errors name the URL).
fn unreachable(what: &str, error: &reqwest::Error) -> Verdict {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    Verdict::Unreachable {
        reason: format!("{what} {kind}"),
    }
}

fn unexpected(what: &str, status: StatusCode) -> Verdict {
    Verdict::Unreachable {
        reason: format!("{what} answered HTTP {}", status.as_u16()),
    }
}

/// The scheme a registry names in `WWW-Authenticate`, and the token flow's parameters.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// `Basic realm="…"` or `Bearer realm="…",service="…",scope="…"` (RFC 7235 auth-params;
    /// quoted values may hold commas). `None`: another scheme, or Bearer without a realm.
    fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Self::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = auth_params(rest);
        let get = |name: &str| {
            params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.clone())
        };
        Some(Self::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    }
}

/// `key=value, key="quoted, value"` → pairs, in order.
fn auth_params(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut rest = text.trim_start();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, remainder) = match after.strip_prefix('"') {
            Some(quoted) => quoted_string(quoted),
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_string(), &after[end..])
            }
        };
        params.push((key, value));
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    params
}

/// The value of a quoted string whose opening quote is gone (`\"` escapes), and what follows
/// its closing quote.
fn quoted_string(text: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return (value, &text[at + 1..]),
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            c => value.push(c),
        }
    }
    (value, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_name_basic_or_the_token_flow() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:team/app:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:team/app:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"bearer realm="http://127.0.0.1:1/t", service=svc"#),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: Some("svc".into()),
                scope: None,
            })
        );
        assert_eq!(Challenge::parse(r#"Bearer service="x""#), None, "no realm");
        assert_eq!(Challenge::parse("Negotiate"), None);
    }

    #[test]
    fn loopback_hosts_are_recognised_with_and_without_ports() {
        for host in [
            "127.0.0.1:5000",
            "localhost",
            "localhost:5000",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "quay.io",
            "10.0.0.1:5000",
            "registry.local:443",
            "[2001:db8::1]:5000",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn token_responses_give_token_or_access_token() {
        assert_eq!(token_of(br#"{"token":"t1"}"#), Some("t1".into()));
        assert_eq!(token_of(br#"{"access_token":"t2"}"#), Some("t2".into()));
        assert_eq!(
            token_of(br#"{"token":"","access_token":"t3"}"#),
            Some("t3".into())
        );
        assert_eq!(token_of(br#"{"nothing":1}"#), None);
        assert_eq!(token_of(b"not json"), None);
    }
}
