//! Optional RBAC enforcement (`Options::rbac`): the apiserver's RBAC authorizer over the stored
//! ClusterRoles, Roles and their bindings, the request attributes it is asked about, and its
//! 403 Forbidden wording. `escalation` holds the RBAC storage's own checks on writes of roles and
//! bindings. Read-only on the store; it never decides what a request does to objects.
//!
//! Upstream: kubernetes/kubernetes `pkg/registry/rbac/validation/rule.go` (`DefaultRuleResolver`:
//! `VisitRulesFor`, `GetRoleReferenceRules`, `appliesToUser`), `plugin/pkg/auth/authorizer/rbac/
//! rbac.go` (`Authorize`), `staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`
//! (the name of a list/watch), `.../endpoints/handlers/responsewriters/errors.go`
//! (`forbiddenMessage`) and openshift/origin `pkg/authorization/authorizer/
//! project_request_info_resolver.go` (a project is checked in its own namespace).

pub mod escalation;
pub mod rule;

use crate::UserInfo;
use crate::api::Request;
use crate::resources::{RBAC, ResourceKey};
use crate::status::{ApiError, go_quote};
use crate::store::Store;
use rule::PolicyRule;
use serde_json::Value;

/// The group whose members skip authorization and the escalation check (`SystemPrivilegedGroup`).
pub const PRIVILEGED_GROUP: &str = "system:masters";

/// What the authorizer is asked: one resource request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    pub resource: String,
    /// `status`/`finalize` of a namespace; empty otherwise.
    pub subresource: String,
    /// Empty for cluster-scoped requests and for lists across namespaces.
    pub namespace: String,
    /// The object's name when the request names one (path, or a list's `metadata.name=` selector).
    pub name: String,
}

impl Attributes {
    /// `RequestInfoFactory.NewRequestInfo` as the authorizer sees a parsed request.
    pub fn of_request(req: &Request) -> Self {
        let rt = req.rt;
        let path_name = req.name.clone().unwrap_or_default();
        // A request under /namespaces/NAME has NAME as its namespace, namespaces themselves too;
        // OpenShift's projectRequestInfoResolver does the same for a named project.
        let namespace = match &req.namespace {
            Some(ns) => ns.clone(),
            None if rt.group.is_empty() && rt.plural == "namespaces" => path_name.clone(),
            None if rt.group == "project.openshift.io" && rt.plural == "projects" => {
                path_name.clone()
            }
            None => String::new(),
        };
        // requestinfo.go: a list or watch is about one name when its field selector requires
        // `metadata.name` to be exactly a valid path segment.
        let name = if path_name.is_empty() && matches!(req.verb, "list" | "watch") {
            req.query
                .get("fieldSelector")
                .and_then(|s| name_from_field_selector(s))
                .unwrap_or_default()
        } else {
            path_name
        };
        Self {
            verb: req.verb.to_string(),
            group: rt.group.to_string(),
            resource: rt.plural.to_string(),
            subresource: req.subresource.clone().unwrap_or_default(),
            namespace,
            name,
        }
    }

    fn rule_request(&self) -> rule::Request<'_> {
        rule::Request {
            verb: &self.verb,
            group: &self.group,
            resource: &self.resource,
            subresource: &self.subresource,
            name: &self.name,
        }
    }
}

/// Field selector operators in the order `fields.splitTerm` tries them at each position.
const OPERATORS: [&str; 3] = ["!=", "==", "="];

/// Splits a field selector on the commas its escaping leaves unescaped (`fields.splitTerms`).
fn split_terms(s: &str) -> Vec<String> {
    let mut terms = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        let last = terms.len() - 1;
        if escaped {
            terms[last].push(c);
            escaped = false;
        } else if c == '\\' {
            terms[last].push(c);
            escaped = true;
        } else if c == ',' {
            terms.push(String::new());
        } else {
            terms[last].push(c);
        }
    }
    terms
}

/// `fields.UnescapeValue`: `\\`, `\,` and `\=`; any other escape makes the selector invalid.
fn unescape(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                _ => return None,
            }
        } else if c == ',' || c == '=' {
            return None;
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// `Selector.RequiresExactMatch("metadata.name")`, kept only if `IsValidPathSegmentName`.
/// An unparsable selector yields no name, as requestinfo.go falls back to a nameless list.
pub fn name_from_field_selector(selector: &str) -> Option<String> {
    if selector.is_empty() {
        return None;
    }
    let mut terms = split_terms(selector);
    // `fields.parseSelector` sorts the terms; an exact-match lookup takes the first.
    terms.sort();
    let mut found = None;
    for term in terms.iter().filter(|t| !t.is_empty()) {
        // The first operator in the term splits it; `!=` and `==` win over `=` at one position.
        let at = (0..term.len()).find(|&i| {
            term.is_char_boundary(i) && OPERATORS.iter().any(|op| term[i..].starts_with(op))
        })?;
        let op = OPERATORS
            .into_iter()
            .find(|op| term[at..].starts_with(op))?;
        let value = unescape(&term[at + op.len()..])?;
        if found.is_none() && op != "!=" && &term[..at] == "metadata.name" {
            found = Some(value);
        }
    }
    found.filter(|n| n != "." && n != ".." && !n.contains('/') && !n.contains('%'))
}

/// How a missing role is worded: the authorizer reads informer listers, whose NotFound names
/// the singular resource; the escalation check reads the registry, whose NotFound is the plural.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wording {
    Lister,
    Registry,
}

fn rbac_key(plural: &'static str) -> ResourceKey {
    ResourceKey {
        group: RBAC,
        plural,
    }
}

/// `GetRoleReferenceRules`: the rules of a binding's role, looked up in the binding's namespace.
pub fn role_reference_rules(
    st: &Store,
    kind: &str,
    name: &str,
    binding_ns: &str,
    wording: Wording,
) -> Result<Vec<PolicyRule>, ApiError> {
    let (plural, singular, ns) = match kind {
        "ClusterRole" => ("clusterroles", "clusterrole", ""),
        "Role" => ("roles", "role", binding_ns),
        other => {
            return Err(ApiError::unknown(format!(
                "unsupported role reference kind: {}",
                go_quote(other)
            )));
        }
    };
    if plural == "roles" && ns.is_empty() && wording == Wording::Registry {
        // The namespaced registry's key function refuses an empty namespace.
        return Err(ApiError::bad_request("Namespace parameter required."));
    }
    match st.get(rbac_key(plural), ns, name) {
        Some(role) => Ok(PolicyRule::rules_of(role)),
        None if wording == Wording::Lister => Err(ApiError::not_found(RBAC, singular, name)),
        None => Err(ApiError::not_found(RBAC, plural, name)),
    }
}

/// `appliesToUser`: a ServiceAccount subject without a namespace means the binding's namespace.
fn subject_applies(s: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let get = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("");
    match get("kind") {
        "User" => get("name") == user.username,
        "Group" => user.groups.iter().any(|g| g == get("name")),
        "ServiceAccount" => {
            let ns = if get("namespace").is_empty() {
                binding_ns
            } else {
                get("namespace")
            };
            !ns.is_empty() && user.username == format!("system:serviceaccount:{ns}:{}", get("name"))
        }
        _ => false,
    }
}

fn binding_applies(binding: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    binding
        .get("subjects")
        .and_then(Value::as_array)
        .is_some_and(|subjects| {
            subjects
                .iter()
                .any(|s| subject_applies(s, user, binding_ns))
        })
}

/// `VisitRulesFor`: every rule that applies to `user` in `ns` (ClusterRoleBindings first, then
/// the RoleBindings of `ns`), or the error of a binding whose role is missing. `visit` returns
/// false to stop.
pub fn visit_rules_for(
    st: &Store,
    user: &UserInfo,
    ns: &str,
    wording: Wording,
    visit: &mut dyn FnMut(Result<&PolicyRule, &ApiError>) -> bool,
) {
    let scopes: [(&'static str, Option<&str>, &str); 2] = [
        ("clusterrolebindings", None, ""),
        ("rolebindings", Some(ns), ns),
    ];
    for (plural, list_ns, binding_ns) in scopes {
        if plural == "rolebindings" && ns.is_empty() {
            return;
        }
        for binding in st.list(rbac_key(plural), list_ns) {
            if !binding_applies(binding, user, binding_ns) {
                continue;
            }
            let role_ref = |k: &str| {
                binding
                    .pointer(&format!("/roleRef/{k}"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
            };
            match role_reference_rules(st, role_ref("kind"), role_ref("name"), binding_ns, wording)
            {
                Ok(rules) => {
                    for r in &rules {
                        if !visit(Ok(r)) {
                            return;
                        }
                    }
                }
                Err(e) => {
                    if !visit(Err(&e)) {
                        return;
                    }
                }
            }
        }
    }
}

/// `RulesFor`: all rules of `user` in `ns`, and the messages of the roles that could not be read.
pub fn rules_for(
    st: &Store,
    user: &UserInfo,
    ns: &str,
    wording: Wording,
) -> (Vec<PolicyRule>, Vec<String>) {
    let (mut rules, mut errors) = (Vec::new(), Vec::new());
    visit_rules_for(st, user, ns, wording, &mut |r| {
        match r {
            Ok(rule) => rules.push(rule.clone()),
            Err(e) => errors.push(e.message.clone()),
        }
        true
    });
    (rules, errors)
}

/// `utilerrors.NewAggregate(errs).Error()`: one message alone, several as `[a, b]`, no repeats.
pub fn aggregate(errors: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for e in errors {
        if !seen.contains(&e.as_str()) {
            seen.push(e);
        }
    }
    match seen.as_slice() {
        [one] => (*one).to_string(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// The authorizer's answer; a denial carries the reason the Forbidden message appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// `RBAC: <errors>` when roles named by the user's bindings are missing; else empty.
    pub reason: String,
}

/// `RBACAuthorizer.Authorize` for a resource request (members of `system:masters` are
/// allowed before it is asked, by the apiserver's privileged-group authorizer).
pub fn authorize(st: &Store, user: &UserInfo, attrs: &Attributes) -> Decision {
    if user.groups.iter().any(|g| g == PRIVILEGED_GROUP) {
        return Decision {
            allowed: true,
            reason: String::new(),
        };
    }
    let want = attrs.rule_request();
    let mut allowed = false;
    let mut errors = Vec::new();
    visit_rules_for(
        st,
        user,
        &attrs.namespace,
        Wording::Lister,
        &mut |r| match r {
            Ok(rule) if rule::rule_allows(&want, rule) => {
                allowed = true;
                false
            }
            Ok(_) => true,
            Err(e) => {
                errors.push(e.message.clone());
                true
            }
        },
    );
    let reason = if allowed || errors.is_empty() {
        String::new()
    } else {
        format!("RBAC: {}", aggregate(&errors))
    };
    Decision { allowed, reason }
}

/// `errors.NewForbidden(groupResource, name, err)`.
pub fn new_forbidden(group: &str, resource: &str, name: &str, err: &str) -> ApiError {
    let qualified = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    let message = if name.is_empty() {
        format!("{qualified} is forbidden: {err}")
    } else {
        format!("{qualified} {} is forbidden: {err}", go_quote(name))
    };
    ApiError::forbidden(group, resource, name, message)
}

/// The authorization filter's 403 (`responsewriters.Forbidden` with `forbiddenMessage`): the
/// message is HTML-escaped, the authorizer's reason appended, the name is the request's.
pub fn forbidden(user: &UserInfo, attrs: &Attributes, reason: &str) -> ApiError {
    let resource = if attrs.subresource.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}/{}", attrs.resource, attrs.subresource)
    };
    let scope = if attrs.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {}", go_quote(&attrs.namespace))
    };
    let msg = format!(
        "User {} cannot {} resource {} in API group {} {scope}",
        go_quote(&user.username),
        attrs.verb,
        go_quote(&resource),
        go_quote(&attrs.group),
    )
    .replace('&', "&amp;")
    .replace('<', "&lt;")
    .replace('>', "&gt;");
    let err = if reason.is_empty() {
        msg
    } else {
        format!("{msg}: {reason}")
    };
    new_forbidden(&attrs.group, &attrs.resource, &attrs.name, &err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_names_come_from_exact_metadata_name_selectors() {
        let cases = [
            ("metadata.name=reg", Some("reg")),
            ("metadata.name==reg", Some("reg")),
            (
                "type=kubernetes.io/dockerconfigjson,metadata.name=reg",
                Some("reg"),
            ),
            ("metadata.name!=reg", None),
            ("metadata.namespace=reg", None),
            ("metadata.name=a/b", None),
            ("metadata.name=..", None),
            ("metadata.name=a%2f", None),
            ("metadata.name=a\\,b", Some("a,b")),
            ("metadata.name=bad\\escape", None),
            ("nonsense", None),
            ("", None),
        ];
        for (sel, want) in cases {
            assert_eq!(name_from_field_selector(sel).as_deref(), want, "{sel}");
        }
    }

    fn request(
        method_verb: &'static str,
        group: &str,
        plural: &str,
        path: (Option<&str>, Option<&str>),
        query: &[(&str, &str)],
    ) -> Request {
        let rt = crate::resources::find(group, "v1", plural, true).expect("served resource");
        Request {
            rt,
            namespace: path.0.map(str::to_string),
            name: path.1.map(str::to_string),
            subresource: None,
            verb: method_verb,
            query: query
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            content_type: String::new(),
            body: bytes::Bytes::new(),
            user: UserInfo::user("u", &[]),
            user_agent: String::new(),
            table: false,
        }
    }

    #[test]
    fn attributes_follow_request_info() {
        let by_name = [("fieldSelector", "metadata.name=reg")];
        let a = Attributes::of_request(&request(
            "list",
            "",
            "secrets",
            (Some("team"), None),
            &by_name,
        ));
        assert_eq!((a.namespace.as_str(), a.name.as_str()), ("team", "reg"));
        let a = Attributes::of_request(&request("watch", "", "secrets", (None, None), &by_name));
        assert_eq!((a.namespace.as_str(), a.name.as_str()), ("", "reg"));
        // Only a list or watch takes its name from the selector.
        let a = Attributes::of_request(&request(
            "deletecollection",
            "",
            "secrets",
            (Some("team"), None),
            &by_name,
        ));
        assert_eq!(a.name, "");
        let a =
            Attributes::of_request(&request("get", "", "namespaces", (None, Some("team")), &[]));
        assert_eq!((a.namespace.as_str(), a.name.as_str()), ("team", "team"));
        let a = Attributes::of_request(&request("list", "", "namespaces", (None, None), &[]));
        assert_eq!(a.namespace, "");
        let a = Attributes::of_request(&request(
            "get",
            "project.openshift.io",
            "projects",
            (None, Some("team")),
            &[],
        ));
        assert_eq!(a.namespace, "team");
        let mut finalize = request("update", "", "namespaces", (None, Some("team")), &[]);
        finalize.subresource = Some("finalize".into());
        assert_eq!(Attributes::of_request(&finalize).subresource, "finalize");
    }

    #[test]
    fn aggregate_prints_like_apimachinery() {
        assert_eq!(aggregate(&["a".into()]), "a");
        assert_eq!(aggregate(&["a".into(), "b".into(), "a".into()]), "[a, b]");
    }

    #[test]
    fn forbidden_names_the_selector_name_and_appends_the_reason() {
        let user = UserInfo::user("u<1>", &[]);
        let attrs = Attributes {
            verb: "list".into(),
            resource: "secrets".into(),
            namespace: "team".into(),
            name: "reg".into(),
            ..Attributes::default()
        };
        let e = forbidden(
            &user,
            &attrs,
            "RBAC: clusterrole.rbac.authorization.k8s.io \"x\" not found",
        );
        assert_eq!(
            e.to_status(),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "secrets \"reg\" is forbidden: User \"u&lt;1&gt;\" cannot list resource \"secrets\" in API group \"\" in the namespace \"team\": RBAC: clusterrole.rbac.authorization.k8s.io \"x\" not found",
                   "reason": "Forbidden", "details": {"name": "reg", "group": "", "kind": "secrets"}, "code": 403})
        );
    }
}
