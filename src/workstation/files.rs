//! Workstation mode, files (pure apart from reading the auth files): which docker/podman auth
//! files a developer's tools write, and the default config built from what they hold.
//!
//! Must not touch the cluster or read a credential for anything but listing registries; a
//! file that vanished or does not parse keeps the registries it last had.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::config::{Config, ConfigError};
use crate::credhelper::protocol::HELPER_NAME;
use crate::dockerconfig::{AuthFile, AuthFileFormat, Lookup};
use crate::model::credential::RegistryKey;
use crate::source::docker_file::read_auth_file;

/// An auth file workstation mode watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedFile {
    pub path: PathBuf,
    pub format: AuthFileFormat,
}

/// The files real tools write, in the order their registries take precedence:
/// `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`), `$REGISTRY_AUTH_FILE`,
/// `$XDG_RUNTIME_DIR/containers/auth.json`, and the legacy `~/.dockercfg`.
pub fn standard_files(env: impl Fn(&str) -> Option<OsString>) -> Vec<WatchedFile> {
    let var = |name| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let home = var("HOME");
    let mut files = Vec::new();
    let docker_dir = var("DOCKER_CONFIG").or_else(|| home.as_ref().map(|h| h.join(".docker")));
    if let Some(dir) = docker_dir {
        files.push(WatchedFile {
            path: dir.join("config.json"),
            format: AuthFileFormat::DockerConfig,
        });
    }
    if let Some(path) = var("REGISTRY_AUTH_FILE") {
        files.push(WatchedFile {
            path,
            format: AuthFileFormat::ContainersAuth,
        });
    }
    if let Some(dir) = var("XDG_RUNTIME_DIR") {
        files.push(WatchedFile {
            path: dir.join("containers/auth.json"),
            format: AuthFileFormat::ContainersAuth,
        });
    }
    if let Some(home) = home {
        files.push(WatchedFile {
            path: home.join(".dockercfg"),
            format: AuthFileFormat::Dockercfg,
        });
    }
    let mut seen = BTreeSet::new();
    files.retain(|f| seen.insert(f.path.clone()));
    files
}

/// The registries an auth file names (host only), leaving out those it hands to pullsecretd's
/// own helper: serving them from here would ask pullsecretd itself.
pub fn registries_in(file: &AuthFile) -> Vec<RegistryKey> {
    let mut keys = BTreeSet::new();
    let stored = file
        .keys()
        .chain(file.cred_helpers().keys().map(String::as_str));
    for key in stored {
        let parsed = match file.format() {
            AuthFileFormat::ContainersAuth if !key.contains("://") => {
                RegistryKey::from_containers(key)
            }
            _ => RegistryKey::from_docker(key),
        };
        let Ok(parsed) = parsed else {
            continue;
        };
        let host = parsed.host_only();
        let ours =
            matches!(file.lookup(&host), Lookup::Helper { helper, .. } if helper == HELPER_NAME);
        if !ours {
            keys.insert(host);
        }
    }
    keys.into_iter().collect()
}

/// The default config `workstation` would use now, from one read of `files`: the credential
/// helper's fallback when there is neither a config file nor an agent. `Ok(None)` when no file
/// names a registry; the files' errors otherwise, if nothing could be read.
pub fn default_config_now(files: &[WatchedFile]) -> Result<Option<Config>, String> {
    let mut registries = FileRegistries::default();
    let problems = registries.reload(files);
    match registries.default_config(files, "default") {
        Ok(None) if !problems.is_empty() => Err(problems.join("; ")),
        Ok(config) => Ok(config),
        Err(error) => Err(error.to_string()),
    }
}

/// The registries each watched file named when it last parsed.
#[derive(Debug, Default)]
pub struct FileRegistries {
    last_good: BTreeMap<PathBuf, Vec<RegistryKey>>,
}

impl FileRegistries {
    /// Reads each file again. A file that reads and parses replaces what it named before; one
    /// that is missing, unreadable or half-written keeps it. Returns the errors (they name the
    /// file and, for syntax errors, the line and column).
    pub fn reload(&mut self, files: &[WatchedFile]) -> Vec<String> {
        let mut problems = Vec::new();
        for file in files {
            match read_auth_file(&file.path, file.format) {
                Ok(parsed) => {
                    self.last_good
                        .insert(file.path.clone(), registries_in(&parsed));
                }
                Err(crate::source::Error::ReadAuthFile { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound
                        && !self.last_good.contains_key(&file.path) => {}
                Err(error) => problems.push(error.to_string()),
            }
        }
        problems
    }

    /// The default config: one pull secret per registry (named after its host, holding that
    /// registry alone) in `namespace`, linked to the `default` service account for pulls. A
    /// registry named by several files is read from the first. `None` when no file names one.
    pub fn default_config(
        &self,
        files: &[WatchedFile],
        namespace: &str,
    ) -> Result<Option<Config>, ConfigError> {
        let mut registries = serde_json::Map::new();
        let mut pull_secrets = Vec::new();
        let mut taken = BTreeSet::new();
        let mut names = BTreeSet::new();
        for file in files {
            let Some(keys) = self.last_good.get(&file.path) else {
                continue;
            };
            for key in keys {
                if !taken.insert(key.clone()) {
                    continue;
                }
                let name = unique_name(&object_name(key), &mut names);
                registries.insert(
                    name.clone(),
                    json!({"server": key.auths_key(), "from": {source_key(file.format): file.path}}),
                );
                pull_secrets.push(json!({
                    "name": name,
                    "registries": [name],
                    "projects": {"names": [namespace]},
                    "link": {"default": ["pull"]},
                }));
            }
        }
        if pull_secrets.is_empty() {
            return Ok(None);
        }
        // JSON is YAML: the default goes through the same validation as a config file.
        let text = json!({"registries": Value::Object(registries), "pullSecrets": pull_secrets})
            .to_string();
        Config::from_yaml(&text, Path::new("(workstation default config)")).map(Some)
    }
}

fn source_key(format: AuthFileFormat) -> &'static str {
    match format {
        AuthFileFormat::DockerConfig => "dockerConfig",
        AuthFileFormat::Dockercfg => "dockercfg",
        AuthFileFormat::ContainersAuth => "containersAuth",
    }
}

/// A DNS-1123 label for a registry: its host, lowercased, other characters as `-`
/// (`127.0.0.1:5000` → `127-0-0-1-5000`; Docker Hub → `docker-io`).
pub fn object_name(key: &RegistryKey) -> String {
    let mut name: String = key
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(56);
    let name = name.trim_matches('-');
    if name.is_empty() {
        "registry".to_string()
    } else {
        name.to_string()
    }
}

fn unique_name(base: &str, names: &mut BTreeSet<String>) -> String {
    let mut name = base.to_string();
    let mut n = 2;
    while !names.insert(name.clone()) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerconfig::parse_auth_file;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn standard_files_follow_the_environment() {
        let files = standard_files(env(&[
            ("HOME", "/h"),
            ("DOCKER_CONFIG", "/d"),
            ("REGISTRY_AUTH_FILE", "/r/auth.json"),
            ("XDG_RUNTIME_DIR", "/run/user/7"),
        ]));
        let paths: Vec<&Path> = files.iter().map(|f| f.path.as_path()).collect();
        assert_eq!(
            paths,
            [
                Path::new("/d/config.json"),
                Path::new("/r/auth.json"),
                Path::new("/run/user/7/containers/auth.json"),
                Path::new("/h/.dockercfg"),
            ]
        );
        let files = standard_files(env(&[("HOME", "/h")]));
        assert_eq!(files[0].path, Path::new("/h/.docker/config.json"));
        assert_eq!(files.len(), 2);
    }

    #[test]
    fn registries_leave_out_those_served_by_pullsecretd_itself() {
        let file = parse_auth_file(
            AuthFileFormat::DockerConfig,
            br#"{"auths": {"https://index.docker.io/v1/": {"auth": "dTpw"}, "quay.io": {},
                 "127.0.0.1:5000": {"auth": "dTpw"}},
                 "credHelpers": {"quay.io": "pullsecretd", "ghcr.io": "desktop"}}"#,
        )
        .expect("parses");
        let names: Vec<String> = registries_in(&file).iter().map(object_name).collect();
        assert_eq!(names, ["127-0-0-1-5000", "ghcr-io", "docker-io"]);
    }

    #[test]
    fn a_vanished_or_half_written_file_keeps_its_registries_and_says_where() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.json");
        let files = [WatchedFile {
            path: path.clone(),
            format: AuthFileFormat::DockerConfig,
        }];
        let mut registries = FileRegistries::default();
        // Not there yet: nothing to say, nothing to sync.
        assert!(registries.reload(&files).is_empty());
        assert!(
            registries
                .default_config(&files, "dev")
                .expect("valid")
                .is_none()
        );
        std::fs::write(&path, r#"{"auths": {"quay.io": {"auth": "dTpw"}}}"#).expect("write");
        assert!(registries.reload(&files).is_empty());
        let config = registries
            .default_config(&files, "dev")
            .expect("valid")
            .expect("some");
        assert_eq!(config.pull_secrets[0].name, "quay-io");
        assert_eq!(config.pull_secrets[0].projects.names, ["dev"]);

        std::fs::write(&path, "{\"auths\": {\n  \"quay.io\": {\"au").expect("half");
        let problems = registries.reload(&files);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains(&path.display().to_string()),
            "{}",
            problems[0]
        );
        assert!(problems[0].contains("line 2"), "{}", problems[0]);
        std::fs::remove_file(&path).expect("delete");
        assert_eq!(registries.reload(&files).len(), 1);
        let kept = registries
            .default_config(&files, "dev")
            .expect("valid")
            .expect("kept");
        assert_eq!(kept, config);
    }

    #[test]
    fn names_are_labels_and_unique() {
        let mut names = BTreeSet::new();
        assert_eq!(unique_name("a", &mut names), "a");
        assert_eq!(unique_name("a", &mut names), "a-2");
        let long =
            RegistryKey::from_docker(&format!("{}.example.com", "x".repeat(80))).expect("key");
        assert!(object_name(&long).len() <= 63);
    }
}
