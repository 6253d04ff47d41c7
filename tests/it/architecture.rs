//! The shape of the code, checked: reads the `crate::`/`super::` paths of every library file
//! under src/ (unit-test modules left out) and fails if the module graph has a cycle, if a pure
//! module (the model floor, plan, diff, render, and the pure helpers) imports an I/O module,
//! or if the model floor imports anything above it. A child declared and re-exported by its
//! parent (`mod.rs`) is structure, not an import: only child → parent edges count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that must not do I/O, and so must not import a module that does.
const PURE: &[&str] = &[
    "model",
    "plan",
    "diff",
    "render",
    "names",
    "selector",
    "status",
    "dockerconfig",
    "credhelper::protocol",
];

/// Modules that talk to the outside world (or orchestrate those that do).
const IO: &[&str] = &[
    "source",
    "cluster",
    "daemon",
    "workstation",
    "credhelper",
    "reconcile",
    "telemetry",
    "watch",
    "regular_file",
    "private_fs",
];

/// Files of the binary crate, not the library: they import the library as `pullsecretd::`.
fn is_binary_file(relative: &Path) -> bool {
    relative == Path::new("main.rs")
        || relative == Path::new("cli.rs")
        || relative.starts_with("commands")
}

fn source_files(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            source_files(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).expect("under src/").to_path_buf();
            if !is_binary_file(&relative) {
                out.push(relative);
            }
        }
    }
}

/// `model/managed.rs` → `model::managed`; `cluster/mod.rs` → `cluster`; `lib.rs` → ``.
fn module_of(relative: &Path) -> String {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

/// The file's code without `//` comments and without its unit-test modules.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path the code names through `crate::` or `super::`, braces of `use` groups expanded
/// (`crate::{a::b, c}` → `crate::a::b`, `crate::c`).
fn paths_in(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for start in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(at) = rest.find(start) {
            let before = rest[..at].chars().last();
            rest = &rest[at..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                rest = &rest[start.len()..];
                continue;
            }
            let path_len = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let path = &rest[..path_len];
            if rest[path_len..].starts_with('{') {
                let group_end = rest[path_len..]
                    .find('}')
                    .map_or(rest.len(), |e| path_len + e);
                for item in rest[path_len + 1..group_end].split(',') {
                    let item = item.split_whitespace().next().unwrap_or_default();
                    if !item.is_empty() && item != "self" {
                        paths.push(format!("{path}{item}"));
                    } else if item == "self" {
                        paths.push(path.trim_end_matches("::").to_string());
                    }
                }
            } else {
                paths.push(path.to_string());
            }
            rest = &rest[path_len.max(1)..];
        }
    }
    paths
}

/// Names a module re-exports from its children (`pub use child::{a, b}` in a `mod.rs`), as
/// (module, name) → the child that defines it: an import of `crate::cluster::ClusterView`
/// depends on `cluster::view`, not merely on `cluster`.
type Reexports = BTreeMap<(String, String), String>;

fn reexports_of(module: &str, code: &str, reexports: &mut Reexports) {
    for statement in code.split(';') {
        let Some(rest) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((child, names)) = rest.split_once("::") else {
            continue;
        };
        if child == "crate" || child == "super" || child.contains(char::is_uppercase) {
            continue;
        }
        let names = names.trim().trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',') {
            let name = name.trim().rsplit("::").next().unwrap_or_default().trim();
            if !name.is_empty() {
                let full = if module.is_empty() {
                    child.to_string()
                } else {
                    format!("{module}::{child}")
                };
                reexports.insert((module.to_string(), name.to_string()), full);
            }
        }
    }
}

/// The module a path names: its longest prefix that is a module (relative to `module` for
/// `super::`), or the child a name is re-exported from.
fn target_module(
    path: &str,
    module: &str,
    modules: &BTreeSet<String>,
    reexports: &Reexports,
) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut words = path.split("::").filter(|w| !w.is_empty());
    match words.next() {
        Some("crate") => {}
        Some("super") => {
            // In `a/b.rs` (module `a::b`) `super` is `a`; in `a/mod.rs` (module `a`) the root.
            let mut base: Vec<&str> = module.split("::").filter(|w| !w.is_empty()).collect();
            base.pop();
            segments.extend(base);
        }
        _ => return String::new(),
    }
    let mut more: Vec<&str> = words.collect();
    while more.first() == Some(&"super") {
        more.remove(0);
        segments.pop();
    }
    segments.extend(more);
    for len in (1..=segments.len()).rev() {
        let candidate = segments[..len].join("::");
        if modules.contains(&candidate) {
            if let Some(name) = segments.get(len)
                && let Some(child) = reexports.get(&(candidate.clone(), (*name).to_string()))
            {
                return child.clone();
            }
            return candidate;
        }
    }
    String::new()
}

fn is_within(module: &str, area: &str) -> bool {
    module == area || module.starts_with(&format!("{area}::"))
}

fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&root, &root, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let codes: Vec<(String, String)> = files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(root.join(file)).expect("source readable");
            (module_of(file), code_of(&text))
        })
        .collect();
    let mut reexports = Reexports::new();
    for (module, code) in &codes {
        reexports_of(module, code, &mut reexports);
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in &codes {
        let module = module.clone();
        let targets = graph.entry(module.clone()).or_default();
        for path in paths_in(code) {
            let target = target_module(&path, &module, &modules, &reexports);
            // Self, the crate root, and a parent's own children (declaration, re-export).
            if target.is_empty() || target == module || is_within(&target, &module) {
                continue;
            }
            targets.insert(target);
        }
    }
    graph
}

/// A cycle through `start`, if any (depth-first).
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(node).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut seen = BTreeSet::new();
    walk(graph, start, start, &mut path, &mut seen).then_some(path)
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = import_graph();
    assert!(graph.len() > 30, "too few modules read: {:?}", graph.keys());
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_from(&graph, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn pure_modules_import_no_io_module_and_the_model_floor_nothing_above_it() {
    let graph = import_graph();
    let mut violations = Vec::new();
    for (module, targets) in &graph {
        let pure = PURE.iter().any(|p| is_within(module, p));
        for target in targets {
            let io = IO.iter().any(|area| is_within(target, area))
                && !PURE.iter().any(|p| is_within(target, p));
            if pure && io {
                violations.push(format!("{module} imports {target} (I/O)"));
            }
            if is_within(module, "model") && !is_within(target, "model") {
                violations.push(format!("{module} imports {target} (above the model floor)"));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_checker_sees_paths_in_groups_and_relative_to_super() {
    let modules: BTreeSet<String> = ["cluster", "cluster::apply", "model", "model::managed"]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
    let paths = paths_in("use crate::{model::managed::labels, cluster};\nlet x = super::Throttle;");
    assert_eq!(
        paths,
        [
            "crate::model::managed::labels",
            "crate::cluster",
            "super::Throttle"
        ]
    );
    let mut reexports = Reexports::new();
    reexports_of(
        "cluster",
        "pub use apply::{ApplyOptions, Change};",
        &mut reexports,
    );
    assert_eq!(
        target_module("crate::model::managed::labels", "x", &modules, &reexports),
        "model::managed"
    );
    assert_eq!(
        target_module("super::Throttle", "cluster::apply", &modules, &reexports),
        "cluster"
    );
    assert_eq!(
        target_module("crate::cluster::Change", "x", &modules, &reexports),
        "cluster::apply",
        "a re-exported name is its child's"
    );
    // A cycle is found; a parent's declared children are not edges.
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("a".into());
    assert!(cycle_from(&graph, "a").is_some());
    graph.entry("b".into()).or_default().clear();
    assert!(cycle_from(&graph, "a").is_none());
}
