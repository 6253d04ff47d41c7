//! The container runtime's image pull, done for real against registries on loopback addresses
//! (registry HTTP API v2 as containers/image — CRI-O's library — speaks it,
//! `docker/docker_client.go`, `docker/errors.go`; distribution `docs/spec/auth/token.md`):
//!
//! 1. `GET /v2/` without credentials; a 401 carries the `WWW-Authenticate` challenge.
//! 2. `Basic`: the credential goes on each request. `Bearer`: `GET <realm>?service=…&scope=
//!    repository:<path>:pull[&account=<user>]`, with the credential as HTTP Basic (anonymous
//!    without one), and the returned token goes on each request.
//! 3. `GET /v2/<path>/manifests/<tag|digest>` with the usual Accept list; an index/list is
//!    resolved to its linux/amd64 (else first) manifest; then the config blob.
//!
//! Errors read like CRI-O's (`rpc error: code = Unknown desc = initializing source docker://…`).
//! Any host that is not loopback (127.0.0.0/8, `localhost`, `[::1]`) — including Docker Hub and
//! a token realm elsewhere — fails at once: no connection and no DNS lookup is ever made for it
//! (the HTTP client's resolver refuses every name but `localhost`). Loopback registries are
//! spoken to over plain HTTP, as docker and containerd treat loopback registries as insecure.
//! Never logs or returns credentials.

use crate::image_ref::{self, ImageRef};
use crate::kubelet::keyring::Credential;
use base64::Engine as _;
use serde_json::Value;
use sha2::Digest as _;
use std::net::SocketAddr;
use std::time::Duration;

/// The Accept list of containers/image (`manifest.DefaultRequestedManifestMIMETypes`).
const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
];

/// A pulled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The image ID: the config blob's digest.
    pub image_id: String,
    /// `name@sha256:…` of the manifest, what `containerStatuses[].imageID` shows.
    pub repo_digest: String,
    /// Config plus layer sizes, as the `Pulled` event reports them.
    pub size: u64,
}

/// The HTTP side of the runtime.
pub struct Runtime {
    client: reqwest::Client,
}

/// Resolves only `localhost` (to 127.0.0.1); any other name is refused without a lookup.
struct LoopbackOnly;

impl reqwest::dns::Resolve for LoopbackOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let ok = name.as_str() == "localhost";
        let host = name.as_str().to_string();
        Box::pin(async move {
            if ok {
                let addrs: reqwest::dns::Addrs =
                    Box::new(std::iter::once(SocketAddr::from(([127, 0, 0, 1], 0))));
                Ok(addrs)
            } else {
                Err(format!("kube-sim resolves no name but localhost (asked for {host})").into())
            }
        })
    }
}

/// `WWW-Authenticate` challenge of a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    None,
    Basic,
    Bearer { realm: String, service: String },
}

/// Authorization to send with registry requests.
enum Auth {
    Anonymous,
    Basic(String),
    Bearer(String),
}

impl Auth {
    fn header(&self) -> Option<String> {
        match self {
            Auth::Anonymous => None,
            Auth::Basic(b) => Some(format!("Basic {b}")),
            Auth::Bearer(t) => Some(format!("Bearer {t}")),
        }
    }
}

fn basic(c: &Credential) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password))
}

/// CRI's error wrapping of a runtime failure for `reference`.
fn cri_error(image: &ImageRef, detail: &str) -> String {
    format!(
        "rpc error: code = Unknown desc = initializing source docker://{}: {detail}",
        image.full()
    )
}

/// The message of a host the simulated node cannot reach (a node without DNS would say this).
fn unreachable(endpoint: &str, url: &str) -> String {
    format!(
        "pinging container registry {endpoint}: Get \"{url}\": dial tcp: lookup {}: no such host",
        image_ref::host_of(endpoint)
    )
}

impl Runtime {
    pub fn new() -> Result<Self, String> {
        // rustls with aws-lc-rs only (the tree's one provider); no proxies from the environment;
        // no DNS: names other than localhost never resolve.
        let client = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(std::sync::Arc::new(LoopbackOnly))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("building the runtime's HTTP client: {e}"))?;
        Ok(Self { client })
    }

    /// Pulls `image` with one credential (or anonymously).
    pub async fn pull(
        &self,
        image: &ImageRef,
        cred: Option<&Credential>,
    ) -> Result<Pulled, String> {
        let endpoint = image.endpoint().to_string();
        if !image_ref::is_loopback_host(&endpoint) {
            return Err(cri_error(
                image,
                &unreachable(&endpoint, &format!("https://{endpoint}/v2/")),
            ));
        }
        let base = format!("http://{endpoint}");
        let challenge = self
            .ping(&base, &endpoint)
            .await
            .map_err(|e| cri_error(image, &e))?;
        let auth = match (&challenge, cred) {
            (Challenge::None, _) | (Challenge::Basic, None) => Auth::Anonymous,
            (Challenge::Basic, Some(c)) => Auth::Basic(basic(c)),
            (Challenge::Bearer { realm, service }, c) => {
                let token = self
                    .token(realm, service, &image.path, c)
                    .await
                    .map_err(|e| cri_error(image, &e))?;
                Auth::Bearer(token)
            }
        };
        self.fetch(&base, image, &auth)
            .await
            .map_err(|e| cri_error(image, &e))
    }

    async fn ping(&self, base: &str, endpoint: &str) -> Result<Challenge, String> {
        let url = format!("{base}/v2/");
        let resp = self.client.get(&url).send().await.map_err(|e| {
            format!(
                "pinging container registry {endpoint}: Get \"{url}\": {}",
                transport(&e)
            )
        })?;
        match resp.status().as_u16() {
            200 => Ok(Challenge::None),
            401 => Ok(parse_challenge(
                resp.headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            )),
            code => Err(format!(
                "pinging container registry {endpoint}: invalid status code from registry {code} ({})",
                resp.status().canonical_reason().unwrap_or("")
            )),
        }
    }

    /// A bearer token from the challenge's realm (`getBearerToken`).
    async fn token(
        &self,
        realm: &str,
        service: &str,
        path: &str,
        cred: Option<&Credential>,
    ) -> Result<String, String> {
        let url =
            reqwest::Url::parse(realm).map_err(|e| format!("parsing realm {realm:?}: {e}"))?;
        let host = url.host_str().unwrap_or("").to_string();
        let host_port = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        if !image_ref::is_loopback_host(&host_port) {
            return Err(format!(
                "Get \"{realm}\": dial tcp: lookup {}: no such host",
                image_ref::host_of(&host_port)
            ));
        }
        let mut url = url;
        {
            let mut q = url.query_pairs_mut();
            if let Some(c) = cred {
                q.append_pair("account", &c.username);
            }
            if !service.is_empty() {
                q.append_pair("service", service);
            }
            q.append_pair("scope", &format!("repository:{path}:pull"));
        }
        let mut req = self.client.get(url.clone());
        if let Some(c) = cred {
            req = req.header(
                reqwest::header::AUTHORIZATION,
                format!("Basic {}", basic(c)),
            );
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("Get \"{realm}\": {}", transport(&e)))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        match status {
            200 => {}
            401 => {
                return Err(format!(
                    "unable to retrieve auth token: invalid username/password: {}",
                    registry_error(401, &body)
                ));
            }
            code => {
                return Err(format!(
                    "unexpected http code: {code} ({}), URL: {realm}",
                    reqwest::StatusCode::from_u16(code)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("")
                ));
            }
        }
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| "unable to retrieve auth token: the token server sent no token".into())
    }

    async fn get(
        &self,
        url: &str,
        accept: Option<String>,
        auth: &Auth,
    ) -> Result<reqwest::Response, String> {
        let mut req = self.client.get(url);
        if let Some(a) = accept {
            req = req.header(reqwest::header::ACCEPT, a);
        }
        if let Some(h) = auth.header() {
            req = req.header(reqwest::header::AUTHORIZATION, h);
        }
        req.send()
            .await
            .map_err(|e| format!("Get \"{url}\": {}", transport(&e)))
    }

    async fn manifest(
        &self,
        base: &str,
        image: &ImageRef,
        reference: &str,
        auth: &Auth,
    ) -> Result<(Vec<u8>, String), String> {
        let url = format!("{base}/v2/{}/manifests/{reference}", image.path);
        let resp = self.get(&url, Some(ACCEPT.join(", ")), auth).await?;
        let status = resp.status().as_u16();
        let digest = resp
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp.bytes().await.map_err(|e| e.to_string())?.to_vec();
        if status != 200 {
            return Err(format!(
                "reading manifest {reference} in {}: {}",
                image.name(),
                response_error(status, &challenge, &body)
            ));
        }
        let digest = digest
            .unwrap_or_else(|| format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body))));
        Ok((body, digest))
    }

    async fn fetch(&self, base: &str, image: &ImageRef, auth: &Auth) -> Result<Pulled, String> {
        let (mut body, mut digest) = self
            .manifest(base, image, &image.manifest_reference(), auth)
            .await?;
        let mut manifest: Value =
            serde_json::from_slice(&body).map_err(|e| format!("parsing manifest: {e}"))?;
        if let Some(list) = manifest.get("manifests").and_then(Value::as_array) {
            let pick = list
                .iter()
                .find(|m| {
                    m.pointer("/platform/os").and_then(Value::as_str) == Some("linux")
                        && m.pointer("/platform/architecture").and_then(Value::as_str)
                            == Some("amd64")
                })
                .or_else(|| list.first())
                .and_then(|m| m.get("digest").and_then(Value::as_str))
                .map(str::to_string)
                .ok_or_else(|| {
                    "choosing an image from manifest list: no image found in manifest list"
                        .to_string()
                })?;
            (body, digest) = self.manifest(base, image, &pick, auth).await?;
            manifest =
                serde_json::from_slice(&body).map_err(|e| format!("parsing manifest: {e}"))?;
        }
        let config = manifest
            .pointer("/config/digest")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut size: u64 = manifest
            .pointer("/config/size")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        size += manifest
            .get("layers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|l| l.get("size").and_then(Value::as_u64))
            .sum::<u64>();
        if !config.is_empty() {
            let url = format!("{base}/v2/{}/blobs/{config}", image.path);
            let resp = self.get(&url, None, auth).await?;
            let status = resp.status().as_u16();
            let blob = resp.bytes().await.map_err(|e| e.to_string())?;
            if status != 200 {
                return Err(format!(
                    "reading blob {config}: fetching blob: {}",
                    registry_error(status, &blob)
                ));
            }
        }
        Ok(Pulled {
            image_id: if config.is_empty() {
                digest.clone()
            } else {
                config
            },
            repo_digest: format!("{}@{digest}", image.name()),
            size,
        })
    }
}

/// A transport error as Go's net/http would word its cause.
fn transport(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    if msg.contains("Connection refused") || msg.contains("connection refused") {
        return "connect: connection refused".into();
    }
    if e.is_timeout() {
        return "i/o timeout".into();
    }
    msg
}

/// distribution's `HandleErrorResponse` as containers/image uses it: for a 4xx, an OAuth error
/// in a Bearer challenge comes first (`invalid_token`: unauthorized, `insufficient_scope`:
/// denied), then the body's errors; the first one is reported.
fn response_error(status: u16, challenge: &str, body: &[u8]) -> String {
    if (400..500).contains(&status)
        && challenge
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("bearer")
    {
        let code = match challenge_param(challenge, "error").as_str() {
            "invalid_token" => Some("UNAUTHORIZED"),
            "insufficient_scope" => Some("DENIED"),
            _ => None,
        };
        if let Some(code) = code {
            let description = challenge_param(challenge, "error_description");
            let default = default_message(code).unwrap_or("");
            if description.is_empty() || description == default {
                return default.to_string();
            }
            return format!("{}: {description}", code.to_lowercase());
        }
    }
    registry_error(status, body)
}

/// `registryHTTPResponseToError`: the first error of a distribution error body, reworded to
/// just its message when that is the code's default; otherwise `StatusCode: N, "<body>"`.
fn registry_error(status: u16, body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let first = v
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|e| e.first());
    if let Some(e) = first {
        let code = e.get("code").and_then(Value::as_str).unwrap_or("UNKNOWN");
        let message = e.get("message").and_then(Value::as_str).unwrap_or("");
        if default_message(code) == Some(message) {
            return message.to_string();
        }
        return format!("{}: {message}", code.to_lowercase().replace('_', " "));
    }
    let text = String::from_utf8_lossy(body);
    let short: String = text.chars().take(50).collect();
    let short = if text.chars().count() > 50 {
        format!("{short}...")
    } else {
        short
    };
    format!("StatusCode: {status}, {short:?}")
}

/// distribution's default messages of the error codes registries send.
fn default_message(code: &str) -> Option<&'static str> {
    Some(match code {
        "UNAUTHORIZED" => "authentication required",
        "DENIED" => "requested access to the resource is denied",
        "MANIFEST_UNKNOWN" => "manifest unknown",
        "NAME_UNKNOWN" => "repository name not known to registry",
        "BLOB_UNKNOWN" => "blob unknown to registry",
        "TOOMANYREQUESTS" => "too many requests",
        _ => return None,
    })
}

/// One parameter of a `WWW-Authenticate` challenge (`name="value"` or `name=value`).
fn challenge_param(header: &str, name: &str) -> String {
    let header = header.trim();
    let mut rest = header.split_once(' ').map_or("", |(_, p)| p);
    while let Some(i) = rest.find('=') {
        let key = rest[..i].trim().trim_start_matches(',').trim();
        let after = &rest[i + 1..];
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (&q[..end], q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if key.eq_ignore_ascii_case(name) {
            return value.to_string();
        }
        rest = next;
    }
    String::new()
}

/// Parses a `WWW-Authenticate` header: `Basic realm="…"` or `Bearer realm="…",service="…"`.
fn parse_challenge(header: &str) -> Challenge {
    let scheme = header.trim().split(' ').next().unwrap_or("");
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Challenge::Basic,
        "bearer" => Challenge::Bearer {
            realm: challenge_param(header, "realm"),
            service: challenge_param(header, "service"),
        },
        _ => Challenge::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(parse_challenge("Basic realm=\"test\""), Challenge::Basic);
        assert_eq!(
            parse_challenge(
                "Bearer realm=\"http://127.0.0.1:9/token\",service=\"reg\",scope=\"repository:a:pull\""
            ),
            Challenge::Bearer {
                realm: "http://127.0.0.1:9/token".into(),
                service: "reg".into()
            }
        );
    }

    #[test]
    fn registry_errors_read_like_containers_image() {
        let unauthorized = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#;
        assert_eq!(registry_error(401, unauthorized), "authentication required");
        let custom =
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"incorrect username or password"}]}"#;
        assert_eq!(
            registry_error(401, custom),
            "unauthorized: incorrect username or password"
        );
        assert_eq!(registry_error(500, b"oops"), "StatusCode: 500, \"oops\"");
        let denied = "Bearer realm=\"r\",service=\"s\",scope=\"repository:a:pull\",error=\"insufficient_scope\"";
        assert_eq!(
            response_error(401, denied, unauthorized),
            "requested access to the resource is denied"
        );
    }

    #[tokio::test]
    async fn other_hosts_fail_without_traffic() {
        let rt = Runtime::new().expect("client");
        let image = image_ref::parse("pullsecretd:latest").expect("ref");
        let err = rt.pull(&image, None).await.err().unwrap_or_default();
        assert_eq!(
            err,
            "rpc error: code = Unknown desc = initializing source docker://docker.io/library/pullsecretd:latest: pinging container registry registry-1.docker.io: Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host"
        );
    }
}
