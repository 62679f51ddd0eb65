//! The memory store's snapshot file: session pins saved on graceful shutdown and loaded at
//! start, so a single-instance restart keeps its sessions.
//!
//! Format: JSON lines. The first line is a header (`format`, `version`, `saved_at_ms`); every
//! other line is one pin: session key, backend *name* (backends are matched by name on load)
//! and creation time (Unix ms). The file is written to a temporary sibling, synced, then
//! renamed over the old one, so a crash mid-save leaves the previous snapshot intact.
//!
//! What survives: moka does not expose when an entry was last used, so a loaded pin is
//! treated as last used at save time. If the restart took longer than `idle_timeout`, every
//! pin has idled out and none is loaded; otherwise each loaded pin starts a fresh idle period
//! (so it may outlive its real idle deadline by the downtime). The lifetime is exact: a pin
//! past `max_lifetime` since its creation is skipped, and the others keep only what is left.
//! The file is kept after loading: after a crash (no save), the next start restores this
//! older but consistent state rather than nothing.

use super::expiry::remaining_lifetime;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const FORMAT: &str = "stickylb-pins";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    saved_at_ms: u64,
}

/// One saved pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedPin {
    pub key: String,
    pub backend: String,
    pub created_ms: u64,
}

/// The session limits in force when loading.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
}

/// Write `pins` to `path` atomically; returns how many were written.
pub(crate) fn save(path: &Path, saved_at_ms: u64, pins: impl Iterator<Item = SavedPin>) -> io::Result<u64> {
    let tmp = temp_path(path);
    let written = write_file(&tmp, saved_at_ms, pins).and_then(|n| {
        fs::rename(&tmp, path)?;
        Ok(n)
    });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    // Make the rename itself durable (best effort: not every filesystem allows it).
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    written
}

fn write_file(tmp: &Path, saved_at_ms: u64, pins: impl Iterator<Item = SavedPin>) -> io::Result<u64> {
    let mut out = BufWriter::new(File::create(tmp)?);
    let header = Header { format: FORMAT.into(), version: VERSION, saved_at_ms };
    serde_json::to_writer(&mut out, &header)?;
    out.write_all(b"\n")?;
    let mut n = 0;
    for pin in pins {
        serde_json::to_writer(&mut out, &pin)?;
        out.write_all(b"\n")?;
        n += 1;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(n)
}

/// `FILE.tmp.PID` next to `FILE` (same directory, so the rename is atomic).
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

/// Read `path`, calling `each` for every pin still alive at `now_ms` under `limits`.
/// Returns `None` if there is no file, otherwise how many pins were skipped as expired.
pub(crate) fn load(
    path: &Path,
    now_ms: u64,
    limits: Limits,
    mut each: impl FnMut(SavedPin),
) -> io::Result<Option<u64>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut lines = BufReader::new(file).lines();
    let header: Header = match lines.next() {
        Some(line) => serde_json::from_str(&line?)?,
        None => return Ok(Some(0)),
    };
    if header.format != FORMAT || header.version != VERSION {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a stickylb pin snapshot (version 1)"));
    }
    let mut expired = 0;
    for line in lines {
        let pin: SavedPin = serde_json::from_str(&line?)?;
        if alive(&pin, header.saved_at_ms, now_ms, limits) {
            each(pin);
        } else {
            expired += 1;
        }
    }
    Ok(Some(expired))
}

/// Whether a pin saved at `saved_at_ms` is still alive at `now_ms` (see the module doc).
fn alive(pin: &SavedPin, saved_at_ms: u64, now_ms: u64, limits: Limits) -> bool {
    let downtime = Duration::from_millis(now_ms.saturating_sub(saved_at_ms));
    downtime < limits.idle_timeout && !remaining_lifetime(pin.created_ms, limits.max_lifetime, now_ms).is_zero()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { idle_timeout: Duration::from_secs(600), max_lifetime: Duration::from_secs(3600) };

    fn pin(key: &str, created_ms: u64) -> SavedPin {
        SavedPin { key: key.into(), backend: "app1".into(), created_ms }
    }

    fn load_all(path: &Path, now_ms: u64) -> (Vec<SavedPin>, Option<u64>) {
        let mut out = Vec::new();
        let expired = load(path, now_ms, LIMITS, |p| out.push(p)).unwrap();
        (out, expired)
    }

    #[test]
    fn round_trip_keeps_live_pins_and_skips_expired_lifetimes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.jsonl");
        let now = 10_000_000;
        let pins = vec![pin("fresh", now - 1_000), pin("a key with spaces \"and quotes\"", now), pin("old", 0)];
        assert_eq!(save(&path, now, pins.clone().into_iter()).unwrap(), 3);
        let (loaded, expired) = load_all(&path, now + 5_000);
        assert_eq!(loaded, pins[..2].to_vec());
        assert_eq!(expired, Some(1));
        assert!(!temp_path(&path).exists(), "the temporary file is renamed away");
    }

    #[test]
    fn a_restart_longer_than_the_idle_timeout_loads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.jsonl");
        save(&path, 1_000_000, [pin("a", 1_000_000)].into_iter()).unwrap();
        let (loaded, expired) = load_all(&path, 1_000_000 + 600_000);
        assert!(loaded.is_empty());
        assert_eq!(expired, Some(1));
    }

    #[test]
    fn missing_file_is_not_an_error_and_garbage_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.jsonl");
        assert_eq!(load_all(&path, 0).1, None);
        fs::write(&path, "hello\n").unwrap();
        assert!(load(&path, 0, LIMITS, |_| {}).is_err());
    }

    #[test]
    fn saving_replaces_the_previous_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.jsonl");
        save(&path, 1_000, [pin("a", 1_000), pin("b", 1_000)].into_iter()).unwrap();
        save(&path, 2_000, [pin("c", 2_000)].into_iter()).unwrap();
        let (loaded, _) = load_all(&path, 2_000);
        assert_eq!(loaded, vec![pin("c", 2_000)]);
    }
}
