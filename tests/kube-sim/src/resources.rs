//! The table of served resources: what discovery lists and what the router accepts. Kinds not in
//! this table get the apiserver's 404 for an unknown path; nothing here stores or validates.

/// Verbs of a full CRUD resource, in the order discovery lists them.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const CREATE_ONLY: &[&str] = &["create"];
const PROJECT_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// One served resource (an entry of an `APIResourceList`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// Served only with `--openshift`.
    pub openshift: bool,
}

impl ResourceType {
    /// `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Storage key: group and plural.
    pub fn key(&self) -> ResourceKey {
        // events.k8s.io/v1 Events share the storage of v1 Events, as in the apiserver.
        if self.group == "events.k8s.io" && self.plural == "events" {
            return ResourceKey {
                group: "",
                plural: "events",
            };
        }
        ResourceKey {
            group: self.group,
            plural: self.plural,
        }
    }

    /// apiVersion and kind of stored objects (v1 for events.k8s.io Events).
    pub fn stored_type(&self) -> (String, &'static str) {
        if self.group == "events.k8s.io" && self.plural == "events" {
            return ("v1".into(), "Event");
        }
        (self.api_version(), self.kind)
    }

    /// Whether objects are created by requests, rather than computed (tokenreviews, projects).
    pub fn stored(&self) -> bool {
        !matches!(
            self.plural,
            "tokenreviews" | "selfsubjectaccessreviews" | "projects" | "projectrequests"
        )
    }
}

/// Identifies a stored resource independent of version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub group: &'static str,
    pub plural: &'static str,
}

const fn rt(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
) -> ResourceType {
    ResourceType {
        group,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        verbs: ALL_VERBS,
        openshift: false,
    }
}

const fn os(mut r: ResourceType) -> ResourceType {
    r.openshift = true;
    r
}

const fn verbs(mut r: ResourceType, verbs: &'static [&'static str]) -> ResourceType {
    r.verbs = verbs;
    r
}

pub const RBAC: &str = "rbac.authorization.k8s.io";
/// The Prometheus Operator's API group (custom resources).
pub const MONITORING: &str = "monitoring.coreos.com";
pub const APPS: &str = "apps";

/// Every resource kube-sim knows, Kubernetes first, then OpenShift's.
pub static RESOURCES: &[ResourceType] = &[
    rt("", "namespaces", "namespace", "Namespace", false, &["ns"]),
    rt("", "secrets", "secret", "Secret", true, &[]),
    rt(
        "",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
    ),
    rt("", "configmaps", "configmap", "ConfigMap", true, &["cm"]),
    // Services carry no ClusterIP here: kube-sim allocates no addresses (README, Known gaps).
    rt("", "services", "service", "Service", true, &["svc"]),
    rt("", "events", "event", "Event", true, &["ev"]),
    rt(
        RBAC,
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        &[],
    ),
    rt(RBAC, "roles", "role", "Role", true, &[]),
    rt(
        RBAC,
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        &[],
    ),
    rt(
        RBAC,
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        &[],
    ),
    rt("coordination.k8s.io", "leases", "lease", "Lease", true, &[]),
    // The pod path (workloads, controllers, kubelet).
    rt("", "pods", "pod", "Pod", true, &["po"]),
    rt(
        APPS,
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["deploy"],
    ),
    rt(
        APPS,
        "replicasets",
        "replicaset",
        "ReplicaSet",
        true,
        &["rs"],
    ),
    rt("events.k8s.io", "events", "event", "Event", true, &["ev"]),
    rt(
        "policy",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        true,
        &["pdb"],
    ),
    rt(
        "networking.k8s.io",
        "networkpolicies",
        "networkpolicy",
        "NetworkPolicy",
        true,
        &["netpol"],
    ),
    // The Prometheus Operator's kinds, served always, as if its CRDs were installed
    // (prometheus-operator, example/prometheus-operator-crd/monitoring.coreos.com_*.yaml:
    // names, short names). Stored as given: no CRD schema, pruning or defaulting.
    rt(
        MONITORING,
        "servicemonitors",
        "servicemonitor",
        "ServiceMonitor",
        true,
        &["smon"],
    ),
    rt(
        MONITORING,
        "prometheusrules",
        "prometheusrule",
        "PrometheusRule",
        true,
        &["promrule"],
    ),
    verbs(
        rt(
            "authentication.k8s.io",
            "tokenreviews",
            "tokenreview",
            "TokenReview",
            false,
            &[],
        ),
        CREATE_ONLY,
    ),
    verbs(
        rt(
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "selfsubjectaccessreview",
            "SelfSubjectAccessReview",
            false,
            &[],
        ),
        CREATE_ONLY,
    ),
    os(verbs(
        rt(
            "project.openshift.io",
            "projects",
            "project",
            "Project",
            false,
            &[],
        ),
        PROJECT_VERBS,
    )),
    os(verbs(
        rt(
            "project.openshift.io",
            "projectrequests",
            "projectrequest",
            "ProjectRequest",
            false,
            &[],
        ),
        &["create", "list"],
    )),
    os(rt(
        "image.openshift.io",
        "imagestreams",
        "imagestream",
        "ImageStream",
        true,
        &["is"],
    )),
    os(rt(
        "image.openshift.io",
        "imagestreamtags",
        "imagestreamtag",
        "ImageStreamTag",
        true,
        &["istag"],
    )),
    os(rt(
        "authorization.openshift.io",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        &[],
    )),
    os(rt(
        "authorization.openshift.io",
        "roles",
        "role",
        "Role",
        true,
        &[],
    )),
    os(rt(
        "authorization.openshift.io",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        &[],
    )),
    os(rt(
        "authorization.openshift.io",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        &[],
    )),
];

/// Groups in the order `/apis` lists them (the legacy core group is served at `/api`).
pub fn groups(openshift: bool) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && (openshift || !r.openshift) && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

/// Resources served under one group/version.
pub fn in_group(group: &str, version: &str, openshift: bool) -> Vec<&'static ResourceType> {
    RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version && (openshift || !r.openshift))
        .collect()
}

/// Looks a resource up by group, version and plural.
pub fn find(
    group: &str,
    version: &str,
    plural: &str,
    openshift: bool,
) -> Option<&'static ResourceType> {
    RESOURCES.iter().find(|r| {
        r.group == group
            && r.version == version
            && r.plural == plural
            && (openshift || !r.openshift)
    })
}

/// A served subresource: `<plural>/<name>` with its verbs, as discovery lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subresource {
    /// The parent resource's group.
    pub group: &'static str,
    /// The parent resource's plural.
    pub plural: &'static str,
    /// The path segment after the object's name (`status`, `scale`).
    pub name: &'static str,
    /// Kind of the objects the subresource reads and writes.
    pub kind: &'static str,
    /// Group/version of that kind when it is not the parent's (`autoscaling/v1` Scale).
    pub group_version: Option<&'static str>,
    /// Verbs discovery lists and the router accepts.
    pub verbs: &'static [&'static str],
}

const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

/// Every subresource kube-sim serves, in discovery order.
pub static SUBRESOURCES: &[Subresource] = &[
    Subresource {
        group: "",
        plural: "namespaces",
        name: "status",
        kind: "Namespace",
        group_version: None,
        verbs: STATUS_VERBS,
    },
    Subresource {
        group: "",
        plural: "namespaces",
        name: "finalize",
        kind: "Namespace",
        group_version: None,
        verbs: &["update"],
    },
    Subresource {
        group: "",
        plural: "serviceaccounts",
        name: "token",
        kind: "TokenRequest",
        group_version: Some("authentication.k8s.io/v1"),
        verbs: &["create"],
    },
    Subresource {
        group: "",
        plural: "pods",
        name: "status",
        kind: "Pod",
        group_version: None,
        verbs: STATUS_VERBS,
    },
    Subresource {
        group: APPS,
        plural: "deployments",
        name: "status",
        kind: "Deployment",
        group_version: None,
        verbs: STATUS_VERBS,
    },
    Subresource {
        group: APPS,
        plural: "deployments",
        name: "scale",
        kind: "Scale",
        group_version: Some("autoscaling/v1"),
        verbs: STATUS_VERBS,
    },
    Subresource {
        group: APPS,
        plural: "replicasets",
        name: "status",
        kind: "ReplicaSet",
        group_version: None,
        verbs: STATUS_VERBS,
    },
    Subresource {
        group: APPS,
        plural: "replicasets",
        name: "scale",
        kind: "Scale",
        group_version: Some("autoscaling/v1"),
        verbs: STATUS_VERBS,
    },
];

/// The subresource `name` of `rt`, if served.
pub fn subresource(rt: &ResourceType, name: &str) -> Option<&'static Subresource> {
    SUBRESOURCES
        .iter()
        .find(|s| s.group == rt.group && s.plural == rt.plural && s.name == name)
}

/// The namespace resource type.
pub fn namespaces() -> &'static ResourceType {
    &RESOURCES[0]
}
