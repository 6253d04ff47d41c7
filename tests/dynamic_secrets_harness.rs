//! The harness for leased dynamic Vault secrets, proven against the real parts: a private
//! PostgreSQL server (tests/support/postgres.rs), OpenBao's database secrets engine issuing
//! leased logins on it (tests/support/openbao.rs), and `psql` logging in with them.

#[path = "support/postgres.rs"]
mod postgres;

use postgres::{Postgres, SUPERUSER};

#[test]
fn private_postgres_accepts_its_superuser_password_only() {
    let pg = Postgres::start();
    assert!(pg.can_login(SUPERUSER, pg.superuser_password()));
    assert!(!pg.can_login(SUPERUSER, "not-the-password"));
    // Loopback only: the server listens on 127.0.0.1 and nothing else.
    assert_eq!(pg.query("SHOW listen_addresses"), "127.0.0.1");
    assert_eq!(pg.query("SHOW password_encryption"), "scram-sha-256");
}
