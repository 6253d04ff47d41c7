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
//! - [`credential`]: the credential model and registry-key normalisation (pure).
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
//! - [`workstation`]: `workstation`: auth-file changes drive the same pass as `once`.
//! - [`helper_protocol`]: `credential-helper`: the docker credential-helper protocol.
//! - [`agent`]: the workstation's credential service and its private unix socket.

pub mod agent;
pub mod cluster;
pub mod config;
pub mod credential;
pub mod daemon;
pub mod diff;
pub mod dockerconfig;
pub mod helper_protocol;
pub mod model;
pub mod names;
pub mod plan;
pub mod reconcile;
pub mod render;
pub mod selector;
pub mod source;
pub mod telemetry;
pub mod workstation;
