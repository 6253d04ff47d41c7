//! Credential-helper front end (a trigger): `pullsecretd credential-helper` and
//! `docker-credential-pullsecretd` answer the docker credential-helper protocol
//! ([`protocol`]) — `get`, `list`, `store`, `erase`, `version` — from the config's sources,
//! read in this process or asked of a running agent ([`agent`]).
//!
//! It must never turn a source failure into "not found" (docker would then carry on without
//! credentials), never store or erase anything, and never put a secret in an error message.

pub mod agent;
pub mod protocol;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::model::credential::{Credential, RegistryKey};
pub use crate::source::service::{Lookup, LookupError};
use agent::AgentClient;
use protocol::{HelperCommand, NOT_FOUND_TEXT, Reply, get_answer, one_line, server_url};

/// Where answers come from: a running agent, or the sources read by this process.
pub enum Backend {
    Agent(AgentClient),
    Local(Lookup),
}

impl Backend {
    pub async fn get(&self, server: &RegistryKey) -> Result<Option<Credential>, LookupError> {
        match self {
            Self::Agent(agent) => agent.get(server).await,
            Self::Local(lookup) => lookup.get(server).await,
        }
    }

    pub async fn list(&self) -> Result<BTreeMap<String, String>, LookupError> {
        match self {
            Self::Agent(agent) => agent.list().await,
            Self::Local(lookup) => lookup.list().await,
        }
    }
}

/// Answers one protocol call. `word` is the helper's argument, `input` its stdin; `backend`
/// is set up only for `get` and `list` (a config or agent problem is then their error).
pub async fn handle<F, Fut>(program: &str, word: &str, input: &[u8], backend: F) -> Reply
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Backend, LookupError>>,
{
    let Some(action) = HelperCommand::parse(word) else {
        return Reply::error(&format!("Unknown credential action `{word}`"));
    };
    let needs_backend = matches!(action, HelperCommand::Get | HelperCommand::List);
    let backend = if needs_backend {
        match backend().await {
            Ok(backend) => Some(backend),
            Err(error) => return Reply::error(&one_line(&error.to_string())),
        }
    } else {
        None
    };
    match (action, backend) {
        (HelperCommand::Get, Some(backend)) => get(input, &backend).await,
        (HelperCommand::List, Some(backend)) => list(&backend).await,
        (HelperCommand::Store, _) => protocol::store(input),
        (HelperCommand::Erase, _) => protocol::erase(input),
        _ => protocol::version(program),
    }
}

async fn get(input: &[u8], backend: &Backend) -> Reply {
    let url = match server_url(input) {
        Ok(url) => url,
        Err(reply) => return reply,
    };
    // Not a registry name: nothing can be stored under it.
    let Ok(server) = RegistryKey::from_docker(url) else {
        return Reply::error(NOT_FOUND_TEXT);
    };
    match backend.get(&server).await {
        Ok(Some(credential)) => Reply::ok(get_answer(url, &credential)),
        Ok(None) => Reply::error(NOT_FOUND_TEXT),
        Err(error) => Reply::error(&one_line(&error.to_string())),
    }
}

async fn list(backend: &Backend) -> Reply {
    match backend.list().await {
        Ok(entries) => {
            let object: Map<String, Value> = entries
                .into_iter()
                .map(|(server, user)| (server, Value::String(user)))
                .collect();
            let mut bytes = Value::Object(object).to_string().into_bytes();
            bytes.push(b'\n');
            Reply::ok(bytes)
        }
        Err(error) => Reply::error(&one_line(&error.to_string())),
    }
}
