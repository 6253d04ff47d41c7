//! Shards (pure): which shard a namespace falls in, and when a replica may take, ask for or
//! give up a shard's Lease. docs/sharding.md says why the rules are these.
//!
//! A namespace's shard is the FNV-1a 64-bit hash of its name modulo the shard count: stable
//! across processes, versions and platforms (unlike std's `DefaultHasher`), so every replica
//! agrees without talking to the others. One shard is exactly the unsharded daemon: every
//! namespace in shard 0, and the rules below reduce to plain leader election.
//!
//! Balance comes from patience, not coordination: a replica that holds no shard takes a free
//! one at once; one that holds some waits a lease duration (plus a retry period per shard it
//! holds) before taking another, so replicas that start together end up one shard each, and a
//! lone replica still ends up with all of them. A replica holding two or more shards fewer than
//! another holder asks for one (the Lease's `wanted-by` annotation); the holder gives it up at
//! its next renewal and the asker takes it after the gap a lost leader leaves
//! (`lease_duration - renew_deadline`), so no two replicas write the same shard at once.

use std::time::Duration;

/// The shard of `namespace` among `shards` (0 when there is one, or none).
pub fn shard_of(namespace: &str, shards: u32) -> u32 {
    if shards <= 1 {
        return 0;
    }
    let bucket = fnv1a64(namespace.as_bytes()) % u64::from(shards);
    u32::try_from(bucket).unwrap_or(0)
}

/// The shard a replica tries first, so replicas starting together spread out.
pub fn first_choice(identity: &str, shards: u32) -> u32 {
    shard_of(identity, shards)
}

/// FNV-1a, 64 bits (the published offset basis and prime).
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

/// How a replica times its Leases.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// A shard's Lease as one replica sees it.
#[derive(Clone, Copy, Debug)]
pub struct Seen<'a> {
    /// The holder, if any (an empty holder is none: a released Lease).
    pub holder: Option<&'a str>,
    /// The replica that asked for this shard, if one did.
    pub wanted_by: Option<&'a str>,
}

/// How long the Lease must have looked as it does (its record unchanged) before `me`, which
/// leads `held` other shards, takes it. A live holder's Lease is taken only once it has gone
/// unrenewed for this long, so the result is never below `lease_duration` for one.
pub fn patience(seen: Seen<'_>, me: &str, held: usize, timing: Timing) -> Duration {
    let defer = timing.lease_duration + timing.retry_period * u32::try_from(held).unwrap_or(0);
    match (seen.holder, seen.wanted_by) {
        (Some(holder), _) if holder == me => Duration::ZERO,
        // Expired: the holder stopped renewing for a lease duration (more for a replica that
        // already leads, so one that leads less takes it first).
        (Some(_), _) => defer,
        // Given up for `me`: wait out what a lost leader may still be writing.
        (None, Some(asker)) if asker == me => {
            timing.lease_duration.saturating_sub(timing.renew_deadline)
        }
        // Given up for another replica: let it come.
        (None, Some(_)) => defer,
        (None, None) if held == 0 => Duration::ZERO,
        (None, None) => defer,
    }
}

/// Whether `me`, leading `held` shards, asks for a shard whose live holder leads `holder_leads`.
pub fn should_ask(held: usize, holder_leads: usize) -> bool {
    holder_leads >= held + 2
}

/// Whether the holder `me`, leading `held` shards, gives this one up: another replica asked for
/// it, and giving it up still leaves `me` leading one.
pub fn should_give_up(seen: Seen<'_>, me: &str, held: usize) -> bool {
    seen.wanted_by.is_some_and(|asker| asker != me) && held >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    };

    fn seen<'a>(holder: Option<&'a str>, wanted_by: Option<&'a str>) -> Seen<'a> {
        Seen { holder, wanted_by }
    }

    #[test]
    fn the_hash_is_fnv1a_and_stable() {
        // The published FNV-1a 64 test vectors: a changed hash would move every namespace.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(shard_of("anything", 1), 0);
        assert_eq!(shard_of("anything", 0), 0);
    }

    #[test]
    fn namespaces_spread_evenly_over_shards() {
        let mut counts = [0u32; 3];
        for i in 0..30_000 {
            let shard = shard_of(&format!("team-{i:05}"), 3);
            counts[usize::try_from(shard).expect("small")] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn one_shard_is_plain_leader_election() {
        // Free or missing: take at once; held by another: only after a lease duration.
        assert_eq!(patience(seen(None, None), "a", 0, TIMING), Duration::ZERO);
        assert_eq!(
            patience(seen(Some("b"), None), "a", 0, TIMING),
            TIMING.lease_duration
        );
        assert_eq!(
            patience(seen(Some("a"), None), "a", 0, TIMING),
            Duration::ZERO
        );
        // With one shard nobody leads two, so nobody asks and nobody gives up.
        assert!(!should_ask(0, 1));
        assert!(!should_give_up(seen(Some("a"), Some("b")), "a", 1));
    }

    #[test]
    fn a_replica_that_leads_defers_to_one_that_does_not() {
        let free = seen(None, None);
        assert_eq!(patience(free, "a", 0, TIMING), Duration::ZERO);
        assert_eq!(
            patience(free, "a", 1, TIMING),
            TIMING.lease_duration + TIMING.retry_period
        );
        let expired = seen(Some("dead"), None);
        assert!(patience(expired, "a", 2, TIMING) > patience(expired, "b", 1, TIMING));
        // Within a lease duration plus a few retries: a dead replica's shard moves quickly.
        assert!(
            patience(expired, "a", 2, TIMING) <= TIMING.lease_duration + 4 * TIMING.retry_period
        );
    }

    #[test]
    fn a_shard_given_up_goes_to_the_asker_after_the_lost_leader_gap() {
        let given_up = seen(None, Some("a"));
        assert_eq!(
            patience(given_up, "a", 0, TIMING),
            TIMING.lease_duration - TIMING.renew_deadline
        );
        // Everyone else, even one leading nothing, waits a full lease duration for the asker.
        assert!(patience(given_up, "c", 0, TIMING) >= TIMING.lease_duration);
    }

    #[test]
    fn only_a_clear_imbalance_asks_and_only_a_spare_shard_is_given_up() {
        assert!(should_ask(0, 2));
        assert!(should_ask(1, 3));
        assert!(
            !should_ask(1, 2),
            "2 against 1 is as even as 3 shards over 2 get"
        );
        assert!(should_give_up(seen(Some("a"), Some("b")), "a", 2));
        assert!(!should_give_up(seen(Some("a"), Some("b")), "a", 1));
        assert!(!should_give_up(seen(Some("a"), Some("a")), "a", 3));
        assert!(!should_give_up(seen(Some("a"), None), "a", 3));
    }
}
