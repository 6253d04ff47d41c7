//! Per-kind registry strategies: what the apiserver does to an object before storing it
//! (`PrepareForCreate`/`PrepareForUpdate`) and the validation that turns a bad object into a 422
//! (`ValidateSecret`, `ValidateSecretUpdate`, name rules...). No storage access here.

use crate::resources::ResourceType;
use crate::status::{ApiError, ApiResult, Cause};
use crate::workloads::{self, Workload};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

pub const DOCKERCFG: &str = "kubernetes.io/dockercfg";
pub const DOCKERCONFIGJSON: &str = "kubernetes.io/dockerconfigjson";
/// `MaxSecretSize`.
const MAX_SECRET_SIZE: usize = 1024 * 1024;

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_config_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && s != "."
        && s != ".."
        && !s.starts_with("..")
}

/// Name rule per resource: namespaces are DNS labels; RBAC names are path segments; the rest
/// DNS subdomains.
fn validate_name(rt: &ResourceType, name: &str, causes: &mut Vec<Cause>) {
    match rt.plural {
        "namespaces" | "projects" => {
            if !is_dns_label(name) {
                causes.push(Cause::invalid("metadata.name", name, LABEL_MSG));
            }
        }
        "roles" | "rolebindings" | "clusterroles" | "clusterrolebindings" => {
            if name == "." || name == ".." || name.contains('/') || name.contains('%') {
                causes.push(Cause::invalid("metadata.name", name, "may not contain '/'"));
            }
        }
        _ => {
            if !is_dns_subdomain(name) {
                causes.push(Cause::invalid("metadata.name", name, SUBDOMAIN_MSG));
            }
        }
    }
}

fn validate_labels(obj: &Value, causes: &mut Vec<Cause>) {
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            let ok_key = crate::selector::LabelSelector::parse(k).is_ok()
                && !k.contains([' ', '=', '!', ',']);
            if !ok_key {
                causes.push(Cause::invalid("metadata.labels", k, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"));
            }
            let s = v.as_str().unwrap_or("");
            if !v.is_string() || crate::selector::LabelSelector::parse(&format!("k={s}")).is_err() {
                causes.push(Cause::invalid("metadata.labels".to_string(), s, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"));
            }
        }
    }
}

/// Go's `encoding/json` error text for a payload that is not a JSON object.
fn go_json_error(bytes: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(_) | Value::Null) => None,
        Ok(v) => {
            let what = match v {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                _ => "bool",
            };
            Some(format!(
                "json: cannot unmarshal {what} into Go value of type map[string]interface {{}}"
            ))
        }
        Err(e) => Some(go_json_syntax_error(bytes, &e)),
    }
}

/// Go's `encoding/json` text for a syntax error serde_json found in `bytes`.
pub(crate) fn go_json_syntax_error(bytes: &[u8], e: &serde_json::Error) -> String {
    if e.is_eof() {
        return "unexpected end of JSON input".into();
    }
    // Point at the offending character the way Go's scanner does.
    let text = String::from_utf8_lossy(bytes);
    let line_start: usize = text
        .lines()
        .take(e.line().saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum();
    let idx = (line_start + e.column()).saturating_sub(1);
    let c = text
        .get(idx..)
        .and_then(|s| s.chars().next())
        .unwrap_or(' ');
    if e.to_string().starts_with("key must be a string") {
        format!("invalid character '{c}' looking for beginning of object key string")
    } else {
        format!("invalid character '{c}' looking for beginning of value")
    }
}

fn decoded_data(obj: &Value) -> ApiResult<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(data) = obj.get("data") {
        let Some(data) = data.as_object() else {
            if data.is_null() {
                return Ok(out);
            }
            return Err(ApiError::bad_request(
                "Secret in version \"v1\" cannot be handled as a Secret: json: cannot unmarshal data into Go struct field Secret.data of type map[string][]uint8",
            ));
        };
        for (k, v) in data {
            let s = v.as_str().unwrap_or("");
            let bytes = B64.decode(s).map_err(|e| {
                ApiError::bad_request(format!(
                    "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte {}",
                    match e {
                        base64::DecodeError::InvalidByte(i, _) | base64::DecodeError::InvalidLastSymbol(i, _) => i,
                        _ => s.len(),
                    }
                ))
            })?;
            out.push((k.clone(), bytes));
        }
    }
    Ok(out)
}

/// `stringData` is write-only: merged into `data` (base64) and dropped, as the Secret strategy does.
fn fold_string_data(obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let Some(Value::Object(sd)) = map.remove("stringData") else {
        return;
    };
    let data = map
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if !data.is_object() {
        *data = Value::Object(Map::new());
    }
    if let Value::Object(data) = data {
        for (k, v) in sd {
            data.insert(
                k,
                Value::String(B64.encode(v.as_str().unwrap_or("").as_bytes())),
            );
        }
    }
}

/// The ServiceAccount strategy clears every `.secrets[]` reference down to `{name}`.
fn trim_sa_secrets(obj: &mut Value) {
    if let Some(Value::Array(list)) = obj.get_mut("secrets") {
        for item in list.iter_mut() {
            let name = item
                .get("name")
                .cloned()
                .unwrap_or(Value::String(String::new()));
            *item = json!({"name": name});
        }
    }
}

/// `PrepareForCreate` plus defaulting.
pub fn prepare_create(rt: &ResourceType, obj: &mut Value) {
    if let Some(w) = Workload::of(rt.group, rt.plural) {
        return workloads::prepare_create(w, obj);
    }
    match (rt.group, rt.plural) {
        ("", "secrets") => {
            fold_string_data(obj);
            if let Some(m) = obj.as_object_mut() {
                let t = m.get("type").and_then(Value::as_str).unwrap_or("");
                if t.is_empty() {
                    m.insert("type".into(), Value::String("Opaque".into()));
                }
            }
        }
        ("", "serviceaccounts") => trim_sa_secrets(obj),
        ("", "namespaces") => {
            let name = crate::util::meta_str(obj, "name").to_string();
            if let Some(m) = obj.as_object_mut() {
                m.insert("status".into(), json!({"phase": "Active"}));
                let spec = m.entry("spec").or_insert_with(|| json!({}));
                if spec.get("finalizers").is_none()
                    && let Some(s) = spec.as_object_mut()
                {
                    s.insert("finalizers".into(), json!(["kubernetes"]));
                }
            }
            // The NamespaceDefaultLabelName admission: kubernetes.io/metadata.name = name.
            let meta = crate::util::meta_mut(obj);
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), Value::String(name));
            }
        }
        _ => {}
    }
}

/// `PrepareForUpdate`: status of the main resource is not writable, system metadata is kept.
pub fn prepare_update(rt: &ResourceType, old: &Value, obj: &mut Value) {
    for key in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generateName",
    ] {
        let meta = crate::util::meta_mut(obj);
        match old.pointer(&format!("/metadata/{key}")) {
            Some(v) => {
                meta.insert(key.into(), v.clone());
            }
            None => {
                meta.remove(key);
            }
        }
    }
    if let Some(w) = Workload::of(rt.group, rt.plural) {
        return workloads::prepare_update(w, old, obj);
    }
    match (rt.group, rt.plural) {
        ("", "secrets") => fold_string_data(obj),
        ("", "serviceaccounts") => trim_sa_secrets(obj),
        ("", "namespaces") => {
            let name = crate::util::meta_str(obj, "name").to_string();
            if let (Some(m), Some(st)) = (obj.as_object_mut(), old.get("status")) {
                m.insert("status".into(), st.clone());
            }
            let meta = crate::util::meta_mut(obj);
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), Value::String(name));
            }
        }
        _ => {}
    }
}

/// Validation on create (`old` = None) and update. Errors are 422 Invalid or 400 BadRequest.
pub fn validate(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    let name = crate::util::meta_str(obj, "name").to_string();
    let mut causes = Vec::new();
    if old.is_none() {
        validate_name(rt, &name, &mut causes);
    }
    validate_labels(obj, &mut causes);
    if let Some(w) = Workload::of(rt.group, rt.plural) {
        workloads::validate(w, obj, old, &mut causes);
    }
    match (rt.group, rt.plural) {
        ("", "secrets") => validate_secret(obj, old, &mut causes)?,
        ("", "serviceaccounts") => {
            for (i, r) in obj
                .get("imagePullSecrets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if r.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    causes.push(Cause::required(format!("imagePullSecrets[{i}].name")));
                }
            }
        }
        (crate::resources::RBAC, "rolebindings" | "clusterrolebindings") => {
            validate_binding(rt, obj, old, &mut causes);
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            if rt.group.is_empty() { "" } else { rt.group },
            rt.kind,
            &name,
            causes,
        ))
    }
}

fn validate_binding(rt: &ResourceType, obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let role_ref = obj.get("roleRef").cloned().unwrap_or(Value::Null);
    let kind = role_ref.get("kind").and_then(Value::as_str).unwrap_or("");
    let valid_kinds: &[&str] = if rt.plural == "rolebindings" {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !valid_kinds.contains(&kind) {
        causes.push(Cause::not_supported("roleRef.kind", kind, valid_kinds));
    }
    if role_ref
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        causes.push(Cause::required("roleRef.name"));
    }
    if let Some(old) = old
        && old.get("roleRef") != obj.get("roleRef")
    {
        causes.push(Cause::invalid(
            "roleRef",
            &role_ref.to_string(),
            "cannot change roleRef",
        ));
    }
    for (i, s) in obj
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let k = s.get("kind").and_then(Value::as_str).unwrap_or("");
        if !["ServiceAccount", "User", "Group"].contains(&k) {
            causes.push(Cause::not_supported(
                format!("subjects[{i}].kind"),
                k,
                &["ServiceAccount", "User", "Group"],
            ));
        }
        if s.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            causes.push(Cause::required(format!("subjects[{i}].name")));
        }
    }
}

/// `ValidateSecret` and `ValidateSecretUpdate` (SPEC §1).
fn validate_secret(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) -> ApiResult<()> {
    let data = decoded_data(obj)?;
    let ty = obj.get("type").and_then(Value::as_str).unwrap_or("");
    let mut total = 0usize;
    for (k, v) in &data {
        if !is_config_key(k) {
            causes.push(Cause::invalid(format!("data[{k}]"), k, CONFIG_KEY_MSG));
        }
        total += v.len();
    }
    if total > MAX_SECRET_SIZE {
        causes.push(Cause::too_long("data", MAX_SECRET_SIZE));
    }
    let get = |key: &str| data.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let docker_key = match ty {
        DOCKERCFG => Some(".dockercfg"),
        DOCKERCONFIGJSON => Some(".dockerconfigjson"),
        _ => None,
    };
    if let Some(key) = docker_key {
        match get(key) {
            None => causes.push(Cause::required(format!("data[{key}]"))),
            Some(bytes) => {
                if let Some(detail) = go_json_error(bytes) {
                    causes.push(Cause::invalid(
                        format!("data[{key}]"),
                        "<secret contents redacted>",
                        &detail,
                    ));
                }
            }
        }
    }
    match ty {
        "kubernetes.io/service-account-token" => {
            let ann = obj.pointer("/metadata/annotations/kubernetes.io~1service-account.name");
            if ann.and_then(Value::as_str).unwrap_or("").is_empty() {
                causes.push(Cause::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                ));
            }
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if get(key).is_none() {
                    causes.push(Cause::required(format!("data[{key}]")));
                }
            }
        }
        "kubernetes.io/ssh-auth" if get("ssh-privatekey").is_none() => {
            causes.push(Cause::required("data[ssh-privatekey]"));
        }
        _ => {}
    }
    if let Some(old) = old {
        let old_ty = old.get("type").and_then(Value::as_str).unwrap_or("");
        if old_ty != ty {
            causes.push(Cause::invalid("type", ty, "field is immutable"));
        }
        if old.get("immutable").and_then(Value::as_bool) == Some(true) {
            if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
                causes.push(Cause::forbidden(
                    "immutable",
                    "field is immutable when `immutable` is set",
                ));
            }
            let norm = |v: Option<&Value>| v.filter(|d| !d.is_null()).cloned().unwrap_or(json!({}));
            if norm(old.get("data")) != norm(obj.get("data")) {
                causes.push(Cause::forbidden(
                    "data",
                    "field is immutable when `immutable` is set",
                ));
            }
        }
    }
    Ok(())
}

/// `ObjectMeta` fields.
const META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Top-level fields of the typed kinds (k8s.io/api); other kinds are not pruned.
fn known_fields(rt: &ResourceType) -> Option<&'static [&'static str]> {
    Some(match (rt.group, rt.plural) {
        ("", "secrets") => &["data", "stringData", "type", "immutable"],
        ("", "serviceaccounts") => &[
            "secrets",
            "imagePullSecrets",
            "automountServiceAccountToken",
        ],
        ("", "namespaces") => &["spec", "status"],
        ("", "configmaps") => &["data", "binaryData", "immutable"],
        (crate::resources::RBAC, "rolebindings" | "clusterrolebindings") => {
            &["subjects", "roleRef"]
        }
        (crate::resources::RBAC, "roles") => &["rules"],
        (crate::resources::RBAC, "clusterroles") => &["rules", "aggregationRule"],
        ("coordination.k8s.io", "leases") => &["spec"],
        (g, p) if Workload::of(g, p).is_some() => workloads::known_fields(),
        _ => return None,
    })
}

/// Fields the apiserver's typed decoder would not know, as `fieldValidation` reports them.
pub fn unknown_fields(rt: &ResourceType, obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(known) = known_fields(rt) else {
        return out;
    };
    let Some(map) = obj.as_object() else {
        return out;
    };
    for k in map.keys() {
        if !(known.contains(&k.as_str())
            || matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
        {
            out.push(k.clone());
        }
    }
    if let Some(meta) = map.get("metadata").and_then(Value::as_object) {
        out.extend(
            meta.keys()
                .filter(|k| !META_FIELDS.contains(&k.as_str()))
                .map(|k| format!("metadata.{k}")),
        );
    }
    if rt.plural == "serviceaccounts" {
        for (list, fields) in [
            ("imagePullSecrets", &["name"][..]),
            (
                "secrets",
                &[
                    "kind",
                    "namespace",
                    "name",
                    "uid",
                    "apiVersion",
                    "resourceVersion",
                    "fieldPath",
                ][..],
            ),
        ] {
            for (i, item) in map
                .get(list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                for k in item.as_object().into_iter().flat_map(|m| m.keys()) {
                    if !fields.contains(&k.as_str()) {
                        out.push(format!("{list}[{i}].{k}"));
                    }
                }
            }
        }
    }
    out
}

/// Drops the fields of `unknown_fields`, as decoding into the typed object does.
pub fn prune(obj: &mut Value, unknown: &[String]) {
    for path in unknown {
        let (parent, field) = match path.rsplit_once('.') {
            Some((p, f)) => (p, f),
            None => ("", path.as_str()),
        };
        let target = if parent.is_empty() {
            Some(&mut *obj)
        } else if let Some((list, idx)) = parent.strip_suffix(']').and_then(|p| p.split_once('[')) {
            idx.parse::<usize>()
                .ok()
                .and_then(|i| obj.get_mut(list).and_then(|l| l.get_mut(i)))
        } else {
            obj.get_mut(parent)
        };
        if let Some(Value::Object(m)) = target {
            m.remove(field);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(ty: &str, data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": ty, "data": data})
    }

    fn b64(s: &str) -> String {
        B64.encode(s)
    }

    fn rt() -> &'static ResourceType {
        crate::resources::find("", "v1", "secrets", false).expect("secrets served")
    }

    #[test]
    fn pull_secret_validation() {
        assert!(
            validate(
                rt(),
                &secret(DOCKERCONFIGJSON, json!({".dockerconfigjson": b64("{}")})),
                None
            )
            .is_ok()
        );
        // A {"auths":...} payload in a .dockercfg secret passes; null unmarshals into a map too.
        assert!(
            validate(
                rt(),
                &secret(DOCKERCFG, json!({".dockercfg": b64("{\"auths\":{}}")})),
                None
            )
            .is_ok()
        );
        assert!(
            validate(
                rt(),
                &secret(DOCKERCFG, json!({".dockercfg": b64("null")})),
                None
            )
            .is_ok()
        );

        let e = validate(rt(), &secret(DOCKERCONFIGJSON, json!({})), None).err();
        assert_eq!(
            e.map(|e| e.message),
            Some("Secret \"s\" is invalid: data[.dockerconfigjson]: Required value".into())
        );

        let e = validate(
            rt(),
            &secret(DOCKERCFG, json!({".dockercfg": b64("[1]")})),
            None,
        )
        .err();
        assert_eq!(
            e.map(|e| e.message),
            Some("Secret \"s\" is invalid: data[.dockercfg]: Invalid value: \"<secret contents redacted>\": json: cannot unmarshal array into Go value of type map[string]interface {}".into())
        );
        let e = validate(
            rt(),
            &secret(DOCKERCFG, json!({".dockercfg": b64("{x")})),
            None,
        )
        .err();
        assert!(e.is_some_and(|e| {
            e.message
                .ends_with(": invalid character 'x' looking for beginning of object key string")
        }));
        let e = validate(
            rt(),
            &secret(DOCKERCFG, json!({".dockercfg": b64("x")})),
            None,
        )
        .err();
        assert!(e.is_some_and(|e| {
            e.message
                .ends_with(": invalid character 'x' looking for beginning of value")
        }));
        let e = validate(
            rt(),
            &secret(DOCKERCFG, json!({".dockercfg": b64("{\"a\":")})),
            None,
        )
        .err();
        assert!(e.is_some_and(|e| e.message.ends_with(": unexpected end of JSON input")));
    }

    #[test]
    fn update_rules() {
        let old = secret("Opaque", json!({"a": b64("1")}));
        let e = validate(
            rt(),
            &secret(DOCKERCFG, json!({".dockercfg": b64("{}")})),
            Some(&old),
        )
        .err();
        assert!(e.is_some_and(|e| {
            e.message
                .contains("type: Invalid value: \"kubernetes.io/dockercfg\": field is immutable")
        }));
        let mut frozen = old.clone();
        frozen["immutable"] = json!(true);
        let mut changed = frozen.clone();
        changed["data"] = json!({"a": b64("2")});
        let e = validate(rt(), &changed, Some(&frozen)).err();
        assert!(e.is_some_and(|e| {
            e.message
                .contains("data: Forbidden: field is immutable when `immutable` is set")
        }));
        assert!(validate(rt(), &frozen, Some(&frozen)).is_ok());
    }

    #[test]
    fn names_and_bad_base64() {
        let mut s = secret("Opaque", json!({}));
        s["metadata"]["name"] = json!("Bad_Name");
        assert!(validate(rt(), &s, None).is_err_and(|e| e.code == 422));
        let s = secret("Opaque", json!({"a": "not base64!"}));
        assert!(validate(rt(), &s, None).is_err_and(|e| e.code == 400));
    }
}
