//! The docker credential-helper protocol (pure): actions, replies and their exact texts
//! (docs/docker-auth.md). Everything here is for stdout: protocol output, or an error on one
//! line with exit status 1. Never puts a secret in an error message. Must not do I/O.

use std::ffi::OsString;
use std::path::PathBuf;

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use secrecy::ExposeSecret as _;

use crate::model::credential::{Credential, Secret};

/// Prefix of every helper binary.
pub const HELPER_PREFIX: &str = "docker-credential-";
/// What a helper prints (exit 1) when it holds nothing for the server.
pub const NOT_FOUND_TEXT: &str = "credentials not found in native keychain";
/// The `Username` a helper stores identity tokens under.
pub const TOKEN_USERNAME: &str = "<token>";
/// Set in the environment of every credential helper pullsecretd runs: a helper entry that
/// points back at pullsecretd would otherwise start pullsecretd again, and again.
pub const NESTED_ENV: &str = "PULLSECRETD_NESTED_HELPER";

/// The `Username` and `Secret` a credential is stored under in the helper protocol
/// (identity tokens under [`TOKEN_USERNAME`]).
pub fn protocol_login(credential: &Credential) -> (&str, &str) {
    match &credential.secret {
        Secret::Password(password) => (credential.username.as_str(), password.expose_secret()),
        Secret::IdentityToken(token) => (TOKEN_USERNAME, token.expose_secret()),
    }
}

/// `get`/`erase` without a server URL (credentials/error.go).
pub const NO_SERVER_URL: &str = "no credentials server URL";
/// `store` without a username (credentials/error.go).
pub const NO_USERNAME: &str = "no credentials username";
/// The name docker derives from `credHelpers`/`credsStore: pullsecretd`.
pub const HELPER_NAME: &str = "pullsecretd";
/// Names the helper's config file.
pub const CONFIG_ENV: &str = "PULLSECRETD_CONFIG";
/// Largest stdin accepted (a server URL, or a small JSON object for `store`).
pub const MAX_INPUT: u64 = 64 * 1024;

/// What the protocol asks for: the helper's one argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelperCommand {
    Get,
    List,
    Store,
    Erase,
    Version,
}

impl HelperCommand {
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "get" => Some(Self::Get),
            "list" => Some(Self::List),
            "store" => Some(Self::Store),
            "erase" => Some(Self::Erase),
            "version" => Some(Self::Version),
            _ => None,
        }
    }

    /// Whether the action reads stdin (`list` ignores it: docker sends `unused`).
    pub fn reads_input(self) -> bool {
        matches!(self, Self::Get | Self::Store | Self::Erase)
    }
}

/// What to print on stdout and how to exit. Errors are printed on stdout too, with status 1
/// (`credentials.Serve`).
pub struct Reply {
    /// May hold a secret (a `get` answer): zeroed on drop.
    pub stdout: Zeroizing<Vec<u8>>,
    pub exit_code: u8,
}

impl Reply {
    pub fn ok(stdout: Vec<u8>) -> Self {
        Self {
            stdout: Zeroizing::new(stdout),
            exit_code: 0,
        }
    }

    /// An error: its text, one line, on stdout; exit status 1.
    pub fn error(message: &str) -> Self {
        Self {
            stdout: Zeroizing::new(format!("{message}\n").into_bytes()),
            exit_code: 1,
        }
    }
}

/// The usage text the reference helpers print (on stdout, exit 1) for a wrong argument count.
pub fn usage(program: &str) -> Reply {
    Reply::error(&format!("Usage: {program} <store|get|erase|list|version>"))
}

/// `version`: `<program> (<package>) <version>`, as the reference helpers print it.
pub fn version(program: &str) -> Reply {
    Reply::ok(format!("{program} (pullsecretd) v{}\n", env!("CARGO_PKG_VERSION")).into_bytes())
}

/// `$PULLSECRETD_CONFIG` when set: a config the user named, so its absence is an error.
pub fn explicit_config_path(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    env(CONFIG_ENV).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Where the helper's config is when no `--config` is given: `$PULLSECRETD_CONFIG`, else
/// `$XDG_CONFIG_HOME/pullsecretd/config.yaml`, else `~/.config/pullsecretd/config.yaml`.
pub fn default_config_path(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let var = |name| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var(CONFIG_ENV).or_else(|| {
        var("XDG_CONFIG_HOME")
            .or_else(|| var("HOME").map(|home| home.join(".config")))
            .map(|dir| dir.join("pullsecretd/config.yaml"))
    })
}

/// The server URL on stdin, whitespace trimmed (`credentials.Get`).
pub fn server_url(input: &[u8]) -> Result<&str, Reply> {
    let text = std::str::from_utf8(input).map_err(|_| Reply::error("server URL is not UTF-8"))?;
    let url = text.trim();
    if url.is_empty() {
        return Err(Reply::error(NO_SERVER_URL));
    }
    Ok(url)
}

/// `{"ServerURL":…,"Username":…,"Secret":…}` and a newline; identity tokens under `<token>`.
pub fn get_answer(server_url: &str, credential: &Credential) -> Vec<u8> {
    let (username, secret) = protocol_login(credential);
    let mut answer = Map::new();
    answer.insert("ServerURL".into(), Value::String(server_url.to_string()));
    answer.insert("Username".into(), Value::String(username.to_string()));
    answer.insert("Secret".into(), Value::String(secret.to_string()));
    let mut bytes = Value::Object(answer).to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}

/// Why pullsecretd will not store or erase: it serves credentials, it does not keep them.
pub const READ_ONLY_TEXT: &str = "pullsecretd serves credentials from the sources in its config \
    (Vault, files) and its config names no writable target, so it does not store or erase \
    them: put the credential in Vault and name it in the config";

pub fn store(input: &[u8]) -> Reply {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(input) else {
        return Reply::error(
            "store: expected a JSON object with ServerURL, Username and Secret on stdin",
        );
    };
    let text = |name: &str| fields.get(name).and_then(Value::as_str).unwrap_or_default();
    if text("ServerURL").trim().is_empty() {
        return Reply::error(NO_SERVER_URL);
    }
    if text("Username").is_empty() {
        return Reply::error(NO_USERNAME);
    }
    Reply::error(READ_ONLY_TEXT)
}

pub fn erase(input: &[u8]) -> Reply {
    match server_url(input) {
        Ok(_) => Reply::error(READ_ONLY_TEXT),
        Err(reply) => reply,
    }
}

/// Errors go on one stdout line: docker shows the trimmed text.
pub fn one_line(message: &str) -> String {
    message.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::credential::{RegistryKey, Secret};

    fn text(reply: &Reply) -> String {
        String::from_utf8_lossy(&reply.stdout).into_owned()
    }

    #[test]
    fn store_and_erase_check_their_input_then_refuse() {
        let cases: [(&[u8], &str); 5] = [
            (b"", "store: expected"),
            (br#"{"Username":"u","Secret":"s"}"#, NO_SERVER_URL),
            (br#"{"ServerURL":"quay.io","Secret":"s"}"#, NO_USERNAME),
            (
                br#"{"ServerURL":"quay.io","Username":"u","Secret":"SENTINEL"}"#,
                READ_ONLY_TEXT,
            ),
            (b"[1]", "store: expected"),
        ];
        for (input, expected) in cases {
            let reply = store(input);
            assert_eq!(reply.exit_code, 1);
            assert!(text(&reply).starts_with(expected), "{}", text(&reply));
            assert!(!text(&reply).contains("SENTINEL"));
        }
        assert_eq!(text(&erase(b"  \n")), format!("{NO_SERVER_URL}\n"));
        assert_eq!(text(&erase(b"quay.io")), format!("{READ_ONLY_TEXT}\n"));
    }

    #[test]
    fn identity_tokens_use_the_token_username() {
        let server = RegistryKey::from_docker("quay.io").expect("key");
        let token = Credential {
            registry: server.clone(),
            username: String::new(),
            secret: Secret::IdentityToken("tok".to_string().into()),
            email: None,
        };
        let answer: Value = serde_json::from_slice(&get_answer("quay.io", &token)).expect("JSON");
        assert_eq!(answer["Username"], TOKEN_USERNAME);
        assert_eq!(answer["Secret"], "tok");
        let password = Credential::with_password(server, "robot", "pw");
        let bytes = get_answer("https://quay.io", &password);
        assert!(bytes.ends_with(b"}\n"));
        let answer: Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(
            answer,
            serde_json::json!({"ServerURL": "https://quay.io", "Username": "robot", "Secret": "pw"})
        );
    }

    #[test]
    fn actions_and_one_line_errors() {
        assert_eq!(HelperCommand::parse("get"), Some(HelperCommand::Get));
        assert_eq!(HelperCommand::parse("GET"), None);
        assert!(!HelperCommand::List.reads_input());
        assert_eq!(one_line("a\nb\r"), "a b ");
        assert!(
            text(&version("docker-credential-pullsecretd"))
                .starts_with("docker-credential-pullsecretd (pullsecretd) v")
        );
    }
}
