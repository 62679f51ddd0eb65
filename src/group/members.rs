//! Membership: who is in the group, from one Redis hash.
//!
//! `{key_prefix}group:members` maps each instance name to `"{stamp_ms} {json}"`, the JSON
//! being what the instance says about itself ([`Card`]). Every [`ANNOUNCE_EVERY`] an instance
//! runs [`ANNOUNCE_SCRIPT`]: it stamps its own entry with *Redis's* clock (`TIME`), drops
//! entries silent for [`FORGET_AFTER_MS`], and answers Redis's time and every entry. An entry
//! stamped more than [`LEFT_AFTER_MS`] before that time has left. Stamping with one clock means
//! instances on hosts whose clocks disagree still judge each other right. One hash (not a key
//! with a TTL per member) because reading it is one command that needs no `SCAN`, and all of
//! it lives in one hash slot on a Redis Cluster.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

/// How often an instance announces itself.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// Silent this long (by Redis's clock): the instance has left.
pub const LEFT_AFTER_MS: u64 = 3_000;
/// Silent this long: its entry is deleted (kept a while past leaving so that every instance's
/// next announce still sees it gone rather than never there).
pub const FORGET_AFTER_MS: u64 = 60_000;

/// KEYS: the members hash. ARGV: this instance's name, its card (JSON), [`FORGET_AFTER_MS`].
/// Returns Redis's time (ms) then name, value pairs of the entries kept.
pub const ANNOUNCE_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now .. ' ' .. ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
local out = {tostring(now)}
for i = 1, #all, 2 do
  local stamp = tonumber(string.match(all[i + 1], '^(%d+) '))
  if stamp == nil or now - stamp > tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[1], all[i])
  else
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
return out
"#;

/// What an instance says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    /// Its admin API address, if it has one.
    pub admin: Option<String>,
    pub version: String,
    /// Its config fingerprint.
    pub config: String,
    /// When it started (RFC 3339).
    pub started: String,
}

/// One member as `GET /api/cluster` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub name: String,
    #[serde(flatten)]
    pub card: Card,
    /// How long ago it last announced itself (by Redis's clock).
    pub last_seen_ms: u64,
}

/// The members present in a [`ANNOUNCE_SCRIPT`] answer, by name; entries that cannot be read
/// (another version's format) are skipped.
pub fn parse(answer: &[String]) -> Vec<Member> {
    let Some(now) = answer.first().and_then(|t| t.parse::<u64>().ok()) else { return Vec::new() };
    let mut members: Vec<Member> = answer[1..]
        .chunks_exact(2)
        .filter_map(|pair| {
            let (stamp, json) = pair[1].split_once(' ')?;
            let last_seen_ms = now.saturating_sub(stamp.parse().ok()?);
            let card = serde_json::from_str(json).ok()?;
            (last_seen_ms <= LEFT_AFTER_MS).then(|| Member { name: pair[0].clone(), card, last_seen_ms })
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    members
}

/// Who joined and who left between two views (names other than `me`).
pub fn changes<'a>(before: &'a [Member], after: &'a [Member], me: &str) -> (Vec<&'a Member>, Vec<&'a Member>) {
    let names = |v: &'a [Member]| v.iter().map(|m| m.name.as_str()).filter(|n| *n != me).collect::<BTreeSet<_>>();
    let (old, new) = (names(before), names(after));
    let joined = after.iter().filter(|m| m.name != me && !old.contains(m.name.as_str())).collect();
    let left = before.iter().filter(|m| m.name != me && !new.contains(m.name.as_str())).collect();
    (joined, left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(config: &str) -> String {
        let c = Card { admin: None, version: "0.1.0".into(), config: config.into(), started: "t".into() };
        serde_json::to_string(&c).unwrap()
    }

    fn answer(now: u64, entries: &[(&str, u64, &str)]) -> Vec<String> {
        let mut out = vec![now.to_string()];
        for (name, stamp, config) in entries {
            out.push(name.to_string());
            out.push(format!("{stamp} {}", card(config)));
        }
        out
    }

    #[test]
    fn members_silent_for_more_than_three_seconds_have_left() {
        let a = answer(10_000, &[("b", 9_000, "f1"), ("a", 10_000, "f1"), ("old", 6_999, "f1"), ("edge", 7_000, "f2")]);
        let m = parse(&a);
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "edge"]);
        assert_eq!(m[1].last_seen_ms, 1_000);
        assert_eq!(m[2].card.config, "f2");
    }

    #[test]
    fn unreadable_entries_and_answers_are_skipped() {
        let mut a = answer(5_000, &[("a", 5_000, "f")]);
        a.extend(["x".into(), "no-stamp".into(), "y".into(), "12 {not json".into()]);
        assert_eq!(parse(&a).len(), 1);
        assert!(parse(&[]).is_empty());
        assert!(parse(&["soon".into()]).is_empty());
    }

    #[test]
    fn joins_and_leaves_are_the_difference_without_this_instance() {
        let before = parse(&answer(10, &[("me", 10, "f"), ("a", 10, "f"), ("b", 10, "f")]));
        let after = parse(&answer(10, &[("b", 10, "f"), ("c", 10, "f")]));
        let (joined, left) = changes(&before, &after, "me");
        assert_eq!(joined.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["c"]);
        assert_eq!(left.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["a"]);
    }
}
