//! Credential lifetimes (pure): what a credential says about when it stops working, and when to
//! read, renew and let go of it so that no Secret ever carries it past that moment.
//!
//! A fixed `rotation.refresh` either hammers a source or hands out expired credentials. Where a
//! credential's end is knowable — a Vault lease, a KV v2 `custom_metadata` field
//! [`EXPIRES_AT_KEY`], the `exp` claim of a JWT used as the password — the next read is planned
//! before it, whatever `refresh` says. Must not do I/O, read a clock or draw randomness: `now`
//! and the jitter (a number in `[0, 1)`) are passed in, so every rule here is testable.

use std::time::{Duration, SystemTime};

use base64::Engine as _;

/// The KV v2 `custom_metadata` key holding the credential's expiry, RFC 3339
/// (`2026-12-02T15:00:00Z`).
pub const EXPIRES_AT_KEY: &str = "expires_at";

/// A credential with a known end is read again at this fraction of its remaining life...
const READ_AT: f64 = 2.0 / 3.0;
/// ...minus up to this fraction more (jitter), so replicas and registries spread out.
const READ_JITTER: f64 = 0.1;
/// A lease is renewed at this fraction of its TTL (minus the same jitter): early enough that a
/// renewal which hits the lease's max TTL still leaves two thirds of a TTL for reading a new
/// credential, publishing it and the old one's grace.
const RENEW_AT: f64 = 1.0 / 3.0;
/// Never plan reads closer together than this: a source whose expiry is (nearly) now is read
/// again on the failure backoff, not in a busy loop.
pub const MIN_READ_GAP: Duration = Duration::from_secs(1);
/// A renewal granting less than the increment asked for, by more than this, has hit the lease's
/// max TTL (Vault's own lifetime watcher uses the same test).
const RENEWAL_SLACK: Duration = Duration::from_secs(1);

/// The `expires_at` custom metadata of a KV v2 secret, if set and a valid RFC 3339 time.
pub fn parse_expires_at(text: &str) -> Option<SystemTime> {
    let timestamp: k8s_openapi::jiff::Timestamp = text.trim().parse().ok()?;
    Some(SystemTime::from(timestamp))
}

/// The `exp` claim of `token` when it is a JWT (`header.payload.signature`, base64url JSON);
/// `None` for anything else. The signature is not checked: the expiry only decides when to read
/// the source again, never whether the credential is trusted.
pub fn jwt_expiry(token: &str) -> Option<SystemTime> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(exp))
}

/// The earlier of two optional expiries.
pub fn earliest(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<SystemTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How long until `expires_at`; zero when it has passed.
pub fn remaining(expires_at: SystemTime, now: SystemTime) -> Duration {
    expires_at.duration_since(now).unwrap_or_default()
}

/// How long after a good read the source is read again: `refresh`, or sooner when the
/// credential expires — at [`READ_AT`] of its remaining life, minus up to [`READ_JITTER`] more —
/// but never sooner than [`MIN_READ_GAP`].
pub fn next_read_after(
    refresh: Duration,
    expires_at: Option<SystemTime>,
    now: SystemTime,
    jitter: f64,
) -> Duration {
    let Some(expires_at) = expires_at else {
        return refresh;
    };
    let fraction = READ_AT - READ_JITTER * jitter.clamp(0.0, 1.0);
    remaining(expires_at, now)
        .mul_f64(fraction)
        .max(MIN_READ_GAP)
        .min(refresh)
}

/// Time allowed for publishing a new credential and writing it into the Secrets.
const PUBLISH_MARGIN: Duration = Duration::from_secs(1);

/// When to read again a credential whose lease can no longer be renewed (max TTL reached, or
/// renewals failing): as [`next_read_after`], but also early enough that the old lease outlives
/// the switch by the rotation `grace` — Secrets and pods may still use it until then.
pub fn lease_read_after(
    refresh: Duration,
    expires_at: SystemTime,
    grace: Duration,
    now: SystemTime,
    jitter: f64,
) -> Duration {
    let by_fraction = next_read_after(refresh, Some(expires_at), now, jitter);
    let latest = remaining(expires_at, now).saturating_sub(grace + PUBLISH_MARGIN);
    by_fraction.min(latest.max(MIN_READ_GAP))
}

/// How long after a lease was granted (or renewed) for `ttl` it is renewed again.
pub fn renew_after(ttl: Duration, jitter: f64) -> Duration {
    let fraction = RENEW_AT * (1.0 - READ_JITTER * jitter.clamp(0.0, 1.0));
    ttl.mul_f64(fraction).max(Duration::from_millis(200))
}

/// True when a renewal that asked for `requested` and got `granted` has reached the lease's max
/// TTL: renewing cannot keep the credential alive any longer, so a new one must be read.
pub fn renewal_capped(requested: Duration, granted: Duration) -> bool {
    granted + RENEWAL_SLACK < requested
}

/// Whether a replaced lease may be revoked: no Secret has carried its credential since
/// `unused_since`, and the rotation `grace` has passed since then.
pub fn may_revoke(unused_since: Option<SystemTime>, grace: Duration, now: SystemTime) -> bool {
    unused_since.is_some_and(|since| now.duration_since(since).unwrap_or_default() >= grace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn without_an_expiry_the_refresh_interval_decides() {
        assert_eq!(next_read_after(HOUR, None, at(0), 0.5), HOUR);
    }

    #[test]
    fn an_expiry_three_seconds_ahead_is_read_before_it_although_refresh_is_an_hour() {
        for jitter in [0.0, 0.25, 0.5, 0.999] {
            let wait = next_read_after(HOUR, Some(at(3)), at(0), jitter);
            assert!(wait < Duration::from_secs(3), "{wait:?} at jitter {jitter}");
            // Bounds: between (2/3 - 1/10) and 2/3 of the remaining life (1.7 s .. 2 s).
            assert!(
                wait >= Duration::from_millis(1700) && wait <= Duration::from_secs(2),
                "{wait:?} at jitter {jitter}"
            );
        }
        // Jitter moves the read earlier, never later.
        assert!(
            next_read_after(HOUR, Some(at(3)), at(0), 0.9)
                < next_read_after(HOUR, Some(at(3)), at(0), 0.0)
        );
    }

    #[test]
    fn a_far_expiry_never_delays_the_refresh() {
        let wait = next_read_after(HOUR, Some(at(86_400)), at(0), 0.3);
        assert_eq!(wait, HOUR);
    }

    #[test]
    fn an_expiry_that_has_passed_is_read_again_after_the_minimum_gap_not_in_a_loop() {
        assert_eq!(
            next_read_after(HOUR, Some(at(0)), at(10), 0.0),
            MIN_READ_GAP
        );
        assert_eq!(next_read_after(HOUR, Some(at(1)), at(0), 0.0), MIN_READ_GAP);
        // A refresh shorter than the gap still wins: the gap only guards expiry-driven reads.
        let short = Duration::from_millis(500);
        assert_eq!(next_read_after(short, Some(at(0)), at(10), 0.0), short);
    }

    #[test]
    fn leases_are_renewed_at_a_third_of_their_ttl_with_jitter_earlier_only() {
        let ttl = Duration::from_secs(6);
        assert_eq!(renew_after(ttl, 0.0), Duration::from_secs(2));
        for jitter in [0.1, 0.5, 0.999] {
            let wait = renew_after(ttl, jitter);
            assert!(
                wait < Duration::from_secs(2) && wait >= Duration::from_millis(1800),
                "{wait:?}"
            );
        }
        // A tiny TTL is not renewed in a busy loop.
        assert_eq!(renew_after(Duration::ZERO, 0.0), Duration::from_millis(200));
    }

    #[test]
    fn a_renewal_cut_short_by_the_max_ttl_is_recognised() {
        let six = Duration::from_secs(6);
        assert!(!renewal_capped(six, six));
        assert!(!renewal_capped(six, Duration::from_millis(5500)), "slack");
        assert!(renewal_capped(six, Duration::from_secs(4)));
        assert!(renewal_capped(six, Duration::ZERO));
    }

    #[test]
    fn with_a_six_second_ttl_and_twenty_second_max_the_new_read_comes_before_the_end() {
        // The schedule the integration test drives: renew every ~2 s, and once a renewal is
        // capped, read a new credential at 2/3 of what is left, leaving time for the grace.
        let ttl = Duration::from_secs(6);
        let max_end = Duration::from_secs(20);
        let mut now = Duration::ZERO;
        let mut expires;
        loop {
            now += renew_after(ttl, 0.999);
            let granted = ttl.min(max_end - now);
            expires = now + granted;
            if renewal_capped(ttl, granted) {
                break;
            }
        }
        assert_eq!(expires, max_end);
        let read = now + next_read_after(HOUR, Some(at(0) + (expires - now)), at(0), 0.999);
        let left = max_end - read;
        assert!(
            left >= Duration::from_millis(1500),
            "{read:?} leaves {left:?}"
        );
    }

    #[test]
    fn a_capped_lease_is_read_again_early_enough_for_the_grace() {
        // 5 s left, 1 s grace: 2/3 of 5 s would leave 1.7 s; grace + margin need 2 s.
        let wait = lease_read_after(HOUR, at(5), Duration::from_secs(1), at(0), 0.0);
        assert_eq!(wait, Duration::from_secs(3));
        // A long lease with the default grace: the fraction decides.
        let wait = lease_read_after(HOUR, at(3000), Duration::from_secs(600), at(0), 0.0);
        assert_eq!(wait, Duration::from_secs(2000));
        // A grace longer than what is left: read as soon as the gap allows.
        let wait = lease_read_after(HOUR, at(5), Duration::from_secs(600), at(0), 0.0);
        assert_eq!(wait, MIN_READ_GAP);
    }

    #[test]
    fn revocation_waits_for_every_secret_to_move_on_and_then_the_grace() {
        let grace = Duration::from_secs(10);
        assert!(!may_revoke(None, grace, at(100)), "still in use");
        assert!(!may_revoke(Some(at(95)), grace, at(100)));
        assert!(may_revoke(Some(at(90)), grace, at(100)));
        assert!(may_revoke(Some(at(0)), Duration::ZERO, at(0)));
    }

    #[test]
    fn expiry_fields_are_read_or_ignored() {
        assert_eq!(parse_expires_at("2027-01-15T08:00:00Z"), Some(at(0)));
        assert_eq!(
            parse_expires_at(" 2027-01-15T09:00:30+01:00 "),
            Some(at(30))
        );
        assert_eq!(parse_expires_at("tomorrow"), None);
        assert_eq!(parse_expires_at(""), None);

        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"robot","exp":1800000060}"#);
        let jwt = format!("eyJhbGciOiJIUzI1NiJ9.{claims}.c2ln");
        assert_eq!(jwt_expiry(&jwt), Some(at(60)));
        assert_eq!(jwt_expiry("plain-password"), None);
        assert_eq!(jwt_expiry("a.b"), None);
        assert_eq!(jwt_expiry("a.b.c.d"), None);
        let no_exp = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#);
        assert_eq!(jwt_expiry(&format!("h.{no_exp}.s")), None);
        assert_eq!(earliest(Some(at(5)), Some(at(3))), Some(at(3)));
        assert_eq!(earliest(None, Some(at(3))), Some(at(3)));
        assert_eq!(earliest(None, None), None);
    }
}
