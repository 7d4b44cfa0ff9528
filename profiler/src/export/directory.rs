//! The embedded default sink: every window's profiles as pprof files in a
//! local directory, `20261122T101500Z-SERVICE.cpu.pb.gz`, rotated (oldest
//! removed first) to stay under a total size.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::bounded_dir::{BoundedDir, DirError};

pub struct ProfileDir {
    dir: BoundedDir,
}

/// What one write did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub removed: u64,
}

impl ProfileDir {
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, DirError> {
        let dir = BoundedDir::open(path, max_bytes, |name| name.ends_with(".pb.gz"))?;
        Ok(Self { dir })
    }

    /// Writes one profile; `kind` is `cpu` or `offcpu`.
    pub fn write(
        &mut self,
        start: SystemTime,
        service: &str,
        kind: &str,
        pprof_gz: &[u8],
    ) -> Result<Written, DirError> {
        let name = format!("{}-{}.{kind}.pb.gz", utc_stamp(start), file_safe(service));
        let removed = self.dir.add(&name, pprof_gz)?;
        Ok(Written { removed })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A service name as part of a file name: letters, digits, `.`, `-`, `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect()
}

/// `YYYYMMDDTHHMMSSZ` in UTC.
pub fn utc_stamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn stamps_in_utc() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_343_715); // 2026-11-22T10:35:15Z
        assert_eq!(utc_stamp(t), "20261122T103515Z");
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "20000229T000000Z"
        );
    }

    #[test]
    fn writes_bounded_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = ProfileDir::open(dir.path(), 2 << 20).unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(1_795_343_715);
        out.write(t, "ml/vllm", "cpu", &[0; 1 << 20]).unwrap();
        out.write(t, "api", "offcpu", &[0; 1 << 20]).unwrap();
        assert!(dir
            .path()
            .join("20261122T103515Z-ml_vllm.cpu.pb.gz")
            .exists());
        let later = t + Duration::from_secs(15);
        assert_eq!(
            out.write(later, "api", "cpu", &[0; 1 << 20])
                .unwrap()
                .removed,
            1
        );
    }
}
