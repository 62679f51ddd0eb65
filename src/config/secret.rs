//! The session signing secret: which source wins (`STICKYLB_SECRET`, then `session.secret`,
//! then `session.secret_file`, else a random per-process key), the previous secrets
//! (`STICKYLB_PREVIOUS_SECRETS` replaces `session.previous_secrets`), and the secret texts
//! this repository publishes, which are refused wherever they come from: anyone could sign
//! cookies with them.

use super::validate::{Checker, MIN_SECRET_BYTES};
use super::SessionConfig;
use std::fmt;
use toml::Spanned;

/// The environment variable that overrides `session.secret` / `secret_file`.
pub const SECRET_ENV: &str = "STICKYLB_SECRET";
/// The environment variable that overrides `session.previous_secrets` (comma-separated).
pub const PREVIOUS_SECRETS_ENV: &str = "STICKYLB_PREVIOUS_SECRETS";

/// Secret texts published in this repository (the example config, the README): refused as
/// secrets. Any secret starting with `change-me` (any case) is refused too.
pub const PUBLISHED_SECRETS: &[&str] = &[
    "CHANGE-ME-this-placeholder-secret-is-public-0123456789",
    "at-least-32-bytes-of-secret-for-hmac-signing",
    "change-me-to-at-least-32-bytes-of-secret",
];

/// True for a secret this repository publishes (or any `change-me...` placeholder).
pub fn is_published(secret: &str) -> bool {
    let s = secret.trim();
    PUBLISHED_SECRETS.contains(&s) || s.get(..9).is_some_and(|p| p.eq_ignore_ascii_case("change-me"))
}

/// Where the session signing secret came from (never the secret itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecretSource {
    /// `session.secret` in the config file.
    File,
    /// The file `session.secret_file` names.
    SecretFile,
    /// The `STICKYLB_SECRET` environment variable.
    Env,
    /// No secret configured: a random per-process key.
    #[default]
    Random,
}

impl SecretSource {
    /// A few words for the startup log.
    pub fn describe(self) -> &'static str {
        match self {
            SecretSource::File => "session.secret in the config file",
            SecretSource::SecretFile => "the file named by session.secret_file",
            SecretSource::Env => "the STICKYLB_SECRET environment variable",
            SecretSource::Random => "a random per-process key (none configured)",
        }
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Resolve `session.resolved_secret`, `secret_source` and `previous_secrets`; problems go to
/// the checker (at the key for the file's sources, named by the variable for the environment).
pub(super) fn resolve(c: &mut Checker, s: &mut SessionConfig) {
    let (secret, source) = match env(c, SECRET_ENV) {
        Some(value) => (check_env(c, SECRET_ENV, value), SecretSource::Env),
        None => match (&s.secret, &s.secret_file) {
            (Some(secret), _) => {
                (check_file(c, secret.get_ref(), secret.span().start, "session.secret"), SecretSource::File)
            }
            (None, Some(path)) => {
                let at = path.span().start;
                let secret = match std::fs::read_to_string(path.get_ref()) {
                    Ok(text) => {
                        let what = format!("session.secret_file {}", path.get_ref().display());
                        check_file(c, text.trim_end_matches(['\r', '\n']), at, &what)
                    }
                    Err(e) => {
                        c.at(Some(at), format!("cannot read secret_file {}: {e}", path.get_ref().display()));
                        None
                    }
                };
                (secret, SecretSource::SecretFile)
            }
            (None, None) => (None, SecretSource::Random),
        },
    };
    // A source that failed leaves no secret: the config is rejected anyway.
    s.resolved_secret = secret;
    s.secret_source = source;
    match env(c, PREVIOUS_SECRETS_ENV) {
        Some(list) => {
            s.previous_secrets = list
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .filter_map(|v| check_env(c, PREVIOUS_SECRETS_ENV, v.to_owned()))
                .map(|v| Spanned::new(0..0, v))
                .collect();
        }
        None => {
            for old in &s.previous_secrets {
                check_file(c, old.get_ref(), old.span().start, "previous secret");
            }
        }
    }
}

/// The variable's value; `None` when unset. A value that is not UTF-8 is a problem.
fn env(c: &mut Checker, name: &str) -> Option<String> {
    let value = (c.env)(name)?;
    match value.into_string() {
        Ok(v) => Some(v),
        Err(_) => {
            c.outside(format!("{name} (environment variable): is not UTF-8"));
            Some(String::new())
        }
    }
}

fn check_env(c: &mut Checker, name: &str, value: String) -> Option<String> {
    let Some(problem) = problem(&value) else { return Some(value) };
    c.outside(format!("{name} (environment variable): {problem}"));
    None
}

fn check_file(c: &mut Checker, value: &str, at: usize, what: &str) -> Option<String> {
    let Some(problem) = problem(value) else { return Some(value.to_owned()) };
    c.at(Some(at), format!("{what}: {problem}"));
    None
}

/// What is wrong with a secret, if anything (`None` = a usable secret).
fn problem(secret: &str) -> Option<String> {
    if is_published(secret) {
        Some(
            "this is a placeholder published with stickylb, usable by anyone to sign cookies: \
             set a random secret of your own (e.g. `openssl rand -base64 48`)"
                .to_owned(),
        )
    } else if secret.len() < MIN_SECRET_BYTES {
        Some(format!("must be at least {MIN_SECRET_BYTES} bytes (got {})", secret.len()))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::collect::{check, Problems};
    use super::super::tests::MIN;
    use super::*;
    use crate::config::Config;
    use std::ffi::OsString;

    const ENV_SECRET: &str = "env-secret-0123456789abcdef0123456789abcdef";
    const FILE_SECRET: &str = "file-secret-0123456789abcdef0123456789abcdef";

    /// Check `text` with only the given environment variables set.
    fn with_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, Vec<String>> {
        let vars: Vec<(String, OsString)> = vars.iter().map(|(k, v)| (k.to_string(), OsString::from(v))).collect();
        let env = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        check(text, Problems::new("t.toml", text), &env).map_err(|e| e.messages())
    }

    fn file_secret(secret: &str) -> String {
        format!("[session]\nsecret = \"{secret}\"\n{MIN}")
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let c = with_env(&file_secret(FILE_SECRET), &[(SECRET_ENV, ENV_SECRET)]).unwrap();
        assert_eq!(c.session.resolved_secret.as_deref(), Some(ENV_SECRET));
        assert_eq!(c.session.secret_source, SecretSource::Env);
        let c = with_env(&file_secret(FILE_SECRET), &[]).unwrap();
        assert_eq!(c.session.resolved_secret.as_deref(), Some(FILE_SECRET));
        assert_eq!(c.session.secret_source, SecretSource::File);
        let c = with_env(MIN, &[]).unwrap();
        assert_eq!((c.session.resolved_secret, c.session.secret_source), (None, SecretSource::Random));
        assert!(SecretSource::Env.to_string().contains("STICKYLB_SECRET"));
    }

    #[test]
    fn a_secret_file_is_read_unless_the_environment_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("{FILE_SECRET}\n")).unwrap();
        let text = format!("[session]\nsecret_file = \"{}\"\n{MIN}", path.display());
        let c = with_env(&text, &[]).unwrap();
        assert_eq!(c.session.resolved_secret.as_deref(), Some(FILE_SECRET));
        assert_eq!(c.session.secret_source, SecretSource::SecretFile);
        let missing = format!("[session]\nsecret_file = \"/no/such/secret\"\n{MIN}");
        assert!(with_env(&missing, &[]).unwrap_err()[0].starts_with("t.toml:2:15: cannot read secret_file"));
        assert_eq!(with_env(&missing, &[(SECRET_ENV, ENV_SECRET)]).unwrap().session.secret_source, SecretSource::Env);
        std::fs::write(&path, PUBLISHED_SECRETS[0]).unwrap();
        let e = with_env(&text, &[]).unwrap_err();
        assert!(e[0].starts_with("t.toml:2:15: session.secret_file ") && e[0].contains("placeholder"), "{e:?}");
    }

    #[test]
    fn a_short_environment_secret_is_an_error_even_with_a_good_file_secret() {
        let e = with_env(&file_secret(FILE_SECRET), &[(SECRET_ENV, "short")]).unwrap_err();
        assert_eq!(e, ["STICKYLB_SECRET (environment variable): must be at least 32 bytes (got 5)"]);
        let e = with_env(MIN, &[(SECRET_ENV, "")]).unwrap_err();
        assert_eq!(e, ["STICKYLB_SECRET (environment variable): must be at least 32 bytes (got 0)"]);
    }

    #[test]
    fn published_placeholders_are_refused_from_the_file_and_the_environment() {
        for secret in PUBLISHED_SECRETS.iter().copied().chain(["Change-Me-please-0123456789abcdef0123456789"]) {
            let e = with_env(&file_secret(secret), &[]).unwrap_err();
            assert!(e[0].starts_with("t.toml:2:10: session.secret: this is a placeholder"), "{e:?}");
            let e = with_env(MIN, &[(SECRET_ENV, secret)]).unwrap_err();
            assert!(e[0].starts_with("STICKYLB_SECRET (environment variable): this is a placeholder"), "{e:?}");
        }
        let text = format!("[session]\nprevious_secrets = [\"{}\"]\n{MIN}", PUBLISHED_SECRETS[0]);
        assert!(with_env(&text, &[]).unwrap_err()[0].starts_with("t.toml:2:21: previous secret: this is a placeholder"));
    }

    #[test]
    fn previous_secrets_from_the_environment_replace_the_file_list() {
        let text = format!("[session]\nprevious_secrets = [\"{FILE_SECRET}\"]\n{MIN}");
        let list = format!("{ENV_SECRET}, {}", ENV_SECRET.to_uppercase());
        let c = with_env(&text, &[(PREVIOUS_SECRETS_ENV, &list)]).unwrap();
        let got: Vec<&str> = c.session.previous_secrets.iter().map(|s| s.get_ref().as_str()).collect();
        assert_eq!(got, [ENV_SECRET.to_string(), ENV_SECRET.to_uppercase()]);
        let c = with_env(&text, &[]).unwrap();
        assert_eq!(c.session.previous_secrets[0].get_ref(), FILE_SECRET);
        let e = with_env(MIN, &[(PREVIOUS_SECRETS_ENV, &format!("{ENV_SECRET},tiny"))]).unwrap_err();
        assert_eq!(e, ["STICKYLB_PREVIOUS_SECRETS (environment variable): must be at least 32 bytes (got 4)"]);
    }
}
