//! The integration tests: one binary (one link on a 2-core machine instead of twenty), one
//! module per area, shared harnesses in [`support`] and in the `pullsecretd-testkit` crate.
//! They run against real parts: kube-sim over HTTPS with the real `kube::Client` and
//! `kubectl`, a real OpenBao, the Debian registry with `skopeo`, PostgreSQL. Only loopback
//! addresses are contacted.

mod support;

mod architecture;
mod cli;
mod cli_cluster;
mod config;
mod config_vault;
mod credential_helper;
mod credential_lifecycle;
mod credential_provider;
mod daemon;
mod daemon_rbac;
mod deploy;
mod dynamic_secrets_harness;
mod faults;
mod first_hour;
mod hardening_children;
mod hardening_files;
mod namespaced;
mod once;
mod openshift;
mod other_writers;
mod pipeline;
mod pods;
mod properties;
mod rbac_rules;
mod rbac_rules_namespaced;
mod registry;
mod registry_token;
mod run_cli;
mod safety;
mod shards;
mod sources;
mod status;
mod trace_leaks;
mod vault;
mod vault_kubernetes;
mod vault_tls;
mod verified_rotation;
mod version_names;
mod workstation;
