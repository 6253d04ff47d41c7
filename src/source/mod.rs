//! Source stage (I/O): resolve each configured registry to a [`Credential`] plus a version.
//!
//! One read per registry per refresh, however many projects use it. Sources never touch the
//! cluster, and their errors never carry secret values.

pub mod docker_file;
pub mod helper;

use std::path::PathBuf;
use std::time::Duration;

use crate::credential::Credential;

/// A credential as read from its source, with what identifies this version of it.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub credential: Credential,
    /// Changes whenever the credential changes (a content hash for files and helpers); never
    /// derived reversibly from the secret.
    pub version: String,
}

/// How sources reach the outside world; tests point these at temporary directories.
#[derive(Clone, Debug)]
pub struct SourceContext {
    /// Directories searched for `docker-credential-<name>`; `None` means `$PATH`.
    pub helper_dirs: Option<Vec<PathBuf>>,
    /// How long a credential helper may take before it is killed.
    pub helper_timeout: Duration,
}

impl Default for SourceContext {
    fn default() -> Self {
        Self {
            helper_dirs: None,
            helper_timeout: Duration::from_secs(10),
        }
    }
}
