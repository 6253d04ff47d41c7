//! Config loading end to end: fixture files in, a typed `Config` or a `file:line:column: path:`
//! error out. Reads fixtures and `$HOME`; never sets environment variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pullsecretd::config::{
    Config, ConfigError, Heal, ImagePullerConfig, Layout, LinkKind, ProjectSelection,
    PullSecretConfig, PullerSubject, RegistryConfig, Rotation, RotationStrategy, SecretType,
    SourceConfig,
};
use pullsecretd::model::credential::RegistryKey;
use pullsecretd::selector::LabelSelector;

const FIXTURES: &str = "tests/data/config";

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn fixtures_dir() -> PathBuf {
    std::path::absolute(FIXTURES).expect("the fixture directory has an absolute path")
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").expect("tests run with HOME set"))
}

fn key(server: &str) -> RegistryKey {
    RegistryKey::from_docker(server).expect("test servers are valid")
}

fn glob(pattern: &str) -> glob::Pattern {
    glob::Pattern::new(pattern).expect("test globs are valid")
}

/// The message for config `text`, as if it were in `config/x.yaml`.
fn error_for(text: &str) -> String {
    match Config::from_yaml(text, Path::new("config/x.yaml")) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(error) => error.to_string(),
    }
}

/// A valid config whose `pullSecrets[0]` body is `secret` (indented by four spaces).
fn with_secret(secret: &str) -> String {
    format!(
        "registries:\n  quay:\n    server: quay.io\n    from: {{ helper: quay }}\n  \
         sso:\n    server: sso.redhat.com\n    from: {{ helper: sso }}\n\
         pullSecrets:\n  - name: s\n{secret}"
    )
}

#[test]
fn full_config_decodes_into_the_expected_types() {
    let config = Config::load(&fixture("full.yaml")).expect("full.yaml is valid");

    let registries = BTreeMap::from([
        (
            "private-registry".to_string(),
            RegistryConfig {
                name: "private-registry".into(),
                server: key("privateregistry.example.com"),
                from: SourceConfig::DockerConfig {
                    path: home().join(".docker/config.json"),
                },
                verify: None,
            },
        ),
        (
            "redhat-sso".to_string(),
            RegistryConfig {
                name: "redhat-sso".into(),
                server: key("sso.redhat.com"),
                from: SourceConfig::ContainersAuth {
                    path: fixtures_dir().join("auth/auth.json"),
                },
                verify: None,
            },
        ),
        (
            "legacy".to_string(),
            RegistryConfig {
                name: "legacy".into(),
                server: key("index.docker.io"),
                from: SourceConfig::Dockercfg {
                    path: PathBuf::from("/etc/pullsecretd/.dockercfg"),
                },
                verify: None,
            },
        ),
        (
            "ecr".to_string(),
            RegistryConfig {
                name: "ecr".into(),
                server: key("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
                from: SourceConfig::Helper {
                    name: "ecr-login".into(),
                },
                verify: None,
            },
        ),
    ]);
    let first = PullSecretConfig {
        name: "private-registry".into(),
        secret_type: SecretType::Dockercfg,
        registries: vec!["private-registry".into(), "redhat-sso".into()],
        layout: Layout::Split,
        projects: ProjectSelection {
            names: vec!["project-a".into(), "project-b".into()],
            selector: Some(
                LabelSelector::parse("pullsecretd.io/inject=true, env notin (dev)")
                    .expect("valid selector"),
            ),
            exclude: vec![glob("openshift-*"), glob("kube-*")],
        },
        links: BTreeMap::from([
            ("default".into(), vec![LinkKind::Pull]),
            ("builder".into(), vec![LinkKind::Mount, LinkKind::Pull]),
            ("deployer".into(), vec![LinkKind::Pull, LinkKind::Mount]),
        ]),
        rotation: Rotation {
            refresh: Duration::from_secs(90 * 60),
            strategy: RotationStrategy::Versioned,
            ..Rotation::default()
        },
        adopt: true,
        heal: Heal::Report,
    };
    let second = PullSecretConfig {
        name: "ecr.pull".into(),
        secret_type: SecretType::DockerConfigJson,
        registries: vec!["ecr".into(), "legacy".into()],
        layout: Layout::Combined,
        projects: ProjectSelection {
            names: vec![],
            selector: Some(LabelSelector::parse("").expect("empty selector")),
            exclude: vec![],
        },
        links: BTreeMap::new(),
        rotation: Rotation::default(),
        adopt: false,
        heal: Heal::Report,
    };
    let pullers = vec![ImagePullerConfig {
        project: "project-b".into(),
        allow: vec![
            PullerSubject::ServiceAccount {
                namespace: "project-a".into(),
                name: "default".into(),
            },
            PullerSubject::ProjectServiceAccounts {
                project: "project-a".into(),
            },
        ],
        allow_projects_of: vec![],
    }];

    assert_eq!(config.registries, registries);
    assert_eq!(config.pull_secrets, vec![first, second]);
    assert_eq!(config.image_pullers, pullers);
}

#[test]
fn omitted_fields_take_their_defaults() {
    let config = Config::load(&fixture("minimal.yaml")).expect("minimal.yaml is valid");
    let secret = &config.pull_secrets[0];
    assert_eq!(secret.secret_type, SecretType::DockerConfigJson);
    assert_eq!(secret.layout, Layout::Combined);
    assert_eq!(
        secret.links,
        BTreeMap::from([
            ("default".to_string(), vec![LinkKind::Pull]),
            ("builder".to_string(), vec![LinkKind::Mount]),
        ])
    );
    assert_eq!(secret.links, PullSecretConfig::default_links());
    assert_eq!(
        secret.rotation,
        Rotation {
            refresh: Duration::from_secs(300),
            strategy: RotationStrategy::InPlace,
            grace: Duration::from_secs(600),
            keep: 2,
        }
    );
    assert!(!secret.adopt);
    assert_eq!(secret.projects.selector, None);
    assert!(secret.projects.exclude.is_empty());
    assert!(config.image_pullers.is_empty());
    assert_eq!(
        config.registries["quay"].from,
        SourceConfig::DockerConfig {
            path: fixtures_dir().join("docker/config.json"),
        }
    );
}

#[test]
fn explicit_nulls_count_as_omitted() {
    let text = with_secret(
        "    registries: [quay]\n    projects: { names: [a], selector: ~ }\n    link:\n    rotation: ~\n",
    );
    let config = Config::from_yaml(&text, Path::new("x.yaml")).expect("valid");
    assert_eq!(
        config.pull_secrets[0].links,
        PullSecretConfig::default_links()
    );
    assert_eq!(config.pull_secrets[0].rotation, Rotation::default());
}

#[test]
fn fixture_errors_name_file_line_column_and_field() {
    let cases = [
        (
            "syntax-error.yaml",
            "tests/data/config/syntax-error.yaml:5:12: registries.quay.from: YAML syntax error: \
             while parsing a flow mapping, did not find expected ',' or '}'",
        ),
        (
            "unknown-registry.yaml",
            "tests/data/config/unknown-registry.yaml:13:9: pullSecrets[0].registries[1]: \
             unknown registry \"nope\" (known: quay, redhat-sso)",
        ),
        (
            "vault.yaml",
            "tests/data/config/vault.yaml:2:3: vault.auth: required field is missing",
        ),
    ];
    for (name, want) in cases {
        let error = Config::load(&fixture(name)).expect_err(name);
        assert_eq!(error.to_string(), want, "{name}");
    }
}

#[test]
fn every_error_class_names_line_column_and_field() {
    let cases: Vec<(String, &str)> = vec![
        // Wrong types.
        (
            "registries: []\n".into(),
            "config/x.yaml:1:13: registries: expected a mapping, found a list",
        ),
        (
            "registries:\n  quay:\n    server: 443\n    from: { helper: q }\n".into(),
            "config/x.yaml:3:13: registries.quay.server: expected a string, found a number \
             (put it in quotes to make it a string)",
        ),
        (
            with_secret("    registries: [quay]\n    projects: { names: [a] }\n    adopt: yes\n"),
            "config/x.yaml:12:12: pullSecrets[0].adopt: expected true or false, found a string",
        ),
        // Unknown fields.
        (
            "registries: {}\npull_secrets: []\n".into(),
            "config/x.yaml:2:1: pull_secrets: unknown field; did you mean pullSecrets?",
        ),
        (
            with_secret("    registries: [quay]\n    projects: { names: [a], namespaces: [b] }\n"),
            "config/x.yaml:11:29: pullSecrets[0].projects.namespaces: unknown field (expected \
             one of: names, selector, exclude)",
        ),
        (
            "registries:\n  q:\n    server: quay.io\n    from: { vault: { path: x } }\n".into(),
            "config/x.yaml:4:20: registries.q.from.vault: a Vault source needs a top-level \
             vault: block (address and auth)",
        ),
        // Missing required fields.
        (
            "registries:\n  quay:\n    from: { helper: quay }\n".into(),
            "config/x.yaml:3:5: registries.quay.server: required field is missing",
        ),
        (
            with_secret("    registries: [quay]\n"),
            "config/x.yaml:9:5: pullSecrets[0].projects: required field is missing",
        ),
        // Bad enum values.
        (
            with_secret("    type: Opaque\n    registries: [quay]\n    projects: { names: [a] }\n"),
            "config/x.yaml:10:11: pullSecrets[0].type: expected one of \
             kubernetes.io/dockerconfigjson, kubernetes.io/dockercfg",
        ),
        (
            with_secret(
                "    registries: [quay]\n    projects: { names: [a] }\n    rotation: { strategy: inplace }\n",
            ),
            "config/x.yaml:12:27: pullSecrets[0].rotation.strategy: expected one of in-place, \
             versioned",
        ),
        (
            with_secret(
                "    registries: [quay]\n    projects: { names: [a] }\n    link: { default: [pull, push] }\n",
            ),
            "config/x.yaml:12:29: pullSecrets[0].link.default[1]: expected pull or mount",
        ),
        // Bad durations.
        (
            with_secret(
                "    registries: [quay]\n    projects: { names: [a] }\n    rotation: { refresh: 300 }\n",
            ),
            "config/x.yaml:12:26: pullSecrets[0].rotation.refresh: expected a duration with a \
             unit, such as 30s, 5m or 1h30m",
        ),
        (
            with_secret(
                "    registries: [quay]\n    projects: { names: [a] }\n    rotation: { refresh: 0s }\n",
            ),
            "config/x.yaml:12:26: pullSecrets[0].rotation.refresh: must be longer than zero",
        ),
        // Bad selectors and globs.
        (
            with_secret("    registries: [quay]\n    projects: { selector: \"env in (a b)\" }\n"),
            "config/x.yaml:11:27: pullSecrets[0].projects.selector: invalid label selector: \
             character 11: expected a value, `,` or `)` in the value list",
        ),
        (
            with_secret(
                "    registries: [quay]\n    projects: { names: [a], exclude: [\"kube-[\"] }\n",
            ),
            "config/x.yaml:11:39: pullSecrets[0].projects.exclude[0]: invalid glob: invalid \
             range pattern (at character 6)",
        ),
        // References and duplicates.
        (
            with_secret("    registries: [quay, quay]\n    projects: { names: [a] }\n"),
            "config/x.yaml:10:24: pullSecrets[0].registries[1]: registry \"quay\" is listed twice",
        ),
        (
            "registries:\n  a: { server: quay.io, from: { helper: a } }\n  \
             b: { server: \"https://quay.io/v2/\", from: { helper: b } }\n\
             pullSecrets:\n  - name: s\n    registries: [a, b]\n    projects: { names: [p] }\n"
                .into(),
            "config/x.yaml:6:21: pullSecrets[0].registries[1]: registry \"b\" has the same \
             server (quay.io) as \"a\"; a pull secret holds one credential per server",
        ),
        (
            format!(
                "{}  - name: s\n    registries: [sso]\n    projects: {{ names: [a] }}\n",
                with_secret("    registries: [quay]\n    projects: { names: [a] }\n")
            ),
            "config/x.yaml:12:11: pullSecrets[1].name: duplicate pull secret name; \
             pullSecrets[0] has it already",
        ),
        (
            "imagePullers:\n  - project: b\n    allow: [group:a]\n  - project: b\n    allow: [group:c]\n"
                .into(),
            "config/x.yaml:4:14: imagePullers[1].project: project already listed in \
             imagePullers[0]; merge the allow lists",
        ),
        (
            "registries: {}\nregistries: {}\n".into(),
            "config/x.yaml:2:1: registries: duplicate key; it is already set on line 1",
        ),
        // Invalid names and values.
        (
            with_secret("    registries: [quay]\n    projects: { names: [Project_A] }\n"),
            "config/x.yaml:11:25: pullSecrets[0].projects.names[0]: not a valid project name \
             (a DNS-1123 label): may contain only lowercase letters, digits and '-'",
        ),
        (
            "registries: {}\npullSecrets:\n  - name: My-Secret\n    registries: []\n".into(),
            "config/x.yaml:3:11: pullSecrets[0].name: not a valid Secret name (a DNS-1123 \
             subdomain): may contain only lowercase letters, digits, '-' and '.'",
        ),
        (
            "registries:\n  Quay.io:\n    server: quay.io\n    from: { helper: q }\n".into(),
            "config/x.yaml:2:3: registries[\"Quay.io\"]: not a valid registry name (a DNS-1123 \
             label): may contain only lowercase letters, digits and '-'",
        ),
        (
            "registries:\n  q:\n    server: \"quay.io:99999\"\n    from: { helper: q }\n".into(),
            "config/x.yaml:3:13: registries.q.server: registry server has a port that is not a \
             number from 1 to 65535",
        ),
        (
            "registries:\n  q:\n    server: quay.io\n    from: { helper: q, dockerConfig: x }\n"
                .into(),
            "config/x.yaml:4:24: registries.q.from.dockerConfig: a registry has exactly one \
             source; helper is already given",
        ),
        (
            "registries:\n  q:\n    server: quay.io\n    from: {}\n".into(),
            "config/x.yaml:4:11: registries.q.from: expected one source: dockerConfig, \
             dockercfg, containersAuth, helper, vault",
        ),
        (
            "registries:\n  q:\n    server: quay.io\n    from: { helper: ../../bin/sh }\n".into(),
            "config/x.yaml:4:21: registries.q.from.helper: expected a credential helper name \
             such as ecr-login (letters, digits, '-', '_', '.')",
        ),
        (
            with_secret("    registries: [quay]\n    projects: { exclude: [\"kube-*\"] }\n"),
            "config/x.yaml:11:15: pullSecrets[0].projects: choose projects with names, a \
             selector, or both",
        ),
        (
            "imagePullers:\n  - project: b\n    allow: [\"user:alice\"]\n".into(),
            "config/x.yaml:3:13: imagePullers[0].allow[0]: expected \
             serviceaccount:<project>:<name> (or system:serviceaccount:<project>:<name>) or \
             group:<project> (or system:serviceaccounts:<project>)",
        ),
        // A scheme docker does not strip is named as such, not as a bad port.
        (
            "registries:\n  quay:\n    server: ftp://registry.example.com\n    from: { helper: q }\n"
                .into(),
            "config/x.yaml:3:13: registries.quay.server: registry server has a scheme other \
             than https:// or http://; write the host, e.g. registry.example.com",
        ),
        // `from:` one level too far left is reported on its own line, not at the registry.
        (
            "registries:\n  quay:\n    server: quay.io\n  from: { helper: q }\n".into(),
            "config/x.yaml:4:3: registries.from: from is a field of a registry, not a registry \
             name: it is indented one level too far left; indent it under the registry above it",
        ),
        // A field meant to go under an empty `from:`.
        (
            "registries:\n  quay:\n    server: quay.io\n    from:\n    helper: q\n".into(),
            "config/x.yaml:5:5: registries.quay.helper: unknown field (expected one of: server, \
             from, verify); from: on line 4 has no value: if helper belongs under it, indent it further",
        ),
        (
            "imagePullers:\n  - project: b\n    allowProjectsOf: [nope]\n".into(),
            "config/x.yaml:3:23: imagePullers[0].allowProjectsOf[0]: unknown pull secret \"nope\" \
             (no pullSecrets are defined)",
        ),
        (
            "imagePullers:\n  - project: b\n".into(),
            "config/x.yaml:2:5: imagePullers[0].allow: required field is missing (give allow, \
             allowProjectsOf, or both)",
        ),
        (
            "".into(),
            "config/x.yaml:1:1: (top level): the config is empty; expected a mapping with \
             registries and pullSecrets",
        ),
        (
            "- a\n".into(),
            "config/x.yaml:1:1: (top level): expected a mapping, found a list",
        ),
    ];
    for (text, want) in &cases {
        assert_eq!(error_for(text), *want, "config:\n{text}");
    }
}

#[test]
fn errors_never_echo_scalar_values() {
    let secret = "s3cr3t-Passw0rd-value";
    let texts = [
        format!("registries:\n  q:\n    server: \"{secret} x\"\n    from: {{ helper: q }}\n"),
        with_secret(&format!(
            "    type: {secret}\n    registries: [quay]\n    projects: {{ names: [a] }}\n"
        )),
        with_secret(&format!(
            "    registries: [quay]\n    projects: {{ names: [a] }}\n    adopt: {secret}\n"
        )),
        with_secret(&format!(
            "    registries: [quay]\n    projects: {{ names: [a] }}\n    rotation: {{ refresh: {secret} }}\n"
        )),
        with_secret(&format!(
            "    registries: [quay]\n    projects: {{ selector: \"a={secret}!\" }}\n"
        )),
        format!("imagePullers:\n  - project: b\n    allow: [\"{secret}\"]\n"),
    ];
    for text in &texts {
        let message = error_for(text);
        assert!(!message.contains(secret), "{message}");
    }
}

#[test]
fn home_and_relative_paths_are_resolved() {
    let text = "registries:\n  a:\n    server: a.example\n    from: { dockerConfig: \"~\" }\n  \
                b:\n    server: b.example\n    from: { dockercfg: ../b/.dockercfg }\n";
    let config = Config::from_yaml(text, Path::new("/etc/pullsecretd/config.yaml")).expect("valid");
    assert_eq!(
        config.registries["a"].from,
        SourceConfig::DockerConfig { path: home() }
    );
    assert_eq!(
        config.registries["b"].from,
        SourceConfig::Dockercfg {
            path: PathBuf::from("/etc/pullsecretd/../b/.dockercfg"),
        }
    );
}

#[test]
fn file_problems_name_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");

    let missing = dir.path().join("missing.yaml");
    let error = Config::load(&missing).expect_err("missing file");
    assert!(matches!(error, ConfigError::ReadFile { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}: cannot read config: ", missing.display()))
    );

    let error = Config::load(dir.path()).expect_err("a directory");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: is a directory, not a regular file",
            dir.path().display()
        )
    );

    let big = dir.path().join("big.yaml");
    let comment_line = format!("#{}\n", "x".repeat(1023));
    std::fs::write(&big, comment_line.repeat(1025)).expect("write big file");
    let error = Config::load(&big).expect_err("too large");
    assert_eq!(
        error.to_string(),
        format!("{}: config is larger than 1048576 bytes", big.display())
    );

    let error = Config::load(&fixture("not-utf8.yaml")).expect_err("not UTF-8");
    assert_eq!(
        error.to_string(),
        "tests/data/config/not-utf8.yaml:4:29: config is not valid UTF-8"
    );
}

/// A namespaced-mode config: `namespaces: [team-a, team-b]` before the pull secrets and image
/// pullers in `rest`.
fn namespaced(rest: &str) -> String {
    format!(
        "namespaces: [team-a, team-b]\nregistries:\n  quay:\n    server: quay.io\n    \
         from: {{ helper: quay }}\n{rest}"
    )
}

#[test]
fn namespaced_mode_reads_its_namespaces() {
    let text = namespaced(
        "pullSecrets:\n  - name: s\n    registries: [quay]\n    \
         projects: { names: [team-b], exclude: [x-*] }\n\
         imagePullers:\n  - project: team-a\n    \
         allow: [group:team-b, serviceaccount:team-a:builder]\n    allowProjectsOf: [s]\n",
    );
    let config = Config::from_yaml(&text, Path::new("config/x.yaml")).expect("valid");
    assert_eq!(
        config.namespaces,
        Some(vec!["team-a".to_string(), "team-b".to_string()])
    );
    assert_eq!(config.pull_secrets[0].projects.names, ["team-b"]);
    assert_eq!(config.image_pullers[0].project, "team-a");
    // Without namespaces: the whole cluster, as before.
    let cluster_wide = text.replacen("namespaces: [team-a, team-b]\n", "", 1);
    let config = Config::from_yaml(&cluster_wide, Path::new("config/x.yaml")).expect("valid");
    assert_eq!(config.namespaces, None);
}

#[test]
fn namespaced_mode_refuses_what_it_cannot_do() {
    let secret = |projects: &str| {
        namespaced(&format!(
            "pullSecrets:\n  - name: s\n    registries: [quay]\n    projects: {projects}\n"
        ))
    };
    let puller = |body: &str| {
        namespaced(&format!(
            "pullSecrets:\n  - name: s\n    registries: [quay]\n    projects: {{ names: [team-a] }}\n\
             imagePullers:\n  - {body}\n"
        ))
    };
    let too_many: Vec<String> = (0..=pullsecretd::config::MAX_NAMESPACES)
        .map(|i| format!("ns-{i}"))
        .collect();
    let cases: Vec<(String, String)> = vec![
        (
            "namespaces: []\nregistries: {}\n".into(),
            "config/x.yaml:1:13: namespaces: list at least one namespace, or leave namespaces \
             out to manage the whole cluster"
                .into(),
        ),
        (
            "namespaces: team-a\nregistries: {}\n".into(),
            "config/x.yaml:1:13: namespaces: expected a list, found a string".into(),
        ),
        (
            "namespaces: [team-a, Team-B]\nregistries: {}\n".into(),
            "config/x.yaml:1:22: namespaces[1]: not a valid namespace name (a DNS-1123 label): \
             may contain only lowercase letters, digits and '-'"
                .into(),
        ),
        (
            "namespaces: [team-a, team-b, team-a]\nregistries: {}\n".into(),
            "config/x.yaml:1:30: namespaces[2]: namespace \"team-a\" is listed twice".into(),
        ),
        (
            format!("namespaces: [{}]\nregistries: {{}}\n", too_many.join(", ")),
            format!(
                "config/x.yaml:1:13: namespaces: at most {} namespaces; for more, leave \
                 namespaces out and grant cluster-wide access",
                pullsecretd::config::MAX_NAMESPACES
            ),
        ),
        (
            secret("{ selector: \"team=x\" }"),
            "config/x.yaml:9:27: pullSecrets[0].projects.selector: label selectors are not \
             available in namespaced mode: namespace labels are not read there; list the \
             projects under names"
                .into(),
        ),
        (
            secret("{ names: [team-a, team-c] }"),
            "config/x.yaml:9:33: pullSecrets[0].projects.names[1]: namespace \"team-c\" is not \
             in namespaces: in namespaced mode pullsecretd reads and writes only the namespaces \
             listed there; add it to namespaces"
                .into(),
        ),
        (
            puller("project: other\n    allow: [group:team-a]"),
            "config/x.yaml:11:14: imagePullers[0].project: namespace \"other\" is not in \
             namespaces: in namespaced mode pullsecretd reads and writes only the namespaces \
             listed there; add it to namespaces"
                .into(),
        ),
        (
            puller("project: team-a\n    allow: [group:team-b, serviceaccount:other:default]"),
            "config/x.yaml:12:27: imagePullers[0].allow[1]: namespace \"other\" is not in \
             namespaces: in namespaced mode pullsecretd reads and writes only the namespaces \
             listed there; add it to namespaces"
                .into(),
        ),
        (
            puller("project: team-a\n    allow: [group:other]"),
            "config/x.yaml:12:13: imagePullers[0].allow[0]: namespace \"other\" is not in \
             namespaces: in namespaced mode pullsecretd reads and writes only the namespaces \
             listed there; add it to namespaces"
                .into(),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(error_for(&text), want, "for:\n{text}");
    }
}

#[test]
fn shards_are_read_and_bounded_like_the_flag() {
    let config = Config::from_yaml("shards: 3\nregistries: {}\n", Path::new("config/x.yaml"))
        .expect("valid");
    assert_eq!(config.shards, Some(3));
    let unset = Config::from_yaml("registries: {}\n", Path::new("config/x.yaml")).expect("valid");
    assert_eq!(unset.shards, None);
    for text in ["0", "1025", "three", "-1", "[3]"] {
        assert_eq!(
            error_for(&format!("shards: {text}\nregistries: {{}}\n")),
            "config/x.yaml:1:9: shards: expected a whole number of shards from 1 to 1024",
            "for shards: {text}"
        );
    }
}
