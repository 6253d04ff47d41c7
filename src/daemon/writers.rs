//! Not fighting other writers (daemon orchestration): when something keeps undoing
//! pullsecretd's links on a ServiceAccount (a GitOps tool applying a manifest without them,
//! another controller), re-adding them at full speed only makes the two writers flap. So the
//! daemon remembers the links it added per ServiceAccount, counts a link it must add again as a
//! *repair*, and spaces repeated repairs of one account exponentially: the first repair within
//! [`WINDOW`] is made at once, the next no sooner than [`FIRST_GAP`] after it, then twice that,
//! up to [`MAX_GAP`]. Each repeated repair is reported (a Warning Event on the account naming
//! the other writer's field manager from `managedFields`, a log line, and
//! `pullsecretd_write_conflicts_total{manager}`), so someone can tell that writer to leave the
//! lists alone (README: "Other writers").
//!
//! Only additions are held back: an unlink is never deferred (apply deletes a Secret only
//! after its unlinks succeeded). The memory is soft: a restart starts every account afresh,
//! which costs at most one quick repair.
//!
//! Every link pullsecretd adds is remembered for [`WINDOW`], so that memory is kept small: at a
//! cold start every namespace's accounts are linked at once. A link is one entry of a flat map,
//! a 64-bit hash of (namespace, account, link) to the millisecond it was added (16 bytes); only
//! an account that was actually repaired gets a record of its repairs. The 30,000-namespace
//! heap profile showed the per-account records this replaced (a map entry and a vector each,
//! ~550 bytes a namespace, 16 MB at the peak). Two links sharing a hash would share an entry;
//! at 2⁻⁶⁴ a pair, the worst it could do is space out one repair.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;

use crate::config::LinkKind;
use crate::diff::Step;

/// Repairs of one account further apart than this are not counted together.
pub const WINDOW: Duration = Duration::from_secs(600);
/// The least time between the first and the second repair within the window.
pub const FIRST_GAP: Duration = Duration::from_secs(2);
/// The longest wait between two repairs.
pub const MAX_GAP: Duration = Duration::from_secs(300);
/// How often the records of every account are pruned. Each gate prunes the accounts it looks
/// at; a sweep of all of them on every gate would cost O(accounts) per reconcile (O(n²) over a
/// cold start: found by the 30,000-namespace benchmark).
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Distinct field managers the metric names; the rest are counted as `other`.
pub const MAX_MANAGER_LABELS: usize = 16;

/// A repeated repair about to be made: what the Event and the metric report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repair {
    pub namespace: String,
    pub account: String,
    /// The links added again (`imagePullSecrets`/`secrets` and the Secret's name).
    pub links: Vec<(LinkKind, String)>,
    /// Repairs of this account within the window, this one included (2 or more).
    pub count: usize,
    /// The least wait before the next repair of this account.
    pub next_gap: Duration,
}

/// What [`WriterFlaps::gate`] did to one namespace's steps.
#[derive(Debug, Default)]
pub struct Gated {
    /// Repeated repairs left in the steps (to report).
    pub repairs: Vec<Repair>,
    /// When a repair held back may be made.
    pub wait: Option<Duration>,
}

/// The links pullsecretd added, and the repairs of accounts it had to repair.
#[derive(Default)]
pub struct WriterFlaps {
    /// When each link was last added, by [`link_key`]: milliseconds since `epoch`.
    added: HashMap<u64, u64>,
    /// When each repair within the window was made, oldest first, by [`account_key`]: only
    /// accounts that were repaired.
    repairs: HashMap<u64, Vec<Instant>>,
    /// The first gate's `now`: what `added` counts from.
    epoch: Option<Instant>,
    /// When all records are pruned next.
    next_sweep: Option<Instant>,
}

/// An account's key: its namespace and name, hashed. `DefaultHasher::new()` is the same in
/// every call of one process, which is all a soft, in-memory record needs.
fn account_key(namespace: &str, account: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (namespace, account).hash(&mut hasher);
    hasher.finish()
}

/// A link's key: the account's namespace and name and the link, hashed.
fn link_key(namespace: &str, account: &str, link: &(LinkKind, String)) -> u64 {
    let mut hasher = DefaultHasher::new();
    (namespace, account, link).hash(&mut hasher);
    hasher.finish()
}

/// The least time between repair `count - 1` and repair `count` (1-based) of one account.
pub fn gap_before(count: usize) -> Duration {
    if count <= 1 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(count - 2).unwrap_or(u32::MAX).min(16);
    FIRST_GAP.saturating_mul(1 << doublings).min(MAX_GAP)
}

impl WriterFlaps {
    /// Holds back, in `namespace`'s `steps`, the links that would repair an account too soon
    /// after its last repair, and records the additions left in.
    pub fn gate(&mut self, namespace: &str, steps: &mut Vec<Step>, now: Instant) -> Gated {
        let epoch = *self.epoch.get_or_insert(now);
        let millis = |at: Instant| {
            u64::try_from(at.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
        };
        let cutoff_instant = now.checked_sub(WINDOW).unwrap_or(now);
        let cutoff = millis(cutoff_instant);
        let now_millis = millis(now);
        let mut gated = Gated::default();
        for step in steps.iter_mut() {
            let Step::EditServiceAccount(edit) = step else {
                continue;
            };
            if edit.add.is_empty() {
                continue;
            }
            let repeated: Vec<(LinkKind, String)> = edit
                .add
                .iter()
                .filter(|link| {
                    let key = link_key(namespace, &edit.name, link);
                    self.added.get(&key).is_some_and(|at| *at >= cutoff)
                })
                .cloned()
                .collect();
            if !repeated.is_empty() {
                let repairs = self
                    .repairs
                    .entry(account_key(namespace, &edit.name))
                    .or_default();
                repairs.retain(|at| *at >= cutoff_instant);
                let count = repairs.len() + 1;
                let due = repairs.last().map_or(now, |last| *last + gap_before(count));
                if now < due {
                    let held: HashSet<&(LinkKind, String)> = repeated.iter().collect();
                    edit.add.retain(|link| !held.contains(link));
                    let wait = due - now;
                    gated.wait = Some(gated.wait.map_or(wait, |w| w.min(wait)));
                } else {
                    repairs.push(now);
                    if count >= 2 {
                        gated.repairs.push(Repair {
                            namespace: namespace.to_string(),
                            account: edit.name.clone(),
                            links: repeated,
                            count,
                            next_gap: gap_before(count + 1),
                        });
                    }
                }
            }
            for link in &edit.add {
                self.added
                    .insert(link_key(namespace, &edit.name, link), now_millis);
            }
        }
        steps.retain(|step| {
            !matches!(step, Step::EditServiceAccount(edit)
                if edit.add.is_empty() && edit.remove.is_empty())
        });
        if self.next_sweep.is_none_or(|at| now >= at) {
            self.added.retain(|_, at| *at >= cutoff);
            self.repairs.retain(|_, repairs| {
                repairs.retain(|at| *at >= cutoff_instant);
                !repairs.is_empty()
            });
            self.next_sweep = Some(now + SWEEP_EVERY);
        }
        gated
    }
}

/// The field manager that wrote `account` most recently, other than `own`: the writer that
/// undid pullsecretd's link (a manager that only removed fields owns nothing and is not
/// listed; then the latest other writer is the best guess there is). `None`: nobody else.
pub fn other_manager(account: &ServiceAccount, own: &str) -> Option<String> {
    account
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.manager.as_deref().is_some_and(|m| m != own))
        .max_by_key(|entry| entry.time.as_ref().map(|t| t.0))
        .and_then(|entry| entry.manager.clone())
}

/// The `manager` label for `manager`: its name while fewer than [`MAX_MANAGER_LABELS`] are
/// in use (`seen`), `other` after that; a label is at most 128 characters, as the API allows.
pub fn manager_label(manager: Option<&str>, seen: &mut HashSet<String>) -> String {
    let name: String = manager.unwrap_or("unknown").chars().take(128).collect();
    if seen.contains(&name) {
        return name;
    }
    if seen.len() < MAX_MANAGER_LABELS {
        seen.insert(name.clone());
        return name;
    }
    "other".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::ServiceAccountEdit;

    fn link(account: &str, secret: &str) -> Vec<Step> {
        vec![Step::EditServiceAccount(ServiceAccountEdit {
            name: account.into(),
            add: vec![(LinkKind::Pull, secret.into())],
            remove: Vec::new(),
        })]
    }

    #[test]
    fn gaps_double_from_the_second_repair_up_to_the_cap() {
        assert_eq!(gap_before(1), Duration::ZERO);
        assert_eq!(gap_before(2), FIRST_GAP);
        assert_eq!(gap_before(3), FIRST_GAP * 2);
        assert_eq!(gap_before(5), FIRST_GAP * 8);
        assert_eq!(gap_before(40), MAX_GAP);
    }

    /// A writer that removes the link every second: the repairs pullsecretd makes get further
    /// and further apart.
    #[test]
    fn repeated_repairs_of_one_account_back_off_exponentially() {
        let start = Instant::now();
        let mut flaps = WriterFlaps::default();
        let mut made = Vec::new();
        for second in 0..120u64 {
            let now = start + Duration::from_secs(second);
            let mut steps = link("default", "reg-pull");
            let gated = flaps.gate("web", &mut steps, now);
            if steps.is_empty() {
                assert!(gated.wait.is_some_and(|w| w > Duration::ZERO));
            } else {
                made.push(second);
            }
        }
        // The first link, a repair at once, then gaps of 2, 4, 8, 16, 32 s.
        assert_eq!(made, [0, 1, 3, 7, 15, 31, 63]);
    }

    #[test]
    fn first_links_and_unlinks_are_never_held() {
        let now = Instant::now();
        let mut flaps = WriterFlaps::default();
        for secret in ["a", "b", "c"] {
            let mut steps = link("default", secret);
            flaps.gate("web", &mut steps, now);
            assert_eq!(steps.len(), 1, "a new link is made at once");
        }
        // Three quick repairs of "a": the third is held, but an unlink beside it is not.
        let mut held = None;
        for _ in 0..3 {
            let mut steps = vec![Step::EditServiceAccount(ServiceAccountEdit {
                name: "default".into(),
                add: vec![(LinkKind::Pull, "a".into())],
                remove: vec![(LinkKind::Pull, "old".into())],
            })];
            let gated = flaps.gate("web", &mut steps, now);
            held = Some((steps, gated));
        }
        let (steps, gated) = held.expect("ran");
        let Some(Step::EditServiceAccount(edit)) = steps.first() else {
            panic!("the unlink stays: {steps:?}");
        };
        assert!(edit.add.is_empty() && edit.remove.len() == 1, "{edit:?}");
        assert_eq!(gated.wait, Some(FIRST_GAP));
    }

    /// Records of accounts nobody looks at again go at a sweep once the window has passed,
    /// without every gate walking every account.
    #[test]
    fn records_are_swept_after_the_window_not_at_every_gate() {
        let start = Instant::now();
        let mut flaps = WriterFlaps::default();
        for n in 0..100 {
            flaps.gate(&format!("ns-{n}"), &mut link("default", "reg-pull"), start);
        }
        assert_eq!(flaps.added.len(), 100);
        let later = start + WINDOW + Duration::from_secs(1);
        flaps.gate("other", &mut link("default", "reg-pull"), later);
        assert_eq!(flaps.added.len(), 1, "only the link just made is left");
        // Within SWEEP_EVERY of that sweep, records of old accounts are not walked again.
        flaps.gate("ns-0", &mut link("default", "reg-pull"), later);
        flaps.gate(
            "ns-1",
            &mut link("default", "reg-pull"),
            later + SWEEP_EVERY / 2,
        );
        assert_eq!(flaps.added.len(), 3);
    }

    #[test]
    fn manager_labels_are_bounded() {
        let mut seen = HashSet::new();
        for n in 0..MAX_MANAGER_LABELS {
            assert_eq!(
                manager_label(Some(&format!("m{n}")), &mut seen),
                format!("m{n}")
            );
        }
        assert_eq!(manager_label(Some("one-too-many"), &mut seen), "other");
        assert_eq!(manager_label(Some("m0"), &mut seen), "m0");
        assert_eq!(manager_label(None, &mut seen), "other");
    }
}
