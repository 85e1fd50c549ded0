//! Persisting the seed: the one file a node must keep secret.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::SEED_LEN;

/// Why a seed file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeedFileError {
    /// The file system refused (missing file, no permission, full disk, ...).
    #[error("seed file {path}: {source}")]
    Io {
        /// The seed file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file is not exactly 32 bytes long.
    #[error("seed file {path} is {len} bytes long; a seed is exactly {SEED_LEN} bytes")]
    WrongLength {
        /// The seed file.
        path: PathBuf,
        /// Its actual length.
        len: u64,
    },
    /// Group or others may access the file (Unix mode bits `0o077`); fix with `chmod 600`.
    #[error("seed file {path} has mode {mode:o}: group or others can read it (want 600)")]
    TooPermissive {
        /// The seed file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Writing would replace an existing seed, and with it the node's identity.
    #[error("seed file {path} already exists; refusing to overwrite an identity")]
    AlreadyExists {
        /// The seed file.
        path: PathBuf,
    },
}

/// Reads a 32-byte seed file. The seed comes back in a `zeroize::Zeroizing` wrapper that
/// wipes it when dropped and derefs to the bytes: `Identity::from_seed(&seed)` takes it as is.
///
/// Refuses, with an error that says which: a missing or unreadable file, a file that is not
/// exactly 32 bytes, and (on Unix) a file that group or others can access.
pub fn read_seed_file(path: &Path) -> Result<Zeroizing<[u8; SEED_LEN]>, SeedFileError> {
    let io_err = |source| SeedFileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    check_mode(path, &meta)?;
    if meta.len() != SEED_LEN as u64 {
        return Err(SeedFileError::WrongLength {
            path: path.to_owned(),
            len: meta.len(),
        });
    }
    let mut seed = Zeroizing::new([0u8; SEED_LEN]);
    file.read_exact(seed.as_mut()).map_err(io_err)?;
    // The file may have grown between the metadata call and the read.
    let mut probe = [0u8; 1];
    if file.read(&mut probe).map_err(io_err)? != 0 {
        let len = file.metadata().map_or(SEED_LEN as u64 + 1, |m| m.len());
        return Err(SeedFileError::WrongLength {
            path: path.to_owned(),
            len,
        });
    }
    Ok(seed)
}

/// Writes a seed file readable by its owner only (mode 0600), never replacing an existing one.
///
/// The seed goes to a temporary file in the same directory, is flushed to disk, and is then
/// linked into place, so a crash leaves either no seed file or a whole one. Missing parent
/// directories are created (mode 0700 on Unix).
pub fn write_seed_file(path: &Path, seed: &[u8; SEED_LEN]) -> Result<(), SeedFileError> {
    let io_err = |source| SeedFileError::Io {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        return Err(SeedFileError::AlreadyExists {
            path: path.to_owned(),
        });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(io_err)?;
    }
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = private_create_new(&tmp)?;
        file.write_all(seed)?;
        file.sync_all()?;
        // A hard link fails if `path` appeared meanwhile: an existing seed is never replaced.
        fs::hard_link(&tmp, path)
    })();
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(SeedFileError::AlreadyExists {
            path: path.to_owned(),
        }),
        Err(e) => Err(io_err(e)),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(unix)]
fn check_mode(path: &Path, meta: &fs::Metadata) -> Result<(), SeedFileError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SeedFileError::TooPermissive {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_path: &Path, _meta: &fs::Metadata) -> Result<(), SeedFileError> {
    Ok(())
}

#[cfg(unix)]
fn private_create_new(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_create_new(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}
