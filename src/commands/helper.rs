//! `pullsecretd credential-helper ACTION` and `docker-credential-pullsecretd ACTION`: the
//! docker credential-helper protocol on stdin/stdout.
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use pullsecretd::config::Config;
use pullsecretd::credhelper::agent::{self, AgentClient, NoAgent};
use pullsecretd::credhelper::protocol::{self, NESTED_ENV};
use pullsecretd::credhelper::{self, Backend, Lookup, LookupError};
use pullsecretd::source::service::CredentialService;

use crate::cli::{error_chain, source_context};

/// Answers one credential-helper call: protocol output (or the error) on stdout, exit 0 or 1.
pub(crate) fn credential_helper(
    program: &str,
    action: Option<&str>,
    config: Option<PathBuf>,
) -> ExitCode {
    let reply = helper_reply(program, action, config);
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(&reply.stdout)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::from(1);
    }
    ExitCode::from(reply.exit_code)
}

pub(crate) fn helper_reply(
    program: &str,
    action: Option<&str>,
    config: Option<PathBuf>,
) -> protocol::Reply {
    let Some(word) = action else {
        return protocol::usage(program);
    };
    if std::env::var_os(NESTED_ENV).is_some() && word != "version" {
        return protocol::Reply::error(
            "pullsecretd was asked for credentials by a credential helper pullsecretd itself \
             runs: a credHelpers or credsStore entry in a file pullsecretd reads points back \
             at pullsecretd",
        );
    }
    let reads_input = protocol::HelperCommand::parse(word).is_some_and(|a| a.reads_input());
    let mut input = zeroize::Zeroizing::new(Vec::new());
    if reads_input {
        let mut stdin = std::io::Read::take(std::io::stdin().lock(), protocol::MAX_INPUT);
        if std::io::Read::read_to_end(&mut stdin, &mut input).is_err() {
            return protocol::Reply::error("reading stdin failed");
        }
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return protocol::Reply::error("starting the async runtime failed");
    };
    runtime.block_on(credhelper::handle(program, word, &input, || {
        helper_backend(config)
    }))
}

/// A running agent (unless `--config` is given), else this process reading the config's
/// sources itself; with no config file at all, the default config `workstation` builds from
/// the docker and podman auth files.
pub(crate) async fn helper_backend(config: Option<PathBuf>) -> Result<Backend, LookupError> {
    let env = |name: &str| std::env::var_os(name);
    if config.is_none()
        && let Some(socket) = agent::socket_path(env)
    {
        match AgentClient::connect(&socket).await {
            Ok(client) => return Ok(Backend::Agent(client)),
            Err(error @ NoAgent::NotListening { .. }) => {
                tracing::debug!(%error, "No agent; reading sources here.");
            }
            // Not our agent: answered as if none were running, and said, whatever RUST_LOG
            // says (docker shows a helper's stderr), since someone else holds the path.
            Err(error @ NoAgent::ForeignServer { .. }) => {
                eprintln!("warning: {error}; reading sources here instead");
            }
        }
    }
    let config = match config.or_else(|| protocol::explicit_config_path(env)) {
        Some(path) => Config::load(&path).map_err(|e| LookupError(e.to_string()))?,
        None => match protocol::default_config_path(env).filter(|path| path.is_file()) {
            Some(path) => Config::load(&path).map_err(|e| LookupError(e.to_string()))?,
            // No config anywhere: serve what `workstation` would, from the auth files.
            None => pullsecretd::workstation::default_config_now(
                &pullsecretd::workstation::standard_files(env),
            )
            .map_err(LookupError)?
            .ok_or_else(|| {
                LookupError(
                    "no config (--config, $PULLSECRETD_CONFIG or \
                     ~/.config/pullsecretd/config.yaml) and no registry in the docker or podman \
                     auth files"
                        .into(),
                )
            })?,
        },
    };
    let context = source_context(&config, Duration::from_secs(10))
        .map_err(|e| LookupError(error_chain(&e)))?;
    Ok(Backend::Local(Lookup::Service(Arc::new(
        CredentialService::new(Some(config), context, None),
    ))))
}
