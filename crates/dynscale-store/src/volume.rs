//! How full the file system holding a directory is, for the storage signal and its
//! time-to-full forecast.

use std::io;
use std::path::Path;

/// Bytes used and bytes in all on one file system, as an unprivileged writer sees
/// them: space reserved for the superuser counts as used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeUsage {
    pub used_bytes: u64,
    pub total_bytes: u64,
}

/// The usage of the file system that holds `path`.
pub fn volume_usage(path: &Path) -> io::Result<VolumeUsage> {
    let st = rustix::fs::statvfs(path)?;
    let block = st.f_frsize.max(1);
    let total = st.f_blocks.saturating_mul(block);
    let available = st.f_bavail.saturating_mul(block);
    Ok(VolumeUsage {
        used_bytes: total.saturating_sub(available),
        total_bytes: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_volume_of_a_directory_and_names_a_missing_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let usage = volume_usage(dir.path()).expect("statvfs");
        assert!(usage.total_bytes > 0 && usage.used_bytes <= usage.total_bytes);
        let missing = volume_usage(&dir.path().join("absent")).expect_err("no such path");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }
}
