//! Label selectors (apimachinery `pkg/labels/selector.go` grammar and semantics) and the field
//! selectors the served kinds support. Parsing errors become 400 BadRequest in `api`.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Exists,
    DoesNotExist,
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

/// A parsed label selector: requirements ANDed together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<(String, Op)>,
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && (v.is_empty()
            || (v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric())))
}

fn valid_key(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return false;
        }
    }
    !name.is_empty() && name.len() <= 63 && valid_value(name)
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_set(rest: &str, key: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement: found '{rest}', expected: '('"))?;
    let vals: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    for v in &vals {
        if !valid_value(v) {
            return Err(value_error(key, v));
        }
    }
    Ok(vals)
}

fn value_error(key: &str, v: &str) -> String {
    format!(
        "values[0][{key}]: Invalid value: \"{v}\": a valid label must be an empty string or consist of \
         alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character \
         (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is \
         '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
    )
}

fn key_error(k: &str) -> String {
    format!(
        "unable to parse requirement: key: Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
    )
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self { reqs });
        }
        for part in split_top(s) {
            let part = part.trim();
            if part.is_empty() {
                return Err("found '', expected: identifier".into());
            }
            let (key, op) = if let Some(k) = part.strip_prefix('!') {
                (k.trim().to_string(), Op::DoesNotExist)
            } else if let Some((k, v)) = part.split_once("!=") {
                (k.trim().to_string(), Op::NotEquals(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once("==") {
                (k.trim().to_string(), Op::Equals(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once('=') {
                (k.trim().to_string(), Op::Equals(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once('>') {
                let n = v.trim().parse().map_err(|_| "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer".to_string())?;
                (k.trim().to_string(), Op::Gt(n))
            } else if let Some((k, v)) = part.split_once('<') {
                let n = v.trim().parse().map_err(|_| "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer".to_string())?;
                (k.trim().to_string(), Op::Lt(n))
            } else if let Some(i) = part.find(" notin ").or_else(|| part.find(" notin(")) {
                let key = part[..i].trim();
                (key.to_string(), Op::NotIn(parse_set(&part[i + 6..], key)?))
            } else if let Some(i) = part.find(" in ").or_else(|| part.find(" in(")) {
                let key = part[..i].trim();
                (key.to_string(), Op::In(parse_set(&part[i + 3..], key)?))
            } else {
                let k = part.trim();
                if k.contains(' ') {
                    return Err(format!(
                        "unable to parse requirement: found '{k}', expected: in, notin, =, ==, !=, gt, lt"
                    ));
                }
                (k.to_string(), Op::Exists)
            };
            if !valid_key(&key) {
                return Err(key_error(&key));
            }
            if let Op::Equals(v) | Op::NotEquals(v) = &op
                && !valid_value(v)
            {
                return Err(value_error(&key, v));
            }
            reqs.push((key, op));
        }
        Ok(Self { reqs })
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches(&self, labels: &serde_json::Map<String, Value>) -> bool {
        self.reqs.iter().all(|(k, op)| {
            let v = labels.get(k).and_then(Value::as_str);
            match op {
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
                Op::Equals(x) => v == Some(x.as_str()),
                Op::NotEquals(x) => v != Some(x.as_str()),
                Op::In(xs) => v.is_some_and(|v| xs.iter().any(|x| x == v)),
                Op::NotIn(xs) => v.is_none_or(|v| !xs.iter().any(|x| x == v)),
                Op::Gt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                Op::Lt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }
}

/// A parsed field selector: `field=v`, `field==v`, `field!=v`, ANDed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

/// The selectable fields of a kind (each registry's `SelectableFields`/`GetAttrs`).
fn field_value(kind: &str, obj: &Value, field: &str) -> Option<String> {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
    match field {
        "metadata.name" => Some(s(obj.pointer("/metadata/name"))),
        "metadata.namespace" => Some(s(obj.pointer("/metadata/namespace"))),
        "type" if kind == "Secret" => Some(s(obj.get("type"))),
        "status.phase" if kind == "Namespace" => Some(s(obj.pointer("/status/phase"))),
        "source" if kind == "Event" => Some(s(obj.pointer("/source/component"))),
        "involvedObject.kind"
        | "involvedObject.name"
        | "involvedObject.namespace"
        | "involvedObject.uid"
        | "involvedObject.apiVersion"
        | "involvedObject.resourceVersion"
        | "involvedObject.fieldPath"
        | "reason"
        | "reportingComponent"
        | "type"
            if kind == "Event" =>
        {
            Some(s(obj.pointer(&format!("/{}", field.replace('.', "/")))))
        }
        // `pkg/registry/core/pod/strategy.go` ToSelectableFields.
        "spec.nodeName"
        | "spec.restartPolicy"
        | "spec.schedulerName"
        | "spec.serviceAccountName"
        | "status.phase"
        | "status.podIP"
        | "status.nominatedNodeName"
            if kind == "Pod" =>
        {
            Some(s(obj.pointer(&format!("/{}", field.replace('.', "/")))))
        }
        "spec.hostNetwork" if kind == "Pod" => Some(
            obj.pointer("/spec/hostNetwork")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string(),
        ),
        // `pkg/registry/apps/replicaset/strategy.go` ReplicaSetToSelectableFields.
        "status.replicas" if kind == "ReplicaSet" => Some(
            obj.pointer("/status/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                .to_string(),
        ),
        _ => None,
    }
}

impl FieldSelector {
    /// Parses `fieldSelector` for objects of `kind`; unsupported fields are errors, as on a real server.
    pub fn parse(s: &str, kind: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (f, eq, v) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let f = f.trim();
            if field_value(kind, &Value::Null, f).is_none() {
                return Err(format!("field label not supported: {f}"));
            }
            reqs.push((f.to_string(), eq, v.trim().to_string()));
        }
        Ok(Self { reqs })
    }

    pub fn matches(&self, kind: &str, obj: &Value) -> bool {
        self.reqs.iter().all(|(f, eq, v)| {
            let actual = field_value(kind, obj, f).unwrap_or_default();
            (actual == *v) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn l(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn full_grammar() {
        let labels = l(json!({"app": "web", "tier": "front", "n": "5"}));
        let cases = [
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (web, db)", true),
            ("app in (db)", false),
            ("app notin (db)", true),
            ("missing notin (db)", true),
            ("missing in (db)", false),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("app in (web,db),!missing,tier", true),
            ("n>4", true),
            ("n<4", false),
            ("", true),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).map_err(|e| format!("{sel}: {e}"));
            assert_eq!(s.map(|s| s.matches(&labels)), Ok(want), "{sel}");
        }
    }

    #[test]
    fn rejects_bad_syntax() {
        for sel in [
            "app=bad value",
            "app in web",
            "-bad=x",
            "app=v!",
            "a b",
            &format!("a={}", "x".repeat(64)),
        ] {
            assert!(LabelSelector::parse(sel).is_err(), "{sel}");
        }
    }

    #[test]
    fn field_selectors() {
        let s = json!({"metadata": {"name": "a", "namespace": "n"}, "type": "kubernetes.io/dockerconfigjson"});
        let f = FieldSelector::parse(
            "type=kubernetes.io/dockerconfigjson,metadata.name!=b",
            "Secret",
        );
        assert_eq!(f.map(|f| f.matches("Secret", &s)), Ok(true));
        assert!(FieldSelector::parse("spec.foo=x", "Secret").is_err());
        assert!(FieldSelector::parse("type=x", "ServiceAccount").is_err());
    }
}
