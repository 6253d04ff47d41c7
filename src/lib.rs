//! pullsecretd keeps container-registry pull secrets where they are needed.
//!
//! Everything it does is one pipeline, [`reconcile`], run by four triggers (`once`, `plan
//! --cluster`, the `run` daemon, `workstation`):
//!
//! ```text
//!  source ──► credentials ──► plan ───────► diff ──────────► apply
//!  Vault,     model::         desired       steps in safe    cluster::apply:
//!  files,     credential      Secrets,      order, against   writes, Events,
//!  helpers    per registry    links,        a ClusterView    outcomes as data
//!                             bindings      (list or cache)
//! ```
//!
//! Layout, bottom up (an arrow only points down; `tests/it/architecture.rs` checks it):
//!
//! - The pure floor, [`model`]: credentials, desired objects, managed-object rules and
//!   ownership, rotation naming and retention, link editing, manifests, outcomes.
//! - Pure stages and helpers: [`config`] (YAML → validated config, errors with
//!   file:line:column), [`dockerconfig`] (auth files in, payloads out), [`names`],
//!   [`selector`], [`plan`] (config + credentials + namespaces → desired objects, no clock),
//!   [`diff`] (desired vs observed → steps; `now` passed in), [`render`] (tables, files and
//!   summaries for people and tools), [`status`] (what the cluster holds of this instance and
//!   what pullsecretd said about it).
//! - I/O: [`source`] (Vault/OpenBao, files, helpers; the last good credential; one credential
//!   service per process), [`cluster`] (views of the cluster, apply, Lease), [`watch`] (files),
//!   [`telemetry`] (logs, metrics, health); [`regular_file`] (config, auth, token and CA files
//!   are opened only when they are regular files, so a FIFO in their place cannot block);
//!   [`private_fs`] (directories and files only this user can change: `plan --output`, the
//!   agent socket's directory).
//! - The pipeline and its triggers: [`reconcile`], [`daemon`] (`run`), [`workstation`],
//!   [`credhelper`] (the docker credential-helper protocol and its agent socket).
//!
//! The binary (`src/main.rs`, `src/cli.rs`, `src/commands/`) parses arguments, lowers them into
//! these, and maps outcomes to exit statuses. The facts the code relies on are in `docs/`.

pub mod cluster;
pub mod config;
pub mod credhelper;
pub mod credprovider;
pub mod daemon;
pub mod diff;
pub mod dockerconfig;
pub mod model;
pub mod names;
pub mod plan;
pub mod private_fs;
pub mod reconcile;
pub mod regular_file;
pub mod render;
pub mod selector;
pub mod source;
pub mod status;
pub mod telemetry;
pub mod watch;
pub mod workstation;
