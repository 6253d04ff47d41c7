//! Source stage (I/O): reads one registry's credential from a docker `config.json`, a legacy
//! `.dockercfg` or a containers `auth.json`, asking a credential helper where the file says so.
//!
//! Paths arrive absolute from the config: nothing here reads `$HOME` or other environment.
//! Errors name the file and registry, never a value from the file.

use std::path::Path;

use super::{Error, SourceContext, helper};
use crate::dockerconfig::{self, AuthFile, AuthFileFormat, Lookup};
use crate::model::credential::{Credential, RegistryKey};
use crate::regular_file;

/// Larger files are refused: real auth files are a few KiB, and a Secret is at most 1 MiB.
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// Reads and parses an auth file: it must be a regular file of at most [`MAX_FILE_SIZE`]; a
/// FIFO or device in its place is refused before it is opened ([`regular_file`]).
///
/// Blocking, but bounded by the size limit on a local file.
pub fn read_auth_file(path: &Path, format: AuthFileFormat) -> Result<AuthFile, Error> {
    let bytes = read_limited(path, format)?;
    dockerconfig::parse_auth_file(format, &bytes).map_err(|source| Error::ParseAuthFile {
        format,
        path: path.to_path_buf(),
        source,
    })
}

fn read_limited(path: &Path, format: AuthFileFormat) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    let path_buf = path.to_path_buf();
    regular_file::read(path, MAX_FILE_SIZE).map_err(|refused| match refused {
        regular_file::Refused::Io(source) => Error::ReadAuthFile {
            format,
            path: path_buf,
            source,
        },
        regular_file::Refused::NotRegular(kind) => Error::NotAFile {
            format,
            path: path_buf,
            kind,
        },
        regular_file::Refused::TooLarge => Error::FileTooLarge {
            format,
            path: path_buf,
            limit: MAX_FILE_SIZE,
        },
    })
}

/// The credential `path` holds (directly or through a helper) for `server`.
pub async fn resolve(
    path: &Path,
    format: AuthFileFormat,
    server: &RegistryKey,
    ctx: &SourceContext,
) -> Result<Credential, Error> {
    let file = read_auth_file(path, format)?;
    match file.lookup(server) {
        Lookup::Found(credential) => Ok(credential),
        Lookup::Helper { helper, server_url } => {
            let found = helper::get(&helper, &server_url, ctx)
                .await
                .map_err(|source| Error::HelperGet {
                    registry: server.to_string(),
                    path: Some(path.to_path_buf()),
                    source,
                })?;
            found.ok_or_else(|| Error::NotInHelper {
                registry: server.to_string(),
                helper,
                server_url,
                path: Some(path.to_path_buf()),
            })
        }
        Lookup::Unusable { key, reason } => Err(Error::UnusableEntry {
            registry: server.to_string(),
            key,
            format,
            path: path.to_path_buf(),
            reason,
        }),
        Lookup::NotPresent => Err(Error::NotInFile {
            registry: server.to_string(),
            format,
            path: path.to_path_buf(),
        }),
    }
}
