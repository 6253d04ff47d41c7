//! Agent (source stage, shared): one process keeps the Vault session and the last good
//! credentials, and answers credential-helper calls over a unix socket.
//!
//! [`CredentialService`] answers `get`/`list` from the config's sources (cached, or read per
//! call). The agent socket (mode 0600) admits only peers whose uid, read with `SO_PEERCRED`,
//! is the agent's own. Both ends trust nobody else: the agent refuses a socket directory that
//! is not its user's or that others can write (they could replace its socket with their own),
//! and the client refuses a server whose uid is not its own (it would hand out *their*
//! credentials) and reads at most [`MAX_REPLY`] of an answer. Must not touch the cluster, must
//! not answer a source failure with "not found", and must never log or put a credential in
//! an error.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use zeroize::Zeroizing;

use crate::model::credential::{Credential, RegistryKey, Secret};
use crate::private_fs::{self, PrivateFsError};
use crate::source::helper::{TOKEN_USERNAME, protocol_login};
use crate::source::service::{Lookup, LookupError};

/// Overrides where the agent socket is.
pub const SOCKET_ENV: &str = "PULLSECRETD_AGENT_SOCKET";
/// Wire version of the agent protocol; a request of another version is refused.
const WIRE_VERSION: u64 = 1;
/// Largest request line the agent reads.
const MAX_REQUEST: u64 = 64 * 1024;
/// Largest answer line the client reads (a `list` of many registries fits easily).
pub const MAX_REPLY: u64 = 1024 * 1024;
/// A peer that sends nothing for this long is dropped; a client waits this long for an answer
/// (a Vault read with its retries fits well within it).
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the agent socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the agent socket directory: {0}")]
    SocketDir(#[source] PrivateFsError),
    #[error(
        "{} is not a socket; refusing to replace it (set PULLSECRETD_AGENT_SOCKET to another path)",
        path.display()
    )]
    NotASocket { path: PathBuf },
    #[error("another agent is already listening on {}", path.display())]
    InUse { path: PathBuf },
    #[error("listening on the agent socket {}: {source}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the agent listens: `$PULLSECRETD_AGENT_SOCKET`, else
/// `$XDG_RUNTIME_DIR/pullsecretd/agent.sock`; `None` when neither is set (no agent).
pub fn socket_path(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |name| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    set(SOCKET_ENV).or_else(|| set("XDG_RUNTIME_DIR").map(|dir| dir.join("pullsecretd/agent.sock")))
}

/// True when a peer may talk to the agent: only the agent's own uid. (root is not special:
/// it can read the credentials elsewhere anyway, and a helper run by root uses its own agent.)
pub fn peer_allowed(peer_uid: Option<u32>, own_uid: u32) -> bool {
    peer_uid == Some(own_uid)
}

/// Binds the agent socket at `path`: its directory is created 0700 if missing and must be
/// private (this user's, writable by nobody else), a stale socket left by a dead agent is
/// replaced, and the socket is made 0600.
pub fn bind(path: &Path) -> Result<UnixListener, AgentError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    private_fs::ensure_private_dir(dir).map_err(AgentError::SocketDir)?;
    if let Ok(existing) = std::fs::symlink_metadata(path) {
        if !existing.file_type().is_socket() {
            return Err(AgentError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(AgentError::InUse {
                path: path.to_path_buf(),
            });
        }
        // Nobody answers: a socket left behind by an agent that died.
        let _ = std::fs::remove_file(path);
    }
    let bind_error = |source| AgentError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_error)?;
    Ok(listener)
}

/// Serves the agent protocol on `listener` until the task is dropped.
pub async fn serve(listener: UnixListener, service: Lookup) {
    let own = private_fs::own_uid();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "Accepting an agent connection failed.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = service.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_connection(stream, &service, own).await {
                tracing::debug!(%error, "Agent connection ended with an error.");
            }
        });
    }
}

async fn serve_connection(
    mut stream: UnixStream,
    service: &Lookup,
    own: u32,
) -> std::io::Result<()> {
    let peer = stream.peer_cred().ok().map(|cred| cred.uid());
    let answer = if peer_allowed(peer, own) {
        match read_line(&mut stream, MAX_REQUEST).await {
            Ok(request) => answer(&request, service).await,
            Err(error) => error_answer(&format!("reading the request: {error}")),
        }
    } else {
        tracing::warn!(?peer, "Refused an agent connection from another user.");
        error_answer(&format!(
            "the pullsecretd agent refused this connection: it serves only uid {own}, \
             and the caller's uid is {}",
            peer.map_or_else(|| "unknown".to_string(), |uid| uid.to_string())
        ))
    };
    stream.write_all(&answer).await?;
    stream.shutdown().await
}

async fn answer(request: &[u8], service: &Lookup) -> Zeroizing<Vec<u8>> {
    let Ok(request) = serde_json::from_slice::<Value>(request) else {
        return error_answer("the request is not JSON");
    };
    if request["v"].as_u64() != Some(WIRE_VERSION) {
        return error_answer("unsupported agent protocol version");
    }
    match request["action"].as_str() {
        Some("get") => {
            let Some(server) = request["server"]
                .as_str()
                .and_then(|s| RegistryKey::from_docker(s).ok())
            else {
                return error_answer("the request names no valid server");
            };
            match service.get(&server).await {
                Ok(Some(credential)) => {
                    let (username, secret) = protocol_login(&credential);
                    line(&json!({"found": {"Username": username, "Secret": secret}}))
                }
                Ok(None) => line(&json!({"notFound": true})),
                Err(error) => error_answer(&error.0),
            }
        }
        Some("list") => match service.list().await {
            Ok(entries) => line(&json!({ "list": entries })),
            Err(error) => error_answer(&error.0),
        },
        _ => error_answer("unknown agent action"),
    }
}

fn line(value: &Value) -> Zeroizing<Vec<u8>> {
    let mut bytes = Zeroizing::new(value.to_string().into_bytes());
    bytes.push(b'\n');
    bytes
}

fn error_answer(message: &str) -> Zeroizing<Vec<u8>> {
    line(&json!({ "error": message }))
}

/// One newline-terminated line of at most `limit` bytes, within [`IO_TIMEOUT`]; a longer line
/// is an error, not cut short.
async fn read_line(stream: &mut UnixStream, limit: u64) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut reader = BufReader::new(stream.take(limit));
    let mut buffer = Zeroizing::new(Vec::new());
    tokio::time::timeout(IO_TIMEOUT, reader.read_until(b'\n', &mut buffer))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))??;
    if buffer.len() as u64 >= limit && buffer.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the line is longer than {}", size_text(limit)),
        ));
    }
    Ok(buffer)
}

/// `limit` bytes in words: "1 MiB", "64 KiB".
fn size_text(limit: u64) -> String {
    if limit >= 1024 * 1024 {
        format!("{} MiB", limit / (1024 * 1024))
    } else {
        format!("{} KiB", limit / 1024)
    }
}

/// A connection to a running agent.
pub struct AgentClient {
    stream: tokio::sync::Mutex<Option<UnixStream>>,
    path: PathBuf,
}

/// Why there is no agent to ask at a socket path.
#[derive(Debug, thiserror::Error)]
pub enum NoAgent {
    /// Nothing listens there (the usual case: no `workstation` running).
    #[error("no agent listens on {}: {source}", path.display())]
    NotListening {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Something listens there, but as another user: not our agent, and its answers would be
    /// that user's credentials.
    #[error(
        "the agent socket {} is served by {}, not by this user (uid {own}): refused; remove \
         it, or set PULLSECRETD_AGENT_SOCKET to a path in a directory of your own",
        path.display(),
        server.map_or_else(|| "a process whose uid cannot be read".to_string(), |uid| format!("uid {uid}"))
    )]
    ForeignServer {
        path: PathBuf,
        server: Option<u32>,
        own: u32,
    },
}

/// Connects to `path` and checks, with `SO_PEERCRED`, that the process serving it runs as
/// this user.
async fn connect_checked(path: &Path) -> Result<UnixStream, NoAgent> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| NoAgent::NotListening {
            path: path.to_path_buf(),
            source,
        })?;
    let server = stream.peer_cred().ok().map(|cred| cred.uid());
    let own = private_fs::own_uid();
    if !peer_allowed(server, own) {
        return Err(NoAgent::ForeignServer {
            path: path.to_path_buf(),
            server,
            own,
        });
    }
    Ok(stream)
}

impl AgentClient {
    /// Connects to the agent at `path`, which must be served by this user's own uid.
    pub async fn connect(path: &Path) -> Result<Self, NoAgent> {
        let stream = connect_checked(path).await?;
        Ok(Self {
            stream: tokio::sync::Mutex::new(Some(stream)),
            path: path.to_path_buf(),
        })
    }

    async fn request(&self, request: &Value) -> Result<Value, LookupError> {
        let fail = |what: &str, error: &dyn std::fmt::Display| {
            LookupError(format!(
                "asking the pullsecretd agent at {}: {what}: {error}",
                self.path.display()
            ))
        };
        let mut guard = self.stream.lock().await;
        let mut stream = match guard.take() {
            Some(stream) => stream,
            None => connect_checked(&self.path)
                .await
                .map_err(|e| fail("connecting", &e))?,
        };
        let sent = line(request);
        // An agent that refuses the connection answers and closes without reading: its
        // answer is still there to read when sending failed.
        let sent = stream.write_all(&sent).await;
        let reply = read_line(&mut stream, MAX_REPLY).await;
        let reply = match (sent, reply) {
            (_, Ok(reply)) if !reply.is_empty() => reply,
            (Err(e), _) => return Err(fail("sending", &e)),
            (Ok(()), Err(e)) => return Err(fail("reading the answer", &e)),
            (Ok(()), Ok(_)) => {
                return Err(fail(
                    "reading the answer",
                    &"the agent closed the connection",
                ));
            }
        };
        serde_json::from_slice(&reply).map_err(|_| {
            fail(
                "reading the answer",
                &"it is not JSON (its content is not shown)",
            )
        })
    }

    pub async fn get(&self, server: &RegistryKey) -> Result<Option<Credential>, LookupError> {
        let answer = self
            .request(&json!({"v": WIRE_VERSION, "action": "get", "server": server.auths_key()}))
            .await?;
        if let Some(message) = answer["error"].as_str() {
            return Err(LookupError(message.to_string()));
        }
        if answer["notFound"] == Value::Bool(true) {
            return Ok(None);
        }
        let found = &answer["found"];
        let (Some(username), Some(secret)) = (found["Username"].as_str(), found["Secret"].as_str())
        else {
            return Err(LookupError(
                "the pullsecretd agent gave an unusable answer".to_string(),
            ));
        };
        let secret = SecretString::from(secret.to_string());
        let credential = if username == TOKEN_USERNAME {
            Credential {
                registry: server.clone(),
                username: String::new(),
                secret: Secret::IdentityToken(secret),
                email: None,
            }
        } else {
            Credential {
                registry: server.clone(),
                username: username.to_string(),
                secret: Secret::Password(secret),
                email: None,
            }
        };
        Ok(Some(credential))
    }

    pub async fn list(&self) -> Result<BTreeMap<String, String>, LookupError> {
        let answer = self
            .request(&json!({"v": WIRE_VERSION, "action": "list"}))
            .await?;
        if let Some(message) = answer["error"].as_str() {
            return Err(LookupError(message.to_string()));
        }
        let Some(entries) = answer["list"].as_object() else {
            return Err(LookupError(
                "the pullsecretd agent gave an unusable answer".to_string(),
            ));
        };
        Ok(entries
            .iter()
            .filter_map(|(server, user)| Some((server.clone(), user.as_str()?.to_string())))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_agents_own_uid_is_admitted() {
        assert!(peer_allowed(Some(1000), 1000));
        assert!(!peer_allowed(Some(1001), 1000));
        // root is not special, either way.
        assert!(!peer_allowed(Some(0), 1000));
        assert!(!peer_allowed(Some(1000), 0));
        // A peer whose credentials cannot be read is refused.
        assert!(!peer_allowed(None, 1000));
    }

    #[test]
    fn socket_path_prefers_the_override_then_the_runtime_dir() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            socket_path(env(&[
                (SOCKET_ENV, "/x/a.sock"),
                ("XDG_RUNTIME_DIR", "/run/user/1")
            ])),
            Some(PathBuf::from("/x/a.sock"))
        );
        assert_eq!(
            socket_path(env(&[(SOCKET_ENV, ""), ("XDG_RUNTIME_DIR", "/run/user/1")])),
            Some(PathBuf::from("/run/user/1/pullsecretd/agent.sock"))
        );
        assert_eq!(socket_path(env(&[])), None);
    }

    #[tokio::test]
    async fn socket_is_private_and_a_live_agent_is_not_replaced() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sub/agent.sock");
        let listener = bind(&path).expect("bound");
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("sub")), 0o700);
        assert!(matches!(bind(&path), Err(AgentError::InUse { .. })));
        drop(listener);
        // The socket file of a dead agent is replaced.
        bind(&path).expect("stale socket replaced");
    }

    #[tokio::test]
    async fn a_socket_directory_others_can_write_or_a_non_socket_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let open = dir.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let error = bind(&open.join("agent.sock")).expect_err("refused");
        assert!(
            matches!(
                error,
                AgentError::SocketDir(PrivateFsError::OthersCanWrite { .. })
            ),
            "{error}"
        );
        assert!(!open.join("agent.sock").exists());

        let file = dir.path().join("notes.txt");
        std::fs::write(&file, "mine").expect("file");
        let error = bind(&file).expect_err("not a socket");
        assert!(matches!(error, AgentError::NotASocket { .. }), "{error}");
        assert_eq!(std::fs::read_to_string(&file).expect("kept"), "mine");
    }

    #[tokio::test]
    async fn the_client_reads_a_bounded_answer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agent.sock");
        let listener = bind(&path).expect("bound");
        // A server of this uid that answers with a line longer than the client reads.
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accepted");
            let chunk = vec![b'x'; 64 * 1024];
            while stream.write_all(&chunk).await.is_ok() {}
        });
        let client = AgentClient::connect(&path).await.expect("connected");
        let error = client.list().await.expect_err("too long");
        assert!(
            error.0.contains("the line is longer than 1 MiB"),
            "{}",
            error.0
        );
        server.abort();
    }

    mod properties {
        use super::*;
        use crate::config::Config;
        use crate::source::Resolved;
        use crate::source::service::Snapshot;
        use proptest::prelude::*;
        use std::sync::Arc;

        const SENTINEL: &str = "SENTINEL-agent-prop-c04d";

        /// A daemon-side lookup that knows registry.example.com's credential (the sentinel).
        fn lookup() -> Lookup {
            let yaml = "registries:\n  reg:\n    server: registry.example.com\n    from: { dockerConfig: /nonexistent/auth.json }\n";
            let config = Config::from_yaml(yaml, Path::new("/nonexistent/config.yaml"))
                .expect("valid config");
            let registry = RegistryKey::from_docker("registry.example.com").expect("valid");
            let credential = Credential {
                registry,
                username: "robot".into(),
                secret: Secret::Password(SecretString::from(SENTINEL.to_string())),
                email: None,
            };
            let mut snapshot = Snapshot::default();
            snapshot.credentials.insert(
                "reg".into(),
                Resolved {
                    credential,
                    version: "v1".into(),
                    expires_at: None,
                    lease: None,
                },
            );
            // A receiver keeps the last value after its sender is gone.
            let (_, config) = tokio::sync::watch::channel(Arc::new(config));
            let (_, snapshot) = tokio::sync::watch::channel(Arc::new(snapshot));
            Lookup::Daemon { config, snapshot }
        }

        fn request() -> impl Strategy<Value = Vec<u8>> {
            let server = prop_oneof![
                Just("registry.example.com".to_string()),
                Just("https://registry.example.com/v1/".to_string()),
                "[a-z.:/]{0,20}",
            ];
            let action = prop_oneof![Just("get"), Just("list"), Just("store"), Just("")];
            prop_oneof![
                (action, server, proptest::option::of(0u64..3)).prop_map(|(a, s, v)| {
                    let mut r = json!({"action": a, "server": s});
                    if let Some(v) = v {
                        r["v"] = json!(v);
                    }
                    r.to_string().into_bytes()
                }),
                proptest::collection::vec(any::<u8>(), 0..64),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Any request gets one JSON line back: found, not found, a list or an error. The
            /// credential's secret is in it only for a valid `get` of its own server.
            #[test]
            fn any_request_gets_one_json_line_and_the_secret_only_when_asked_for(bytes in request()) {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime");
                let reply = runtime.block_on(answer(&bytes, &lookup()));
                prop_assert_eq!(reply.last(), Some(&b'\n'));
                let value: Value = serde_json::from_slice(&reply).expect("one JSON line");
                let keys: Vec<&String> = value.as_object().expect("an object").keys().collect();
                prop_assert_eq!(keys.len(), 1);
                let text = String::from_utf8_lossy(&reply).into_owned();
                if text.contains(SENTINEL) {
                    let request: Value = serde_json::from_slice(&bytes).expect("a JSON request");
                    prop_assert_eq!(request["action"].as_str(), Some("get"));
                    prop_assert_eq!(request["v"].as_u64(), Some(WIRE_VERSION));
                    prop_assert!(value.get("found").is_some());
                }
            }
        }
    }
}
