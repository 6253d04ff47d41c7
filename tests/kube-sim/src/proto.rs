//! Decoding of the Kubernetes protobuf envelope for request bodies. kubectl's typed clients
//! (`create secret`, `create sa`, `create ns`, `auth can-i`...) send
//! `application/vnd.kubernetes.protobuf` and have no JSON fallback, so the kinds they create are
//! decoded here into the JSON the rest of the server works on. Replies stay JSON (kubectl also
//! accepts it). Field numbers are those of k8s.io/api `generated.proto`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};

/// How a field decodes.
#[derive(Clone, Copy)]
enum T {
    Str,
    B64,
    Bool,
    Int,
    /// A non-pointer scalar: gogo-protobuf writes its zero value, JSON omits it (`omitempty`).
    IntOmitZero,
    BoolOmitZero,
    Msg(&'static [F]),
    MapStr,
    MapB64,
    RepStr,
    RepMsg(&'static [F]),
    Time,
}

#[derive(Clone, Copy)]
struct F(u64, &'static str, T);

const OWNER_REF: &[F] = &[
    F(1, "kind", T::Str),
    F(3, "name", T::Str),
    F(4, "uid", T::Str),
    F(5, "apiVersion", T::Str),
    F(6, "controller", T::Bool),
    F(7, "blockOwnerDeletion", T::Bool),
];
const OBJECT_META: &[F] = &[
    F(1, "name", T::Str),
    F(2, "generateName", T::Str),
    F(3, "namespace", T::Str),
    F(5, "uid", T::Str),
    F(6, "resourceVersion", T::Str),
    F(11, "labels", T::MapStr),
    F(12, "annotations", T::MapStr),
    F(13, "ownerReferences", T::RepMsg(OWNER_REF)),
    F(14, "finalizers", T::RepStr),
];
const OBJECT_REF: &[F] = &[
    F(1, "kind", T::Str),
    F(2, "namespace", T::Str),
    F(3, "name", T::Str),
    F(4, "uid", T::Str),
    F(5, "apiVersion", T::Str),
    F(6, "resourceVersion", T::Str),
    F(7, "fieldPath", T::Str),
];
const LOCAL_REF: &[F] = &[F(1, "name", T::Str)];
const SECRET: &[F] = &[
    F(1, "metadata", T::Msg(OBJECT_META)),
    F(2, "data", T::MapB64),
    F(3, "type", T::Str),
    F(4, "stringData", T::MapStr),
    F(5, "immutable", T::Bool),
];
const CONFIG_MAP: &[F] = &[
    F(1, "metadata", T::Msg(OBJECT_META)),
    F(2, "data", T::MapStr),
    F(3, "binaryData", T::MapB64),
    F(4, "immutable", T::Bool),
];
const SERVICE_ACCOUNT: &[F] = &[
    F(1, "metadata", T::Msg(OBJECT_META)),
    F(2, "secrets", T::RepMsg(OBJECT_REF)),
    F(3, "imagePullSecrets", T::RepMsg(LOCAL_REF)),
    F(4, "automountServiceAccountToken", T::Bool),
];
const NAMESPACE_SPEC: &[F] = &[F(1, "finalizers", T::RepStr)];
const NAMESPACE: &[F] = &[
    F(1, "metadata", T::Msg(OBJECT_META)),
    F(2, "spec", T::Msg(NAMESPACE_SPEC)),
];
const SUBJECT: &[F] = &[
    F(1, "kind", T::Str),
    F(2, "apiGroup", T::Str),
    F(3, "name", T::Str),
    F(4, "namespace", T::Str),
];
const ROLE_REF: &[F] = &[
    F(1, "apiGroup", T::Str),
    F(2, "kind", T::Str),
    F(3, "name", T::Str),
];
const ROLE_BINDING: &[F] = &[
    F(1, "metadata", T::Msg(OBJECT_META)),
    F(2, "subjects", T::RepMsg(SUBJECT)),
    F(3, "roleRef", T::Msg(ROLE_REF)),
];
const POLICY_RULE: &[F] = &[
    F(1, "verbs", T::RepStr),
    F(2, "apiGroups", T::RepStr),
    F(3, "resources", T::RepStr),
    F(4, "resourceNames", T::RepStr),
    F(5, "nonResourceURLs", T::RepStr),
];
const ROLE: &[F] = &[
    F(1, "metadata", T::Msg(OBJECT_META)),
    F(2, "rules", T::RepMsg(POLICY_RULE)),
];
const RESOURCE_ATTRS: &[F] = &[
    F(1, "namespace", T::Str),
    F(2, "verb", T::Str),
    F(3, "group", T::Str),
    F(4, "version", T::Str),
    F(5, "resource", T::Str),
    F(6, "subresource", T::Str),
    F(7, "name", T::Str),
];
const SSAR_SPEC: &[F] = &[F(1, "resourceAttributes", T::Msg(RESOURCE_ATTRS))];
const SSAR: &[F] = &[
    F(1, "metadata", T::Msg(OBJECT_META)),
    F(2, "spec", T::Msg(SSAR_SPEC)),
];
const TOKEN_REVIEW_SPEC: &[F] = &[F(1, "token", T::Str), F(2, "audiences", T::RepStr)];
const TOKEN_REVIEW: &[F] = &[
    F(1, "metadata", T::Msg(OBJECT_META)),
    F(2, "spec", T::Msg(TOKEN_REVIEW_SPEC)),
];
const BOUND_OBJECT_REF: &[F] = &[
    F(1, "kind", T::Str),
    F(2, "apiVersion", T::Str),
    F(3, "name", T::Str),
    F(4, "uid", T::Str),
];
// authentication/v1 TokenRequest as `kubectl create token` sends it.
const TOKEN_REQUEST_SPEC: &[F] = &[
    F(1, "audiences", T::RepStr),
    F(3, "boundObjectRef", T::Msg(BOUND_OBJECT_REF)),
    F(4, "expirationSeconds", T::Int),
];
const TOKEN_REQUEST: &[F] = &[
    F(1, "metadata", T::Msg(OBJECT_META)),
    F(2, "spec", T::Msg(TOKEN_REQUEST_SPEC)),
];
const LEASE_SPEC: &[F] = &[
    F(1, "holderIdentity", T::Str),
    F(2, "leaseDurationSeconds", T::Int),
    F(3, "acquireTime", T::Time),
    F(4, "renewTime", T::Time),
    F(5, "leaseTransitions", T::Int),
];
const LEASE: &[F] = &[
    F(1, "metadata", T::Msg(OBJECT_META)),
    F(2, "spec", T::Msg(LEASE_SPEC)),
];
// apps/v1 Deployment as `kubectl create deployment` sends it (k8s.io/api apps/v1 and core/v1
// generated.proto). Resource quantities are not decoded (kubectl sends `resources: {}`).
const LABEL_SELECTOR_REQUIREMENT: &[F] = &[
    F(1, "key", T::Str),
    F(2, "operator", T::Str),
    F(3, "values", T::RepStr),
];
const LABEL_SELECTOR: &[F] = &[
    F(1, "matchLabels", T::MapStr),
    F(2, "matchExpressions", T::RepMsg(LABEL_SELECTOR_REQUIREMENT)),
];
const CONTAINER_PORT: &[F] = &[
    F(1, "name", T::Str),
    F(2, "hostPort", T::IntOmitZero),
    F(3, "containerPort", T::IntOmitZero),
    F(4, "protocol", T::Str),
    F(5, "hostIP", T::Str),
];
const ENV_VAR: &[F] = &[F(1, "name", T::Str), F(2, "value", T::Str)];
const CONTAINER: &[F] = &[
    F(1, "name", T::Str),
    F(2, "image", T::Str),
    F(3, "command", T::RepStr),
    F(4, "args", T::RepStr),
    F(5, "workingDir", T::Str),
    F(6, "ports", T::RepMsg(CONTAINER_PORT)),
    F(7, "env", T::RepMsg(ENV_VAR)),
    F(8, "resources", T::Msg(&[])),
    F(13, "terminationMessagePath", T::Str),
    F(14, "imagePullPolicy", T::Str),
    F(20, "terminationMessagePolicy", T::Str),
];
const POD_SPEC: &[F] = &[
    F(2, "containers", T::RepMsg(CONTAINER)),
    F(3, "restartPolicy", T::Str),
    F(4, "terminationGracePeriodSeconds", T::Int),
    F(6, "dnsPolicy", T::Str),
    F(7, "nodeSelector", T::MapStr),
    F(8, "serviceAccountName", T::Str),
    F(15, "imagePullSecrets", T::RepMsg(LOCAL_REF)),
    F(19, "schedulerName", T::Str),
    F(20, "initContainers", T::RepMsg(CONTAINER)),
];
const POD_TEMPLATE_SPEC: &[F] = &[
    F(1, "metadata", T::Msg(OBJECT_META)),
    F(2, "spec", T::Msg(POD_SPEC)),
];
const DEPLOYMENT_STRATEGY: &[F] = &[F(1, "type", T::Str)];
const DEPLOYMENT_SPEC: &[F] = &[
    F(1, "replicas", T::Int),
    F(2, "selector", T::Msg(LABEL_SELECTOR)),
    F(3, "template", T::Msg(POD_TEMPLATE_SPEC)),
    F(4, "strategy", T::Msg(DEPLOYMENT_STRATEGY)),
    F(5, "minReadySeconds", T::IntOmitZero),
    F(6, "revisionHistoryLimit", T::Int),
    F(7, "paused", T::BoolOmitZero),
    F(9, "progressDeadlineSeconds", T::Int),
];
const DEPLOYMENT: &[F] = &[
    F(1, "metadata", T::Msg(OBJECT_META)),
    F(2, "spec", T::Msg(DEPLOYMENT_SPEC)),
];
const TYPE_META: &[F] = &[F(1, "apiVersion", T::Str), F(2, "kind", T::Str)];
const UNKNOWN: &[F] = &[F(1, "typeMeta", T::Msg(TYPE_META)), F(2, "raw", T::B64)];
/// `MicroTime`/`Time`: seconds (1) and nanos (2).
const TIMESTAMP: &[F] = &[F(1, "seconds", T::Int), F(2, "nanos", T::Int)];

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.i).ok_or("truncated varint")?;
            self.i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn bytes(&mut self) -> Result<&[u8], String> {
        let n = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
        let end = self
            .i
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or("truncated field")?;
        let out = &self.b[self.i..end];
        self.i = end;
        Ok(out)
    }
}

fn map_entry(b: &[u8], bytes_value: bool) -> Result<(String, Value), String> {
    let mut r = Reader { b, i: 0 };
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    while r.i < b.len() {
        let tag = r.varint()?;
        let data = r.bytes()?;
        match tag >> 3 {
            1 => k = String::from_utf8_lossy(data).into_owned(),
            2 if bytes_value => v = Value::String(B64.encode(data)),
            2 => v = Value::String(String::from_utf8_lossy(data).into_owned()),
            _ => {}
        }
    }
    Ok((k, v))
}

fn decode(b: &[u8], schema: &[F]) -> Result<Map<String, Value>, String> {
    let mut r = Reader { b, i: 0 };
    let mut out = Map::new();
    while r.i < b.len() {
        let tag = r.varint()?;
        let (num, wire) = (tag >> 3, tag & 7);
        let field = schema.iter().find(|f| f.0 == num);
        match wire {
            0 => {
                let v = r.varint()?;
                match field {
                    Some(F(_, name, T::Bool)) => {
                        out.insert((*name).into(), Value::Bool(v != 0));
                    }
                    Some(F(_, name, T::Int)) => {
                        out.insert((*name).into(), Value::from(v as i64));
                    }
                    Some(F(_, name, T::IntOmitZero)) if v != 0 => {
                        out.insert((*name).into(), Value::from(v as i64));
                    }
                    Some(F(_, name, T::BoolOmitZero)) if v != 0 => {
                        out.insert((*name).into(), Value::Bool(true));
                    }
                    _ => {}
                }
            }
            1 => r.i += 8,
            5 => r.i += 4,
            2 => {
                let data = r.bytes()?;
                let Some(F(_, name, ty)) = field else {
                    continue;
                };
                let name = (*name).to_string();
                match ty {
                    // gogo-protobuf writes empty strings; JSON omits them.
                    T::Str if data.is_empty() => {}
                    T::Str => {
                        out.insert(
                            name,
                            Value::String(String::from_utf8_lossy(data).into_owned()),
                        );
                    }
                    T::B64 => {
                        out.insert(name, Value::String(B64.encode(data)));
                    }
                    T::Msg(s) => {
                        out.insert(name, Value::Object(decode(data, s)?));
                    }
                    T::Time => {
                        let t = decode(data, TIMESTAMP)?;
                        let secs = t.get("seconds").and_then(Value::as_u64).unwrap_or(0);
                        out.insert(
                            name,
                            Value::String(crate::util::rfc3339(secs).replace('Z', ".000000Z")),
                        );
                    }
                    T::MapStr | T::MapB64 => {
                        let (k, v) = map_entry(data, matches!(ty, T::MapB64))?;
                        let m = out.entry(name).or_insert_with(|| Value::Object(Map::new()));
                        if let Some(m) = m.as_object_mut() {
                            m.insert(k, v);
                        }
                    }
                    T::RepStr | T::RepMsg(_) => {
                        let item = match ty {
                            T::RepMsg(s) => Value::Object(decode(data, s)?),
                            _ => Value::String(String::from_utf8_lossy(data).into_owned()),
                        };
                        let a = out.entry(name).or_insert_with(|| Value::Array(Vec::new()));
                        if let Some(a) = a.as_array_mut() {
                            a.push(item);
                        }
                    }
                    T::Bool | T::Int | T::IntOmitZero | T::BoolOmitZero => {}
                }
            }
            w => return Err(format!("unsupported wire type {w}")),
        }
        if r.i > b.len() {
            return Err("truncated message".into());
        }
    }
    Ok(out)
}

/// Decodes a `k8s\0`-prefixed protobuf body into JSON; errors name what was not understood.
pub fn decode_body(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(b"k8s\0")
        .ok_or("missing the k8s protobuf magic prefix")?;
    let unknown = decode(rest, UNKNOWN)?;
    let s = |p: &str| {
        unknown
            .get("typeMeta")
            .and_then(|t| t.get(p))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (api_version, kind) = (s("apiVersion"), s("kind"));
    let raw = unknown
        .get("raw")
        .and_then(Value::as_str)
        .map(|r| B64.decode(r))
        .transpose()
        .map_err(|e| e.to_string())?;
    let schema = match kind.as_str() {
        "Secret" => SECRET,
        "ConfigMap" => CONFIG_MAP,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "Namespace" => NAMESPACE,
        "RoleBinding" | "ClusterRoleBinding" => ROLE_BINDING,
        "Role" | "ClusterRole" => ROLE,
        "SelfSubjectAccessReview" => SSAR,
        "TokenReview" => TOKEN_REVIEW,
        "TokenRequest" => TOKEN_REQUEST,
        "Lease" => LEASE,
        "Deployment" => DEPLOYMENT,
        other => {
            return Err(format!(
                "no protobuf decoding for kind {other:?}; send JSON"
            ));
        }
    };
    let mut obj = decode(&raw.unwrap_or_default(), schema)?;
    obj.insert("apiVersion".into(), Value::String(api_version));
    obj.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u64, data: &[u8]) -> Vec<u8> {
        let mut v = vec![
            u8::try_from(num << 3 | 2).unwrap_or(0),
            u8::try_from(data.len()).unwrap_or(0),
        ];
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn decodes_a_secret() {
        let meta = field(1, b"reg");
        let entry = [field(1, b".dockerconfigjson"), field(2, b"{}")].concat();
        let secret = [
            field(1, &meta),
            field(2, &entry),
            field(3, b"kubernetes.io/dockerconfigjson"),
        ]
        .concat();
        let tm = [field(1, b"v1"), field(2, b"Secret")].concat();
        let body = [b"k8s\0".to_vec(), field(1, &tm), field(2, &secret)].concat();
        let v = decode_body(&body).unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "reg"},
                               "data": {".dockerconfigjson": "e30="}, "type": "kubernetes.io/dockerconfigjson"})
        );
        assert!(decode_body(b"k8s\0\x0a\x05ab").is_err());
        assert!(decode_body(b"{}").is_err());
    }
}
