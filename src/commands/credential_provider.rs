//! `pullsecretd credential-provider` and `pullsecretd-credential-provider` (the kubelet's exec
//! image credential provider): one request on stdin, one response on stdout, exit 0; any
//! failure goes to stderr with exit 1 and nothing on stdout, so the kubelet logs it and pulls
//! with its other credentials (never caching an empty answer as if it were one).
//!
//! Where credentials come from, per request:
//! - service-account mode (`credentialProvider.serviceAccounts`): a Vault session of this
//!   process alone, logged in with the pod's token under the role named from its account, so
//!   Vault's policy decides; nothing is shared across accounts (the kubelet caches per
//!   account). A read the policy denies is answered with no credentials (a decision the
//!   kubelet may cache), any other failure with an error;
//! - otherwise the running agent when its socket answers (one Vault read per registry per
//!   agent cache period, however many pulls), else the config's sources read here.
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use pullsecretd::config::provider::ServiceAccountLogin;
use pullsecretd::config::{Config, RegistryConfig, SourceConfig, VaultAuth};
use pullsecretd::credhelper::agent::{self, AgentClient, NoAgent};
use pullsecretd::credhelper::protocol;
use pullsecretd::credprovider::{self, Answer, MAX_REQUEST_BYTES, Request};
use pullsecretd::model::credential::Credential;
use pullsecretd::source::service::CredentialService;
use pullsecretd::source::vault::Outcome;
use pullsecretd::source::{Error as SourceError, SourceContext, VaultError, VaultSession};

use crate::cli::{error_chain, source_context};

/// How long a credential helper named by the config may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers one request: the response on stdout and exit 0, or the error on stderr and exit 1.
pub(crate) fn credential_provider(config: Option<PathBuf>) -> ExitCode {
    match respond(config) {
        Ok(response) => {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(&response).and_then(|()| stdout.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: writing the response: {error}");
                    ExitCode::from(1)
                }
            }
        }
        Err(message) => {
            eprintln!("error: pullsecretd credential-provider: {message}");
            ExitCode::from(1)
        }
    }
}

/// `args` of the provider run by its own name: none, or `--config FILE`.
pub(crate) fn config_from_args(args: &[String]) -> Result<Option<PathBuf>, String> {
    match args {
        [] => Ok(None),
        [flag, path] if flag == "--config" => Ok(Some(PathBuf::from(path))),
        [one] if one.starts_with("--config=") => Ok(Some(PathBuf::from(&one["--config=".len()..]))),
        _ => Err(format!(
            "usage: {} [--config FILE] < CredentialProviderRequest",
            credprovider::PROVIDER_NAME
        )),
    }
}

fn respond(config: Option<PathBuf>) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    let mut input = zeroize::Zeroizing::new(Vec::new());
    std::io::stdin()
        .lock()
        .take(MAX_REQUEST_BYTES + 1)
        .read_to_end(&mut input)
        .map_err(|e| format!("reading stdin: {e}"))?;
    if input.len() as u64 > MAX_REQUEST_BYTES {
        return Err(format!(
            "the request is larger than {} KiB",
            MAX_REQUEST_BYTES / 1024
        ));
    }
    let request = credprovider::parse_request(&input).map_err(|e| e.to_string())?;
    let config = load_config(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))?;
    let answer = runtime.block_on(answer(&config, &request))?;
    Ok(credprovider::render_response(request.api_version, &answer))
}

/// `--config`, else `$PULLSECRETD_CONFIG`, else `~/.config/pullsecretd/config.yaml`.
fn load_config(config: Option<PathBuf>) -> Result<Config, String> {
    let env = |name: &str| std::env::var_os(name);
    let path = config
        .or_else(|| protocol::default_config_path(env))
        .ok_or("no config: pass --config FILE (in the CredentialProviderConfig's args) or set PULLSECRETD_CONFIG")?;
    Config::load(&path).map_err(|e| e.to_string())
}

async fn answer(config: &Config, request: &Request) -> Result<Answer, String> {
    let settings = &config.credential_provider;
    let Some(registry) = credprovider::registry_for_image(config, &request.image) else {
        // Not ours: a valid answer with no credentials, so the pull goes on anonymously.
        return Ok(Answer::anonymous(settings.cache_key_type));
    };
    let credential = match &settings.service_accounts {
        Some(login) => read_as_service_account(config, login, registry, request).await?,
        None => read_for_node(config, registry).await?,
    };
    let Some(credential) = credential else {
        return Ok(Answer::anonymous(settings.cache_key_type));
    };
    let duration = credprovider::cache_duration(config, &registry.name);
    Answer::with_credential(settings.cache_key_type, duration, registry, &credential)
        .map_err(|e| e.to_string())
}

/// The node's own view: the agent when one answers on its socket, else the sources read here.
async fn read_for_node(
    config: &Config,
    registry: &RegistryConfig,
) -> Result<Option<Credential>, String> {
    let env = |name: &str| std::env::var_os(name);
    if let Some(socket) = agent::socket_path(env) {
        match AgentClient::connect(&socket).await {
            Ok(client) => return client.get(&registry.server).await.map_err(|e| e.0),
            Err(error @ NoAgent::NotListening { .. }) => {
                tracing::debug!(%error, "No agent; reading sources here.");
            }
            Err(error @ NoAgent::ForeignServer { .. }) => {
                eprintln!("warning: {error}; reading sources here instead");
            }
        }
    }
    let context = source_context(config, HELPER_TIMEOUT).map_err(|e| error_chain(&e))?;
    CredentialService::new(Some(config.clone()), context, None)
        .get(&registry.server)
        .await
        .map_err(|e| e.0)
}

/// Service-account mode: log in to Vault with the pod's token, as the role its account maps
/// to, and read the registry with that login alone.
async fn read_as_service_account(
    config: &Config,
    login: &ServiceAccountLogin,
    registry: &RegistryConfig,
    request: &Request,
) -> Result<Option<Credential>, String> {
    let token = request.service_account_token.as_ref().ok_or(
        "service-account mode (credentialProvider.serviceAccounts) needs the pod's token: set \
         tokenAttributes.serviceAccountTokenAudience in the kubelet's CredentialProviderConfig",
    )?;
    if !matches!(registry.from, SourceConfig::Vault(_)) {
        return Err(format!(
            "registry {}: service-account mode serves only registries read from Vault, so \
             that Vault's policy decides who may pull",
            registry.name
        ));
    }
    let subject = credprovider::token_subject(token)?;
    let role = login
        .role
        .render(
            &subject.namespace,
            &subject.name,
            &request.service_account_annotations,
        )
        .map_err(|e| {
            format!(
                "service account {}/{}: {e}",
                subject.namespace, subject.name
            )
        })?;
    let mut vault = config
        .vault
        .clone()
        .ok_or("service-account mode needs the config's vault: block")?;
    vault.auth = VaultAuth::Kubernetes {
        role,
        mount: login.mount.clone(),
        token_file: PathBuf::new(),
    };
    let session = VaultSession::new(&vault)
        .map_err(|e| e.to_string())?
        .with_presented_token(token.clone());
    let context = SourceContext {
        helper_timeout: HELPER_TIMEOUT,
        vault: Some(Arc::new(session)),
        ..SourceContext::default()
    };
    match pullsecretd::source::resolve(registry, &context).await {
        Ok(resolved) => Ok(Some(resolved.credential)),
        // Vault's policy says no: that is this account's answer, not a fault. Answered with
        // no credentials, the kubelet caches it like any answer (per account), so a pod that
        // may not pull from here costs one login per cache period, not one per retry.
        Err(SourceError::Vault(error)) if is_policy_denial(&error) => {
            eprintln!(
                "service account {}/{}: Vault's policy does not let it read registry {}; \
                 answering with no credentials",
                subject.namespace, subject.name, registry.name
            );
            Ok(None)
        }
        Err(error) => Err(format!(
            "service account {}/{}: {error}",
            subject.namespace, subject.name
        )),
    }
}

fn is_policy_denial(error: &VaultError) -> bool {
    matches!(
        error,
        VaultError::Read {
            outcome: Outcome::PermissionDenied,
            ..
        }
    )
}
