//! I/O helper: opens a file that must be a regular file (a config, an auth file, a Vault
//! token or CA file) without ever blocking on something else in its place.
//!
//! `open(2)` of a FIFO for reading waits until a writer appears, and opening a device can have
//! effects of its own, so a path naming one must be refused *before* it is opened, not after.
//! The file is checked with `stat`, opened with `O_NONBLOCK` (a FIFO swapped in after the check
//! then opens at once instead of blocking) and checked again on the open descriptor, which is
//! what is read: the race between check and open is closed. `O_NONBLOCK` changes nothing for
//! reads of a regular file.

use std::fs::{File, Metadata};
use std::io::Read as _;
use std::os::unix::fs::FileTypeExt as _;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

/// Why a file could not be opened or read.
#[derive(Debug)]
pub enum Refused {
    /// The file system said no (missing, permission, I/O error).
    Io(std::io::Error),
    /// Something other than a regular file is there: "a directory", "a FIFO", ...
    NotRegular(&'static str),
    /// More than the caller's limit of bytes.
    TooLarge,
}

impl From<std::io::Error> for Refused {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

/// Opens `path` for reading if it is a regular file (symlinks followed), without blocking.
pub fn open(path: &Path) -> Result<File, Refused> {
    check(&std::fs::metadata(path)?)?;
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let file =
        File::from(rustix::fs::open(path, flags, Mode::empty()).map_err(std::io::Error::from)?);
    check(&file.metadata()?)?;
    Ok(file)
}

/// Reads all of `path`, a regular file of at most `limit` bytes, into memory zeroed on drop
/// (it may hold a secret). One byte past the limit is read rather than trusting the size.
pub fn read(path: &Path, limit: u64) -> Result<zeroize::Zeroizing<Vec<u8>>, Refused> {
    let file = open(path)?;
    if file.metadata()?.len() > limit {
        return Err(Refused::TooLarge);
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(Refused::TooLarge);
    }
    Ok(bytes)
}

fn check(metadata: &Metadata) -> Result<(), Refused> {
    match kind(metadata) {
        None => Ok(()),
        Some(kind) => Err(Refused::NotRegular(kind)),
    }
}

/// What the file is when it is not a regular file, as words for an error message.
fn kind(metadata: &Metadata) -> Option<&'static str> {
    let file_type = metadata.file_type();
    if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_fifo() {
        Some("a FIFO")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else {
        Some("a special file")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_directories_are_named() {
        let refused = |path: &str| match open(Path::new(path)) {
            Err(Refused::NotRegular(kind)) => kind,
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(refused("/dev/null"), "a character device");
        assert_eq!(refused("/"), "a directory");
    }

    #[test]
    fn regular_files_are_read_up_to_the_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").expect("write");
        assert_eq!(read(&path, 5).expect("fits").as_slice(), b"12345");
        assert!(matches!(read(&path, 4), Err(Refused::TooLarge)));
        assert!(matches!(
            read(&dir.path().join("missing"), 5),
            Err(Refused::Io(e)) if e.kind() == std::io::ErrorKind::NotFound
        ));
    }
}
