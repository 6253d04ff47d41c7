//! RBAC PolicyRules as values: reading them from stored roles, the authorizer's per-rule match,
//! and the escalation check's coverage test and wording. Pure functions; no store, no users.
//!
//! Upstream: kubernetes/kubernetes `plugin/pkg/auth/authorizer/rbac/rbac.go` (`RuleAllows`),
//! `pkg/apis/rbac/v1/evaluation_helpers.go` (`VerbMatches` … `ResourceNameMatches`,
//! `CompactString`), `staging/src/k8s.io/component-helpers/auth/rbac/validation/
//! policy_comparator.go` (`Covers`, `BreakdownRule`, `ruleCovers`) and
//! `pkg/registry/rbac/validation/policy_compact.go` (`CompactRules`).

use crate::status::go_quote;
use serde_json::Value;

/// The wildcard of verbs, API groups, resources and non-resource URLs.
const ALL: &str = "*";

/// One rule of a Role or ClusterRole (`rbac/v1.PolicyRule`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRule {
    /// Verbs the rule grants (`*` for all).
    pub verbs: Vec<String>,
    /// API groups of the resources (`""` is the core group, `*` all).
    pub api_groups: Vec<String>,
    /// Resources, `resource/subresource` or `*/subresource`.
    pub resources: Vec<String>,
    /// Object names the rule is limited to (empty: any name).
    pub resource_names: Vec<String>,
    /// Non-resource paths (`/healthz`, `/api/*`); only in ClusterRoles.
    pub non_resource_urls: Vec<String>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl PolicyRule {
    /// A rule from its JSON form.
    pub fn from_json(v: &Value) -> Self {
        Self {
            verbs: strings(v.get("verbs")),
            api_groups: strings(v.get("apiGroups")),
            resources: strings(v.get("resources")),
            resource_names: strings(v.get("resourceNames")),
            non_resource_urls: strings(v.get("nonResourceURLs")),
        }
    }

    /// The `rules` of a Role or ClusterRole.
    pub fn rules_of(role: &Value) -> Vec<Self> {
        role.get("rules")
            .and_then(Value::as_array)
            .map(|rules| rules.iter().map(Self::from_json).collect())
            .unwrap_or_default()
    }

    /// A rule over resources (test and table helper).
    pub fn resource(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Self {
        let own = |l: &[&str]| l.iter().map(|s| (*s).to_string()).collect();
        Self {
            verbs: own(verbs),
            api_groups: own(groups),
            resources: own(resources),
            resource_names: own(names),
            non_resource_urls: Vec::new(),
        }
    }
}

/// What a resource request asks for, as the authorizer matches it against one rule.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    /// Empty unless the path names a subresource (`namespaces/x/finalize`).
    pub subresource: &'a str,
    /// Empty for create, deletecollection, and list/watch without a `metadata.name` selector.
    pub name: &'a str,
}

fn has(set: &[String], x: &str) -> bool {
    set.iter().any(|s| s == x)
}

/// `RuleAllows` for resource requests: verb, group, resource (with `*/subresource`) and name.
pub fn rule_allows(req: &Request<'_>, rule: &PolicyRule) -> bool {
    let combined = if req.subresource.is_empty() {
        req.resource.to_string()
    } else {
        format!("{}/{}", req.resource, req.subresource)
    };
    let verb = rule.verbs.iter().any(|v| v == ALL || v == req.verb);
    let group = rule.api_groups.iter().any(|g| g == ALL || g == req.group);
    let resource = rule.resources.iter().any(|r| {
        r == ALL
            || *r == combined
            || (!req.subresource.is_empty() && r.strip_prefix("*/") == Some(req.subresource))
    });
    // A rule with resourceNames never matches a request without a name (create, plain list).
    let name = rule.resource_names.is_empty() || has(&rule.resource_names, req.name);
    verb && group && resource && name
}

/// `BreakdownRule`: one rule per (group, resource, verb[, name]) and per (URL, verb).
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let one = |s: &String| vec![s.clone()];
    let mut out = Vec::new();
    for group in &rule.api_groups {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                let base = PolicyRule {
                    verbs: one(verb),
                    api_groups: one(group),
                    resources: one(resource),
                    ..PolicyRule::default()
                };
                if rule.resource_names.is_empty() {
                    out.push(base);
                } else {
                    for name in &rule.resource_names {
                        out.push(PolicyRule {
                            resource_names: one(name),
                            ..base.clone()
                        });
                    }
                }
            }
        }
    }
    for url in &rule.non_resource_urls {
        for verb in &rule.verbs {
            out.push(PolicyRule {
                verbs: one(verb),
                non_resource_urls: one(url),
                ..PolicyRule::default()
            });
        }
    }
    out
}

fn has_all(set: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|w| has(set, w))
}

/// `resourceCoversAll`: `*`, an exact match, or `*/sub` for a subresource.
fn resources_cover(owner: &[String], wanted: &[String]) -> bool {
    if has(owner, ALL) || has_all(owner, wanted) {
        return true;
    }
    wanted.iter().all(|path| {
        has(owner, path)
            || path
                .split_once('/')
                .is_some_and(|(_, sub)| has(owner, &format!("*/{sub}")))
    })
}

/// `nonResourceURLsCoversAll`: exact, or an owner path ending in `*` as a prefix.
fn urls_cover(owner: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|path| {
        owner.iter().any(|o| {
            o == path
                || o.strip_suffix('*')
                    .is_some_and(|prefix| path.starts_with(prefix.trim_end_matches('*')))
        })
    })
}

/// `ruleCovers`: whether one held rule covers one broken-down rule.
fn rule_covers(owner: &PolicyRule, sub: &PolicyRule) -> bool {
    let verbs = has(&owner.verbs, ALL) || has_all(&owner.verbs, &sub.verbs);
    let groups = has(&owner.api_groups, ALL) || has_all(&owner.api_groups, &sub.api_groups);
    let resources = resources_cover(&owner.resources, &sub.resources);
    let urls = urls_cover(&owner.non_resource_urls, &sub.non_resource_urls);
    // A name-limited held rule covers only name-limited requests for those names.
    let names = if sub.resource_names.is_empty() {
        owner.resource_names.is_empty()
    } else {
        owner.resource_names.is_empty() || has_all(&owner.resource_names, &sub.resource_names)
    };
    verbs && groups && resources && names && urls
}

/// `Covers`: the broken-down parts of `wanted` that no rule of `owner` covers (empty: covered).
pub fn uncovered(owner: &[PolicyRule], wanted: &[PolicyRule]) -> Vec<PolicyRule> {
    wanted
        .iter()
        .flat_map(breakdown)
        .filter(|sub| !owner.iter().any(|o| rule_covers(o, sub)))
        .collect()
}

/// `CompactRules`: rules with one group, one resource and at most one name are merged per
/// (group, resource, name), their verbs appended in order; all others are kept as they are.
pub fn compact(rules: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    let mut merged: Vec<PolicyRule> = Vec::new();
    for rule in rules {
        let simple = rule.non_resource_urls.is_empty()
            && rule.resource_names.len() <= 1
            && rule.api_groups.len() == 1
            && rule.resources.len() == 1;
        if !simple {
            out.push(rule.clone());
            continue;
        }
        match merged.iter_mut().find(|m| {
            m.api_groups == rule.api_groups
                && m.resources == rule.resources
                && m.resource_names == rule.resource_names
        }) {
            Some(m) => m.verbs.extend(rule.verbs.iter().cloned()),
            None => merged.push(rule.clone()),
        }
    }
    out.extend(merged);
    out
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub fn go_quote_list(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", items.join(" "))
}

/// `CompactString`: `{APIGroups:["apps"], Resources:["deployments"], Verbs:["get"]}`.
pub fn compact_string(rule: &PolicyRule) -> String {
    let parts: Vec<String> = [
        ("APIGroups", &rule.api_groups),
        ("Resources", &rule.resources),
        ("NonResourceURLs", &rule.non_resource_urls),
        ("ResourceNames", &rule.resource_names),
        ("Verbs", &rule.verbs),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| format!("{k}:{}", go_quote_list(v)))
    .collect();
    format!("{{{}}}", parts.join(", "))
}

/// The lines of `ConfirmNoEscalation`'s message: compacted, printed, sorted, without repeats.
pub fn describe_missing(missing: &[PolicyRule]) -> Vec<String> {
    let mut lines: Vec<String> = compact(missing).iter().map(compact_string).collect();
    lines.sort();
    lines.dedup();
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(verb: &'a str, resource: &'a str, sub: &'a str, name: &'a str) -> Request<'a> {
        Request {
            verb,
            group: "",
            resource,
            subresource: sub,
            name,
        }
    }

    #[test]
    fn resource_names_need_a_name() {
        let rule = PolicyRule::resource(&["*"], &[""], &["secrets"], &["reg"]);
        assert!(rule_allows(&req("get", "secrets", "", "reg"), &rule));
        assert!(rule_allows(&req("delete", "secrets", "", "reg"), &rule));
        assert!(!rule_allows(&req("get", "secrets", "", "other"), &rule));
        // create and an unfiltered list carry no name.
        assert!(!rule_allows(&req("create", "secrets", "", ""), &rule));
        assert!(!rule_allows(&req("list", "secrets", "", ""), &rule));
        let any = PolicyRule::resource(&["create"], &[""], &["secrets"], &[]);
        assert!(rule_allows(&req("create", "secrets", "", ""), &any));
    }

    #[test]
    fn subresources_match_exactly_or_by_star() {
        let plain = PolicyRule::resource(&["update"], &[""], &["namespaces"], &[]);
        assert!(!rule_allows(
            &req("update", "namespaces", "finalize", "a"),
            &plain
        ));
        let sub = PolicyRule::resource(&["update"], &[""], &["namespaces/finalize"], &[]);
        assert!(rule_allows(
            &req("update", "namespaces", "finalize", "a"),
            &sub
        ));
        assert!(!rule_allows(&req("update", "namespaces", "", "a"), &sub));
        let star = PolicyRule::resource(&["update"], &[""], &["*/finalize"], &[]);
        assert!(rule_allows(
            &req("update", "namespaces", "finalize", "a"),
            &star
        ));
        assert!(!rule_allows(
            &req("update", "namespaces", "status", "a"),
            &star
        ));
    }

    #[test]
    fn covers_breaks_rules_down() {
        let held = [
            PolicyRule::resource(&["get", "list"], &[""], &["secrets"], &[]),
            PolicyRule::resource(
                &["bind"],
                &["rbac.authorization.k8s.io"],
                &["clusterroles"],
                &["view"],
            ),
        ];
        let want = [PolicyRule::resource(&["get"], &[""], &["secrets"], &["x"])];
        assert!(
            uncovered(&held, &want).is_empty(),
            "unlimited covers a named rule"
        );
        let want = [PolicyRule::resource(
            &["bind"],
            &["rbac.authorization.k8s.io"],
            &["clusterroles"],
            &[],
        )];
        assert_eq!(
            uncovered(&held, &want).len(),
            1,
            "a named rule never covers all names"
        );
        let want = [PolicyRule::resource(
            &["get", "watch", "delete"],
            &[""],
            &["secrets"],
            &[],
        )];
        let missing = uncovered(&held, &want);
        assert_eq!(
            describe_missing(&missing),
            [r#"{APIGroups:[""], Resources:["secrets"], Verbs:["watch" "delete"]}"#]
        );
        let star = [PolicyRule::resource(&["*"], &["*"], &["*"], &[])];
        assert!(uncovered(&star, &want).is_empty());
        // Resource rules never cover non-resource URLs.
        let url = PolicyRule {
            verbs: vec!["get".into()],
            non_resource_urls: vec!["/healthz".into()],
            ..PolicyRule::default()
        };
        assert_eq!(uncovered(&star, std::slice::from_ref(&url)).len(), 1);
        let urls = [PolicyRule {
            verbs: vec!["get".into()],
            non_resource_urls: vec!["/health*".into()],
            ..PolicyRule::default()
        }];
        assert!(uncovered(&urls, &[url]).is_empty());
    }

    #[test]
    fn compact_merges_verbs_per_resource_and_name() {
        let missing = uncovered(
            &[],
            &[
                PolicyRule::resource(&["get", "list"], &["", "apps"], &["pods"], &[]),
                PolicyRule::resource(&["get"], &[""], &["pods"], &["a", "b"]),
            ],
        );
        assert_eq!(
            describe_missing(&missing),
            [
                r#"{APIGroups:[""], Resources:["pods"], ResourceNames:["a"], Verbs:["get"]}"#,
                r#"{APIGroups:[""], Resources:["pods"], ResourceNames:["b"], Verbs:["get"]}"#,
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["get" "list"]}"#,
                r#"{APIGroups:["apps"], Resources:["pods"], Verbs:["get" "list"]}"#,
            ]
        );
    }
}
