//! Metrics: reading GET /metrics. [`metric_value`] sums one metric's samples; for exact checks
//! [`parse_exposition`] validates the Prometheus text format (0.0.4) line by line and returns
//! every [`Sample`], which [`series`] groups by labels.

use std::collections::{BTreeMap, BTreeSet};

/// Sums the samples of `name` (any labels) in Prometheus text; `None` if there are none.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if let Some(labels) = rest.strip_prefix('{') {
            labels.split_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None
        };
        if let Some(v) = value.and_then(|v| v.split_whitespace().next()) {
            if let Ok(x) = v.parse::<f64>() {
                total = Some(total.unwrap_or(0.0) + x);
            }
        }
    }
    total
}

/// One sample line: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn is_metric_name(s: &str) -> bool {
    let mut cs = s.chars();
    cs.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut cs = s.chars();
    cs.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A sample value as Prometheus writes it (`+Inf`, `-Inf`, `NaN` or a number).
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if s.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.') => s.parse().ok(),
        _ => None,
    }
}

/// `{a="x",b="y\"z"}` (after the name) -> labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("no {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err("label value not quoted".into());
        }
        let mut value = String::new();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((i, '"')) => break eq + 1 + i + 1,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected , or } after a label".into());
        }
    }
}

/// Checks the Prometheus text exposition format (0.0.4) line by line and returns the samples:
/// `# HELP name text` / `# TYPE name type` well formed, at most one TYPE per family and before
/// its samples, each family's samples together, every sample `name{labels} value` with a
/// declared family (histograms: `_bucket` with `le`, `_sum`, `_count`), no series twice.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "exposition does not end with a newline");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut seen = BTreeSet::new();
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = |msg: String| format!("line {}: {msg}: {line:?}", i + 1);
        assert!(!line.trim().is_empty(), "{}", at("empty line".into()));
        if let Some(comment) = line.strip_prefix('#') {
            let parts: Vec<&str> = comment.trim_start().splitn(3, ' ').collect();
            match parts.as_slice() {
                ["HELP", name, ..] => {
                    assert!(is_metric_name(name), "{}", at("bad HELP name".into()));
                }
                ["TYPE", name, ty] => {
                    assert!(is_metric_name(name), "{}", at("bad TYPE name".into()));
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(ty),
                        "{}",
                        at(format!("unknown type {ty}"))
                    );
                    assert!(types.insert(name.to_string(), ty.to_string()).is_none(), "{}", at("TYPE twice".into()));
                }
                ["TYPE", ..] | ["HELP"] => panic!("{}", at("malformed TYPE/HELP".into())),
                _ => {}
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("{}", at("no value".into())));
        let name = &line[..name_end];
        assert!(is_metric_name(name), "{}", at("bad metric name".into()));
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).unwrap_or_else(|e| panic!("{}", at(e)))
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let fields: Vec<&str> =
            rest.strip_prefix(' ').unwrap_or_else(|| panic!("{}", at("no space".into()))).split(' ').collect();
        assert!(matches!(fields.len(), 1 | 2), "{}", at("want `value [timestamp]`".into()));
        let value = parse_value(fields[0]).unwrap_or_else(|| panic!("{}", at("bad value".into())));
        if let Some(ts) = fields.get(1) {
            assert!(ts.parse::<i64>().is_ok(), "{}", at("bad timestamp".into()));
        }
        // The family this sample belongs to.
        let family = types
            .iter()
            .find(|(f, ty)| {
                *f == name
                    || (ty.as_str() == "histogram"
                        && [format!("{f}_bucket"), format!("{f}_sum"), format!("{f}_count")]
                            .contains(&name.to_string()))
            })
            .map(|(f, _)| f.clone())
            .unwrap_or_else(|| panic!("{}", at("sample without a TYPE line before it".into())));
        if name.ends_with("_bucket") && types[&family] == "histogram" {
            assert!(labels.contains_key("le"), "{}", at("bucket without le".into()));
        }
        if current.as_deref() != Some(&family) {
            assert!(!finished.contains(&family), "{}", at("family's samples are not together".into()));
            if let Some(prev) = current.replace(family.clone()) {
                finished.insert(prev);
            }
        }
        assert!(seen.insert(format!("{name}{labels:?}")), "{}", at("series twice".into()));
        samples.push(Sample { name: name.to_string(), labels, value });
    }
    samples
}

/// The samples of `name`, keyed by their labels rendered `k=v,k=v`.
pub fn series(samples: &[Sample], name: &str) -> BTreeMap<String, f64> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| (s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","), s.value))
        .collect()
}

/// The `# TYPE` of a metric family, if declared.
pub fn type_of(text: &str, family: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix(&format!("# TYPE {family} ")).map(str::to_string))
}
