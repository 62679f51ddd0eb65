//! Configuration: the TOML file parsed once into typed, validated structs.
//!
//! This module owns the schema of `../shared/SPEC.md` (plus a few documented extras), the
//! named defaults, and the error messages (`FILE:LINE:COL: message`, every problem of a file
//! at once: see `collect`). Nothing outside it reads raw TOML; the hot path only ever sees a
//! validated [`Config`] inside an immutable snapshot.
//!
//! - `schema/`: the serde structs, one file per section, and `defaults`.
//! - `collect`: reads a file in rounds so that type errors do not hide each other.
//! - `document`: where each key and value sits in the text.
//! - `validate`: the checks serde cannot express. `secret`: where the signing secret comes from.
//! - `addr`: backend addresses. `error`: the error type and `FILE:LINE:COL`.
//! - `probe`: what `stickylb health` probes.

mod addr;
mod collect;
mod document;
mod error;
mod iprange;
mod probe;
mod schema;
mod secret;
mod validate;

pub use addr::BackendAddr;
pub use error::ConfigError;
pub use iprange::IpRange;
pub use probe::HealthProbe;
pub use schema::*;
pub use secret::{is_published, SecretSource, PREVIOUS_SECRETS_ENV, PUBLISHED_SECRETS, SECRET_ENV};
pub use validate::{MAX_THREADS, MAX_WEIGHT, MIN_SECRET_BYTES};

use std::path::{Path, PathBuf};

/// Read, parse and validate a config file (which need not be UTF-8: bytes that are not are
/// reported with their position).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::Io { file: path.display().to_string(), message: e.to_string() })?;
    collect::check_bytes(&bytes, &path.display().to_string())
}

/// Parse and validate config text; `file` is only used in error messages.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    collect::check(text, collect::Problems::new(file, text), &collect::process_env)
}

/// Where the config comes from when `--config` is not given: `STICKYLB_CONFIG`, then
/// `./stickylb.toml`.
pub fn default_path() -> PathBuf {
    std::env::var_os("STICKYLB_CONFIG").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("stickylb.toml"))
}

#[cfg(test)]
mod tests;
