//! The free-space reserve of the store's disk. sled turns a failed write (ENOSPC) into an
//! error it then returns for every later call, reads included, until the process restarts;
//! so writes are refused while the disk's free space is under a reserve, and the disk never
//! fills from relist's own writes. Checks keep answering from memory and the stored records.
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Default free space kept on the store's disk: several of sled's 512 KiB log segments plus
/// room for its background flushes.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

/// Refuses writes while the disk holding `dir` has less than `min_free` bytes available.
#[derive(Clone, Debug)]
pub struct DiskGuard {
    dir: PathBuf,
    min_free: u64,
}

impl DiskGuard {
    pub fn new(dir: &Path, min_free: u64) -> Self {
        DiskGuard {
            dir: dir.to_path_buf(),
            min_free,
        }
    }

    /// The same disk with another reserve.
    pub fn with_min_free(self, min_free: u64) -> Self {
        DiskGuard { min_free, ..self }
    }

    /// [`Error::DiskFull`] when the free space is under the reserve. A failure to ask the
    /// filesystem is not a reason to refuse: sled's own error then tells the truth.
    pub fn check(&self) -> Result<()> {
        if self.min_free == 0 {
            return Ok(());
        }
        match available_bytes(&self.dir) {
            Ok(free) if free < self.min_free => Err(Error::DiskFull(format!(
                "{} has {} KiB free, under the reserve of {} KiB (limits.min_free_disk_bytes); \
                 writes are refused until space is freed, checks go on",
                self.dir.display(),
                free / 1024,
                self.min_free / 1024
            ))),
            _ => Ok(()),
        }
    }
}

/// Bytes available to unprivileged writers on the filesystem holding `path`.
#[cfg(unix)]
pub fn available_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `s` points to writable memory of the
    // right type; statvfs only writes into it.
    let rc = unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let s = unsafe { s.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

/// Without statvfs there is no reserve; sled's own ENOSPC error is still mapped.
#[cfg(not(unix))]
pub fn available_bytes(_path: &Path) -> std::io::Result<u64> {
    Ok(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_refuses_with_disk_full_and_zero_disables_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(available_bytes(dir.path()).unwrap() > 0);
        assert!(matches!(
            DiskGuard::new(dir.path(), u64::MAX).check(),
            Err(Error::DiskFull(_))
        ));
        assert!(DiskGuard::new(dir.path(), 0).check().is_ok());
        assert!(DiskGuard::new(dir.path(), 1).check().is_ok());
    }
}
