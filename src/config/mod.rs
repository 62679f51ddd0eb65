//! Configuration: the TOML file parsed once into typed, validated structs.
//!
//! This module owns the schema of `../shared/SPEC.md` (plus a few documented extras), the
//! named defaults, and the error messages (`FILE:LINE:COL: message`). Nothing outside it reads
//! raw TOML; the hot path only ever sees a validated [`Config`] inside an immutable snapshot.

mod schema;
mod validate;

pub use schema::*;
pub use validate::{BackendAddr, ConfigError};

use std::path::{Path, PathBuf};

/// Read, parse and validate a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Io { file: path.display().to_string(), message: e.to_string() })?;
    parse(&text, &path.display().to_string())
}

/// Parse and validate config text; `file` is only used in error messages.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| ConfigError::at_span(file, text, e.span(), e.message()))?;
    validate::validate(config, file, text)
}

/// Where the config comes from when `--config` is not given: `STICKYLB_CONFIG`, then
/// `./stickylb.toml`.
pub fn default_path() -> PathBuf {
    std::env::var_os("STICKYLB_CONFIG").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("stickylb.toml"))
}
