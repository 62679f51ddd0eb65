//! Fleet-wide admin state: a backend's `drain` / `maint` / `active` set on any instance holds
//! on every instance.
//!
//! `{key_prefix}group:state` maps a backend name to `"{state} {stamp_ms} {instance}"`. A change
//! (admin API, or a `state` changed in a reloaded file) is applied locally at once, kept as
//! *pending* with the wall-clock time of the change, and written with [`WRITE_SCRIPT`], which
//! keeps whichever of the stored and the new value is newer. Every instance reads the hash every
//! [`POLL_EVERY`] and applies it, so a change shows everywhere within that plus a round trip;
//! an instance that (re)starts applies it before its first announce.
//!
//! During a Redis outage an instance keeps the states it last knew, and changes made on it
//! meanwhile stay pending; when Redis is back they are written with their original times.
//! **The last change wins, by its time**, wherever it was made: an operator who drained a
//! backend through one instance during the outage and enabled it through another one later
//! meant it to be enabled, and a change made long ago on a cut-off instance must not undo a
//! newer one made on the rest of the fleet. The times come from the instances' clocks (a change
//! made while Redis is unreachable cannot ask Redis's), so hosts are assumed NTP-synchronised;
//! a skew only matters for two changes of the same backend within the skew of each other.
//! Equal times: the one written last wins.

use crate::config::AdminState;
use std::collections::HashMap;
use std::time::Duration;

/// How often an instance reads the fleet's admin states.
pub const POLL_EVERY: Duration = Duration::from_millis(200);

/// KEYS: the state hash. ARGV: backend name, state, stamp (ms), instance. Writes unless the
/// stored value is newer; returns nil if written, the stored value otherwise.
pub const WRITE_SCRIPT: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local stamp = tonumber(string.match(cur, '^%S+ (%d+)'))
  if stamp and stamp > tonumber(ARGV[3]) then
    return cur
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4])
return false
"#;

/// A backend's admin state with when and where it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    pub state: AdminState,
    pub stamp_ms: u64,
    pub by: String,
}

impl Stamped {
    pub fn decode(raw: &str) -> Option<Stamped> {
        let mut parts = raw.splitn(3, ' ');
        let state = match parts.next()? {
            "active" => AdminState::Active,
            "drain" => AdminState::Drain,
            "maint" => AdminState::Maint,
            _ => return None,
        };
        let stamp_ms = parts.next()?.parse().ok()?;
        Some(Stamped { state, stamp_ms, by: parts.next().unwrap_or("").to_owned() })
    }
}

/// What Redis holds (`HGETALL` pairs), overlaid with this instance's pending changes where
/// those are newer: the state each named backend should have.
pub fn merge(stored: &[(String, String)], pending: &HashMap<String, Stamped>) -> HashMap<String, Stamped> {
    let mut out: HashMap<String, Stamped> =
        stored.iter().filter_map(|(name, raw)| Some((name.clone(), Stamped::decode(raw)?))).collect();
    for (name, mine) in pending {
        match out.get(name) {
            Some(theirs) if theirs.stamp_ms > mine.stamp_ms => {}
            _ => {
                out.insert(name.clone(), mine.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(state: AdminState, stamp_ms: u64, by: &str) -> Stamped {
        Stamped { state, stamp_ms, by: by.into() }
    }

    #[test]
    fn values_round_trip_and_garbage_is_ignored() {
        assert_eq!(Stamped::decode("drain 1700 lb-1:8080"), Some(s(AdminState::Drain, 1700, "lb-1:8080")));
        assert_eq!(Stamped::decode("active 5"), Some(s(AdminState::Active, 5, "")));
        for bad in ["", "drain", "paused 5 x", "maint x y"] {
            assert_eq!(Stamped::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_pending_change_wins_over_an_older_stored_state_and_loses_to_a_newer_one() {
        let stored = vec![
            ("a".to_string(), "drain 100 x".to_string()),
            ("b".to_string(), "maint 300 y".to_string()),
            ("junk".to_string(), "???".to_string()),
        ];
        let pending: HashMap<String, Stamped> = [
            ("a".to_string(), s(AdminState::Active, 200, "me")),
            ("b".to_string(), s(AdminState::Active, 250, "me")),
            ("c".to_string(), s(AdminState::Drain, 1, "me")),
        ]
        .into();
        let m = merge(&stored, &pending);
        assert_eq!(m["a"], s(AdminState::Active, 200, "me"), "newer local change made during an outage");
        assert_eq!(m["b"], s(AdminState::Maint, 300, "y"), "someone changed it after us");
        assert_eq!(m["c"].state, AdminState::Drain, "not in Redis yet");
        assert!(!m.contains_key("junk"));
    }
}
