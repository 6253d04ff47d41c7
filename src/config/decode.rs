//! Config stage, schema layer (pure): a marked YAML tree in, a validated [`Config`] out.
//!
//! Reads no files and no environment: the config's directory and `$HOME` come in through
//! [`Context`]. Checks run outside-in and in schema order (`registries`, then `pullSecrets`,
//! then `imagePullers`; in each mapping, unknown fields before values), and the first problem
//! found is returned. Messages name fields, never echo free-form values; names that are
//! references (registries, projects) are shown, cut short.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::yaml::{Entry, FieldPath, Mark, Node, NodeKind, ScalarKind, quoted};
use super::{
    Config, Heal, ImagePullerConfig, Layout, LinkKind, MAX_SHARDS, ProjectSelection,
    PullSecretConfig, PullerSubject, RegistryConfig, Rotation, RotationStrategy, SecretType,
    SourceConfig,
};
use crate::model::credential::{KeyError, RegistryKey};
use crate::names::{dns1123_label_problem, dns1123_subdomain_problem};
use crate::selector::LabelSelector;

mod provider;
mod vault;
mod verify;

/// What a problem is and where: the caller adds the file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub mark: Mark,
    pub path: FieldPath,
    pub message: String,
}

type Result<T, E = Problem> = std::result::Result<T, E>;

/// What paths in the config are resolved against.
#[derive(Clone, Debug)]
pub struct Context {
    /// Absolute directory of the config file: relative source paths start here.
    pub base_dir: PathBuf,
    /// `$HOME`, for `~`; `None` when unset or empty.
    pub home: Option<PathBuf>,
}

fn problem(node_mark: Mark, path: &FieldPath, message: impl Into<String>) -> Problem {
    Problem {
        mark: node_mark,
        path: path.clone(),
        message: message.into(),
    }
}

const TOP_FIELDS: &[&str] = &[
    "instance",
    "namespaces",
    "shards",
    "vault",
    "registries",
    "pullSecrets",
    "imagePullers",
    "credentialProvider",
];
const REGISTRY_FIELDS: &[&str] = &["server", "from", "verify"];
const SOURCE_FIELDS: &[&str] = &[
    "dockerConfig",
    "dockercfg",
    "containersAuth",
    "helper",
    "vault",
];
const PULL_SECRET_FIELDS: &[&str] = &[
    "name",
    "type",
    "registries",
    "layout",
    "projects",
    "link",
    "rotation",
    "adopt",
    "heal",
];
const PROJECTS_FIELDS: &[&str] = &["names", "selector", "exclude"];
const ROTATION_FIELDS: &[&str] = &["refresh", "strategy", "grace", "keep"];
const IMAGE_PULLER_FIELDS: &[&str] = &["project", "allow", "allowProjectsOf"];

/// How many known registry names an "unknown registry" message lists.
const MAX_LISTED_NAMES: usize = 10;

/// Decodes and validates the document root.
pub fn decode_config(root: &Node, context: &Context) -> Result<Config> {
    let path = FieldPath::root();
    let fields = Fields::read(root, &path, TOP_FIELDS)?;
    let instance = match fields.get("instance") {
        Some(node) => Some(expect_label(node, &path.key("instance"), "instance name")?),
        None => None,
    };
    let namespaces = match fields.get("namespaces") {
        Some(node) => Some(decode_namespaces(node, &path.key("namespaces"))?),
        None => None,
    };
    let shards = match fields.get("shards") {
        Some(node) => Some(decode_shards(node, &path.key("shards"))?),
        None => None,
    };
    let scope = namespaces.as_deref();
    let vault = match fields.get("vault") {
        Some(node) => Some(vault::decode_vault(node, &path.key("vault"), context)?),
        None => None,
    };
    let registries = match fields.get("registries") {
        Some(node) => decode_registries(node, &path.key("registries"), context, vault.is_some())?,
        None => Registries::default(),
    };
    let pull_secrets = match fields.get("pullSecrets") {
        Some(node) => decode_pull_secrets(node, &path.key("pullSecrets"), &registries, scope)?,
        None => Vec::new(),
    };
    let image_pullers = match fields.get("imagePullers") {
        Some(node) => decode_image_pullers(node, &path.key("imagePullers"), &pull_secrets, scope)?,
        None => Vec::new(),
    };
    let credential_provider = match fields.get("credentialProvider") {
        Some(node) => provider::decode_credential_provider(
            node,
            &path.key("credentialProvider"),
            vault.as_ref(),
        )?,
        None => super::CredentialProviderConfig::default(),
    };
    Ok(Config {
        instance,
        vault,
        credential_provider,
        registries: registries.by_name,
        pull_secrets,
        image_pullers,
        namespaces,
        shards,
    })
}

/// `shards:` of `run` (docs/sharding.md): the same bounds as `--shards`.
fn decode_shards(node: &Node, path: &FieldPath) -> Result<u32> {
    const WANTED: &str = "expected a whole number of shards from 1 to 1024";
    node.scalar_text()
        .and_then(|text| text.parse::<u32>().ok())
        .filter(|n| (1..=MAX_SHARDS).contains(n))
        .ok_or_else(|| problem(node.mark, path, WANTED))
}

// ---------------------------------------------------------------------------------------------
// namespaces: (namespaced mode)

/// The namespaces of namespaced mode: DNS-1123 labels, at least one, at most
/// [`MAX_NAMESPACES`](super::MAX_NAMESPACES), none twice.
fn decode_namespaces(node: &Node, path: &FieldPath) -> Result<Vec<String>> {
    let items = expect_list(node, path)?;
    if items.is_empty() {
        return Err(problem(
            node.mark,
            path,
            "list at least one namespace, or leave namespaces out to manage the whole cluster",
        ));
    }
    if items.len() > super::MAX_NAMESPACES {
        return Err(problem(
            node.mark,
            path,
            format!(
                "at most {} namespaces; for more, leave namespaces out and grant cluster-wide \
                 access",
                super::MAX_NAMESPACES
            ),
        ));
    }
    let mut names: Vec<String> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let item_path = path.index(index);
        let name = expect_label(item, &item_path, "namespace name")?;
        if names.contains(&name) {
            return Err(problem(
                item.mark,
                &item_path,
                format!("namespace {} is listed twice", quoted(&name)),
            ));
        }
        names.push(name);
    }
    Ok(names)
}

/// In namespaced mode (`scope` is the `namespaces:` list), `namespace` must be one of them.
fn check_in_scope(
    namespace: &str,
    scope: Option<&[String]>,
    mark: Mark,
    path: &FieldPath,
) -> Result<()> {
    match scope {
        Some(names) if !names.iter().any(|n| n == namespace) => Err(problem(
            mark,
            path,
            format!(
                "namespace {} is not in namespaces: in namespaced mode pullsecretd reads and \
                 writes only the namespaces listed there; add it to namespaces",
                quoted(namespace)
            ),
        )),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Generic readers

/// The fields of a mapping, checked against the names the schema allows.
struct Fields<'n> {
    map_mark: Mark,
    path: FieldPath,
    /// Key, where the key is written, value; in document order.
    values: Vec<(&'n str, Mark, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn read(node: &'n Node, path: &FieldPath, allowed: &[&str]) -> Result<Self> {
        let entries = expect_map(node, path)?;
        let mut values: Vec<(&str, Mark, &Node)> = Vec::with_capacity(entries.len());
        for entry in entries {
            let key = map_key(entry, path)?;
            if !allowed.contains(&key) {
                let mut problem = unknown_field(entry, &path.key(key), key, allowed);
                // `from:` with nothing after it, then a line at the same indentation: that
                // line was almost certainly meant to be indented under it.
                if let Some((previous, mark, value)) = values.last()
                    && value.is_null()
                {
                    problem.message.push_str(&format!(
                        "; {previous}: on line {} has no value: if {key} belongs under it, \
                         indent it further",
                        mark.line
                    ));
                }
                return Err(problem);
            }
            values.push((key, entry.key.mark, &entry.value));
        }
        Ok(Self {
            map_mark: node.mark,
            path: path.clone(),
            values,
        })
    }

    /// A field's value; an explicit null counts as absent.
    fn get(&self, name: &str) -> Option<&'n Node> {
        self.values
            .iter()
            .find(|(key, _, value)| *key == name && !value.is_null())
            .map(|(_, _, value)| *value)
    }

    fn required(&self, name: &str) -> Result<&'n Node> {
        self.get(name).ok_or_else(|| {
            problem(
                self.map_mark,
                &self.path.key(name),
                "required field is missing",
            )
        })
    }
}

fn expect_map<'n>(node: &'n Node, path: &FieldPath) -> Result<&'n [Entry]> {
    match &node.kind {
        NodeKind::Map(entries) => Ok(entries),
        _ => Err(expected(node, path, "a mapping")),
    }
}

fn expect_list<'n>(node: &'n Node, path: &FieldPath) -> Result<&'n [Node]> {
    match &node.kind {
        NodeKind::List(items) => Ok(items),
        _ => Err(expected(node, path, "a list")),
    }
}

fn expect_string<'n>(node: &'n Node, path: &FieldPath) -> Result<&'n str> {
    node.as_str()
        .ok_or_else(|| expected(node, path, "a string"))
}

fn expect_bool(node: &Node, path: &FieldPath) -> Result<bool> {
    match &node.kind {
        NodeKind::Scalar(scalar) => match scalar.kind {
            ScalarKind::Bool(value) => Ok(value),
            _ => Err(expected(node, path, "true or false")),
        },
        _ => Err(expected(node, path, "true or false")),
    }
}

/// "expected a string, found a number": the found value is described, never quoted.
fn expected(node: &Node, path: &FieldPath, what: &str) -> Problem {
    let hint = if what == "a string" && matches!(node.kind, NodeKind::Scalar(_)) {
        " (put it in quotes to make it a string)"
    } else {
        ""
    };
    problem(
        node.mark,
        path,
        format!("expected {what}, found {}{hint}", node.describe()),
    )
}

fn map_key<'n>(entry: &'n Entry, parent: &FieldPath) -> Result<&'n str> {
    match entry.key.scalar_text() {
        Some(key) if matches!(entry.key.kind, NodeKind::Scalar(_)) => Ok(key),
        _ => Err(problem(
            entry.key.mark,
            parent,
            format!(
                "mapping keys must be strings, found {}",
                entry.key.describe()
            ),
        )),
    }
}

fn unknown_field(entry: &Entry, path: &FieldPath, key: &str, allowed: &[&str]) -> Problem {
    let message = if let Some(suggestion) = similar_field(key, allowed) {
        format!("unknown field; did you mean {suggestion}?")
    } else {
        format!("unknown field (expected one of: {})", allowed.join(", "))
    };
    problem(entry.key.mark, path, message)
}

/// `pull_secrets`, `PullSecrets` or `pull-secrets` for `pullSecrets`.
fn similar_field<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let fold = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let folded = fold(key);
    allowed.iter().copied().find(|name| fold(name) == folded)
}

/// A string from a fixed set, compared exactly.
fn expect_choice<T: Copy>(node: &Node, path: &FieldPath, choices: &[(&str, T)]) -> Result<T> {
    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
    let wanted = format!("one of {}", names.join(", "));
    let text = node.as_str().ok_or_else(|| expected(node, path, &wanted))?;
    choices
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, value)| *value)
        .ok_or_else(|| problem(node.mark, path, format!("expected {wanted}")))
}

// ---------------------------------------------------------------------------------------------
// Names

fn expect_label(node: &Node, path: &FieldPath, what: &str) -> Result<String> {
    let name = expect_string(node, path)?;
    check_label(name, node.mark, path, what)?;
    Ok(name.to_string())
}

fn check_label(name: &str, mark: Mark, path: &FieldPath, what: &str) -> Result<()> {
    match dns1123_label_problem(name) {
        None => Ok(()),
        Some(reason) => Err(problem(
            mark,
            path,
            format!("not a valid {what} (a DNS-1123 label): {reason}"),
        )),
    }
}

fn check_subdomain(name: &str, mark: Mark, path: &FieldPath, what: &str) -> Result<()> {
    match dns1123_subdomain_problem(name) {
        None => Ok(()),
        Some(reason) => Err(problem(
            mark,
            path,
            format!("not a valid {what} (a DNS-1123 subdomain): {reason}"),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// registries:

#[derive(Default)]
struct Registries {
    by_name: BTreeMap<String, RegistryConfig>,
    /// Config order, for "known: …" lists.
    names: Vec<String>,
}

fn decode_registries(
    node: &Node,
    path: &FieldPath,
    context: &Context,
    has_vault: bool,
) -> Result<Registries> {
    let mut registries = Registries::default();
    let entries = expect_map(node, path)?;
    // A registry's own field one level too far left reads as a registry named `from`: report
    // that line, not "from is missing" at the registry above it.
    for entry in entries {
        let name = map_key(entry, path)?;
        if REGISTRY_FIELDS.contains(&name) {
            return Err(problem(
                entry.key.mark,
                &path.key(name),
                format!(
                    "{name} is a field of a registry, not a registry name: it is indented \
                     one level too far left; indent it under the registry above it"
                ),
            ));
        }
    }
    for entry in entries {
        let name = map_key(entry, path)?;
        let entry_path = path.key(name);
        check_label(name, entry.key.mark, &entry_path, "registry name")?;
        let registry = decode_registry(name, &entry.value, &entry_path, context, has_vault)?;
        registries.names.push(name.to_string());
        registries.by_name.insert(name.to_string(), registry);
    }
    Ok(registries)
}

fn decode_registry(
    name: &str,
    node: &Node,
    path: &FieldPath,
    context: &Context,
    has_vault: bool,
) -> Result<RegistryConfig> {
    let fields = Fields::read(node, path, REGISTRY_FIELDS)?;
    let server_node = fields.required("server")?;
    let server = decode_server(server_node, &path.key("server"))?;
    let from = decode_source(
        fields.required("from")?,
        &path.key("from"),
        context,
        has_vault,
    )?;
    let verify = match fields.get("verify") {
        Some(node) => verify::decode_verify(node, &path.key("verify"))?,
        None => None,
    };
    Ok(RegistryConfig {
        name: name.to_string(),
        server,
        from,
        verify,
    })
}

fn decode_server(node: &Node, path: &FieldPath) -> Result<RegistryKey> {
    let text = expect_string(node, path)?;
    RegistryKey::from_docker(text).map_err(|error| {
        let reason = match error {
            KeyError::Empty => "is empty",
            KeyError::BadCharacter(_) => "contains whitespace or control characters",
            KeyError::HasAt(_) => "contains '@'; name a registry host, not a user or digest",
            KeyError::HasTag(_) => "has a tag; name a registry, not an image",
            KeyError::HasScheme(_) => "has a scheme",
            KeyError::BadPort(_) => "has a port that is not a number from 1 to 65535",
            KeyError::UnsupportedScheme(_) => {
                "has a scheme other than https:// or http://; write the host, e.g. registry.example.com"
            }
        };
        problem(node.mark, path, format!("registry server {reason}"))
    })
}

fn decode_source(
    node: &Node,
    path: &FieldPath,
    context: &Context,
    has_vault: bool,
) -> Result<SourceConfig> {
    let fields = Fields::read(node, path, SOURCE_FIELDS)?;
    let mut chosen: Option<(&str, &Node)> = None;
    for (key, key_mark, value) in &fields.values {
        if let Some((first, _)) = chosen {
            return Err(problem(
                *key_mark,
                &path.key(key),
                format!("a registry has exactly one source; {first} is already given"),
            ));
        }
        chosen = Some((key, value));
    }
    let Some((kind, value)) = chosen else {
        return Err(problem(
            node.mark,
            path,
            format!("expected one source: {}", SOURCE_FIELDS.join(", ")),
        ));
    };
    let value_path = path.key(kind);
    let source = match kind {
        "dockerConfig" => SourceConfig::DockerConfig {
            path: decode_path(value, &value_path, context)?,
        },
        "dockercfg" => SourceConfig::Dockercfg {
            path: decode_path(value, &value_path, context)?,
        },
        "containersAuth" => SourceConfig::ContainersAuth {
            path: decode_path(value, &value_path, context)?,
        },
        "helper" => SourceConfig::Helper {
            name: decode_helper_name(value, &value_path)?,
        },
        _ if !has_vault => {
            return Err(problem(
                value.mark,
                &value_path,
                "a Vault source needs a top-level vault: block (address and auth)",
            ));
        }
        _ => SourceConfig::Vault(vault::decode_vault_source(value, &value_path)?),
    };
    Ok(source)
}

/// The `<name>` of `docker-credential-<name>`: a file name suffix, so no `/`.
fn decode_helper_name(node: &Node, path: &FieldPath) -> Result<String> {
    let name = expect_string(node, path)?;
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if !valid {
        return Err(problem(
            node.mark,
            path,
            "expected a credential helper name such as ecr-login (letters, digits, '-', '_', '.')",
        ));
    }
    Ok(name.to_string())
}

/// `~` and `~/…` become `$HOME/…`; relative paths start at the config file's directory.
fn decode_path(node: &Node, path: &FieldPath, context: &Context) -> Result<PathBuf> {
    let text = expect_string(node, path)?;
    if text.is_empty() {
        return Err(problem(node.mark, path, "the path is empty"));
    }
    let home_relative = match text.strip_prefix('~') {
        None => None,
        Some("") => Some(""),
        Some(rest) => match rest.strip_prefix('/') {
            Some(rest) => Some(rest),
            None => {
                return Err(problem(
                    node.mark,
                    path,
                    "~user paths are not supported; use ~/… or an absolute path",
                ));
            }
        },
    };
    let resolved = match home_relative {
        Some(rest) => home_dir(node, path, context)?.join(rest),
        None => context.base_dir.join(text),
    };
    Ok(without_cur_dir(&resolved))
}

fn home_dir<'c>(node: &Node, path: &FieldPath, context: &'c Context) -> Result<&'c Path> {
    match &context.home {
        Some(home) if home.is_absolute() => Ok(home),
        Some(_) => Err(problem(
            node.mark,
            path,
            "cannot expand ~: HOME is not an absolute path",
        )),
        None => Err(problem(node.mark, path, "cannot expand ~: HOME is not set")),
    }
}

/// Drops `.` components; `..` stays, since resolving it lexically can be wrong with symlinks.
fn without_cur_dir(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| *c != Component::CurDir)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// pullSecrets:

fn decode_pull_secrets(
    node: &Node,
    path: &FieldPath,
    registries: &Registries,
    scope: Option<&[String]>,
) -> Result<Vec<PullSecretConfig>> {
    let mut secrets = Vec::new();
    let mut seen_names: HashMap<String, usize> = HashMap::new();
    for (index, item) in expect_list(node, path)?.iter().enumerate() {
        let item_path = path.index(index);
        let (secret, name_mark) = decode_pull_secret(item, &item_path, registries, scope)?;
        if let Some(first) = seen_names.insert(secret.name.clone(), index) {
            return Err(problem(
                name_mark,
                &item_path.key("name"),
                format!("duplicate pull secret name; pullSecrets[{first}] has it already"),
            ));
        }
        secrets.push(secret);
    }
    Ok(secrets)
}

fn decode_pull_secret(
    node: &Node,
    path: &FieldPath,
    registries: &Registries,
    scope: Option<&[String]>,
) -> Result<(PullSecretConfig, Mark)> {
    let fields = Fields::read(node, path, PULL_SECRET_FIELDS)?;
    let name_node = fields.required("name")?;
    let name = expect_string(name_node, &path.key("name"))?.to_string();
    check_subdomain(&name, name_node.mark, &path.key("name"), "Secret name")?;
    let secret_type = match fields.get("type") {
        Some(node) => decode_secret_type(node, &path.key("type"))?,
        None => SecretType::DockerConfigJson,
    };
    let registry_names = decode_secret_registries(
        fields.required("registries")?,
        &path.key("registries"),
        registries,
    )?;
    let layout = match fields.get("layout") {
        Some(node) => expect_choice(
            node,
            &path.key("layout"),
            &[("combined", Layout::Combined), ("split", Layout::Split)],
        )?,
        None => Layout::default(),
    };
    let projects = decode_projects(fields.required("projects")?, &path.key("projects"), scope)?;
    let links = match fields.get("link") {
        Some(node) => decode_links(node, &path.key("link"))?,
        None => default_links(),
    };
    let rotation = match fields.get("rotation") {
        Some(node) => decode_rotation(node, &path.key("rotation"))?,
        None => Rotation::default(),
    };
    let adopt = match fields.get("adopt") {
        Some(node) => expect_bool(node, &path.key("adopt"))?,
        None => false,
    };
    let heal = match fields.get("heal") {
        Some(node) => expect_choice(
            node,
            &path.key("heal"),
            &[
                ("report", Heal::Report),
                ("restart", Heal::Restart),
                ("off", Heal::Off),
            ],
        )?,
        None => Heal::default(),
    };
    let secret = PullSecretConfig {
        name,
        secret_type,
        registries: registry_names,
        layout,
        projects,
        links,
        rotation,
        adopt,
        heal,
    };
    Ok((secret, name_node.mark))
}

fn decode_secret_type(node: &Node, path: &FieldPath) -> Result<SecretType> {
    let choices = [SecretType::DockerConfigJson, SecretType::Dockercfg];
    let named: Vec<(&str, SecretType)> = choices.iter().map(|t| (t.type_name(), *t)).collect();
    expect_choice(node, path, &named)
}

/// `link:` left out: what `oc secrets link default … --for=pull` and `builder … --for=mount`
/// would set up, as OpenShift's "Using image pull secrets" procedure does.
pub fn default_links() -> BTreeMap<String, Vec<LinkKind>> {
    BTreeMap::from([
        ("default".to_string(), vec![LinkKind::Pull]),
        ("builder".to_string(), vec![LinkKind::Mount]),
    ])
}

/// Registry names: at least one, all known, no repeats, no two for the same server.
fn decode_secret_registries(
    node: &Node,
    path: &FieldPath,
    registries: &Registries,
) -> Result<Vec<String>> {
    let items = expect_list(node, path)?;
    if items.is_empty() {
        return Err(problem(node.mark, path, "list at least one registry"));
    }
    let mut names: Vec<String> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_path = path.index(index);
        let name = expect_string(item, &item_path)?;
        let Some(registry) = registries.by_name.get(name) else {
            return Err(problem(
                item.mark,
                &item_path,
                format!(
                    "unknown registry {} (known: {})",
                    quoted(name),
                    known_names(&registries.names)
                ),
            ));
        };
        if names.iter().any(|n| n == name) {
            return Err(problem(
                item.mark,
                &item_path,
                format!("registry {} is listed twice", quoted(name)),
            ));
        }
        let same_server = names
            .iter()
            .find(|n| registries.by_name.get(*n).map(|r| &r.server) == Some(&registry.server));
        if let Some(other) = same_server {
            return Err(problem(
                item.mark,
                &item_path,
                format!(
                    "registry {} has the same server ({}) as {}; a pull secret holds one \
                     credential per server",
                    quoted(name),
                    registry.server,
                    quoted(other)
                ),
            ));
        }
        names.push(name.to_string());
    }
    Ok(names)
}

fn known_names(names: &[String]) -> String {
    if names.is_empty() {
        return "none; add it under registries:".to_string();
    }
    let mut shown: Vec<String> = names
        .iter()
        .take(MAX_LISTED_NAMES)
        .map(|n| n.to_string())
        .collect();
    if names.len() > MAX_LISTED_NAMES {
        shown.push(format!("and {} more", names.len() - MAX_LISTED_NAMES));
    }
    shown.join(", ")
}

fn decode_projects(
    node: &Node,
    path: &FieldPath,
    scope: Option<&[String]>,
) -> Result<ProjectSelection> {
    let fields = Fields::read(node, path, PROJECTS_FIELDS)?;
    let names = match fields.get("names") {
        Some(node) => decode_project_names(node, &path.key("names"), scope)?,
        None => Vec::new(),
    };
    let selector = match fields.get("selector") {
        Some(node) if scope.is_some() => {
            return Err(problem(
                node.mark,
                &path.key("selector"),
                "label selectors are not available in namespaced mode: namespace labels are \
                 not read there; list the projects under names",
            ));
        }
        Some(node) => Some(decode_selector(node, &path.key("selector"))?),
        None => None,
    };
    let exclude = match fields.get("exclude") {
        Some(node) => decode_globs(node, &path.key("exclude"))?,
        None => Vec::new(),
    };
    if names.is_empty() && selector.is_none() {
        return Err(problem(
            node.mark,
            path,
            "choose projects with names, a selector, or both",
        ));
    }
    Ok(ProjectSelection {
        names,
        selector,
        exclude,
    })
}

fn decode_project_names(
    node: &Node,
    path: &FieldPath,
    scope: Option<&[String]>,
) -> Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for (index, item) in expect_list(node, path)?.iter().enumerate() {
        let item_path = path.index(index);
        let name = expect_label(item, &item_path, "project name")?;
        check_in_scope(&name, scope, item.mark, &item_path)?;
        if names.contains(&name) {
            return Err(problem(
                item.mark,
                &item_path,
                format!("project {} is listed twice", quoted(&name)),
            ));
        }
        names.push(name);
    }
    Ok(names)
}

fn decode_selector(node: &Node, path: &FieldPath) -> Result<LabelSelector> {
    let text = expect_string(node, path)?;
    LabelSelector::parse(text)
        .map_err(|error| problem(node.mark, path, format!("invalid label selector: {error}")))
}

fn decode_globs(node: &Node, path: &FieldPath) -> Result<Vec<glob::Pattern>> {
    let mut patterns = Vec::new();
    for (index, item) in expect_list(node, path)?.iter().enumerate() {
        let item_path = path.index(index);
        let text = expect_string(item, &item_path)?;
        let pattern = glob::Pattern::new(text).map_err(|error| {
            problem(
                item.mark,
                &item_path,
                format!(
                    "invalid glob: {} (at character {})",
                    error.msg,
                    error.pos + 1
                ),
            )
        })?;
        patterns.push(pattern);
    }
    Ok(patterns)
}

fn decode_links(node: &Node, path: &FieldPath) -> Result<BTreeMap<String, Vec<LinkKind>>> {
    let mut links = BTreeMap::new();
    for entry in expect_map(node, path)? {
        let account = map_key(entry, path)?;
        let entry_path = path.key(account);
        check_subdomain(account, entry.key.mark, &entry_path, "service account name")?;
        let kinds = decode_link_kinds(&entry.value, &entry_path)?;
        links.insert(account.to_string(), kinds);
        if links.len() > crate::model::managed::MAX_LINKED_ACCOUNTS {
            return Err(problem(
                entry.key.mark,
                path,
                format!(
                    "at most {} service accounts per pull secret",
                    crate::model::managed::MAX_LINKED_ACCOUNTS
                ),
            ));
        }
    }
    Ok(links)
}

/// A list of `pull`/`mount`, or one string (`pull` or `pull,mount`, like `oc secrets link
/// --for`); case-insensitive, repeats dropped, order kept.
fn decode_link_kinds(node: &Node, path: &FieldPath) -> Result<Vec<LinkKind>> {
    let words: Vec<(&str, Mark, FieldPath)> = match &node.kind {
        NodeKind::List(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let item_path = path.index(i);
                expect_string(item, &item_path).map(|word| (word, item.mark, item_path))
            })
            .collect::<Result<_>>()?,
        _ => expect_string(node, path)?
            .split(',')
            .map(|word| (word, node.mark, path.clone()))
            .collect(),
    };
    if words.is_empty() {
        return Err(problem(node.mark, path, "list pull, mount or both"));
    }
    let mut kinds = Vec::new();
    for (word, mark, word_path) in words {
        let kind = match word.trim().to_ascii_lowercase().as_str() {
            "pull" => LinkKind::Pull,
            "mount" => LinkKind::Mount,
            _ => return Err(problem(mark, &word_path, "expected pull or mount")),
        };
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

fn decode_rotation(node: &Node, path: &FieldPath) -> Result<Rotation> {
    let fields = Fields::read(node, path, ROTATION_FIELDS)?;
    let defaults = Rotation::default();
    let refresh = match fields.get("refresh") {
        Some(node) => decode_duration(node, &path.key("refresh"))?,
        None => defaults.refresh,
    };
    let strategy = match fields.get("strategy") {
        Some(node) => expect_choice(
            node,
            &path.key("strategy"),
            &[
                ("in-place", RotationStrategy::InPlace),
                ("versioned", RotationStrategy::Versioned),
            ],
        )?,
        None => defaults.strategy,
    };
    let grace = match fields.get("grace") {
        Some(node) => decode_duration(node, &path.key("grace"))?,
        None => defaults.grace,
    };
    let keep = match fields.get("keep") {
        Some(node) => decode_count(node, &path.key("keep"))?,
        None => defaults.keep,
    };
    Ok(Rotation {
        refresh,
        strategy,
        grace,
        keep,
    })
}

/// A small non-negative whole number.
fn decode_count(node: &Node, path: &FieldPath) -> Result<usize> {
    const WANTED: &str = "expected a whole number from 0 to 100";
    node.scalar_text()
        .and_then(|text| text.parse::<usize>().ok())
        .filter(|n| *n <= 100)
        .ok_or_else(|| problem(node.mark, path, WANTED))
}

fn decode_duration(node: &Node, path: &FieldPath) -> Result<Duration> {
    const WANTED: &str = "expected a duration with a unit, such as 30s, 5m or 1h30m";
    let text = node
        .scalar_text()
        .ok_or_else(|| problem(node.mark, path, WANTED))?;
    let duration = humantime::parse_duration(text).map_err(|_| problem(node.mark, path, WANTED))?;
    if duration.is_zero() {
        return Err(problem(node.mark, path, "must be longer than zero"));
    }
    Ok(duration)
}

// ---------------------------------------------------------------------------------------------
// imagePullers:

fn decode_image_pullers(
    node: &Node,
    path: &FieldPath,
    pull_secrets: &[PullSecretConfig],
    scope: Option<&[String]>,
) -> Result<Vec<ImagePullerConfig>> {
    let mut pullers: Vec<ImagePullerConfig> = Vec::new();
    for (index, item) in expect_list(node, path)?.iter().enumerate() {
        let item_path = path.index(index);
        let fields = Fields::read(item, &item_path, IMAGE_PULLER_FIELDS)?;
        let project_node = fields.required("project")?;
        let project = expect_label(project_node, &item_path.key("project"), "project name")?;
        check_in_scope(
            &project,
            scope,
            project_node.mark,
            &item_path.key("project"),
        )?;
        if let Some(first) = pullers.iter().position(|p| p.project == project) {
            return Err(problem(
                project_node.mark,
                &item_path.key("project"),
                format!("project already listed in imagePullers[{first}]; merge the allow lists"),
            ));
        }
        let allow = match fields.get("allow") {
            Some(node) => decode_allow(node, &item_path.key("allow"), scope)?,
            None => Vec::new(),
        };
        let allow_projects_of = match fields.get("allowProjectsOf") {
            Some(node) => {
                decode_pull_secret_refs(node, &item_path.key("allowProjectsOf"), pull_secrets)?
            }
            None => Vec::new(),
        };
        if allow.is_empty() && allow_projects_of.is_empty() {
            return Err(problem(
                item.mark,
                &item_path.key("allow"),
                "required field is missing (give allow, allowProjectsOf, or both)",
            ));
        }
        pullers.push(ImagePullerConfig {
            project,
            allow,
            allow_projects_of,
        });
    }
    Ok(pullers)
}

/// Names of pull secrets defined above, without duplicates.
fn decode_pull_secret_refs(
    node: &Node,
    path: &FieldPath,
    pull_secrets: &[PullSecretConfig],
) -> Result<Vec<String>> {
    let items = expect_list(node, path)?;
    if items.is_empty() {
        return Err(problem(node.mark, path, "list at least one pull secret"));
    }
    let mut names: Vec<String> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_path = path.index(index);
        let name = expect_string(item, &item_path)?;
        if !pull_secrets.iter().any(|p| p.name == name) {
            let known: Vec<&str> = pull_secrets.iter().map(|p| p.name.as_str()).collect();
            let known = if known.is_empty() {
                "no pullSecrets are defined".to_string()
            } else {
                format!("known: {}", known.join(", "))
            };
            return Err(problem(
                item.mark,
                &item_path,
                format!("unknown pull secret {} ({known})", quoted(name)),
            ));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

fn decode_allow(
    node: &Node,
    path: &FieldPath,
    scope: Option<&[String]>,
) -> Result<Vec<PullerSubject>> {
    let items = expect_list(node, path)?;
    if items.is_empty() {
        return Err(problem(node.mark, path, "list at least one subject"));
    }
    let mut subjects = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_path = path.index(index);
        let text = expect_string(item, &item_path)?;
        let subject = parse_subject(text).map_err(|m| problem(item.mark, &item_path, m))?;
        let namespace = match &subject {
            PullerSubject::ServiceAccount { namespace, .. } => namespace,
            PullerSubject::ProjectServiceAccounts { project } => project,
        };
        check_in_scope(namespace, scope, item.mark, &item_path)?;
        if !subjects.contains(&subject) {
            subjects.push(subject);
        }
    }
    Ok(subjects)
}

/// `serviceaccount:<project>:<name>` or `group:<project>`, or the user and group names the
/// API server gives them (`system:serviceaccount:<project>:<name>`,
/// `system:serviceaccounts:<project>`), which is what `oc` and `kubectl` print.
fn parse_subject(text: &str) -> Result<PullerSubject, String> {
    const WANTED: &str = "expected serviceaccount:<project>:<name> (or \
                          system:serviceaccount:<project>:<name>) or group:<project> (or \
                          system:serviceaccounts:<project>)";
    let text = text.trim();
    let account = text
        .strip_prefix("system:serviceaccount:")
        .or_else(|| text.strip_prefix("serviceaccount:"));
    let group = text
        .strip_prefix("system:serviceaccounts:")
        .or_else(|| text.strip_prefix("group:"));
    if let Some(rest) = account {
        let (namespace, name) = rest.split_once(':').ok_or(WANTED)?;
        if let Some(reason) = dns1123_label_problem(namespace) {
            return Err(format!("{WANTED}; the project {reason}"));
        }
        if let Some(reason) = dns1123_subdomain_problem(name) {
            return Err(format!("{WANTED}; the service account name {reason}"));
        }
        return Ok(PullerSubject::ServiceAccount {
            namespace: namespace.to_string(),
            name: name.to_string(),
        });
    }
    if let Some(project) = group {
        if let Some(reason) = dns1123_label_problem(project) {
            return Err(format!("{WANTED}; the project {reason}"));
        }
        return Ok(PullerSubject::ProjectServiceAccounts {
            project: project.to_string(),
        });
    }
    Err(WANTED.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        assert_eq!(
            parse_subject("serviceaccount:project-a:default"),
            Ok(PullerSubject::ServiceAccount {
                namespace: "project-a".into(),
                name: "default".into()
            })
        );
        assert_eq!(
            parse_subject("group:project-a"),
            Ok(PullerSubject::ProjectServiceAccounts {
                project: "project-a".into()
            })
        );
        // As `oc policy add-role-to-user` and `oc get rolebinding -o wide` print them.
        assert_eq!(
            parse_subject("system:serviceaccount:project-a:default"),
            parse_subject("serviceaccount:project-a:default")
        );
        assert_eq!(
            parse_subject("system:serviceaccounts:project-a"),
            parse_subject("group:project-a")
        );
        for bad in [
            "system:serviceaccount:project-a",
            "system:serviceaccounts:",
            "system:authenticated",
            "serviceaccount:project-a",
            "serviceaccount::default",
            "serviceaccount:a:b:c",
            "group:",
            "group:Project",
            "user:alice",
            "project-a",
        ] {
            assert!(parse_subject(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn similar_fields() {
        assert_eq!(
            similar_field("pull_secrets", TOP_FIELDS),
            Some("pullSecrets")
        );
        assert_eq!(
            similar_field("ImagePullers", TOP_FIELDS),
            Some("imagePullers")
        );
        assert_eq!(similar_field("secrets", TOP_FIELDS), None);
    }

    #[test]
    fn paths_expand_home_and_resolve_relative() {
        let context = Context {
            base_dir: PathBuf::from("/etc/pullsecretd"),
            home: Some(PathBuf::from("/home/u")),
        };
        let node = |text: &str| Node {
            kind: NodeKind::Scalar(super::super::yaml::Scalar {
                text: text.to_string(),
                kind: ScalarKind::String,
            }),
            mark: Mark { line: 1, column: 1 },
        };
        let path = FieldPath::root().key("p");
        let cases = [
            ("~", "/home/u"),
            ("~/.docker/config.json", "/home/u/.docker/config.json"),
            ("auth.json", "/etc/pullsecretd/auth.json"),
            ("./sub/./auth.json", "/etc/pullsecretd/sub/auth.json"),
            ("../x", "/etc/pullsecretd/../x"),
            ("/abs/x", "/abs/x"),
        ];
        for (text, want) in cases {
            let got = decode_path(&node(text), &path, &context).expect(text);
            assert_eq!(got, PathBuf::from(want), "{text}");
        }
        let error = decode_path(&node("~bob/x"), &path, &context).expect_err("~bob");
        assert!(error.message.contains("~user"));

        let no_home = Context {
            home: None,
            ..context.clone()
        };
        let error = decode_path(&node("~/x"), &path, &no_home).expect_err("no HOME");
        assert_eq!(error.message, "cannot expand ~: HOME is not set");
        assert_eq!(error.path.to_string(), "p");
        let relative_home = Context {
            home: Some(PathBuf::from("home")),
            ..context
        };
        assert!(decode_path(&node("~"), &path, &relative_home).is_err());
    }
}
