//! The `serviceaccounts/token` subresource: `POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`
//! with an `authentication.k8s.io/v1` TokenRequest, answered with a signed token, as
//! kubernetes/kubernetes `pkg/registry/core/serviceaccount/storage/token.go` (`TokenREST.Create`)
//! does, with the defaults of `pkg/apis/authentication/v1/defaults.go` and the checks of
//! `pkg/apis/authentication/validation/validation.go` (`ValidateTokenRequest`):
//!
//! - a name or namespace in the body must match the URL (422); the account must exist (404);
//!   a `metadata.uid` in the body must be the account's (409,
//!   `TokenRequestServiceAccountUIDValidation`);
//! - `spec.audiences` defaults to the API audience, `spec.expirationSeconds` to 3600 and must be
//!   within [600 s, 2^32 s] (422);
//! - `spec.boundObjectRef` may name a Pod (running as this account: else 400) or a Secret of the
//!   namespace (404 if missing, 409 if its uid differs); a Node is looked up among Nodes, which
//!   kube-sim does not serve (404); any other kind is 400;
//! - a pod-bound token asked for 3607 s with API audiences only (what the kubelet projects into
//!   volumes) is signed for a year with `warnafter` at 3607 s
//!   (`--service-account-extend-token-expiration`, on by default); `status.expirationTimestamp`
//!   still says 3607 s;
//! - the reply is 201 with the request's spec (defaulted), `metadata` name/namespace/uid of the
//!   account and `creationTimestamp`, and `status.token`/`status.expirationTimestamp`.
//!
//! Authorization (`create` on `serviceaccounts/token`) happened before, in `server`. The
//! kubelet asks through [`issue`], the same path without HTTP. Must not log the token.

use crate::api::{Reply, Request};
use crate::resources;
use crate::server::Shared;
use crate::status::{ApiError, ApiResult, Cause};
use crate::store::Store;
use crate::tokens::{API_AUDIENCE, Claims, ObjectRef};
use crate::util::{self, meta_str};
use serde_json::{Value, json};

const GROUP: &str = "authentication.k8s.io";
const KIND: &str = "TokenRequest";
const API_VERSION: &str = "authentication.k8s.io/v1";
/// `SetDefaults_TokenRequestSpec`: one hour.
const DEFAULT_EXPIRATION: i64 = 3600;
/// `ValidateTokenRequest`: at least ten minutes.
const MIN_EXPIRATION: i64 = 600;
/// `ValidateTokenRequest`: at most 2^32 seconds.
const MAX_EXPIRATION: i64 = 1 << 32;
/// `serviceaccount.WarnOnlyBoundTokenExpirationSeconds`: the kubelet's projected-volume default.
const WARN_ONLY_EXPIRATION: i64 = 60 * 60 + 7;
/// `serviceaccount.ExpirationExtensionSeconds`: one year.
const EXTENDED_EXPIRATION: i64 = 24 * 365 * 60 * 60;

/// What a caller asks for (the spec of a TokenRequest, defaulted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// `spec.audiences` (empty: the API audience).
    pub audiences: Vec<String>,
    /// `spec.expirationSeconds` (None: one hour).
    pub expiration_seconds: Option<i64>,
    /// `spec.boundObjectRef`.
    pub bound: Option<BoundRef>,
    /// `metadata.uid` of the request: must be the account's when set.
    pub service_account_uid: Option<String>,
}

/// `BoundObjectReference`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundRef {
    pub kind: String,
    pub api_version: String,
    pub name: String,
    /// Empty: any uid.
    pub uid: String,
}

/// An issued token and the TokenRequest object that reports it.
pub struct Issued {
    /// The token text (only ever returned to the caller).
    pub token: String,
    /// `status.expirationTimestamp`, seconds since the epoch.
    pub expires: u64,
    /// The defaulted spec as the reply shows it.
    pub spec: Value,
    /// The account's uid.
    pub service_account_uid: String,
    /// `creationTimestamp`.
    pub created: String,
}

/// The HTTP handler of `POST .../serviceaccounts/NAME/token`.
pub fn create(shared: &Shared, req: &Request) -> ApiResult<Reply> {
    let body = crate::api::decode_object(req)?;
    check_type(&body)?;
    let ns = req.ns().to_string();
    let name = req.name().to_string();
    check_names(&body, &ns, &name)?;
    let spec = parse_spec(&body)?;
    let issued = {
        let st = shared.lock_store();
        issue(shared, &st, &ns, &name, &spec)?
    };
    let mut meta = body.get("metadata").cloned().unwrap_or(json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.insert("name".into(), json!(name));
        m.insert("namespace".into(), json!(ns));
        m.insert("uid".into(), json!(issued.service_account_uid));
        m.insert("creationTimestamp".into(), json!(issued.created));
    }
    Ok(Reply::Json(
        201,
        json!({
            "kind": KIND, "apiVersion": API_VERSION, "metadata": meta, "spec": issued.spec,
            "status": {"token": issued.token, "expirationTimestamp": util::rfc3339(issued.expires)},
        }),
    ))
}

/// The body is decoded as a TokenRequest: another apiVersion/kind is refused as the decoder does.
fn check_type(body: &Value) -> ApiResult<()> {
    let s = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
    if !s("apiVersion").is_empty() && s("apiVersion") != API_VERSION {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({API_VERSION})",
            s("apiVersion")
        )));
    }
    if !s("kind").is_empty() && s("kind") != KIND {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({}) does not match the expected kind ({KIND})",
            s("kind")
        )));
    }
    Ok(())
}

/// "require name/namespace in the body to match URL if specified".
fn check_names(body: &Value, ns: &str, name: &str) -> ApiResult<()> {
    let given = |k: &str| {
        body.pointer(&format!("/metadata/{k}"))
            .and_then(Value::as_str)
    };
    if let Some(n) = given("name").filter(|n| !n.is_empty() && *n != name) {
        return Err(ApiError::invalid(
            GROUP,
            KIND,
            name,
            vec![Cause::invalid(
                "metadata.name",
                n,
                "must match the service account name if specified",
            )],
        ));
    }
    if let Some(n) = given("namespace").filter(|n| !n.is_empty() && *n != ns) {
        return Err(ApiError::invalid(
            GROUP,
            KIND,
            name,
            vec![Cause::invalid(
                "metadata.namespace",
                n,
                "must match the service account namespace if specified",
            )],
        ));
    }
    Ok(())
}

fn decode_error(detail: &str) -> ApiError {
    ApiError::bad_request(format!("the object provided is unrecognized: {detail}"))
}

/// The spec fields of a TokenRequest body.
fn parse_spec(body: &Value) -> ApiResult<TokenSpec> {
    let spec = body.get("spec").cloned().unwrap_or(json!({}));
    let audiences = match spec.get("audiences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| decode_error("spec.audiences must be a list of strings"))?,
        Some(_) => return Err(decode_error("spec.audiences must be a list of strings")),
    };
    let expiration_seconds = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| decode_error("spec.expirationSeconds must be an integer"))?,
        ),
    };
    let bound = match spec.get("boundObjectRef") {
        None | Some(Value::Null) => None,
        Some(r) => {
            let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            Some(BoundRef {
                kind: s("kind"),
                api_version: s("apiVersion"),
                name: s("name"),
                uid: s("uid"),
            })
        }
    };
    let service_account_uid = body
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_string);
    Ok(TokenSpec {
        audiences,
        expiration_seconds,
        bound,
        service_account_uid,
    })
}

fn get(st: &Store, plural: &str, ns: &str, name: &str) -> Option<Value> {
    let rt = resources::find("", "v1", plural, false)?;
    st.get(rt.key(), ns, name).cloned()
}

/// `schema.FromAPIVersionAndKind(...).String()`: `group/version, Kind=K`.
fn gvk_string(api_version: &str, kind: &str) -> String {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    format!("{group}/{version}, Kind={kind}")
}

/// The pod or secret a token is bound to, with the node of a pod.
struct Binding {
    pod: Option<ObjectRef>,
    secret: Option<ObjectRef>,
    node: Option<String>,
}

fn resolve_binding(st: &Store, ns: &str, sa: &str, r: &BoundRef) -> ApiResult<Binding> {
    let group = r.api_version.split_once('/').map_or("", |(g, _)| g);
    let (obj, binding) = match (group, r.kind.as_str()) {
        ("", "Pod") => {
            let pod = get(st, "pods", ns, &r.name)
                .ok_or_else(|| ApiError::not_found("", "pods", &r.name))?;
            let runs_as = pod
                .pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if runs_as != sa {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {} to pod running with different serviceaccount name.",
                    crate::status::go_quote(sa)
                )));
            }
            let node = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(str::to_string);
            let b = Binding {
                pod: Some(object_ref(&pod)),
                secret: None,
                node,
            };
            (pod, b)
        }
        ("", "Secret") => {
            let secret = get(st, "secrets", ns, &r.name)
                .ok_or_else(|| ApiError::not_found("", "secrets", &r.name))?;
            let b = Binding {
                pod: None,
                secret: Some(object_ref(&secret)),
                node: None,
            };
            (secret, b)
        }
        // ServiceAccountTokenNodeBinding is on, but kube-sim serves no Node objects.
        ("", "Node") => return Err(ApiError::not_found("", "nodes", &r.name)),
        _ => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {}",
                gvk_string(&r.api_version, &r.kind)
            )));
        }
    };
    if !r.uid.is_empty() && meta_str(&obj, "uid") != r.uid {
        return Err(ApiError::conflict_msg(
            group,
            &r.kind,
            &r.name,
            &format!(
                "the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                r.uid
            ),
        ));
    }
    Ok(binding)
}

fn object_ref(obj: &Value) -> ObjectRef {
    ObjectRef {
        name: meta_str(obj, "name").to_string(),
        uid: meta_str(obj, "uid").to_string(),
    }
}

/// `ValidateTokenRequest`.
fn validate_expiration(secs: i64) -> ApiResult<()> {
    let detail = if secs < MIN_EXPIRATION {
        "may not specify a duration less than 10 minutes"
    } else if secs > MAX_EXPIRATION {
        "may not specify a duration larger than 2^32 seconds"
    } else {
        return Ok(());
    };
    let cause = Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {secs}: {detail}"),
        field: "spec.expirationSeconds".into(),
    };
    Err(ApiError::invalid(GROUP, KIND, "", vec![cause]))
}

/// `TokenREST.Create` after decoding: checks, binding, signing. The store is only read.
pub fn issue(
    shared: &Shared,
    st: &Store,
    ns: &str,
    name: &str,
    spec: &TokenSpec,
) -> ApiResult<Issued> {
    let sa = get(st, "serviceaccounts", ns, name)
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
    let sa_uid = meta_str(&sa, "uid").to_string();
    if let Some(uid) = spec.service_account_uid.as_ref().filter(|u| **u != sa_uid) {
        return Err(ApiError::conflict_msg(
            GROUP,
            KIND,
            name,
            &format!(
                "the UID in the token request ({uid}) does not match the UID of the service account ({sa_uid})"
            ),
        ));
    }
    let audiences = if spec.audiences.is_empty() {
        vec![API_AUDIENCE.to_string()]
    } else {
        spec.audiences.clone()
    };
    let expiration = spec.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION);
    validate_expiration(expiration)?;
    let binding = match &spec.bound {
        Some(r) => resolve_binding(st, ns, name, r)?,
        None => Binding {
            pod: None,
            secret: None,
            node: None,
        },
    };
    let now = crate::tokens::now_secs();
    let extend = binding.pod.is_some()
        && expiration == WARN_ONLY_EXPIRATION
        && audiences.iter().all(|a| a == API_AUDIENCE);
    let (token_secs, warn_after) = if extend {
        (EXTENDED_EXPIRATION, Some(now + expiration.unsigned_abs()))
    } else {
        (expiration, None)
    };
    let claims = Claims {
        namespace: ns.to_string(),
        service_account: ObjectRef {
            name: name.to_string(),
            uid: sa_uid.clone(),
        },
        pod: binding.pod,
        secret: binding.secret,
        node: binding.node,
        audiences: audiences.clone(),
        issued_at: now,
        expires: now + token_secs.unsigned_abs(),
        warn_after,
        jti: util::new_uid(),
    };
    let token = shared.tokens.sign(claims).map_err(ApiError::internal)?;
    let bound = spec.bound.as_ref().map_or(Value::Null, |r| {
        let mut b = serde_json::Map::new();
        for (k, v) in [
            ("kind", &r.kind),
            ("apiVersion", &r.api_version),
            ("name", &r.name),
            ("uid", &r.uid),
        ] {
            if !v.is_empty() {
                b.insert(k.into(), json!(v));
            }
        }
        Value::Object(b)
    });
    Ok(Issued {
        token,
        expires: now + expiration.unsigned_abs(),
        spec: json!({"audiences": audiences, "expirationSeconds": expiration, "boundObjectRef": bound}),
        service_account_uid: sa_uid,
        created: util::rfc3339(now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_bounds_are_validate_token_request_s() {
        assert!(validate_expiration(600).is_ok());
        assert!(validate_expiration(1 << 32).is_ok());
        let e = validate_expiration(60).err().map(|e| e.message);
        assert_eq!(
            e.as_deref(),
            Some(
                "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"
            )
        );
        assert!(validate_expiration((1 << 32) + 1).is_err());
    }

    #[test]
    fn gvk_strings_print_like_schema() {
        assert_eq!(gvk_string("v1", "ConfigMap"), "/v1, Kind=ConfigMap");
        assert_eq!(
            gvk_string("apps/v1", "Deployment"),
            "apps/v1, Kind=Deployment"
        );
    }
}
