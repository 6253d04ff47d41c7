//! Private directories and files (I/O helper): where pullsecretd writes something only its user
//! may change — `plan --output` manifests (Secrets hold credentials, `links.sh` is run with
//! `sh`) and the agent socket's directory.
//!
//! Why: a directory another user can write lets that user plant a symbolic link under the name
//! pullsecretd is about to write (and so overwrite any file of ours with a Secret), swap a
//! file after it was written, or replace the agent socket with their own. So a directory is
//! used only when it belongs to this user and neither its group nor others can write it;
//! directories are created 0700. Files are never opened by their final name: a temporary file
//! is created beside it with `O_CREAT|O_EXCL|O_NOFOLLOW` (mode 0600, so nothing is readable
//! before its mode is set) and renamed over the final name. `rename` replaces a symbolic link
//! planted there; it never follows it.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

/// Tries at a free temporary name before giving up (names already taken are leftovers of a
/// process that died mid-write, or another writer racing this one).
const TEMP_ATTEMPTS: u32 = 100;

/// Why a directory may not hold private files, or a file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFsError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "{} is a symbolic link; pullsecretd creates the directories under its output directory \
         itself and does not follow links there",
        path.display()
    )]
    SymbolicLink { path: PathBuf },
    #[error(
        "{} belongs to uid {owner}, not to this user (uid {own}): another user could change \
         what is written there; use a directory of your own",
        path.display()
    )]
    NotOwned { path: PathBuf, owner: u32, own: u32 },
    #[error(
        "{} is writable by its group or by others (mode {mode:04o}): they could replace what \
         is written there; make it owner-only (chmod go-w {}) or use another directory",
        path.display(),
        path.display()
    )]
    OthersCanWrite { path: PathBuf, mode: u32 },
}

/// The effective uid of this process: the owner private directories must have.
pub fn own_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether `metadata` (of `path`) is a directory only `own` can change: owned by `own`, not
/// writable by group or others.
pub fn check_private_dir(
    path: &Path,
    metadata: &fs::Metadata,
    own: u32,
) -> Result<(), PrivateFsError> {
    if metadata.file_type().is_symlink() {
        return Err(PrivateFsError::SymbolicLink {
            path: path.to_path_buf(),
        });
    }
    if !metadata.is_dir() {
        return Err(PrivateFsError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    if metadata.uid() != own {
        return Err(PrivateFsError::NotOwned {
            path: path.to_path_buf(),
            owner: metadata.uid(),
            own,
        });
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(PrivateFsError::OthersCanWrite {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Creates `dir` (and missing parents) mode 0700 if missing, then checks it is private. A
/// `dir` that is itself a symbolic link is judged by the directory it points to: the caller
/// named it.
pub fn ensure_private_dir(dir: &Path) -> Result<(), PrivateFsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PrivateFsError::Io {
            action: "creating the directory",
            path: dir.to_path_buf(),
            source,
        })?;
    let metadata = fs::metadata(dir).map_err(|source| PrivateFsError::Io {
        action: "reading the directory",
        path: dir.to_path_buf(),
        source,
    })?;
    check_private_dir(dir, &metadata, own_uid())
}

/// Creates the directory `name` in the private directory `parent` (mode 0700) unless it is
/// there, and checks it: an existing one must be a private directory itself, not a link.
pub fn private_subdir(parent: &Path, name: &str) -> Result<PathBuf, PrivateFsError> {
    let dir = parent.join(name);
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(PrivateFsError::Io {
                action: "creating the directory",
                path: dir,
                source,
            });
        }
    }
    let metadata = fs::symlink_metadata(&dir).map_err(|source| PrivateFsError::Io {
        action: "reading the directory",
        path: dir.clone(),
        source,
    })?;
    check_private_dir(&dir, &metadata, own_uid())?;
    Ok(dir)
}

/// Writes `contents` as `dir/name` with `mode`, through a new temporary file renamed over
/// `name`: whatever was at `name` (a file, a symbolic link) is replaced, never written
/// through. `dir` must be private (see [`ensure_private_dir`]).
pub fn write_replacing(
    dir: &Path,
    name: &str,
    contents: &[u8],
    mode: u32,
) -> Result<(), PrivateFsError> {
    let target = dir.join(name);
    let (temp, file) = create_temp(dir, name)?;
    let written = fill(file, contents, mode).and_then(|()| fs::rename(&temp, &target));
    if let Err(source) = written {
        let _ = fs::remove_file(&temp);
        return Err(PrivateFsError::Io {
            action: "writing",
            path: target,
            source,
        });
    }
    Ok(())
}

/// A new file `.NAME.tmp-PID-N` in `dir`, created exclusively, not through a link, mode 0600.
fn create_temp(dir: &Path, name: &str) -> Result<(PathBuf, fs::File), PrivateFsError> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let pid = std::process::id();
    let mut last_error = std::io::Error::from(std::io::ErrorKind::AlreadyExists);
    for attempt in 0..TEMP_ATTEMPTS {
        let temp = dir.join(format!(".{name}.tmp-{pid}-{attempt}"));
        match rustix::fs::open(&temp, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => return Ok((temp, fs::File::from(fd))),
            Err(rustix::io::Errno::EXIST) => {
                last_error = std::io::Error::from(std::io::ErrorKind::AlreadyExists);
            }
            Err(errno) => {
                last_error = errno.into();
                break;
            }
        }
    }
    Err(PrivateFsError::Io {
        action: "creating a temporary file for",
        path: dir.join(name),
        source: last_error,
    })
}

/// Sets the final mode (explicitly: the creation mode is narrowed by the umask), writes and
/// syncs, so the rename publishes a complete file.
fn fill(mut file: fs::File, contents: &[u8], mode: u32) -> std::io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn a_planted_link_is_replaced_not_followed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let victim = dir.path().join("victim");
        fs::write(&victim, "victim's own text").expect("victim");
        let out = dir.path().join("out");
        ensure_private_dir(&out).expect("private");
        std::os::unix::fs::symlink(&victim, out.join("secret.yaml")).expect("link");

        write_replacing(&out, "secret.yaml", b"kind: Secret\n", 0o600).expect("written");

        assert_eq!(
            fs::read_to_string(&victim).expect("victim"),
            "victim's own text"
        );
        let written = out.join("secret.yaml");
        assert!(fs::symlink_metadata(&written).expect("stat").is_file());
        assert_eq!(mode(&written), 0o600);
        assert_eq!(
            fs::read_to_string(&written).expect("read"),
            "kind: Secret\n"
        );
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&out)
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["secret.yaml"]);
    }

    #[test]
    fn the_final_mode_is_set_whatever_was_there() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("x"), "old").expect("old");
        fs::set_permissions(dir.path().join("x"), fs::Permissions::from_mode(0o666))
            .expect("chmod");
        write_replacing(dir.path(), "x", b"new", 0o644).expect("written");
        assert_eq!(mode(&dir.path().join("x")), 0o644);
        write_replacing(dir.path(), "x", b"newer", 0o600).expect("written");
        assert_eq!(mode(&dir.path().join("x")), 0o600);
    }

    #[test]
    fn directories_others_can_write_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let open = dir.path().join("open");
        fs::create_dir(&open).expect("mkdir");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod");
        let error = ensure_private_dir(&open).expect_err("refused");
        assert!(matches!(
            error,
            PrivateFsError::OthersCanWrite { mode: 0o777, .. }
        ));
        assert!(error.to_string().contains("chmod go-w"), "{error}");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o770)).expect("chmod");
        assert!(ensure_private_dir(&open).is_err(), "group-writable");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).expect("chmod");
        ensure_private_dir(&open).expect("owner-only writes");

        // Created ones are 0700, parents included.
        let new = dir.path().join("a/b");
        ensure_private_dir(&new).expect("created");
        assert_eq!(mode(&new), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let metadata = fs::metadata(dir.path()).expect("stat");
        let error =
            check_private_dir(dir.path(), &metadata, metadata.uid() + 1).expect_err("not ours");
        assert!(matches!(error, PrivateFsError::NotOwned { .. }), "{error}");
        check_private_dir(dir.path(), &metadata, metadata.uid()).expect("ours");
    }

    #[test]
    fn a_subdirectory_that_is_a_link_or_open_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let elsewhere = tempfile::tempdir().expect("temp dir");
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("project-a")).expect("link");
        let error = private_subdir(dir.path(), "project-a").expect_err("a link");
        assert!(
            matches!(error, PrivateFsError::SymbolicLink { .. }),
            "{error}"
        );

        fs::create_dir(dir.path().join("project-b")).expect("mkdir");
        fs::set_permissions(
            dir.path().join("project-b"),
            fs::Permissions::from_mode(0o757),
        )
        .expect("chmod");
        assert!(private_subdir(dir.path(), "project-b").is_err());

        let made = private_subdir(dir.path(), "project-c").expect("created");
        assert_eq!(mode(&made), 0o700);
    }
}
