//! Harnesses that know pullsecretd: the library-level kube-sim fixture ([`cluster`]), kube-sim
//! with a kubeconfig for the binary ([`kube`]), the binary as a process ([`process`]), the
//! invariant sweeper ([`invariants`]) and the one way tests seed kube-sim ([`seed`]).

pub mod cluster;
pub mod invariants;
pub mod kube;
pub mod process;
pub mod seed;
