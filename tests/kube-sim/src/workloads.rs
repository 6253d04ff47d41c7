//! Registry strategies of the workload kinds: Pods (core/v1), ReplicaSets and Deployments
//! (apps/v1). Defaulting as `pkg/apis/core/v1/defaults.go` and `pkg/apis/apps/v1/defaults.go`
//! do it when the apiserver decodes an object, `PrepareForCreate`/`PrepareForUpdate` of
//! `pkg/registry/core/pod/strategy.go` and `pkg/registry/apps/{deployment,replicaset}/strategy.go`
//! (status is reset, `generation` counts spec changes), and the checks of
//! `pkg/apis/core/validation` and `pkg/apis/apps/validation` that clients meet in practice.
//! Pure functions of the objects: no storage, no admission (see `admission`), no controllers.

use crate::image_ref;
use crate::selector::LabelSelector;
use crate::status::{Cause, go_quote};
use serde_json::{Map, Value, json};

/// Which workload kind an object is, by its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Pod,
    ReplicaSet,
    Deployment,
}

impl Workload {
    /// The workload kind served as `group`/`plural`, if any.
    pub fn of(group: &str, plural: &str) -> Option<Self> {
        match (group, plural) {
            ("", "pods") => Some(Self::Pod),
            (crate::resources::APPS, "replicasets") => Some(Self::ReplicaSet),
            (crate::resources::APPS, "deployments") => Some(Self::Deployment),
            _ => None,
        }
    }

    /// JSON pointer of the pod spec inside the object.
    fn pod_spec_pointer(self) -> &'static str {
        match self {
            Self::Pod => "/spec",
            Self::ReplicaSet | Self::Deployment => "/spec/template/spec",
        }
    }

    /// Field path of the pod spec, as validation errors name it.
    fn pod_spec_path(self) -> &'static str {
        match self {
            Self::Pod => "spec",
            Self::ReplicaSet | Self::Deployment => "spec.template.spec",
        }
    }
}

/// The message of `ValidatePodUpdate` when anything but the mutable fields changes (the
/// apiserver appends a diff of the two specs, which kube-sim leaves out).
pub const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn obj_mut(v: &mut Value) -> Option<&mut Map<String, Value>> {
    v.as_object_mut()
}

fn default_str(m: &mut Map<String, Value>, key: &str, value: &str) {
    if m.get(key).and_then(Value::as_str).unwrap_or("").is_empty() {
        m.insert(key.into(), json!(value));
    }
}

fn default_val(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.into(), value);
    }
}

/// `SetDefaults_Container`: pull policy from the tag (`latest` or none: Always), termination
/// message defaults, port protocol, probe defaults.
fn default_container(c: &mut Value) {
    let Some(m) = obj_mut(c) else { return };
    let image = m
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if m.get("imagePullPolicy")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        // ParseImageName defaults a missing tag (without digest) to "latest".
        let latest = image_ref::parse(&image).is_ok_and(|r| r.effective_tag() == Some("latest"));
        let policy = if latest { "Always" } else { "IfNotPresent" };
        m.insert("imagePullPolicy".into(), json!(policy));
    }
    default_str(m, "terminationMessagePath", "/dev/termination-log");
    default_str(m, "terminationMessagePolicy", "File");
    default_val(m, "resources", json!({}));
    if let Some(Value::Array(ports)) = m.get_mut("ports") {
        for p in ports.iter_mut().filter_map(obj_mut) {
            default_str(p, "protocol", "TCP");
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = m.get_mut(probe).and_then(obj_mut) {
            default_val(p, "timeoutSeconds", json!(1));
            default_val(p, "periodSeconds", json!(10));
            default_val(p, "successThreshold", json!(1));
            default_val(p, "failureThreshold", json!(3));
            if let Some(h) = p.get_mut("httpGet").and_then(obj_mut) {
                default_str(h, "scheme", "HTTP");
            }
        }
    }
    if let Some(Value::Array(env)) = m.get_mut("env") {
        for e in env.iter_mut() {
            if let Some(f) = e.pointer_mut("/valueFrom/fieldRef").and_then(obj_mut) {
                default_str(f, "apiVersion", "v1");
            }
        }
    }
}

/// `SetDefaults_PodSpec` plus the defaults of the DefaultTolerationSeconds and Priority
/// admission plugins, which every pod of a default cluster carries.
fn default_pod_spec(spec: &mut Value, with_admission_defaults: bool) {
    let Some(m) = obj_mut(spec) else { return };
    default_str(m, "dnsPolicy", "ClusterFirst");
    default_str(m, "restartPolicy", "Always");
    default_str(m, "schedulerName", "default-scheduler");
    default_val(m, "terminationGracePeriodSeconds", json!(30));
    default_val(m, "securityContext", json!({}));
    default_val(m, "enableServiceLinks", json!(true));
    // The v1 conversion keeps the deprecated `serviceAccount` equal to `serviceAccountName`.
    let sa = m
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| m.get("serviceAccount").and_then(Value::as_str))
        .unwrap_or("")
        .to_string();
    if !sa.is_empty() {
        m.insert("serviceAccountName".into(), json!(sa));
        m.insert("serviceAccount".into(), json!(sa));
    }
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = m.get_mut(list) {
            cs.iter_mut().for_each(default_container);
        }
    }
    if let Some(Value::Array(vols)) = m.get_mut("volumes") {
        for v in vols.iter_mut() {
            for source in ["configMap", "secret"] {
                if let Some(s) = v.get_mut(source).and_then(obj_mut) {
                    default_val(s, "defaultMode", json!(420));
                }
            }
        }
    }
    if with_admission_defaults {
        default_val(m, "priority", json!(0));
        default_str(m, "preemptionPolicy", "PreemptLowerPriority");
        let tolerations = m.entry("tolerations").or_insert_with(|| json!([]));
        if let Value::Array(list) = tolerations {
            for key in [
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
            ] {
                let present = list
                    .iter()
                    .any(|t| t.get("key").and_then(Value::as_str) == Some(key));
                if !present {
                    list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
                }
            }
        }
    }
}

/// `SetDefaults_Deployment` / `SetDefaults_ReplicaSet`.
fn default_apps(kind: Workload, obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(obj_mut) else {
        return;
    };
    default_val(spec, "replicas", json!(1));
    if kind == Workload::Deployment {
        default_val(spec, "revisionHistoryLimit", json!(10));
        default_val(spec, "progressDeadlineSeconds", json!(600));
        let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
        if let Some(s) = obj_mut(strategy) {
            default_str(s, "type", "RollingUpdate");
            if s.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let ru = s.entry("rollingUpdate").or_insert_with(|| json!({}));
                if let Some(r) = obj_mut(ru) {
                    default_val(r, "maxUnavailable", json!("25%"));
                    default_val(r, "maxSurge", json!("25%"));
                }
            }
        }
    }
    if let Some(t) = spec.get_mut("template")
        && let Some(ps) = t.get_mut("spec")
    {
        default_pod_spec(ps, false);
    }
}

/// `QOSClass` of a pod (`pkg/apis/core/helper/qos`): BestEffort without any request or limit,
/// Guaranteed when every container limits cpu and memory with requests equal to limits.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|l| spec.get(*l).and_then(Value::as_array))
        .flatten()
        .collect();
    let res = |c: &Value, kind: &str, r: &str| {
        c.pointer(&format!("/resources/{kind}/{r}"))
            .map(Value::to_string)
    };
    let any = containers.iter().any(|c| {
        ["requests", "limits"].iter().any(|k| {
            c.pointer(&format!("/resources/{k}"))
                .and_then(Value::as_object)
                .is_some_and(|m| m.contains_key("cpu") || m.contains_key("memory"))
        })
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = res(c, "limits", r);
            limit.is_some() && res(c, "requests", r).is_none_or(|q| Some(q) == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Defaulting plus `PrepareForCreate`.
pub fn prepare_create(kind: Workload, obj: &mut Value) {
    match kind {
        Workload::Pod => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec, true);
            }
            let qos = qos_class(obj.get("spec").unwrap_or(&Value::Null));
            if let Some(m) = obj_mut(obj) {
                m.insert(
                    "status".into(),
                    json!({"phase": "Pending", "qosClass": qos}),
                );
            }
        }
        Workload::ReplicaSet | Workload::Deployment => {
            default_apps(kind, obj);
            if let Some(m) = obj_mut(obj) {
                m.insert("status".into(), json!({}));
            }
            crate::util::meta_mut(obj).insert("generation".into(), json!(1));
        }
    }
}

/// Defaulting plus `PrepareForUpdate` of the main resource: status is kept from the stored
/// object; Deployments and ReplicaSets count spec changes in `generation`.
pub fn prepare_update(kind: Workload, old: &Value, obj: &mut Value) {
    match kind {
        Workload::Pod => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec, true);
            }
        }
        Workload::ReplicaSet | Workload::Deployment => {
            default_apps(kind, obj);
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let next = if old.get("spec") == obj.get("spec") {
                generation
            } else {
                generation + 1
            };
            crate::util::meta_mut(obj).insert("generation".into(), json!(next));
        }
    }
    if let (Some(m), Some(status)) = (obj_mut(obj), old.get("status")) {
        m.insert("status".into(), status.clone());
    }
}

/// Validation on create (`old` None) and update, as causes of a 422.
pub fn validate(kind: Workload, obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let spec_ptr = kind.pod_spec_pointer();
    let spec_path = kind.pod_spec_path();
    match obj.pointer(spec_ptr) {
        Some(spec) => validate_pod_spec(spec, spec_path, causes),
        None => causes.push(Cause::required(format!("{spec_path}.containers"))),
    }
    match kind {
        Workload::Pod => {
            if let Some(old) = old
                && !pod_update_allowed(old, obj)
            {
                causes.push(Cause::forbidden("spec", POD_UPDATE_FORBIDDEN));
            }
        }
        Workload::ReplicaSet | Workload::Deployment => validate_apps(obj, old, causes),
    }
}

fn validate_pod_spec(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(Vec::is_empty) {
        causes.push(Cause::required(format!("{path}.containers")));
    }
    for list in ["containers", "initContainers"] {
        for (i, c) in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("{path}.{list}[{i}]");
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                causes.push(Cause::required(format!("{at}.name")));
            } else if !is_dns_label(name) {
                causes.push(Cause::invalid(format!("{at}.name"), name, LABEL_MSG));
            }
            if c.get("image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                causes.push(Cause::required(format!("{at}.image")));
            }
            let policy = c
                .get("imagePullPolicy")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !matches!(policy, "Always" | "IfNotPresent" | "Never") {
                causes.push(Cause::not_supported(
                    format!("{at}.imagePullPolicy"),
                    policy,
                    &["Always", "IfNotPresent", "Never"],
                ));
            }
        }
    }
    let restart = spec
        .get("restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !matches!(restart, "Always" | "OnFailure" | "Never") {
        causes.push(Cause::not_supported(
            format!("{path}.restartPolicy"),
            restart,
            &["Always", "OnFailure", "Never"],
        ));
    }
    for (i, r) in spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !r.is_object() {
            causes.push(Cause::invalid(
                format!("{path}.imagePullSecrets[{i}]"),
                &r.to_string(),
                "must be an object",
            ));
        }
    }
}

/// `ValidatePodUpdate`: only container images, `activeDeadlineSeconds`, added tolerations and
/// a negative grace period set to 1 may change; `spec.nodeName` only from unset (binding).
fn pod_update_allowed(old: &Value, new: &Value) -> bool {
    let mut a = old.get("spec").cloned().unwrap_or(Value::Null);
    let mut b = new.get("spec").cloned().unwrap_or(Value::Null);
    for s in [&mut a, &mut b] {
        if let Some(m) = obj_mut(s) {
            m.remove("activeDeadlineSeconds");
            m.remove("tolerations");
            for list in ["containers", "initContainers"] {
                if let Some(Value::Array(cs)) = m.get_mut(list) {
                    for c in cs.iter_mut().filter_map(obj_mut) {
                        c.remove("image");
                    }
                }
            }
        }
    }
    let old_tolerations = old.pointer("/spec/tolerations").and_then(Value::as_array);
    let new_tolerations = new.pointer("/spec/tolerations").and_then(Value::as_array);
    let tolerations_kept = old_tolerations
        .into_iter()
        .flatten()
        .all(|t| new_tolerations.is_some_and(|n| n.contains(t)));
    a == b && tolerations_kept
}

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Go's `%#v` of a `map[string]string`, as validation errors print label maps.
fn go_string_map(m: Option<&Map<String, Value>>) -> String {
    let Some(m) = m else {
        return "map[string]string(nil)".into();
    };
    let items: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v.as_str().unwrap_or(""))))
        .collect();
    format!("map[string]string{{{}}}", items.join(", "))
}

/// `ValidateDeploymentSpec` / `ValidateReplicaSetSpec`: a non-empty selector that matches the
/// template's labels, immutable on update (apps/v1), and a non-negative replica count.
fn validate_apps(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let selector = obj.pointer("/spec/selector");
    let empty = selector.is_none_or(|s| {
        s.get("matchLabels")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
            && s.get("matchExpressions")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
    });
    if empty {
        causes.push(Cause::required("spec.selector"));
    } else {
        let labels = obj
            .pointer("/spec/template/metadata/labels")
            .and_then(Value::as_object);
        let matches = selector
            .and_then(label_selector)
            .is_some_and(|s| s.matches(&labels.cloned().unwrap_or_default()));
        if !matches {
            causes.push(Cause {
                reason: "FieldValueInvalid".into(),
                message: format!(
                    "Invalid value: {}: `selector` does not match template `labels`",
                    go_string_map(labels)
                ),
                field: "spec.template.metadata.labels".into(),
            });
        }
    }
    if let Some(old) = old
        && old.pointer("/spec/selector") != selector
    {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: v1.LabelSelector{{MatchLabels:{}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}}: field is immutable",
                go_string_map(selector.and_then(|s| s.get("matchLabels")).and_then(Value::as_object))
            ),
            field: "spec.selector".into(),
        });
    }
    if obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .is_some_and(|r| r < 0)
    {
        causes.push(Cause::invalid(
            "spec.replicas",
            &obj.pointer("/spec/replicas")
                .map(Value::to_string)
                .unwrap_or_default(),
            "must be greater than or equal to 0",
        ));
    }
}

/// A `metav1.LabelSelector` object as a parsed selector (`metav1.LabelSelectorAsSelector`).
pub fn label_selector(sel: &Value) -> Option<LabelSelector> {
    let mut parts = Vec::new();
    for (k, v) in sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        parts.push(format!("{k}={}", v.as_str()?));
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str)?;
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e.get("operator").and_then(Value::as_str)? {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        });
    }
    LabelSelector::parse(&parts.join(",")).ok()
}

/// The selector of a Deployment or ReplicaSet as `kubectl` prints it (`app=x,tier=y`).
pub fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return String::new();
    };
    let mut parts: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match s("operator") {
            "In" => format!("{} in ({})", s("key"), values.join(",")),
            "NotIn" => format!("{} notin ({})", s("key"), values.join(",")),
            "DoesNotExist" => format!("!{}", s("key")),
            _ => s("key").to_string(),
        });
    }
    parts.join(",")
}

/// `controller.ComputeHash`: an FNV-32a hash of the pod template (and the collision count),
/// encoded with `rand.SafeEncodeString`. Upstream hashes the Go struct dump; kube-sim hashes
/// the canonical JSON, so values differ from a real cluster's but are as stable.
pub fn pod_template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(template.to_string().as_bytes());
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// Top-level fields of the workload kinds, for `fieldValidation`.
pub fn known_fields() -> &'static [&'static str] {
    &["spec", "status"]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn pull_policy_defaults_from_the_tag() {
        let mut p = pod(json!({"containers": [
            {"name": "a", "image": "busybox"},
            {"name": "b", "image": "busybox:latest"},
            {"name": "c", "image": "127.0.0.1:5000/app:v1"},
            {"name": "d", "image": format!("quay.io/x@sha256:{}", "0".repeat(64))},
        ]}));
        prepare_create(Workload::Pod, &mut p);
        let policies: Vec<&str> = p["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["imagePullPolicy"].as_str())
            .collect();
        assert_eq!(
            policies,
            ["Always", "Always", "IfNotPresent", "IfNotPresent"]
        );
        assert_eq!(
            p["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );
        assert_eq!(p["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn qos_classes() {
        let burstable = json!({"containers": [{"resources": {"requests": {"cpu": "50m"}, "limits": {"memory": "1Gi"}}}]});
        assert_eq!(qos_class(&burstable), "Burstable");
        let guaranteed =
            json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&guaranteed), "Guaranteed");
    }

    #[test]
    fn pod_spec_is_immutable_but_images() {
        let mut old = pod(json!({"containers": [{"name": "a", "image": "x:1"}]}));
        prepare_create(Workload::Pod, &mut old);
        let mut image = old.clone();
        image["spec"]["containers"][0]["image"] = json!("x:2");
        let mut causes = Vec::new();
        validate(Workload::Pod, &image, Some(&old), &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        let mut secrets = old.clone();
        secrets["spec"]["imagePullSecrets"] = json!([{"name": "reg"}]);
        validate(Workload::Pod, &secrets, Some(&old), &mut causes);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec");
    }

    #[test]
    fn selector_must_match_template() {
        let d = json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicy": "Always"}], "restartPolicy": "Always"}}}});
        let mut causes = Vec::new();
        validate(Workload::Deployment, &d, None, &mut causes);
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].message,
            "Invalid value: map[string]string{\"app\":\"b\"}: `selector` does not match template `labels`"
        );
    }

    #[test]
    fn template_hash_is_stable_and_safe() {
        let t = json!({"metadata": {"labels": {"app": "a"}}});
        let h = pod_template_hash(&t, None);
        assert_eq!(h, pod_template_hash(&t, None));
        assert_ne!(h, pod_template_hash(&t, Some(1)));
        assert!(
            h.bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
        );
    }
}
