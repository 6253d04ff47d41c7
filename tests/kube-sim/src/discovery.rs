//! Discovery documents (`/version`, `/api`, `/apis`, group/version resource lists) and the minimal
//! OpenAPI v3 documents `kubectl` reads to decide that the server validates fields itself
//! (`fieldValidation` on each PATCH operation), so `--validate=false` is never needed.
//! Pure functions of the resource table.

use crate::resources::{self, ResourceType};
use serde_json::{Value, json};

pub fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "emulationMajor": "1", "emulationMinor": "33",
        "minCompatibilityMajor": "1", "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0-kube-sim", "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2",
        "compiler": "gc", "platform": "linux/amd64"
    })
}

pub fn api_versions(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

fn group_doc(group: &str) -> Value {
    let gv = format!("{group}/v1");
    json!({"name": group, "versions": [{"groupVersion": gv, "version": "v1"}],
           "preferredVersion": {"groupVersion": gv, "version": "v1"}})
}

pub fn api_group_list(openshift: bool) -> Value {
    let groups: Vec<Value> = resources::groups(openshift)
        .into_iter()
        .map(group_doc)
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(group: &str, openshift: bool) -> Option<Value> {
    if !resources::groups(openshift).contains(&group) {
        return None;
    }
    let mut g = group_doc(group);
    if let Some(m) = g.as_object_mut() {
        m.insert("kind".into(), json!("APIGroup"));
        m.insert("apiVersion".into(), json!("v1"));
    }
    Some(g)
}

fn resource_doc(r: &ResourceType) -> Value {
    let mut d = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                       "kind": r.kind, "verbs": r.verbs});
    if let Some(m) = d.as_object_mut() {
        if !r.short_names.is_empty() {
            m.insert("shortNames".into(), json!(r.short_names));
        }
        if r.plural == "serviceaccounts" || r.plural == "secrets" || r.plural == "namespaces" {
            m.insert("categories".into(), json!([]));
        }
        // `kubectl get all` lists the resources in the `all` category.
        if matches!(r.plural, "pods" | "deployments" | "replicasets") {
            m.insert("categories".into(), json!(["all"]));
        }
    }
    d
}

/// Discovery entries of a resource's subresources (`pods/status`, `deployments/scale`).
fn subresource_docs(r: &ResourceType) -> Vec<Value> {
    resources::SUBRESOURCES
        .iter()
        .filter(|s| s.group == r.group && s.plural == r.plural)
        .map(|s| {
            let mut d = json!({"name": format!("{}/{}", s.plural, s.name), "singularName": "",
                               "namespaced": r.namespaced, "kind": s.kind, "verbs": s.verbs});
            if let Some((g, v)) = s.group_version.and_then(|gv| gv.split_once('/')) {
                d["group"] = json!(g);
                d["version"] = json!(v);
            }
            d
        })
        .collect()
}

/// `APIResourceList` of one group/version, or None if it is not served.
pub fn resource_list(group: &str, version: &str, openshift: bool) -> Option<Value> {
    let list = resources::in_group(group, version, openshift);
    if list.is_empty() {
        return None;
    }
    let mut docs: Vec<Value> = Vec::new();
    for r in &list {
        docs.push(resource_doc(r));
        docs.extend(subresource_docs(r));
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": docs}),
    )
}

/// `/openapi/v3`: the index of group/version documents.
pub fn openapi_v3_index(openshift: bool) -> Value {
    let mut paths = serde_json::Map::new();
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL": "/openapi/v3/api/v1?hash=KUBESIM"}),
    );
    for g in resources::groups(openshift) {
        let p = format!("apis/{g}/v1");
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=KUBESIM")}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<api/v1|apis/g/v1>`: one PATCH operation per kind, carrying the GVK extension and
/// the `fieldValidation` query parameter, which is what kubectl's `QueryParamVerifierV3` checks.
pub fn openapi_v3_doc(gv_path: &str, openshift: bool) -> Option<Value> {
    let (group, version) = match gv_path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return None,
    };
    let list = resources::in_group(group, version, openshift);
    if list.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    for r in list {
        let gvk = json!({"group": group, "version": version, "kind": r.kind});
        let schema_name = format!(
            "io.k8s.kube-sim.{}.{}",
            if group.is_empty() { "core" } else { group },
            r.kind
        );
        let path = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{prefix}/{}/{{name}}", r.plural)
        };
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}
        ]);
        let op = json!({
            "operationId": format!("patch{}", r.kind),
            "parameters": params,
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema_name}")}}}}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk,
        });
        paths.insert(path, json!({"patch": op}));
        schemas.insert(
            schema_name,
            json!({"type": "object", "x-kubernetes-group-version-kind": [gvk],
                   "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                  "metadata": {"type": "object"}}}),
        );
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"},
                "paths": paths, "components": {"schemas": schemas}}),
    )
}
