//! Per-kind registry strategies: what the apiserver does to an object before storing it
//! (`PrepareForCreate`/`PrepareForUpdate`) and the validation that turns a bad object into a 422
//! (`ValidateSecret`, `ValidateSecretUpdate`, name rules...). No storage access here.

use crate::resources::ResourceType;
use crate::status::{ApiError, ApiResult, Cause, go_quote};
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
        ("", "services") => {
            service_defaults(obj);
            set_field(obj, "status", json!({"loadBalancer": {}}));
        }
        ("policy", "poddisruptionbudgets") => {
            set_field(obj, "status", pdb_empty_status());
            set_generation(obj, 1);
        }
        ("networking.k8s.io", "networkpolicies") => {
            network_policy_defaults(obj);
            set_generation(obj, 1);
        }
        (crate::resources::MONITORING, _) => set_generation(obj, 1),
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
        ("", "services") => {
            service_defaults(obj);
            keep_field(old, obj, "status");
        }
        ("policy", "poddisruptionbudgets") => {
            keep_field(old, obj, "status");
            bump_generation(old, obj, |o| o.get("spec").cloned());
        }
        ("networking.k8s.io", "networkpolicies") => {
            network_policy_defaults(obj);
            bump_generation(old, obj, |o| o.get("spec").cloned());
        }
        (crate::resources::MONITORING, _) => bump_generation(old, obj, custom_resource_content),
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
        ("", "services") => validate_service(obj, &mut causes),
        ("policy", "poddisruptionbudgets") => validate_pdb(obj, &mut causes),
        ("networking.k8s.io", "networkpolicies") => validate_network_policy(obj, &mut causes),
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

/// A binding's roleRef (apiGroup, kind, name), the apiGroup defaulted as `SetDefaults_RoleBinding`.
fn role_ref_triple(binding: &Value) -> (&str, &str, &str) {
    let get = |k: &str| {
        binding
            .pointer(&format!("/roleRef/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let group = match get("apiGroup") {
        "" => crate::resources::RBAC,
        g => g,
    };
    (group, get("kind"), get("name"))
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
    // ValidateRoleBindingUpdate prints the internal rbac.RoleRef with %#v.
    if let Some(old) = old
        && role_ref_triple(old) != role_ref_triple(obj)
    {
        let (group, kind, name) = role_ref_triple(obj);
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}: cannot change roleRef",
                go_quote(group),
                go_quote(kind),
                go_quote(name)
            ),
            field: "roleRef".into(),
        });
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

/// `ValidateSecret` and `ValidateSecretUpdate` (docs/pull-secrets.md).
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

/// Sets a top-level field.
fn set_field(obj: &mut Value, field: &str, value: Value) {
    if let Some(m) = obj.as_object_mut() {
        m.insert(field.into(), value);
    }
}

/// A field users may not write through the main resource (status): the stored value stays.
fn keep_field(old: &Value, obj: &mut Value, field: &str) {
    if let Some(m) = obj.as_object_mut() {
        match old.get(field) {
            Some(v) => {
                m.insert(field.into(), v.clone());
            }
            None => {
                m.remove(field);
            }
        }
    }
}

fn set_generation(obj: &mut Value, generation: i64) {
    crate::util::meta_mut(obj).insert("generation".into(), json!(generation));
}

/// `metadata.generation` counts changes of what `content` picks (the spec): +1 when it changed,
/// else the stored value, whatever the request sent (the registries' `PrepareForUpdate`).
fn bump_generation(old: &Value, obj: &mut Value, content: fn(&Value) -> Option<Value>) {
    let stored = old
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let changed = content(old) != content(obj);
    set_generation(obj, if changed { stored + 1 } else { stored });
}

/// A custom resource without a status subresource: everything but `metadata` is its content
/// (apiextensions-apiserver, pkg/registry/customresource/strategy.go, `PrepareForUpdate`).
fn custom_resource_content(obj: &Value) -> Option<Value> {
    let mut content = obj.as_object()?.clone();
    content.remove("metadata");
    Some(Value::Object(content))
}

/// A fresh `PodDisruptionBudgetStatus`: its counters have no `omitempty` in policy/v1, so an
/// object no disruption controller has looked at shows them as 0.
fn pdb_empty_status() -> Value {
    json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0})
}

/// `SetDefaults_Service` (pkg/apis/core/v1/defaults.go): session affinity None, type ClusterIP,
/// port protocol TCP, targetPort = port, the traffic policies Cluster. The ClusterIP and IP
/// families come from the registry's allocators, which kube-sim does not have.
fn service_defaults(obj: &mut Value) {
    let Some(m) = obj.as_object_mut() else {
        return;
    };
    let Some(spec) = m.entry("spec").or_insert_with(|| json!({})).as_object_mut() else {
        return;
    };
    let text = |spec: &Map<String, Value>, key: &str| {
        spec.get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if text(spec, "sessionAffinity").is_empty() {
        spec.insert("sessionAffinity".into(), json!("None"));
    }
    if text(spec, "sessionAffinity") == "None" {
        spec.remove("sessionAffinityConfig");
    }
    if text(spec, "type").is_empty() {
        spec.insert("type".into(), json!("ClusterIP"));
    }
    let ty = text(spec, "type");
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            port.entry("protocol").or_insert_with(|| json!("TCP"));
            let unset = matches!(port.get("targetPort"), None | Some(Value::Null))
                || port.get("targetPort") == Some(&json!(0))
                || port.get("targetPort") == Some(&json!(""));
            if unset && let Some(number) = port.get("port").cloned() {
                port.insert("targetPort".into(), number);
            }
        }
    }
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer")
        && text(spec, "externalTrafficPolicy").is_empty()
    {
        spec.insert("externalTrafficPolicy".into(), json!("Cluster"));
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        spec.entry("internalTrafficPolicy")
            .or_insert_with(|| json!("Cluster"));
    }
}

/// `SetDefaults_NetworkPolicy` and `SetDefaults_NetworkPolicyPort`
/// (pkg/apis/networking/v1/defaults.go): without policyTypes a policy is about Ingress, and also
/// Egress when it has egress rules; a port without protocol is TCP.
fn network_policy_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let has_egress = spec
        .get("egress")
        .and_then(Value::as_array)
        .is_some_and(|rules| !rules.is_empty());
    let no_types = spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if no_types {
        let types = if has_egress {
            json!(["Ingress", "Egress"])
        } else {
            json!(["Ingress"])
        };
        spec.insert("policyTypes".into(), types);
    }
    for direction in ["ingress", "egress"] {
        let rules = spec.get_mut(direction).and_then(Value::as_array_mut);
        for rule in rules.into_iter().flatten() {
            let ports = rule.get_mut("ports").and_then(Value::as_array_mut);
            for port in ports.into_iter().flatten().filter_map(Value::as_object_mut) {
                port.entry("protocol").or_insert_with(|| json!("TCP"));
            }
        }
    }
}

/// The part of `ValidateService` the manifests can trip: a known type, and ports unless the
/// Service is headless or an ExternalName (pkg/apis/core/validation/validation.go).
fn validate_service(obj: &Value, causes: &mut Vec<Cause>) {
    const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    let ty = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !TYPES.contains(&ty) {
        causes.push(Cause::not_supported("spec.type", ty, TYPES));
    }
    let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    let no_ports = obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if no_ports && !headless && ty != "ExternalName" {
        causes.push(Cause::required("spec.ports"));
    }
}

/// `ValidatePodDisruptionBudgetSpec` (pkg/apis/policy/validation/validation.go): not both
/// minAvailable and maxUnavailable, no negative count, a known unhealthyPodEvictionPolicy.
fn validate_pdb(obj: &Value, causes: &mut Vec<Cause>) {
    const POLICIES: &[&str] = &["AlwaysAllow", "IfHealthyBudget"];
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let set = |key: &str| !matches!(spec.get(key), None | Some(Value::Null));
    if set("minAvailable") && set("maxUnavailable") {
        causes.push(Cause::invalid(
            "spec",
            &spec.to_string(),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for key in ["minAvailable", "maxUnavailable"] {
        if let Some(n) = spec.get(key).and_then(Value::as_i64)
            && n < 0
        {
            causes.push(Cause::invalid(
                format!("spec.{key}"),
                &n.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    if let Some(policy) = spec
        .get("unhealthyPodEvictionPolicy")
        .and_then(Value::as_str)
        && !POLICIES.contains(&policy)
    {
        causes.push(Cause::not_supported(
            "spec.unhealthyPodEvictionPolicy",
            policy,
            POLICIES,
        ));
    }
}

/// `ValidateNetworkPolicySpec` (pkg/apis/networking/validation/validation.go): policyTypes are
/// Ingress and/or Egress.
fn validate_network_policy(obj: &Value, causes: &mut Vec<Cause>) {
    const TYPES: &[&str] = &["Ingress", "Egress"];
    let types = obj.pointer("/spec/policyTypes").and_then(Value::as_array);
    for (i, ty) in types.into_iter().flatten().enumerate() {
        let ty = ty.as_str().unwrap_or("");
        if !TYPES.contains(&ty) {
            causes.push(Cause::not_supported(
                format!("spec.policyTypes[{i}]"),
                ty,
                TYPES,
            ));
        }
    }
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
        ("", "services") | ("policy", "poddisruptionbudgets") => &["spec", "status"],
        ("networking.k8s.io", "networkpolicies") => &["spec"],
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

    fn served(group: &str, plural: &str) -> &'static ResourceType {
        crate::resources::find(group, "v1", plural, false).expect("served")
    }

    #[test]
    fn service_defaults_follow_set_defaults_service() {
        let rt = served("", "services");
        let mut svc = json!({"metadata": {"name": "m"}, "spec": {
            "selector": {"a": "b"},
            "ports": [{"name": "web", "port": 8080}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}],
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}}}});
        prepare_create(rt, &mut svc);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["sessionAffinity"], "None");
        assert!(svc["spec"].get("sessionAffinityConfig").is_none());
        assert_eq!(svc["spec"]["internalTrafficPolicy"], "Cluster");
        assert!(svc["spec"].get("externalTrafficPolicy").is_none());
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(svc["spec"]["ports"][1]["targetPort"], "dns");
        assert_eq!(svc["status"], json!({"loadBalancer": {}}));
        assert!(validate(rt, &svc, None).is_ok());
        let mut no_ports = json!({"metadata": {"name": "n"}, "spec": {}});
        prepare_create(rt, &mut no_ports);
        assert!(validate(rt, &no_ports, None).is_err_and(|e| e.code == 422));
        let mut headless = json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}});
        prepare_create(rt, &mut headless);
        assert!(validate(rt, &headless, None).is_ok());
    }

    #[test]
    fn network_policy_types_and_protocols_default() {
        let rt = served("networking.k8s.io", "networkpolicies");
        let mut ingress_only = json!({"metadata": {"name": "i"}, "spec": {"podSelector": {},
            "ingress": [{"ports": [{"port": 80}]}]}});
        prepare_create(rt, &mut ingress_only);
        assert_eq!(ingress_only["spec"]["policyTypes"], json!(["Ingress"]));
        assert_eq!(
            ingress_only["spec"]["ingress"][0]["ports"][0]["protocol"],
            "TCP"
        );
        assert_eq!(ingress_only["metadata"]["generation"], 1);
        let mut with_egress = json!({"metadata": {"name": "e"}, "spec": {"podSelector": {},
            "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}});
        prepare_create(rt, &mut with_egress);
        assert_eq!(
            with_egress["spec"]["policyTypes"],
            json!(["Ingress", "Egress"])
        );
        assert_eq!(
            with_egress["spec"]["egress"][0]["ports"][0]["protocol"],
            "UDP"
        );
        let mut bad = json!({"metadata": {"name": "b"}, "spec": {"podSelector": {}, "policyTypes": ["Sideways"]}});
        prepare_create(rt, &mut bad);
        assert!(validate(rt, &bad, None).is_err_and(|e| e.code == 422));
    }

    #[test]
    fn pdb_budget_fields_are_exclusive_and_status_is_the_servers() {
        let rt = served("policy", "poddisruptionbudgets");
        let pdb = |spec: Value| json!({"metadata": {"name": "p"}, "spec": spec, "status": {"disruptionsAllowed": 5}});
        let mut ok = pdb(json!({"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow"}));
        prepare_create(rt, &mut ok);
        assert_eq!(ok["status"], pdb_empty_status());
        assert_eq!(ok["metadata"]["generation"], 1);
        assert!(validate(rt, &ok, None).is_ok());
        for spec in [
            json!({"minAvailable": 1, "maxUnavailable": 1}),
            json!({"maxUnavailable": -1}),
            json!({"minAvailable": 1, "unhealthyPodEvictionPolicy": "Never"}),
        ] {
            let mut bad = pdb(spec.clone());
            prepare_create(rt, &mut bad);
            assert!(
                validate(rt, &bad, None).is_err_and(|e| e.code == 422),
                "{spec}"
            );
        }
        // An update keeps the stored status and counts a spec change in the generation.
        let mut same =
            pdb(json!({"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow"}));
        prepare_update(rt, &ok, &mut same);
        assert_eq!(same["status"], pdb_empty_status());
        assert_eq!(same["metadata"]["generation"], 1);
        let mut changed = pdb(json!({"minAvailable": 1}));
        prepare_update(rt, &ok, &mut changed);
        assert_eq!(changed["metadata"]["generation"], 2);
    }

    #[test]
    fn custom_resources_count_every_non_metadata_change() {
        let rt = served(crate::resources::MONITORING, "servicemonitors");
        let mut created =
            json!({"metadata": {"name": "s", "generation": 7}, "spec": {"endpoints": []}});
        prepare_create(rt, &mut created);
        assert_eq!(created["metadata"]["generation"], 1);
        let mut relabelled =
            json!({"metadata": {"name": "s", "labels": {"a": "b"}}, "spec": {"endpoints": []}});
        prepare_update(rt, &created, &mut relabelled);
        assert_eq!(relabelled["metadata"]["generation"], 1);
        let mut changed =
            json!({"metadata": {"name": "s"}, "spec": {"endpoints": [{"port": "m"}]}});
        prepare_update(rt, &created, &mut changed);
        assert_eq!(changed["metadata"]["generation"], 2);
    }
}
