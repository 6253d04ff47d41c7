//! Vault HTTP transport (source stage, I/O): vaultrs' typed endpoints and responses, sent over
//! our own reqwest client, every answer read through a size limit.
//!
//! Why: vaultrs' functions execute on rustify's reqwest client, which reads any body whole into
//! memory — a server (or whatever answers in its place) sending gigabytes takes the process's
//! memory with it, and vaultrs offers no hook. rustify runs an endpoint on any
//! `rustify::client::Client`, so [`BoundedClient`] reads at most [`MAX_RESPONSE_BYTES`] (a
//! larger `Content-Length` is refused before reading, a longer body when the limit is passed)
//! and fails with [`TooLarge`]. What vaultrs does with a result (Vault's error texts, the
//! `data`/`auth` envelope) is repeated in [`VaultApi`], since vaultrs' own executors take only
//! its own client. Must never put a token or a body in an error.

use std::future::Future;
use std::pin::Pin;

use rustify::Endpoint;
use rustify::errors::ClientError as RestError;
use vaultrs::api::{AuthInfo, EndpointError, EndpointMiddleware, EndpointResult};
use vaultrs::error::ClientError;

/// Largest Vault answer read. Real ones are a few KiB (a KV secret, a token's metadata);
/// Vault's own default request limit is 32 MiB, and nothing pullsecretd reads comes near this.
pub const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;

/// An answer larger than the limit: refused, not read further.
#[derive(Debug, thiserror::Error)]
#[error("the answer is larger than {} MiB", limit / (1024 * 1024))]
pub struct TooLarge {
    pub limit: u64,
}

/// Reads `response`'s body, at most `limit` bytes.
pub async fn read_bounded(
    mut response: reqwest::Response,
    limit: u64,
) -> Result<Vec<u8>, anyhow::Error> {
    if response
        .content_length()
        .is_some_and(|length| length > limit)
    {
        return Err(TooLarge { limit }.into());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(TooLarge { limit }.into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Whether a rustify error is an answer refused for its size.
pub fn is_too_large(error: &RestError) -> Option<u64> {
    match error {
        RestError::ResponseError { source } => source.downcast_ref::<TooLarge>().map(|t| t.limit),
        _ => None,
    }
}

/// rustify's reqwest client, but reading answers through [`read_bounded`].
pub struct BoundedClient {
    http: reqwest::Client,
    base: String,
    limit: u64,
}

impl BoundedClient {
    async fn send_bounded(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, RestError> {
        let request = reqwest::Request::try_from(request)
            .map_err(|source| RestError::ReqwestBuildError { source })?;
        let url = request.url().to_string();
        let method = request.method().to_string();
        let response =
            self.http
                .execute(request)
                .await
                .map_err(|source| RestError::RequestError {
                    source: source.into(),
                    url,
                    method,
                })?;
        let mut answer = http::Response::builder().status(response.status().as_u16());
        for (name, value) in response.headers() {
            answer = answer.header(name, value);
        }
        let body = read_bounded(response, self.limit)
            .await
            .map_err(|source| RestError::ResponseError { source })?;
        answer
            .body(body)
            .map_err(|source| RestError::ResponseError {
                source: source.into(),
            })
    }
}

impl rustify::client::Client for BoundedClient {
    // The shape `#[async_trait]` gives the trait's method, written out.
    fn send<'client, 'future>(
        &'client self,
        request: http::Request<Vec<u8>>,
    ) -> Pin<Box<dyn Future<Output = Result<http::Response<Vec<u8>>, RestError>> + Send + 'future>>
    where
        'client: 'future,
        Self: 'future,
    {
        Box::pin(self.send_bounded(request))
    }

    fn base(&self) -> &str {
        &self.base
    }
}

/// A Vault client: the token and namespace headers (vaultrs' middleware) on every request, sent
/// by a [`BoundedClient`].
pub struct VaultApi {
    http: BoundedClient,
    middle: EndpointMiddleware,
}

impl VaultApi {
    /// Requests to `base` (no trailing `/`) over `http`, with `token` (empty: none).
    pub fn new(
        http: reqwest::Client,
        base: &str,
        token: String,
        namespace: Option<String>,
    ) -> Self {
        Self {
            http: BoundedClient {
                http,
                base: base.to_string(),
                limit: MAX_RESPONSE_BYTES,
            },
            middle: EndpointMiddleware {
                token,
                version: "v1".to_string(),
                wrap: None,
                namespace,
            },
        }
    }

    /// An endpoint whose result is the answer's `data` (vaultrs' `exec_with_result`).
    pub async fn data<E: Endpoint>(&self, endpoint: E) -> Result<E::Response, ClientError> {
        let result = endpoint
            .with_middleware(&self.middle)
            .exec(&self.http)
            .await
            .map_err(api_error)?;
        let envelope: EndpointResult<E::Response> = result.wrap().map_err(ClientError::from)?;
        envelope.data.ok_or(ClientError::ResponseDataEmptyError)
    }

    /// An endpoint whose result is the whole answer (vaultrs' `exec_with_no_result`).
    pub async fn whole<E: Endpoint>(&self, endpoint: E) -> Result<E::Response, ClientError> {
        endpoint
            .with_middleware(&self.middle)
            .exec(&self.http)
            .await
            .map_err(api_error)?
            .parse()
            .map_err(ClientError::from)
    }

    /// An endpoint whose answer has no body to read (`204 No Content`).
    pub async fn empty<E: Endpoint>(&self, endpoint: E) -> Result<(), ClientError> {
        endpoint
            .with_middleware(&self.middle)
            .exec(&self.http)
            .await
            .map(|_| ())
            .map_err(api_error)
    }

    /// A login or renewal: the answer's `auth` (vaultrs' `api::auth`).
    pub async fn auth<E: Endpoint<Response = ()>>(
        &self,
        endpoint: E,
    ) -> Result<AuthInfo, ClientError> {
        let result = endpoint
            .with_middleware(&self.middle)
            .exec(&self.http)
            .await
            .map_err(api_error)?;
        let envelope: EndpointResult<()> = result.wrap().map_err(ClientError::from)?;
        envelope.auth.ok_or(ClientError::ResponseEmptyError)
    }
}

/// An error status with Vault's `{"errors": [...]}` becomes an API error with those texts (as
/// vaultrs does); anything else stays a transport error.
fn api_error(error: RestError) -> ClientError {
    if let RestError::ServerResponseError {
        code,
        content: Some(content),
    } = &error
        && let Ok(api) = serde_json::from_str::<EndpointError>(content)
    {
        return ClientError::APIError {
            code: *code,
            errors: api.errors,
        };
    }
    ClientError::RestClientError { source: error }
}
