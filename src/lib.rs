//! pullsecretd keeps container-registry pull secrets where they are needed.
//!
//! Everything it does is one pipeline, run by different triggers:
//!
//! ```text
//!  sources ──► credentials ──► plan (pure) ──► output / diff ──► apply (kube I/O)
//!  docker files   Credential     desired Secrets,
//!  cred helpers   per registry   SA links, RoleBindings
//! ```
//!
//! - [`config`]: YAML → validated [`config::Config`], errors with file:line:column.
//! - [`dockerconfig`]: docker/containers auth file parsing and pull-secret payloads (pure).
//! - [`model`]: the pure floor: managed-object rules, instance identity and ownership, rotation
//!   naming.
//! - [`names`]: Kubernetes object-name rules (pure).
//! - [`selector`]: label selectors (pure).
//! - [`source`]: reads credentials from Vault/OpenBao, docker config files and credential
//!   helpers, and keeps each registry's last good one (I/O).
//! - [`plan`]: sources in, desired objects out (pure: no I/O, no clock).
//! - [`diff`]: desired vs observed objects → ordered, minimal actions (pure).
//! - [`cluster`]: reads the cluster and applies actions (kube I/O).
//! - [`reconcile`]: one pass against a cluster: observe, plan, diff, apply.
//! - [`daemon`]: `run`: watches, source timers, config reload and leader election drive
//!   per-namespace reconciles from watch caches.
//! - [`telemetry`]: logs, Prometheus metrics and the health/readiness/metrics listener.
//! - [`render`]: the plan as a table for people and as manifests for `kubectl`/`oc`.
//! - [`watch`]: one debounced file watcher (the daemon's config, workstation's auth files).
//! - [`workstation`]: `workstation`: auth-file changes drive the same pass as `once`.
//! - [`credhelper`]: `credential-helper`: the docker credential-helper protocol and the agent
//!   socket that serves it from one process.

pub mod cluster;
pub mod config;
pub mod credhelper;
pub mod daemon;
pub mod diff;
pub mod dockerconfig;
pub mod model;
pub mod names;
pub mod plan;
pub mod reconcile;
pub mod render;
pub mod selector;
pub mod source;
pub mod telemetry;
pub mod watch;
pub mod workstation;
