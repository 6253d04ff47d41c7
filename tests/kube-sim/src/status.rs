//! Status error objects exactly as the apiserver builds them (apimachinery `pkg/api/errors`):
//! code, reason, message wording and `details` (whose `kind` is the *resource*, plural, for
//! NotFound/AlreadyExists/Conflict, and the *Kind* for Invalid). Only wire shapes, no decisions.

use serde_json::{Value, json};

/// One `details.causes[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

impl Cause {
    /// `field.Required(path, "")`.
    pub fn required(field: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: field.into(),
        }
    }

    /// `field.Invalid(path, value, detail)`; `value` is already JSON-quoted by the caller's needs.
    pub fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Self {
        let mut message = format!("Invalid value: {}", go_quote(value));
        if !detail.is_empty() {
            message.push_str(": ");
            message.push_str(detail);
        }
        Self {
            reason: "FieldValueInvalid".into(),
            message,
            field: field.into(),
        }
    }

    /// `field.Forbidden(path, detail)`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self {
            reason: "FieldValueForbidden".into(),
            message: format!("Forbidden: {detail}"),
            field: field.into(),
        }
    }

    /// `field.TooLong(path, value, max)` for byte sizes.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self {
            reason: "FieldValueTooLong".into(),
            message: format!("Too long: may not be more than {max} bytes"),
            field: field.into(),
        }
    }

    /// `field.NotSupported(path, value, valid)`.
    pub fn not_supported(field: impl Into<String>, value: &str, valid: &[&str]) -> Self {
        let valid: Vec<String> = valid.iter().map(|v| go_quote(v)).collect();
        Self {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                go_quote(value),
                valid.join(", ")
            ),
            field: field.into(),
        }
    }

    fn to_json(&self) -> Value {
        json!({"reason": self.reason, "message": self.message, "field": self.field})
    }

    /// How `field.Error.Error()` prints it: `field: message`.
    fn full(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// `%q` of Go for the plain strings we print.
pub fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// An API error: becomes a `Status` body with `code` as the HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `details` object, if any.
    pub details: Option<Value>,
    /// Sent as `Retry-After` and `details.retryAfterSeconds`.
    pub retry_after: Option<u32>,
}

pub type ApiResult<T> = Result<T, ApiError>;

fn details(name: &str, group: &str, kind: &str) -> Value {
    let mut d = json!({"name": name, "group": group, "kind": kind});
    if name.is_empty()
        && let Some(m) = d.as_object_mut()
    {
        m.remove("name");
    }
    d
}

/// `group.resource` as `schema.GroupResource.String()` prints it.
fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            format!(
                "{} {} not found",
                qualified(group, resource),
                go_quote(name)
            ),
        );
        e.details = Some(details(name, group, resource));
        e
    }

    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!(
                "{} {} already exists",
                qualified(group, resource),
                go_quote(name)
            ),
        );
        e.details = Some(details(name, group, resource));
        e
    }

    /// The optimistic-concurrency failure of apiserver `registry/store.go`.
    pub fn conflict(group: &str, resource: &str, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {}: the object has been modified; please apply your \
                 changes to the latest version and try again",
                qualified(group, resource),
                go_quote(name)
            ),
        );
        e.details = Some(details(name, group, resource));
        e
    }

    /// `errors.NewConflict` with a custom cause (preconditions).
    pub fn conflict_msg(group: &str, resource: &str, name: &str, msg: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {}: {msg}",
                qualified(group, resource),
                go_quote(name)
            ),
        );
        e.details = Some(details(name, group, resource));
        e
    }

    /// `errors.NewInvalid(GroupKind, name, errs)`: details.kind is the Kind.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let list = match causes.as_slice() {
            [one] => one.full(),
            many => format!(
                "[{}]",
                many.iter().map(Cause::full).collect::<Vec<_>>().join(", ")
            ),
        };
        let qkind = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{qkind} {} is invalid: {list}", go_quote(name)),
        );
        let mut d = details(name, group, kind);
        if let Some(m) = d.as_object_mut() {
            m.insert(
                "causes".into(),
                Value::Array(causes.iter().map(Cause::to_json).collect()),
            );
        }
        e.details = Some(d);
        e
    }

    /// `errors.NewGenericServerResponse(422, ...)`, used for failed JSON patches.
    pub fn unprocessable(server_message: &str) -> Self {
        let mut e = Self::new(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request",
        );
        e.details = Some(
            json!({"causes": [{"reason": "UnexpectedServerResponse", "message": server_message}]}),
        );
        e
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// RBAC denial, worded as the apiserver's `forbiddenMessage`.
    pub fn forbidden(group: &str, resource: &str, name: &str, msg: impl Into<String>) -> Self {
        let mut e = Self::new(403, "Forbidden", msg);
        e.details = Some(details(name, group, resource));
        e
    }

    pub fn namespace_terminating(group: &str, resource: &str, ns: &str) -> Self {
        let mut e = Self::new(
            403,
            "Forbidden",
            format!(
                "{} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                qualified(group, resource)
            ),
        );
        let mut d = details("", group, resource);
        if let Some(m) = d.as_object_mut() {
            m.insert(
                "causes".into(),
                json!([{"reason": "NamespaceTerminating",
                        "message": format!("namespace {ns} is being terminated"),
                        "field": "metadata.namespace"}]),
            );
        }
        e.details = Some(d);
        e
    }

    pub fn method_not_allowed(msg: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", msg)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    pub fn gone(msg: impl Into<String>) -> Self {
        Self::new(410, "Expired", msg)
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", msg.into()),
        )
    }

    /// What the apiserver sends for an error that is not a Status (`ErrorToAPIStatus`): 500 with
    /// the error's text and no reason.
    pub fn unknown(msg: impl Into<String>) -> Self {
        Self::new(500, "", msg)
    }

    pub fn service_unavailable() -> Self {
        Self::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        )
    }

    /// A 429 that carries a Status body (responsewriters), unlike priority-and-fairness's text body.
    pub fn too_many_requests(retry_after: u32) -> Self {
        let mut e = Self::new(
            429,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        );
        e.retry_after = Some(retry_after);
        e.details = Some(json!({"retryAfterSeconds": retry_after}));
        e
    }

    /// The Status object.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let (Some(d), Some(m)) = (&self.details, s.as_object_mut()) {
            m.insert("details".into(), d.clone());
        }
        // `reason` is omitempty: StatusReasonUnknown is not sent.
        if let (true, Some(m)) = (self.reason.is_empty(), s.as_object_mut()) {
            m.remove("reason");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_matches_spec() {
        let s = ApiError::not_found("", "secrets", "x").to_status();
        assert_eq!(
            s,
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                   "message":"secrets \"x\" not found","reason":"NotFound",
                   "details":{"name":"x","group":"","kind":"secrets"},"code":404})
        );
    }

    #[test]
    fn invalid_lists_causes() {
        let e = ApiError::invalid(
            "",
            "Secret",
            "s",
            vec![
                Cause::required("data[.dockercfg]"),
                Cause::invalid("type", "a", "field is immutable"),
            ],
        );
        assert_eq!(
            e.message,
            "Secret \"s\" is invalid: [data[.dockercfg]: Required value, type: Invalid value: \"a\": field is immutable]"
        );
        assert_eq!(e.code, 422);
        let one = ApiError::invalid("", "Secret", "s", vec![Cause::required("data[.dockercfg]")]);
        assert_eq!(
            one.message,
            "Secret \"s\" is invalid: data[.dockercfg]: Required value"
        );
    }
}
