//! Test harnesses (dev-only): the real servers pullsecretd's tests and benchmark run against,
//! each on a free loopback port and gone when dropped — OpenBao ([`openbao`], the one place
//! that finds its binary), the Debian `docker-registry` with htpasswd or token auth
//! ([`registry`], [`token_server`], [`jwt`]), PostgreSQL ([`postgres`]) — and the one way
//! tests wait ([`poll`]). Only 127.0.0.1 is ever contacted. A missing tool fails a test; it
//! never skips it (`scripts/test` installs them).

pub mod jwt;
pub mod openbao;
pub mod poll;
pub mod postgres;
pub mod registry;
pub mod token_server;
