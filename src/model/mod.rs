//! The model floor (pure): rules every stage shares and no stage owns. Nothing here does I/O or
//! imports a module above it.
//!
//! - [`credential`]: credentials, registry keys and their normalisation, `Resolved` (a
//!   credential with its version).
//! - [`desired`]: desired Secrets, links and RoleBindings, held Secrets and problems; the
//!   pull-secret types and link kinds they are made of.
//! - [`expiry`]: credential lifetimes: expiry fields, when to read, renew and revoke.
//! - [`heal`]: pods stuck for want of a Secret pullsecretd linked, and Secrets pods still name.
//! - [`links`]: service-account list editing and its order.
//! - [`managed`]: the labels and annotations pullsecretd writes, instance identity and the proof
//!   of ownership every write and delete is checked against.
//! - [`manifest`]: desired objects as k8s-openapi Secrets and RoleBindings.
//! - [`outcome`]: what a pass did, as data (changes, failures, held Secrets).
//! - [`rotation`]: versioned Secret names (one suffix rule).
//! - [`shard`]: a namespace's shard, and when a replica takes, asks for or gives up a shard.

pub mod credential;
pub mod desired;
pub mod expiry;
pub mod heal;
pub mod links;
pub mod managed;
pub mod manifest;
pub mod outcome;
pub mod rotation;
pub mod shard;
