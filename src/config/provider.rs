//! Config stage (pure): the `credentialProvider:` block, which only `pullsecretd
//! credential-provider` reads. The kubelet's image credential provider protocol lets a plugin
//! say how long and under which key the kubelet may cache an answer; the operator chooses
//! these here, next to the registries they are about, so one config serves both the Secrets
//! `run` writes and the credentials the provider hands out at pull time.
//!
//! Service-account mode (`serviceAccounts:`) makes the provider log in to Vault's Kubernetes
//! auth with the pod's own service-account token, under a role named from that account, so
//! Vault's policies decide which registries a namespace may pull from. The role is a small
//! template rather than a fixed name because each namespace (or account) needs its own role.

use std::collections::BTreeMap;
use std::time::Duration;

/// `credentialProvider:`; its defaults when the block is left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialProviderConfig {
    /// What the kubelet caches an answer under.
    pub cache_key_type: CacheKeyType,
    /// How long the kubelet keeps an answer; `None`: the registry's `rotation.refresh`.
    pub cache_duration: Option<Duration>,
    /// Service-account mode; `None`: the provider reads with the config's own Vault login.
    pub service_accounts: Option<ServiceAccountLogin>,
}

/// The kubelet's `PluginCacheKeyType`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheKeyType {
    /// Per image (registry, port and path, without tag or digest).
    Image,
    /// Per registry host and port: every image of a registry shares one answer.
    #[default]
    Registry,
    /// One answer for every image the provider matches.
    Global,
}

impl CacheKeyType {
    /// The value as the kubelet's API spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Image => "Image",
            Self::Registry => "Registry",
            Self::Global => "Global",
        }
    }
}

/// `credentialProvider.serviceAccounts`: how a pod's token is exchanged for a Vault token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountLogin {
    /// The Kubernetes auth method's mount (`auth/<mount>/login`).
    pub mount: String,
    /// The Vault role to log in under, named from the account.
    pub role: RoleTemplate,
}

/// A Vault role name with placeholders: `{namespace}`, `{name}` (the service account's) and
/// `{annotation:KEY}` (one of the account's annotations the kubelet sends).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleTemplate {
    parts: Vec<RolePart>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum RolePart {
    Text(String),
    Namespace,
    Name,
    Annotation(String),
}

/// Longest Vault role name a template may produce.
pub const MAX_ROLE_CHARS: usize = 128;

/// True for the characters a role name may hold (Vault's role path segment, kept narrow so a
/// rendered name can never add a path segment or a query).
pub fn is_role_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

impl RoleTemplate {
    /// Parses a template; the message says what is wrong without repeating the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let end = rest
                        .find('}')
                        .ok_or("a `{` is not closed by `}`; placeholders are {namespace}, {name} and {annotation:KEY}")?;
                    parts.push(placeholder(&rest[1..end])?);
                    rest = &rest[end + 1..];
                }
                found => {
                    let end = found.unwrap_or(rest.len());
                    let literal = &rest[..end];
                    if literal.contains('}') || !literal.chars().all(is_role_char) {
                        return Err(
                            "a role name may hold only letters, digits, `-`, `_` and `.` \
                                    besides its placeholders"
                                .into(),
                        );
                    }
                    parts.push(RolePart::Text(literal.to_string()));
                    rest = &rest[end..];
                }
            }
        }
        if parts.is_empty() {
            return Err("the role template is empty".into());
        }
        Ok(Self { parts })
    }

    /// The annotation keys the template uses, which the kubelet must send
    /// (`tokenAttributes.requiredServiceAccountAnnotationKeys`).
    pub fn annotation_keys(&self) -> Vec<&str> {
        self.parts
            .iter()
            .filter_map(|part| match part {
                RolePart::Annotation(key) => Some(key.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The role for one service account. Fails when an annotation is missing or a value
    /// would make an invalid role name; the message names the annotation, never its value.
    pub fn render(
        &self,
        namespace: &str,
        name: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<String, String> {
        let mut role = String::new();
        for part in &self.parts {
            match part {
                RolePart::Text(text) => role.push_str(text),
                RolePart::Namespace => role.push_str(namespace),
                RolePart::Name => role.push_str(name),
                RolePart::Annotation(key) => match annotations.get(key) {
                    Some(value) => role.push_str(value),
                    None => {
                        return Err(format!(
                            "the service account's annotation {key} was not sent (list it in \
                             tokenAttributes.requiredServiceAccountAnnotationKeys)"
                        ));
                    }
                },
            }
        }
        if role.is_empty() || role.chars().count() > MAX_ROLE_CHARS {
            return Err(format!(
                "the Vault role for this service account would be empty or longer than \
                 {MAX_ROLE_CHARS} characters"
            ));
        }
        if !role.chars().all(is_role_char) {
            return Err(
                "the Vault role for this service account would hold characters other than \
                 letters, digits, `-`, `_` and `.`"
                    .into(),
            );
        }
        Ok(role)
    }
}

fn placeholder(inner: &str) -> Result<RolePart, String> {
    match inner {
        "namespace" => Ok(RolePart::Namespace),
        "name" => Ok(RolePart::Name),
        _ => match inner.strip_prefix("annotation:") {
            Some(key) if is_annotation_key(key) => Ok(RolePart::Annotation(key.to_string())),
            Some(_) => Err("{annotation:KEY} needs an annotation key such as \
                            example.com/vault-role"
                .into()),
            None => Err(
                "unknown placeholder; placeholders are {namespace}, {name} and {annotation:KEY}"
                    .into(),
            ),
        },
    }
}

/// An annotation key as Kubernetes allows one: `[prefix/]name`, at most 253 + 63 characters.
fn is_annotation_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
    });
    name_ok && prefix_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn templates_render_namespace_name_and_annotations() {
        let template = RoleTemplate::parse("pull-{namespace}.{name}").expect("valid");
        assert_eq!(
            template.render("team-a", "default", &BTreeMap::new()),
            Ok("pull-team-a.default".to_string())
        );
        let template = RoleTemplate::parse("{annotation:example.com/vault-role}").expect("valid");
        assert_eq!(template.annotation_keys(), ["example.com/vault-role"]);
        let sent = annotations(&[("example.com/vault-role", "builders")]);
        assert_eq!(template.render("ns", "sa", &sent), Ok("builders".into()));
        let missing = template.render("ns", "sa", &BTreeMap::new());
        assert!(missing.is_err_and(|e| e.contains("example.com/vault-role")));
        // A value that would leave the role's path segment is refused, and not repeated.
        let evil = annotations(&[("example.com/vault-role", "../../sys/SECRETVALUE")]);
        let refused = template.render("ns", "sa", &evil).expect_err("refused");
        assert!(!refused.contains("SECRETVALUE"), "{refused}");
    }

    #[test]
    fn bad_templates_are_refused() {
        for text in [
            "",
            "{namespace",
            "pull-{ns}",
            "{annotation:}",
            "pull/{name}",
            "a}b",
            "{annotation:Bad Key}",
        ] {
            assert!(RoleTemplate::parse(text).is_err(), "{text:?} was accepted");
        }
        assert!(RoleTemplate::parse("static-role").is_ok());
    }
}
