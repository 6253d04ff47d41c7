//! Outcomes (pure): what a pass did, as data — each change (verb and object), each failure
//! (verb, resource, object and the server's words), what was held and what was left alone. The
//! I/O layers fill them in; summaries, logs, Events and metrics render them at the edge. Must
//! not do I/O.

use std::fmt;

use crate::model::desired::{HeldSecret, LinkKind, Problem};
use crate::model::heal::HealOutcome;

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    Create,
    Update,
    Delete,
}

impl Verb {
    /// `create`, `update` or `delete`, as metrics label writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }

    fn past(self) -> &'static str {
        match self {
            Self::Create => "created",
            Self::Update => "updated",
            Self::Delete => "deleted",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::Create => "Created",
            Self::Update => "Updated",
            Self::Delete => "Deleted",
        }
    }
}

/// One change made in a project, as data: rendered to text at the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Secret {
        verb: Verb,
        name: String,
    },
    /// One write of a service account's lists.
    Links {
        account: String,
        added: Vec<(LinkKind, String)>,
        removed: Vec<(LinkKind, String)>,
    },
    RoleBinding {
        verb: Verb,
        name: String,
    },
}

impl Change {
    /// The API verb of the write.
    pub fn verb(&self) -> Verb {
        match self {
            Self::Secret { verb, .. } | Self::RoleBinding { verb, .. } => *verb,
            Self::Links { .. } => Verb::Update,
        }
    }

    /// The Event reason: `Created`, `Updated`, `Deleted`, `Linked`, `Unlinked`, `Relinked`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Secret { verb, .. } | Self::RoleBinding { verb, .. } => verb.reason(),
            Self::Links { added, removed, .. } => match (added.is_empty(), removed.is_empty()) {
                (false, true) => "Linked",
                (true, false) => "Unlinked",
                _ => "Relinked",
            },
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret { verb, name } => write!(f, "{} secret {name}", verb.past()),
            Self::RoleBinding { verb, name } => write!(f, "{} rolebinding {name}", verb.past()),
            Self::Links {
                account,
                added,
                removed,
            } => {
                let entries: Vec<String> = added
                    .iter()
                    .map(|(kind, secret)| format!("+{secret} ({})", kind.field()))
                    .chain(
                        removed
                            .iter()
                            .map(|(kind, secret)| format!("-{secret} ({})", kind.field())),
                    )
                    .collect();
                let verb = match self.reason() {
                    "Linked" => "linked",
                    "Unlinked" => "unlinked",
                    _ => "relinked",
                };
                write!(
                    f,
                    "{verb} [{}] on serviceaccount {account}",
                    entries.join(", ")
                )
            }
        }
    }
}

/// What happened in one project.
#[derive(Debug, Default)]
pub struct ProjectOutcome {
    pub project: String,
    /// Every change made, in the order made.
    pub changes: Vec<Change>,
    /// Calls that failed for good, with the reason.
    pub failures: Vec<Failure>,
    /// Things left alone on purpose (someone else's Secret, a missing service account).
    pub problems: Vec<Problem>,
    /// Actions skipped because an earlier one failed (never linked, never deleted).
    pub skipped: Vec<String>,
    /// Secrets held (source failed or not rendered) and what they keep as it is.
    pub held: Vec<Held>,
    /// Secret writes that replaced an older credential of the same pull secret.
    pub rotations: u64,
    /// Secrets not deleted because pods still name them, with those pods: looked at again later.
    pub kept_in_use: Vec<(String, Vec<String>)>,
    /// What healing found and did after this pass's links and rotations.
    pub heal: HealOutcome,
}

impl ProjectOutcome {
    /// True when every action succeeded.
    pub fn converged(&self) -> bool {
        self.failures.is_empty() && self.skipped.is_empty()
    }
}

/// A call that failed for good, named by what was attempted. Never carries Secret data: the API
/// server redacts it from its messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub verb: &'static str,
    /// The resource, plural (`secrets`, `serviceaccounts`, `rolebindings`).
    pub resource: &'static str,
    /// `namespace/name`.
    pub target: String,
    /// The server's own message with its reason and code, or the transport error.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}: {}",
            self.verb, self.resource, self.target, self.message
        )
    }
}

/// A held Secret and the existing Secrets it keeps as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub secret: HeldSecret,
    /// This instance's Secrets it owns in the project (its name, or its versions), kept.
    pub kept: Vec<String>,
}

/// The result of one pass over the cluster (`once`, a workstation pass).
#[derive(Debug, Default)]
pub struct Report {
    /// Problems found while planning (a failed source, a missing project).
    pub plan_problems: Vec<Problem>,
    /// One outcome per project that had something to do or report.
    pub projects: Vec<ProjectOutcome>,
}

impl Report {
    /// True when every project converged.
    pub fn converged(&self) -> bool {
        self.projects.iter().all(ProjectOutcome::converged)
    }

    pub fn change_count(&self) -> usize {
        self.projects.iter().map(|p| p.changes.len()).sum()
    }
}
