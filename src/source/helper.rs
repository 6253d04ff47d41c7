//! Source stage (I/O): asks a docker credential helper for one server's credential.
//!
//! Runs `docker-credential-<name> get` (docs/docker-auth.md#credential-helper-protocol) with a timeout. It never changes the
//! process environment, and never repeats what a helper printed (it may be a password) apart
//! from the protocol's fixed error texts.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::Command;
use zeroize::Zeroizing;

use super::SourceContext;
use crate::model::credential::{Credential, KeyError, RegistryKey, Secret};

pub use crate::credhelper::protocol::{
    HELPER_PREFIX, NESTED_ENV, NOT_FOUND_TEXT, TOKEN_USERNAME, protocol_login,
};
/// Other fixed error texts of the protocol: safe to repeat, since they carry no values.
const KNOWN_ERROR_TEXTS: &[&str] = &["no credentials server URL", "no credentials username"];
/// A `get` answer is one small JSON object; anything longer is not one.
const MAX_OUTPUT: u64 = 64 * 1024;

/// Why a helper gave no answer. Never carries what the helper printed, except the protocol's
/// fixed error texts.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error(
        "credential helper name {name:?} is invalid: it must be non-empty, \
         without '/' or whitespace"
    )]
    InvalidName { name: String },
    #[error("server {server:?} is not a registry name: {source}")]
    InvalidServer {
        server: String,
        #[source]
        source: KeyError,
    },
    #[error("credential helper {program} not found in {searched}")]
    NotInstalled { program: String, searched: String },
    #[error("starting credential helper {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to credential helper {program} about {server}: {source}")]
    Io {
        program: String,
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "credential helper {program} did not answer for {server} within {timeout:?}; killed it"
    )]
    Timeout {
        program: String,
        server: String,
        timeout: Duration,
    },
    #[error("credential helper {program} failed for {server} ({status}): {message}")]
    Failed {
        program: String,
        server: String,
        status: ExitStatus,
        /// A fixed protocol error text, or a note that the output is withheld.
        message: &'static str,
    },
    #[error("credential helper {program} gave an unusable answer for {server}: {reason}")]
    BadOutput {
        program: String,
        server: String,
        reason: &'static str,
    },
}

/// Runs `docker-credential-<helper> get` for `server_url`. `Ok(None)` means the helper holds
/// no credential for it.
pub async fn get(
    helper: &str,
    server_url: &str,
    ctx: &SourceContext,
) -> Result<Option<Credential>, HelperError> {
    validate_name(helper)?;
    let registry =
        RegistryKey::from_docker(server_url).map_err(|source| HelperError::InvalidServer {
            server: server_url.to_string(),
            source,
        })?;
    let program = format!("{HELPER_PREFIX}{helper}");
    let path = find_program(&program, ctx.helper_dirs.as_deref())?;
    let output = run_get(&path, &program, server_url, ctx.helper_timeout).await?;
    interpret(&output, &program, server_url, registry)
}

fn validate_name(name: &str) -> Result<(), HelperError> {
    let bad = name.is_empty()
        || name.contains('/')
        || name.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad {
        return Err(HelperError::InvalidName {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Looks `program` up in `dirs`, or in `$PATH` when `dirs` is `None`.
fn find_program(program: &str, dirs: Option<&[PathBuf]>) -> Result<PathBuf, HelperError> {
    let (candidates, searched): (Vec<PathBuf>, String) = match dirs {
        Some(dirs) => (
            dirs.to_vec(),
            format!(
                "[{}]",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        None => (
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
            "$PATH".to_string(),
        ),
    };
    candidates
        .iter()
        .map(|dir| dir.join(program))
        .find(|path| is_executable_file(path))
        .ok_or_else(|| HelperError::NotInstalled {
            program: program.to_string(),
            searched,
        })
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What a finished helper left behind.
struct Output {
    status: ExitStatus,
    /// Capped at [`MAX_OUTPUT`] + 1 bytes; zeroed on drop since it may hold a secret.
    stdout: Zeroizing<Vec<u8>>,
}

async fn run_get(
    path: &Path,
    program: &str,
    server_url: &str,
    timeout: Duration,
) -> Result<Output, HelperError> {
    let mut child = Command::new(path)
        .arg("get")
        // A helper entry pointing back at pullsecretd must not start it again and again.
        .env(NESTED_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // A helper's diagnostics may quote secrets; they are dropped, not relayed.
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| HelperError::Spawn {
            program: path.to_path_buf(),
            source,
        })?;
    let io_error = |source| HelperError::Io {
        program: program.to_string(),
        server: server_url.to_string(),
        source,
    };
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let exchange = async {
        if let Some(mut stdin) = stdin {
            write_ignoring_closed(&mut stdin, server_url.as_bytes()).await?;
        }
        let mut buffer = Zeroizing::new(Vec::new());
        if let Some(stdout) = stdout {
            stdout.take(MAX_OUTPUT + 1).read_to_end(&mut buffer).await?;
        }
        let status = child.wait().await?;
        Ok::<_, std::io::Error>(Output {
            status,
            stdout: buffer,
        })
    };
    let finished = tokio::time::timeout(timeout, exchange).await;
    match finished {
        Ok(result) => result.map_err(io_error),
        Err(_) => {
            // Best effort: the child may have exited just now.
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(HelperError::Timeout {
                program: program.to_string(),
                server: server_url.to_string(),
                timeout,
            })
        }
    }
}

/// Writes the server URL and closes stdin. A helper that exits without reading is not an
/// error here: its exit status says what happened.
async fn write_ignoring_closed(
    stdin: &mut tokio::process::ChildStdin,
    bytes: &[u8],
) -> std::io::Result<()> {
    match stdin.write_all(bytes).await {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

fn interpret(
    output: &Output,
    program: &str,
    server_url: &str,
    registry: RegistryKey,
) -> Result<Option<Credential>, HelperError> {
    let bad_output = |reason| HelperError::BadOutput {
        program: program.to_string(),
        server: server_url.to_string(),
        reason,
    };
    let text = std::str::from_utf8(&output.stdout).ok();
    if !output.status.success() {
        let trimmed = text.map(str::trim).unwrap_or_default();
        return failure(trimmed, output.status, program, server_url);
    }
    if output.stdout.len() as u64 > MAX_OUTPUT {
        return Err(bad_output("output is longer than 64 KiB"));
    }
    let text = text.ok_or_else(|| bad_output("output is not UTF-8"))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|_| bad_output("output is not JSON (its content is not shown)"))?;
    let field = |name| match value.get(name) {
        Some(Value::String(s)) => Ok(s.as_str()),
        _ => Err(bad_output(
            "output lacks string fields Username and Secret (its content is not shown)",
        )),
    };
    let username = field("Username")?;
    let secret = SecretString::from(field("Secret")?.to_string());
    let credential = if username == TOKEN_USERNAME {
        Credential {
            registry,
            username: String::new(),
            secret: Secret::IdentityToken(secret),
            email: None,
        }
    } else {
        Credential {
            registry,
            username: username.to_string(),
            secret: Secret::Password(secret),
            email: None,
        }
    };
    Ok(Some(credential))
}

/// A non-zero exit: not-found is an answer; the protocol's other texts are repeated; any other
/// output is withheld.
fn failure(
    trimmed: &str,
    status: ExitStatus,
    program: &str,
    server_url: &str,
) -> Result<Option<Credential>, HelperError> {
    if trimmed == NOT_FOUND_TEXT {
        return Ok(None);
    }
    let message = KNOWN_ERROR_TEXTS
        .iter()
        .find(|known| **known == trimmed)
        .copied()
        .unwrap_or("its output is not shown because it may contain credentials");
    Err(HelperError::Failed {
        program: program.to_string(),
        server: server_url.to_string(),
        status,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_names_are_validated() {
        for bad in ["", "a/b", "../x", "a b", "a\tb", "x\n"] {
            assert!(
                matches!(validate_name(bad), Err(HelperError::InvalidName { .. })),
                "{bad:?} should be refused"
            );
        }
        for good in ["desktop", "ecr-login", "osxkeychain", "test.1"] {
            assert!(validate_name(good).is_ok(), "{good:?} should be accepted");
        }
    }

    #[test]
    fn missing_program_names_where_it_looked() {
        let dirs = [PathBuf::from("/nonexistent/pullsecretd-test")];
        let err = find_program("docker-credential-nope", Some(&dirs)).expect_err("not installed");
        let shown = err.to_string();
        assert!(shown.contains("docker-credential-nope"), "{shown}");
        assert!(shown.contains("/nonexistent/pullsecretd-test"), "{shown}");
    }
}
