//! The memory store's snapshot file: session pins saved on graceful shutdown and loaded at
//! start, so a single-instance restart keeps its sessions.
//!
//! Format: JSON lines. The first line is a header (`format`, `version`, `saved_at_ms`, and from
//! version 2 `hash_key`); every other line is one pin: its key, backend *name* (backends are
//! matched by name on load), creation time and (version 2) last use, Unix ms. The table keeps
//! hashes, not session keys, so version 2 saves the hash (`hash`, hex) and the table's hash key
//! in the header; the loading table adopts that key (see [`hash_key`]). Version 1 files, with
//! the session key itself (`key`), still load: the key is hashed on the way in. The file is
//! written to a temporary sibling, synced, then renamed over the old one, so a crash mid-save
//! leaves the previous snapshot intact.
//!
//! What survives: a pin idle for longer than `idle_timeout` by the time it is loaded (downtime
//! counts as idle time) or past `max_lifetime` since its creation is skipped; the others keep
//! their remaining idle time and lifetime. A version 1 file has no last use: its pins count as
//! used at save time. The file is kept after loading: after a crash (no save), the next start
//! restores this older but consistent state rather than nothing.

use super::expiry::remaining_lifetime;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const FORMAT: &str = "stickylb-pins";
/// The version written; 1 is still read.
const VERSION: u32 = 2;

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    saved_at_ms: u64,
    /// The hash key of the table that saved hashed pins (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash_key: Option<String>,
}

/// One saved pin: `key` (version 1) or `hash` (version 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedPin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    pub backend: String,
    pub created_ms: u64,
    /// Last use; version 1 files have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_ms: Option<u64>,
}

/// The session limits in force when loading.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
}

/// Write `pins`, hashed with `hash_key`, to `path` atomically; returns how many were written.
pub(crate) fn save(
    path: &Path,
    saved_at_ms: u64,
    hash_key: &str,
    pins: impl Iterator<Item = SavedPin>,
) -> io::Result<u64> {
    let tmp = temp_path(path);
    let header = Header { format: FORMAT.into(), version: VERSION, saved_at_ms, hash_key: Some(hash_key.into()) };
    let written = write_file(&tmp, &header, pins).and_then(|n| {
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

fn write_file(tmp: &Path, header: &Header, pins: impl Iterator<Item = SavedPin>) -> io::Result<u64> {
    let mut out = BufWriter::new(File::create(tmp)?);
    serde_json::to_writer(&mut out, header)?;
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

/// The hash key `path` was saved with, if it exists and has one: a table that is to load it
/// must hash with the same key.
pub(crate) fn hash_key(path: &Path) -> Option<String> {
    let mut first = String::new();
    BufReader::new(File::open(path).ok()?).read_line(&mut first).ok()?;
    serde_json::from_str::<Header>(&first).ok()?.hash_key
}

/// Read `path`, calling `each` for every pin still alive at `now_ms` under `limits` (with its
/// last use filled in: the save time for a version 1 pin). Hashed
/// pins are only usable by a table with `hash_key`: a file saved under another key is an
/// error. Returns `None` if there is no file, otherwise how many pins were skipped as expired.
pub(crate) fn load(
    path: &Path,
    now_ms: u64,
    limits: Limits,
    hash_key: &str,
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
    if header.format != FORMAT || !(1..=VERSION).contains(&header.version) {
        return Err(invalid("not a stickylb pin snapshot (version 1 or 2)"));
    }
    let key_matches = header.hash_key.as_deref() == Some(hash_key);
    let mut expired = 0;
    for line in lines {
        let mut pin: SavedPin = serde_json::from_str(&line?)?;
        pin.used_ms.get_or_insert(header.saved_at_ms);
        match (&pin.key, &pin.hash) {
            (Some(_), None) => {}
            (None, Some(_)) if key_matches => {}
            (None, Some(_)) => return Err(invalid("pins hashed with another hash key than this table's")),
            _ => return Err(invalid("a pin needs one of `key` and `hash`")),
        }
        if alive(&pin, header.saved_at_ms, now_ms, limits) {
            each(pin);
        } else {
            expired += 1;
        }
    }
    Ok(Some(expired))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Whether a pin saved at `saved_at_ms` is still alive at `now_ms` (see the module doc).
fn alive(pin: &SavedPin, saved_at_ms: u64, now_ms: u64, limits: Limits) -> bool {
    let idle = Duration::from_millis(now_ms.saturating_sub(pin.used_ms.unwrap_or(saved_at_ms)));
    idle < limits.idle_timeout && !remaining_lifetime(pin.created_ms, limits.max_lifetime, now_ms).is_zero()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { idle_timeout: Duration::from_secs(600), max_lifetime: Duration::from_secs(3600) };
    const KEY: &str = "00112233445566778899aabbccddeeff";

    fn pin(hash: &str, created_ms: u64) -> SavedPin {
        SavedPin { key: None, hash: Some(hash.into()), backend: "app1".into(), created_ms, used_ms: Some(created_ms) }
    }

    fn load_all(path: &Path, now_ms: u64) -> (Vec<SavedPin>, Option<u64>) {
        let mut out = Vec::new();
        let expired = load(path, now_ms, LIMITS, KEY, |p| out.push(p)).unwrap();
        (out, expired)
    }

    #[test]
    fn round_trip_keeps_live_pins_and_skips_expired_lifetimes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.jsonl");
        let now = 10_000_000;
        let pins = vec![pin("fresh", now - 1_000), pin("now", now), pin("old", 0)];
        assert_eq!(save(&path, now, KEY, pins.clone().into_iter()).unwrap(), 3);
        assert_eq!(hash_key(&path).as_deref(), Some(KEY));
        let (loaded, expired) = load_all(&path, now + 5_000);
        assert_eq!(loaded, pins[..2].to_vec());
        assert_eq!(expired, Some(1));
        assert!(!temp_path(&path).exists(), "the temporary file is renamed away");
    }

    #[test]
    fn downtime_counts_as_idle_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.jsonl");
        let now = 10_000_000;
        let mut idle = pin("idle", now - 1_000_000);
        idle.used_ms = Some(now - 500_000);
        let mut used = pin("used", now - 1_000_000);
        used.used_ms = Some(now);
        save(&path, now, KEY, [idle, used.clone()].into_iter()).unwrap();
        let (loaded, expired) = load_all(&path, now + 200_000);
        assert_eq!((loaded, expired), (vec![used], Some(1)), "500 s idle + 200 s down > 600 s");
    }

    #[test]
    fn a_restart_longer_than_the_idle_timeout_loads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.jsonl");
        save(&path, 1_000_000, KEY, [pin("a", 1_000_000)].into_iter()).unwrap();
        let (loaded, expired) = load_all(&path, 1_000_000 + 600_000);
        assert!(loaded.is_empty());
        assert_eq!(expired, Some(1));
    }

    #[test]
    fn version_1_files_with_session_keys_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.jsonl");
        let v1 = concat!(
            r#"{"format":"stickylb-pins","version":1,"saved_at_ms":1000000}"#,
            "\n",
            r#"{"key":"a key with spaces \"and quotes\"","backend":"app1","created_ms":999000}"#,
            "\n"
        );
        fs::write(&path, v1).unwrap();
        assert_eq!(hash_key(&path), None);
        let (loaded, _) = load_all(&path, 1_000_000 + 599_000);
        let want = SavedPin {
            key: Some("a key with spaces \"and quotes\"".into()),
            hash: None,
            backend: "app1".into(),
            created_ms: 999_000,
            used_ms: Some(1_000_000),
        };
        assert_eq!(loaded, vec![want], "idle counted from the save");
    }

    #[test]
    fn pins_hashed_under_another_key_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.jsonl");
        save(&path, 1_000, "ffeeddccbbaa99887766554433221100", [pin("a", 1_000)].into_iter()).unwrap();
        assert!(load(&path, 1_000, LIMITS, KEY, |_| {}).is_err());
    }

    #[test]
    fn missing_file_is_not_an_error_and_garbage_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.jsonl");
        assert_eq!(load_all(&path, 0).1, None);
        assert_eq!(hash_key(&path), None);
        fs::write(&path, "hello\n").unwrap();
        assert!(load(&path, 0, LIMITS, KEY, |_| {}).is_err());
    }

    #[test]
    fn saving_replaces_the_previous_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.jsonl");
        save(&path, 1_000, KEY, [pin("a", 1_000), pin("b", 1_000)].into_iter()).unwrap();
        save(&path, 2_000, KEY, [pin("c", 2_000)].into_iter()).unwrap();
        let (loaded, _) = load_all(&path, 2_000);
        assert_eq!(loaded, vec![pin("c", 2_000)]);
    }
}
