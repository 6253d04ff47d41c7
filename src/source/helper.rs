//! Source stage (I/O): asks a docker credential helper for one server's credential.
//!
//! Runs `docker-credential-<name> get` (docs/docker-auth.md#credential-helper-protocol) with a
//! timeout. It never changes the process environment, and never repeats what a helper printed
//! (it may be a password) apart from the protocol's fixed error texts.
//!
//! A helper is a third-party program, so it is contained:
//! - it sees only [`HELPER_ENVIRONMENT`], never pullsecretd's own secrets and settings;
//! - it runs in a process group of its own, and the whole group is killed when the call ends
//!   (answer, error or timeout), so nothing it started in the background outlives the call;
//! - the answer is what it wrote by the time it exited (plus [`PIPE_GRACE`]), not what it
//!   wrote until stdout closed, which a background job holding stdout would put off;
//! - at most [`MAX_OUTPUT`] bytes are read; more is an error that shows none of it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, ChildStdout, Command};
use zeroize::Zeroizing;

use super::SourceContext;
use crate::model::credential::{Credential, KeyError, RegistryKey, Secret};

pub use crate::credhelper::protocol::{
    HELPER_PREFIX, NESTED_ENV, NOT_FOUND_TEXT, TOKEN_USERNAME, protocol_login,
};
/// Other fixed error texts of the protocol: safe to repeat, since they carry no values.
const KNOWN_ERROR_TEXTS: &[&str] = &["no credentials server URL", "no credentials username"];
/// A `get` answer is one small JSON object; anything longer is not one, and reading stops
/// there (the buffer never grows past it, however much a helper writes).
pub const MAX_OUTPUT: usize = 64 * 1024;
/// [`MAX_OUTPUT`] in words, for the error.
const MAX_OUTPUT_TEXT: &str = "64 KiB";
/// How long stdout is still read after the helper exited: its last write may still be in the
/// pipe, but a background job it left holding stdout open must not make an answer a timeout.
pub const PIPE_GRACE: Duration = Duration::from_millis(100);

/// The environment a credential helper runs with; all else pullsecretd has is withheld.
///
/// Why: pullsecretd's environment holds its own secrets and settings (`VAULT_TOKEN` and the
/// other `VAULT_*`, `PULLSECRETD_*`, `KUBECONFIG`, cloud credentials), while a helper is a
/// third-party program that needs none of them, and whatever it inherits can be read in its
/// `/proc/<pid>/environ` and by everything it starts. Every helper still needs to find
/// programs and the user's files (`PATH`, `HOME`, `USER`, `LOGNAME`, `TMPDIR`, `XDG_*`, whose
/// `XDG_RUNTIME_DIR` holds keyring sockets and containers' `auth.json`), the locale (`LANG`,
/// `LC_*`) and the auth files' locations (`DOCKER_CONFIG`, `REGISTRY_AUTH_FILE`). The helpers
/// below document more variables; each gets its own, and no other helper does. On top of
/// these, [`NESTED_ENV`] (pullsecretd's recursion guard) is set.
///
/// Each entry: the helper it is for (the `NAME` of `docker-credential-NAME`, `None` for every
/// helper) and a variable name, or a prefix when it ends in `*`.
pub const HELPER_ENVIRONMENT: &[(Option<&str>, &str)] = &[
    (None, "PATH"),
    (None, "HOME"),
    (None, "USER"),
    (None, "LOGNAME"),
    (None, "LANG"),
    (None, "LC_*"),
    (None, "TMPDIR"),
    (None, "XDG_*"),
    (None, "DOCKER_CONFIG"),
    (None, "REGISTRY_AUTH_FILE"),
    // amazon-ecr-credential-helper: the AWS SDK's settings and credential chain (AWS_PROFILE,
    // AWS_REGION, AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE, ...) and its own AWS_ECR_*.
    (Some("ecr-login"), "AWS_*"),
    // docker-credential-gcr and gcloud's docker-credential-gcloud: Application Default
    // Credentials and gcloud's configuration.
    (Some("gcr"), "GOOGLE_APPLICATION_CREDENTIALS"),
    (Some("gcr"), "CLOUDSDK_*"),
    (Some("gcloud"), "GOOGLE_APPLICATION_CREDENTIALS"),
    (Some("gcloud"), "CLOUDSDK_*"),
    // docker-credential-secretservice: libsecret reaches the keyring over the session bus.
    (Some("secretservice"), "DBUS_SESSION_BUS_ADDRESS"),
    // docker-credential-pass: the password store and gpg.
    (Some("pass"), "PASSWORD_STORE_*"),
    (Some("pass"), "GNUPGHOME"),
    (Some("pass"), "GPG_TTY"),
];

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
    #[error(
        "credential helper {program} wrote more than {limit} for {server}; stopped reading \
         and killed it (its output is not shown)"
    )]
    TooMuchOutput {
        program: String,
        server: String,
        limit: &'static str,
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
    let environment = helper_environment(helper, std::env::vars_os());
    let output = run_get(
        &path,
        &program,
        &environment,
        server_url,
        ctx.helper_timeout,
    )
    .await?;
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

/// The variables of `vars` that [`HELPER_ENVIRONMENT`] lets `helper` see.
fn helper_environment(
    helper: &str,
    vars: impl Iterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    vars.filter(|(name, _)| name.to_str().is_some_and(|name| passed_to(helper, name)))
        .collect()
}

fn passed_to(helper: &str, name: &str) -> bool {
    HELPER_ENVIRONMENT.iter().any(|(only_for, pattern)| {
        let for_this_helper = only_for.is_none_or(|only| only == helper);
        let matches = match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *pattern,
        };
        for_this_helper && matches
    })
}

/// What a finished helper left behind.
struct Output {
    status: ExitStatus,
    /// At most [`MAX_OUTPUT`] bytes; zeroed on drop since it may hold a secret.
    stdout: Zeroizing<Vec<u8>>,
}

/// How the exchange with a helper ended (short of a timeout).
enum Ended {
    Exited(ExitStatus),
    /// It wrote more than [`MAX_OUTPUT`]; reading stopped there.
    TooLong,
}

/// What reading stdout came to.
enum Read {
    Closed,
    TooLong,
}

async fn run_get(
    path: &Path,
    program: &str,
    environment: &[(OsString, OsString)],
    server_url: &str,
    timeout: Duration,
) -> Result<Output, HelperError> {
    let mut child = spawn(path, environment)?;
    let mut group = ProcessGroup::of(&child);
    // Room for one byte past the limit from the start: a read never reallocates the buffer,
    // which would leave an unzeroed copy of a secret behind.
    let mut stdout = Zeroizing::new(Vec::with_capacity(MAX_OUTPUT + 1));
    let mut pipe = child.stdout.take();
    let exchange = exchange(&mut child, pipe.as_mut(), server_url, &mut stdout);
    let ended = tokio::time::timeout(timeout, exchange).await;
    // However it ended, nothing the helper started outlives the call: a background job it
    // left behind, or the helper itself when it is still running.
    group.kill();
    let _ = child.start_kill();
    let _ = child.wait().await;
    // Closed only now: a helper cut off mid-write is killed there, not told EPIPE and left
    // to carry on.
    drop(pipe);
    let program = program.to_string();
    let server = server_url.to_string();
    match ended {
        Ok(Ok(Ended::Exited(status))) => Ok(Output { status, stdout }),
        Ok(Ok(Ended::TooLong)) => Err(HelperError::TooMuchOutput {
            program,
            server,
            limit: MAX_OUTPUT_TEXT,
        }),
        Ok(Err(source)) => Err(HelperError::Io {
            program,
            server,
            source,
        }),
        Err(_) => Err(HelperError::Timeout {
            program,
            server,
            timeout,
        }),
    }
}

/// Starts `path get` with exactly `environment` (and [`NESTED_ENV`]) in a new process group.
fn spawn(path: &Path, environment: &[(OsString, OsString)]) -> Result<Child, HelperError> {
    Command::new(path)
        .arg("get")
        .env_clear()
        .envs(environment.iter().map(|(name, value)| (name, value)))
        // A helper entry pointing back at pullsecretd must not start it again and again.
        .env(NESTED_ENV, "1")
        // Its own group (pgid = its pid), so that the group can be killed as one.
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // A helper's diagnostics may quote secrets; they are dropped, not relayed (and so
        // never buffered either).
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| HelperError::Spawn {
            program: path.to_path_buf(),
            source,
        })
}

/// Sends the server URL, then reads stdout into `buffer` until the helper exits (and
/// [`PIPE_GRACE`] after), or until it wrote too much.
async fn exchange(
    child: &mut Child,
    stdout: Option<&mut ChildStdout>,
    server_url: &str,
    buffer: &mut Vec<u8>,
) -> std::io::Result<Ended> {
    if let Some(mut stdin) = child.stdin.take() {
        write_ignoring_closed(&mut stdin, server_url.as_bytes()).await?;
    }
    let Some(stdout) = stdout else {
        return Ok(Ended::Exited(child.wait().await?));
    };
    let reading = read_bounded(stdout, buffer);
    tokio::pin!(reading);
    let first = tokio::select! {
        status = child.wait() => First::Exited(status?),
        read = &mut reading => First::Read(read?),
    };
    match first {
        First::Read(Read::TooLong) => Ok(Ended::TooLong),
        // Stdout closed, the helper still running: the answer is complete once it exits.
        First::Read(Read::Closed) => Ok(Ended::Exited(child.wait().await?)),
        First::Exited(status) => match tokio::time::timeout(PIPE_GRACE, &mut reading).await {
            Ok(Ok(Read::TooLong)) => Ok(Ended::TooLong),
            Ok(Ok(Read::Closed)) => Ok(Ended::Exited(status)),
            Ok(Err(error)) => Err(error),
            // A background job holds stdout open: what came before the exit is the answer.
            Err(_) => Ok(Ended::Exited(status)),
        },
    }
}

/// What happened first while the helper ran.
enum First {
    Exited(ExitStatus),
    Read(Read),
}

/// Reads `stdout` into `buffer` (which has room for [`MAX_OUTPUT`] + 1 bytes) until it closes
/// or holds more than [`MAX_OUTPUT`] bytes.
async fn read_bounded(stdout: &mut ChildStdout, buffer: &mut Vec<u8>) -> std::io::Result<Read> {
    loop {
        if buffer.len() > MAX_OUTPUT {
            return Ok(Read::TooLong);
        }
        // Reads into the spare capacity only: below the limit there always is some.
        if stdout.read_buf(buffer).await? == 0 {
            return Ok(Read::Closed);
        }
    }
}

/// A helper's process group; killed on drop too, so that a cancelled call leaves nothing.
struct ProcessGroup(Option<rustix::process::Pid>);

impl ProcessGroup {
    fn of(child: &Child) -> Self {
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw);
        Self(pid)
    }

    /// SIGKILL to every process in the group, once. Best effort: the group may be empty
    /// already. (Once the leader is reaped its pid could in principle be reused, but not as a
    /// group id while any member lives, and a new process leads a group only if it makes one.)
    fn kill(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
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
    fn helpers_see_the_allowlist_and_their_own_documented_variables_only() {
        let vars = [
            "PATH",
            "HOME",
            "LC_ALL",
            "XDG_RUNTIME_DIR",
            "DOCKER_CONFIG",
            "VAULT_TOKEN",
            "VAULT_ADDR",
            "PULLSECRETD_CONFIG",
            "PULLSECRETD_NESTED_HELPER",
            "KUBECONFIG",
            "AWS_SECRET_ACCESS_KEY",
            "CLOUDSDK_CONFIG",
            "PATHS",
            "LANGUAGE",
        ]
        .map(|name| (OsString::from(name), OsString::from("v")));
        let names = |helper| -> Vec<String> {
            helper_environment(helper, vars.iter().cloned())
                .into_iter()
                .map(|(name, _)| name.to_string_lossy().into_owned())
                .collect()
        };
        let common = ["PATH", "HOME", "LC_ALL", "XDG_RUNTIME_DIR", "DOCKER_CONFIG"];
        assert_eq!(names("desktop"), common);
        let mut ecr = common.to_vec();
        ecr.push("AWS_SECRET_ACCESS_KEY");
        assert_eq!(names("ecr-login"), ecr);
        let mut gcr = common.to_vec();
        gcr.push("CLOUDSDK_CONFIG");
        assert_eq!(names("gcr"), gcr);
    }

    #[test]
    fn missing_program_names_where_it_looked() {
        let dirs = [PathBuf::from("/nonexistent/pullsecretd-test")];
        let err = find_program("docker-credential-nope", Some(&dirs)).expect_err("not installed");
        let shown = err.to_string();
        assert!(shown.contains("docker-credential-nope"), "{shown}");
        assert!(shown.contains("/nonexistent/pullsecretd-test"), "{shown}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::os::unix::process::ExitStatusExt as _;

        const SENTINEL: &str = "SENTINEL-helper-prop-31f0";

        fn output() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                Just(SENTINEL.to_string()),
                Just("credentials not found in native keychain".to_string()),
                Just("\"".to_string()),
                Just("{".to_string()),
                Just("\u{0}".to_string()),
                "[a-zA-Z :,]{0,12}",
            ];
            prop_oneof![
                proptest::collection::vec(piece, 0..6).prop_map(|p| p.concat().into_bytes()),
                (any::<bool>(), "[a-z<>]{0,8}").prop_map(|(token, user)| {
                    let user = if token { "<token>".to_string() } else { user };
                    serde_json::json!({"ServerURL": "x", "Username": user, "Secret": SENTINEL})
                        .to_string()
                        .into_bytes()
                }),
                proptest::collection::vec(any::<u8>(), 0..48),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Whatever a helper prints and however it exits, the answer is a credential, "not
            /// found" or an error that repeats none of its output but the protocol's own texts.
            #[test]
            fn helper_output_is_answered_or_refused_without_echoing_it(
                stdout in output(),
                code in 0i32..4,
            ) {
                let out = Output {
                    status: ExitStatus::from_raw(code << 8),
                    stdout: stdout.into(),
                };
                let registry = RegistryKey::from_docker("registry.example.com").expect("valid");
                match interpret(&out, "docker-credential-x", "registry.example.com", registry) {
                    Ok(Some(_)) => prop_assert_eq!(code, 0),
                    // "Not found" is the helper's exact text with a non-zero exit.
                    Ok(None) => prop_assert_ne!(code, 0),
                    Err(error) => {
                        let shown = format!("{error} {error:?}");
                        prop_assert!(!shown.contains(SENTINEL), "echoed: {}", shown);
                    }
                }
            }
        }
    }
}
