//! Profiles: which CA to use, from `--ca`/`JITSSH_CA`, `--profile`/`JITSSH_PROFILE`
//! and the TOML config file, resolved once into a [`Target`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use reqwest::Url;
use serde::Deserialize;

use crate::duration::parse_duration;

/// The profile used when none is named anywhere.
pub const DEFAULT_PROFILE: &str = "default";

/// Why no usable CA or profile could be worked out.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "no CA configured: pass --ca URL, set JITSSH_CA, or add a profile with `ca = \"https://...\"` to {}",
        file.display()
    )]
    NoCa { file: PathBuf },
    #[error("cannot read {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid jitssh config: {message}", file.display())]
    Parse { file: PathBuf, message: String },
    #[error(
        "profile {name:?} is not in {}; add a [profiles.{name}] section or pick another with --profile",
        file.display()
    )]
    UnknownProfile { name: String, file: PathBuf },
    #[error(
        "profile name {0:?} is not allowed: use letters, digits, '-', '_' and '.', not starting with '.'"
    )]
    BadName(String),
    #[error("CA URL {url:?} is not usable: {why}")]
    BadUrl { url: String, why: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    default_profile: Option<String>,
    #[serde(default)]
    profiles: BTreeMap<String, RawProfile>,
}

/// One `[profiles.NAME]` section.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    ca: Option<String>,
    #[serde(default)]
    principals: Vec<String>,
    ttl: Option<String>,
    hosts: Option<String>,
    bastion: Option<String>,
    #[serde(default)]
    authorization_params: BTreeMap<String, String>,
}

/// Per-profile defaults for `login` and `config`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Defaults {
    pub principals: Vec<String>,
    pub ttl_seconds: Option<u64>,
    pub hosts: Option<String>,
    pub bastion: Option<String>,
    /// Extra authorization request parameters, over the CA's
    /// (`crate::oidc::authorization_params`).
    pub authorization_params: BTreeMap<String, String>,
}

/// The resolved profile: its name, its CA (if any is known) and its defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub profile: String,
    pub ca: Option<Url>,
    pub defaults: Defaults,
    /// The config file consulted, for messages.
    pub config_file: PathBuf,
}

impl Target {
    /// The CA URL, or the error that says how to configure one.
    pub fn ca(&self) -> Result<&Url, ProfileError> {
        self.ca.as_ref().ok_or_else(|| ProfileError::NoCa {
            file: self.config_file.clone(),
        })
    }
}

/// Resolve the target from the command line (which already includes
/// `JITSSH_CA`/`JITSSH_PROFILE`, clap reads them) and the config file.
pub fn resolve(
    config_file: &Path,
    ca: Option<&str>,
    profile: Option<&str>,
) -> Result<Target, ProfileError> {
    let text = match std::fs::read_to_string(config_file) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(ProfileError::Read {
                file: config_file.to_owned(),
                source,
            });
        }
    };
    resolve_text(config_file, text.as_deref(), ca, profile)
}

fn resolve_text(
    config_file: &Path,
    text: Option<&str>,
    ca: Option<&str>,
    profile: Option<&str>,
) -> Result<Target, ProfileError> {
    let parse_error = |message: String| ProfileError::Parse {
        file: config_file.to_owned(),
        message,
    };
    let raw: RawConfig = match text {
        Some(t) => toml::from_str(t).map_err(|e| parse_error(e.message().to_owned()))?,
        None => RawConfig::default(),
    };
    let explicit = profile.filter(|p| !p.is_empty());
    let name = explicit
        .or(raw.default_profile.as_deref())
        .unwrap_or(DEFAULT_PROFILE)
        .to_owned();
    check_name(&name)?;
    let section = match raw.profiles.get(&name) {
        Some(s) => s.clone(),
        // A named profile must exist, unless --ca says where to go anyway.
        None if name != DEFAULT_PROFILE && ca.is_none() => {
            return Err(ProfileError::UnknownProfile {
                name,
                file: config_file.to_owned(),
            });
        }
        None => RawProfile::default(),
    };
    let ca = match ca.filter(|c| !c.is_empty()).or(section.ca.as_deref()) {
        Some(url) => Some(parse_ca_url(url)?),
        None => None,
    };
    let ttl_seconds = match &section.ttl {
        Some(t) => Some(
            parse_duration(t)
                .map_err(|e| parse_error(format!("profiles.{name}.ttl: {e}")))?
                .as_secs(),
        ),
        None => None,
    };
    Ok(Target {
        profile: name,
        ca,
        defaults: Defaults {
            principals: section.principals,
            ttl_seconds,
            hosts: section.hosts,
            bastion: section.bastion,
            authorization_params: section.authorization_params,
        },
        config_file: config_file.to_owned(),
    })
}

/// What [`remember_ca`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remembered {
    /// The profile already named this CA.
    Unchanged,
    /// The profile had no CA; now it has.
    New,
    /// The profile named another CA, given here.
    Replaced(String),
}

/// Why the CA could not be remembered (the login itself succeeded).
#[derive(Debug, thiserror::Error)]
pub enum RememberError {
    #[error("cannot read {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not valid TOML ({message}); fix it, or pass --ca every time", file.display())]
    Parse { file: PathBuf, message: String },
    #[error("{} has `{key}` that is not a table; fix it, or pass --ca every time", file.display())]
    NotATable { file: PathBuf, key: String },
    #[error(transparent)]
    Write(#[from] crate::store::StoreError),
}

/// Make `ca` the CA of profile `name` in `config_file`, so later commands
/// need no `--ca`: the file is created if missing; otherwise only
/// `[profiles.NAME] ca` changes, every other line, comment and key stays as
/// written. Written atomically.
pub fn remember_ca(config_file: &Path, name: &str, ca: &Url) -> Result<Remembered, RememberError> {
    let text = match std::fs::read_to_string(config_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(RememberError::Read {
                file: config_file.to_owned(),
                source,
            });
        }
    };
    let mut doc: toml_edit::DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| RememberError::Parse {
                file: config_file.to_owned(),
                message: e.message().to_owned(),
            })?;
    let not_table = |key: String| RememberError::NotATable {
        file: config_file.to_owned(),
        key,
    };
    let profiles = doc
        .entry("profiles")
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        })
        .as_table_like_mut()
        .ok_or_else(|| not_table("profiles".into()))?;
    let profile = profiles
        .entry(name)
        .or_insert(toml_edit::Item::Table(toml_edit::Table::new()))
        .as_table_like_mut()
        .ok_or_else(|| not_table(format!("profiles.{name}")))?;
    let url = ca.as_str();
    let previous = profile
        .get("ca")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let outcome = match previous {
        Some(p) if parse_ca_url(&p).is_ok_and(|u| u == *ca) => return Ok(Remembered::Unchanged),
        Some(p) => Remembered::Replaced(p),
        None => Remembered::New,
    };
    profile.insert("ca", toml_edit::value(url));
    crate::store::write_private(config_file, doc.to_string().as_bytes())?;
    Ok(outcome)
}

/// Profile names become directory names: keep them boring.
fn check_name(name: &str) -> Result<(), ProfileError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ProfileError::BadName(name.to_owned()))
    }
}

/// An `https` URL, or `http` to a loopback address (a development CA): ID
/// tokens are bearer credentials and never cross a network in clear text.
pub fn parse_ca_url(text: &str) -> Result<Url, ProfileError> {
    let bad = |why: &str| ProfileError::BadUrl {
        url: text.to_owned(),
        why: why.to_owned(),
    };
    let url = Url::parse(text.trim())
        .map_err(|e| bad(&format!("{e}; write it like https://ca.example.com")))?;
    let Some(host) = url.host_str() else {
        return Err(bad("it has no host"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(bad(
                "plain http is only allowed to loopback addresses; use https://",
            ));
        }
        _ => return Err(bad("use an https:// URL")),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("remove the query or fragment"));
    }
    Ok(url)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FILE: &str = "/cfg/jitssh/config.toml";

    #[test]
    fn a_login_remembers_its_ca_and_keeps_the_rest_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jitssh/config.toml");
        let url = |u: &str| parse_ca_url(u).unwrap();
        // No file yet: created, and later commands resolve the CA from it.
        assert_eq!(
            remember_ca(&file, DEFAULT_PROFILE, &url("http://127.0.0.1:8400")).unwrap(),
            Remembered::New
        );
        let target = super::resolve(&file, None, None).unwrap();
        assert_eq!(target.ca, Some(url("http://127.0.0.1:8400")));
        assert_eq!(
            remember_ca(&file, DEFAULT_PROFILE, &url("http://127.0.0.1:8400/")).unwrap(),
            Remembered::Unchanged
        );
        // A hand-written file: only that key changes.
        let written = "# my CAs\ndefault_profile = \"work\"\n\n[profiles.work]\nca = \"https://old.example.com\"  # the old one\nttl = \"30m\"\n\n[profiles.home]\nca = \"https://home.example.com\"\n";
        std::fs::write(&file, written).unwrap();
        assert_eq!(
            remember_ca(&file, "work", &url("https://ca.example.com")).unwrap(),
            Remembered::Replaced("https://old.example.com".into())
        );
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("# my CAs\ndefault_profile = \"work\""),
            "{text}"
        );
        assert!(
            text.contains("ttl = \"30m\"") && text.contains("https://home.example.com"),
            "{text}"
        );
        let work = super::resolve(&file, None, None).unwrap();
        assert_eq!(work.ca, Some(url("https://ca.example.com")));
        assert_eq!(work.defaults.ttl_seconds, Some(1800));
        // A new profile is added beside the others.
        assert_eq!(
            remember_ca(&file, "lab", &url("https://lab.example.com")).unwrap(),
            Remembered::New
        );
        let lab = super::resolve(&file, None, Some("lab")).unwrap();
        assert_eq!(lab.ca, Some(url("https://lab.example.com")));
        assert_eq!(
            super::resolve(&file, None, Some("home")).unwrap().ca,
            Some(url("https://home.example.com"))
        );
        // A file that is not TOML is left alone, with a clear error.
        std::fs::write(&file, "[profiles\n").unwrap();
        let e = remember_ca(&file, "work", &url("https://ca.example.com")).unwrap_err();
        assert!(e.to_string().contains("pass --ca every time"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "[profiles\n");
    }

    fn resolve(
        text: Option<&str>,
        ca: Option<&str>,
        profile: Option<&str>,
    ) -> Result<Target, ProfileError> {
        resolve_text(Path::new(FILE), text, ca, profile)
    }

    const CONFIG: &str = r#"
default_profile = "prod"
[profiles.prod]
ca = "https://ca.example.com"
principals = ["deploy"]
ttl = "30m"
hosts = "*.prod.example.com"
bastion = "bastion.example.com"
[profiles.dev]
ca = "http://127.0.0.1:8400"
"#;

    #[test]
    fn default_profile_from_file() {
        let t = resolve(Some(CONFIG), None, None).unwrap();
        assert_eq!(t.profile, "prod");
        assert_eq!(t.ca.unwrap().as_str(), "https://ca.example.com/");
        assert_eq!(t.defaults.principals, ["deploy"]);
        assert_eq!(t.defaults.ttl_seconds, Some(1800));
        assert_eq!(t.defaults.hosts.as_deref(), Some("*.prod.example.com"));
    }

    #[test]
    fn flags_and_env_override_the_file() {
        let t = resolve(Some(CONFIG), None, Some("dev")).unwrap();
        assert_eq!(t.ca.unwrap().as_str(), "http://127.0.0.1:8400/");
        let t = resolve(Some(CONFIG), Some("https://other.example.com"), None).unwrap();
        assert_eq!(
            (t.profile.as_str(), t.ca.unwrap().as_str()),
            ("prod", "https://other.example.com/")
        );
    }

    #[test]
    fn no_file_no_ca() {
        let t = resolve(None, None, None).unwrap();
        assert_eq!(t.profile, "default");
        assert_eq!(
            t.ca().unwrap_err().to_string(),
            "no CA configured: pass --ca URL, set JITSSH_CA, or add a profile with `ca = \"https://...\"` to /cfg/jitssh/config.toml"
        );
    }

    #[test]
    fn unknown_profile_is_an_error_unless_ca_given() {
        let e = resolve(Some(CONFIG), None, Some("staging")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "profile \"staging\" is not in /cfg/jitssh/config.toml; add a [profiles.staging] section or pick another with --profile"
        );
        assert!(resolve(Some(CONFIG), Some("https://x.example"), Some("staging")).is_ok());
        assert!(matches!(
            resolve(None, Some("https://x.example"), Some("../etc")),
            Err(ProfileError::BadName(_))
        ));
    }

    #[test]
    fn bad_files_are_reported() {
        let e = resolve(Some("[profiles.a]\nca = 1\n"), None, None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/cfg/jitssh/config.toml is not a valid jitssh config:"),
            "{e}"
        );
        let e = resolve(Some("[profiles.default]\ncolour = \"red\"\n"), None, None).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = resolve(Some("[profiles.default]\nttl = \"soon\"\n"), None, None).unwrap_err();
        assert!(e.to_string().contains("profiles.default.ttl"), "{e}");
    }

    #[test]
    fn ca_urls() {
        assert!(parse_ca_url("https://ca.example.com").is_ok());
        assert!(parse_ca_url("http://localhost:8400").is_ok());
        assert!(parse_ca_url("http://[::1]:8400").is_ok());
        let e = parse_ca_url("http://ca.example.com").unwrap_err();
        assert_eq!(
            e.to_string(),
            "CA URL \"http://ca.example.com\" is not usable: plain http is only allowed to loopback addresses; use https://"
        );
        assert!(parse_ca_url("ca.example.com").is_err());
        assert!(parse_ca_url("ftp://ca.example.com").is_err());
    }
}
