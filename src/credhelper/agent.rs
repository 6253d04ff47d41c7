//! Agent (source stage, shared): one process keeps the Vault session and the last good
//! credentials, and answers credential-helper calls over a unix socket.
//!
//! [`CredentialService`] answers `get`/`list` from the config's sources (cached, or read per
//! call). The agent socket (mode 0600 in a 0700 directory) admits only peers whose uid, read
//! with `SO_PEERCRED`, is the agent's own. Must not touch the cluster, must not answer a
//! source failure with "not found", and must never log or put a credential in an error.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use zeroize::Zeroizing;

use crate::model::credential::{Credential, RegistryKey, Secret};
use crate::source::helper::{TOKEN_USERNAME, protocol_login};
use crate::source::service::{Lookup, LookupError};

/// Overrides where the agent socket is.
pub const SOCKET_ENV: &str = "PULLSECRETD_AGENT_SOCKET";
/// Wire version of the agent protocol; a request of another version is refused.
const WIRE_VERSION: u64 = 1;
/// Largest request or answer line on the socket.
const MAX_LINE: u64 = 64 * 1024;
/// A peer that sends nothing for this long is dropped; a client waits this long for an answer
/// (a Vault read with its retries fits well within it).
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the agent socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("creating the agent socket directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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

/// The effective uid of this process.
pub fn own_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Binds the agent socket at `path`: its directory is created 0700 if missing, a stale
/// socket left by a dead agent is replaced, and the socket is made 0600.
pub fn bind(path: &Path) -> Result<UnixListener, AgentError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| AgentError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    if path.exists() {
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
    let own = own_uid();
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
        match read_line(&mut stream).await {
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

/// One newline-terminated line of at most [`MAX_LINE`] bytes, within [`IO_TIMEOUT`].
async fn read_line(stream: &mut UnixStream) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut reader = BufReader::new(stream.take(MAX_LINE));
    let mut buffer = Zeroizing::new(Vec::new());
    tokio::time::timeout(IO_TIMEOUT, reader.read_until(b'\n', &mut buffer))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))??;
    Ok(buffer)
}

/// A connection to a running agent.
pub struct AgentClient {
    stream: tokio::sync::Mutex<Option<UnixStream>>,
    path: PathBuf,
}

impl AgentClient {
    /// Connects to the agent at `path`; `None` when no agent is listening there.
    pub async fn connect(path: &Path) -> Option<Self> {
        match UnixStream::connect(path).await {
            Ok(stream) => Some(Self {
                stream: tokio::sync::Mutex::new(Some(stream)),
                path: path.to_path_buf(),
            }),
            Err(error) => {
                tracing::debug!(%error, path = %path.display(), "No agent; reading sources here.");
                None
            }
        }
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
            None => UnixStream::connect(&self.path)
                .await
                .map_err(|e| fail("connecting", &e))?,
        };
        let sent = line(request);
        // An agent that refuses the connection answers and closes without reading: its
        // answer is still there to read when sending failed.
        let sent = stream.write_all(&sent).await;
        let reply = read_line(&mut stream).await;
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
}
