//! Log setup: text or JSON lines on stdout, level from `log.level` unless `RUST_LOG` is set.
//! Access-log lines use the `access` target, so `RUST_LOG=access=off` silences them.

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

pub fn init(cfg: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<EnvFilter>().ok())
        .unwrap_or_else(|| EnvFilter::new(&cfg.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout).with_ansi(ansi);
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
