//! The harness for leased dynamic Vault secrets, proven against the real parts: a private
//! PostgreSQL server (tests/it/support/postgres.rs), OpenBao's database secrets engine issuing
//! leased logins on it (tests/it/support/openbao.rs), `psql` logging in with them, OpenBao's lease
//! list and its audit log. Also the registry fixture for verified rotation
//! (tests/it/support/registry.rs): a password changed while the registry runs, and the registry's
//! access log of `/v2/` checks.
//!
//! These tests prove the harness, not pullsecretd: they must fail if the harness reports
//! something the real servers did not do. Waits are for events with a deadline, never a fixed
//! sleep followed by an assertion on speed.

use pullsecretd_testkit::openbao;
use pullsecretd_testkit::postgres;
use pullsecretd_testkit::registry;

use std::time::Duration;

use secrecy::ExposeSecret as _;

use openbao::{
    DatabaseConnection, DatabaseCredential, DatabaseRole, LeaseAction, OpenBao,
    POSTGRES_CREATION_STATEMENTS,
};
use postgres::{Postgres, SUPERUSER};
use registry::Registry;

const MOUNT: &str = "database";
const CONNECTION: &str = "pg";
const ROLE: &str = "app";
/// Where OpenBao keeps the leases of `database/creds/app`.
const LEASE_PREFIX: &str = "database/creds/app/";

/// A PostgreSQL server and an OpenBao whose database engine issues logins on it.
struct Fixture {
    pg: Postgres,
    bao: OpenBao,
}

/// Starts both servers, connects them, and creates [`ROLE`] with these TTLs (seconds).
async fn fixture(default_ttl_seconds: u64, max_ttl_seconds: u64) -> Fixture {
    let pg = Postgres::start();
    let bao = OpenBao::start().await;
    bao.enable_database(MOUNT).await;
    bao.configure_postgres_connection(&DatabaseConnection {
        mount: MOUNT,
        name: CONNECTION,
        connection_url: &pg.templated_connection_url(),
        username: SUPERUSER,
        password: pg.superuser_password(),
        allowed_roles: &[ROLE],
    })
    .await;
    bao.create_database_role(&DatabaseRole {
        mount: MOUNT,
        name: ROLE,
        db_name: CONNECTION,
        creation_statements: POSTGRES_CREATION_STATEMENTS,
        default_ttl_seconds,
        max_ttl_seconds,
    })
    .await;
    Fixture { pg, bao }
}

impl Fixture {
    async fn credential(&self) -> DatabaseCredential {
        self.bao.database_credential(MOUNT, ROLE).await
    }

    fn can_login(&self, credential: &DatabaseCredential) -> bool {
        self.pg
            .can_login(&credential.username, credential.password.expose_secret())
    }
}

/// Polls `check` every 100 ms until it holds; panics after `limit` naming `what`.
async fn eventually(limit: Duration, what: &str, check: impl AsyncFnMut() -> bool) {
    pullsecretd_testkit::poll::eventually_async(limit, what, check).await;
}

#[test]
fn private_postgres_accepts_its_superuser_password_only() {
    let pg = Postgres::start();
    assert!(pg.can_login(SUPERUSER, pg.superuser_password()));
    assert!(!pg.can_login(SUPERUSER, "not-the-password"));
    // Loopback only: the server listens on 127.0.0.1 and nothing else.
    assert_eq!(pg.query("SHOW listen_addresses"), "127.0.0.1");
    assert_eq!(pg.query("SHOW password_encryption"), "scram-sha-256");
}

#[tokio::test]
async fn a_creds_read_is_a_working_postgres_login_with_a_lease() {
    let fx = fixture(300, 600).await;
    let credential = fx.credential().await;

    assert!(
        credential.lease_id.starts_with(LEASE_PREFIX),
        "{credential:?}"
    );
    assert_eq!(credential.lease_duration, 300);
    assert!(credential.renewable);
    assert!(fx.pg.role_exists(&credential.username));
    assert!(
        fx.can_login(&credential),
        "the issued credential does not log in:\n{}",
        fx.pg.log()
    );
    // The login check can fail: the same user with another password is refused.
    assert!(!fx.pg.can_login(&credential.username, "wrong-password"));
    // The role's own expiry is the lease's (VALID UNTIL from `{{expiration}}`).
    let valid_until = fx
        .pg
        .role_valid_until(&credential.username)
        .expect("VALID UNTIL set");
    let now = unix_now();
    assert!(
        (now + 200..=now + 400).contains(&valid_until),
        "VALID UNTIL {valid_until}, now {now}"
    );

    // A second read is a second user with its own lease.
    let second = fx.credential().await;
    assert_ne!(second.username, credential.username);
    assert_ne!(second.lease_id, credential.lease_id);
    assert!(fx.can_login(&second));
}

#[tokio::test]
async fn the_lease_shows_in_the_lease_list_with_its_ttl() {
    let fx = fixture(300, 600).await;
    assert_eq!(fx.bao.list_leases(LEASE_PREFIX).await, Vec::<String>::new());

    let first = fx.credential().await;
    let second = fx.credential().await;
    let mut listed = fx.bao.list_leases(LEASE_PREFIX).await;
    listed.sort();
    let mut expected = vec![first.lease_id.clone(), second.lease_id.clone()];
    expected.sort();
    assert_eq!(listed, expected);

    let lease = fx
        .bao
        .lookup_lease(&first.lease_id)
        .await
        .expect("lease lookup");
    assert_eq!(lease.id, first.lease_id);
    assert!(lease.renewable);
    assert!(
        (1..=300).contains(&lease.ttl),
        "ttl {} of a 300 s lease",
        lease.ttl
    );
    assert!(!lease.issue_time.is_empty() && !lease.expire_time.is_empty());
    assert_eq!(lease.last_renewal, None);
}

#[tokio::test]
async fn renewal_extends_the_lease_and_the_postgres_role() {
    let fx = fixture(60, 900).await;
    let credential = fx.credential().await;
    let before = fx
        .bao
        .lookup_lease(&credential.lease_id)
        .await
        .expect("lookup");
    let valid_before = fx
        .pg
        .role_valid_until(&credential.username)
        .expect("VALID UNTIL");

    let renewal = fx
        .bao
        .renew_lease(&credential.lease_id, Some(600))
        .await
        .expect("renew");
    assert_eq!(renewal.lease_id, credential.lease_id);
    assert_eq!(renewal.lease_duration, 600);
    assert!(renewal.renewable);

    let after = fx
        .bao
        .lookup_lease(&credential.lease_id)
        .await
        .expect("lookup");
    assert!(
        after.ttl > before.ttl + 400,
        "ttl {} -> {} after renewing for 600 s",
        before.ttl,
        after.ttl
    );
    assert!(after.expire_time > before.expire_time);
    assert!(after.last_renewal.is_some());
    // OpenBao moved the role's VALID UNTIL too (the plugin's renewal statement).
    let valid_after = fx
        .pg
        .role_valid_until(&credential.username)
        .expect("VALID UNTIL");
    assert!(
        valid_after >= valid_before + 500,
        "VALID UNTIL {valid_before} -> {valid_after}"
    );
    assert!(fx.can_login(&credential));

    // No renewal goes past max_ttl (900 s from issue).
    let capped = fx
        .bao
        .renew_lease(&credential.lease_id, Some(5000))
        .await
        .expect("renew");
    assert!(
        capped.lease_duration <= 900,
        "renewed past max_ttl: {}",
        capped.lease_duration
    );
}

#[tokio::test]
async fn revocation_drops_the_postgres_role() {
    let fx = fixture(300, 600).await;
    let credential = fx.credential().await;
    let kept = fx.credential().await;
    assert!(fx.can_login(&credential));

    fx.bao
        .revoke_lease(&credential.lease_id)
        .await
        .expect("revoke");
    assert!(
        !fx.pg.role_exists(&credential.username),
        "the role is still there"
    );
    assert!(!fx.can_login(&credential), "login works after revocation");
    assert!(fx.bao.lookup_lease(&credential.lease_id).await.is_err());
    assert_eq!(
        fx.bao.list_leases(LEASE_PREFIX).await,
        vec![kept.lease_id.clone()]
    );
    // Only that lease: the other credential still works.
    assert!(fx.can_login(&kept));
}

#[tokio::test]
async fn a_three_second_credential_stops_working_after_expiry() {
    let fx = fixture(3, 3).await;
    let credential = fx.credential().await;
    assert_eq!(credential.lease_duration, 3);
    assert!(
        fx.can_login(&credential),
        "a fresh 3 s credential does not log in:\n{}",
        fx.pg.log()
    );

    eventually(
        Duration::from_secs(30),
        "the expired credential is refused",
        async || !fx.can_login(&credential),
    )
    .await;
    // OpenBao's expiration manager revoked the lease, which dropped the role.
    eventually(
        Duration::from_secs(30),
        "the expired lease is revoked and its role dropped",
        async || {
            fx.bao.list_leases(LEASE_PREFIX).await.is_empty()
                && !fx.pg.role_exists(&credential.username)
        },
    )
    .await;
    assert!(fx.bao.lookup_lease(&credential.lease_id).await.is_err());
}

#[tokio::test]
async fn the_audit_log_shows_renew_and_revoke_requests() {
    let fx = fixture(300, 600).await;
    let credential = fx.credential().await;
    let other = fx.credential().await;

    fx.bao
        .renew_lease(&credential.lease_id, Some(120))
        .await
        .expect("renew");
    // The id in the path instead of the body: logged in clear.
    fx.bao
        .api(
            "PUT",
            &format!("sys/leases/renew/{}", credential.lease_id),
            None,
        )
        .await;
    fx.bao
        .renew_lease(&other.lease_id, None)
        .await
        .expect("renew");
    fx.bao
        .revoke_lease(&credential.lease_id)
        .await
        .expect("revoke");
    // Renewing a revoked lease fails, and the log says so.
    assert!(
        fx.bao
            .renew_lease(&credential.lease_id, None)
            .await
            .is_err()
    );

    let requests = fx.bao.lease_requests_for(&credential.lease_id).await;
    let actions: Vec<LeaseAction> = requests.iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        [
            LeaseAction::Renew,
            LeaseAction::Renew,
            LeaseAction::Revoke,
            LeaseAction::Renew
        ],
        "{requests:#?}"
    );
    assert!(requests.iter().all(|r| r.answered), "{requests:#?}");
    let errors: Vec<bool> = requests.iter().map(|r| r.error.is_some()).collect();
    assert_eq!(errors, [false, false, false, true], "{requests:#?}");
    // In the body the id is hashed, in the path it is not.
    assert!(
        requests[0].lease.starts_with("hmac-sha256:"),
        "{requests:#?}"
    );
    assert_eq!(requests[1].lease, credential.lease_id);

    let others = fx.bao.lease_requests_for(&other.lease_id).await;
    assert_eq!(others.len(), 1, "{others:#?}");
    assert_eq!(others[0].action, LeaseAction::Renew);

    // The audit log never holds an issued password in clear.
    let log = std::fs::read_to_string(fx.bao.audit_log()).expect("audit log");
    assert!(!log.contains(credential.password.expose_secret()));
    assert!(!log.contains(other.password.expose_secret()));
    assert!(!log.contains(fx.pg.superuser_password()));
}

#[tokio::test]
async fn the_registry_takes_a_changed_password_while_running_and_logs_each_v2_check() {
    let old = "SENTINEL-old-registry-pw-5d1e";
    let new = "SENTINEL-new-registry-pw-a83c";
    let registry = Registry::start_logged(&[("robot", old), ("other", "other-pw")]);
    let pid = registry.pid();
    assert_eq!(registry.check_v2("robot", old).await, 200);
    assert_eq!(registry.check_v2("robot", new).await, 401);

    registry.set_password("robot", new);
    assert_eq!(registry.check_v2("robot", new).await, 200);
    assert_eq!(registry.check_v2("robot", old).await, 401);
    // The other account is untouched, and it is the same process: no restart.
    assert_eq!(registry.check_v2("other", "other-pw").await, 200);
    assert_eq!(registry.pid(), pid);

    // A change right after the registry re-read the file is seen too (set_password makes
    // the mtime differ even within one clock tick).
    registry.set_password("robot", old);
    assert_eq!(registry.check_v2("robot", old).await, 200);
    registry.set_password("robot", new);
    assert_eq!(registry.check_v2("robot", new).await, 200);

    // The access log has every check with its status, 401s included; lines are written after
    // the response, so wait for all of them.
    let expected = [200, 401, 200, 401, 200, 200, 200];
    eventually(
        Duration::from_secs(10),
        "seven /v2/ checks in the access log",
        async || registry.v2_checks().len() >= expected.len(),
    )
    .await;
    let checks = registry.v2_checks();
    let statuses: Vec<u16> = checks.iter().map(|c| c.status).collect();
    assert_eq!(statuses, expected, "{checks:#?}");
    assert!(checks.iter().all(|c| c.method == "GET" && c.uri == "/v2/"));
    // Neither log holds a password.
    for log in [registry.access_log_text(), registry.app_log()] {
        assert!(!log.contains(old) && !log.contains(new));
    }
}

fn unix_now() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_secs()).expect("seconds fit")
}
