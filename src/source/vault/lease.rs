//! Vault endpoints vaultrs does not have (source stage, I/O types only): reading any path of a
//! dynamic secrets engine with its lease, and `sys/leases/renew` / `sys/leases/revoke`.
//! Written as plain rustify endpoints so they go through the same bounded transport and session
//! (login, retries, 403 → login again) as every KV read. Must not log a lease id or a body.

use rustify::Endpoint;
use rustify::enums::{RequestMethod, RequestType, ResponseType};
use rustify::errors::ClientError as RestError;
use serde::Deserialize;

/// `GET /v1/<path>` of a dynamic engine: the whole answer, whose `data` holds the secret and
/// whose top level holds the lease.
pub struct ReadDynamic {
    pub path: String,
}

#[derive(Deserialize)]
pub struct DynamicSecret {
    pub data: serde_json::Value,
    #[serde(default)]
    pub lease_id: String,
    #[serde(default)]
    pub lease_duration: u64,
    #[serde(default)]
    pub renewable: bool,
}

impl Endpoint for ReadDynamic {
    type Response = DynamicSecret;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        self.path.clone()
    }

    fn method(&self) -> RequestMethod {
        RequestMethod::GET
    }
}

/// `PUT /v1/sys/leases/renew` with the id in the body (the audit log then keeps only its HMAC).
pub struct RenewLease {
    pub lease_id: String,
    pub increment_seconds: u64,
}

#[derive(Deserialize)]
pub struct Renewed {
    #[serde(default)]
    pub lease_duration: u64,
    #[serde(default)]
    pub renewable: bool,
}

impl Endpoint for RenewLease {
    type Response = Renewed;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        "sys/leases/renew".to_string()
    }

    fn method(&self) -> RequestMethod {
        RequestMethod::PUT
    }

    fn body(&self) -> Result<Option<Vec<u8>>, RestError> {
        json_body(&serde_json::json!({
            "lease_id": self.lease_id,
            "increment": self.increment_seconds,
        }))
    }
}

/// `PUT /v1/sys/leases/revoke`: Vault answers 204 with no body.
pub struct RevokeLease {
    pub lease_id: String,
}

impl Endpoint for RevokeLease {
    type Response = ();
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        "sys/leases/revoke".to_string()
    }

    fn method(&self) -> RequestMethod {
        RequestMethod::PUT
    }

    fn body(&self) -> Result<Option<Vec<u8>>, RestError> {
        json_body(&serde_json::json!({ "lease_id": self.lease_id }))
    }
}

fn json_body(value: &serde_json::Value) -> Result<Option<Vec<u8>>, RestError> {
    serde_json::to_vec(value)
        .map(Some)
        .map_err(|source| RestError::DataParseError {
            source: source.into(),
        })
}
