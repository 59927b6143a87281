//! Where jitssh keeps things, from HOME and the XDG base-directory variables.
//!
//! - `$XDG_CONFIG_HOME/jitssh/config.toml` (default `~/.config/...`): profiles.
//! - `$XDG_STATE_HOME/jitssh/<profile>/` (default `~/.local/state/...`): the
//!   cached refresh token and what the last login did (0700 dir, 0600 files).
//! - `~/.ssh/jitssh/`: the managed `known_hosts` and, with `--write`, key files.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// No home directory to put anything in.
#[derive(Debug, thiserror::Error)]
#[error(
    "HOME is not set (or not an absolute path): set HOME to your home directory so jitssh knows where to keep its files"
)]
pub struct NoHome;

/// The directories of one user, resolved once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    pub home: PathBuf,
    /// `.../jitssh/config.toml`.
    pub config_file: PathBuf,
    /// `.../jitssh` under the state directory.
    pub state_dir: PathBuf,
    /// `~/.ssh/jitssh`.
    pub ssh_dir: PathBuf,
}

impl Paths {
    /// From the process environment.
    pub fn from_env() -> Result<Paths, NoHome> {
        Paths::from_vars(|name| std::env::var_os(name))
    }

    /// From `var` (HOME, XDG_CONFIG_HOME, XDG_STATE_HOME). Relative XDG
    /// values are ignored, as the XDG specification says.
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Result<Paths, NoHome> {
        let absolute = |name: &str| var(name).map(PathBuf::from).filter(|p| p.is_absolute());
        let home = absolute("HOME").ok_or(NoHome)?;
        let config = absolute("XDG_CONFIG_HOME").unwrap_or_else(|| home.join(".config"));
        let state = absolute("XDG_STATE_HOME").unwrap_or_else(|| home.join(".local/state"));
        Ok(Paths {
            config_file: config.join("jitssh").join("config.toml"),
            state_dir: state.join("jitssh"),
            ssh_dir: home.join(".ssh").join("jitssh"),
            home,
        })
    }

    /// The state directory of one profile.
    pub fn profile_state(&self, profile: &str) -> PathBuf {
        self.state_dir.join(profile)
    }

    /// The jitssh-managed known_hosts file with the `@cert-authority` lines.
    pub fn known_hosts(&self) -> PathBuf {
        self.ssh_dir.join("known_hosts")
    }

    /// Private key file written by `login --write` into `dir`; the
    /// certificate is beside it with `-cert.pub` appended.
    pub fn key_file(dir: &Path, profile: &str) -> PathBuf {
        if profile == crate::profile::DEFAULT_PROFILE {
            dir.join("id_jitssh")
        } else {
            dir.join(format!("id_jitssh_{profile}"))
        }
    }

    /// `KEY-cert.pub`, where ssh looks for a key's certificate.
    pub fn cert_file(key: &Path) -> PathBuf {
        let mut name = key.as_os_str().to_owned();
        name.push("-cert.pub");
        PathBuf::from(name)
    }

    /// `path` with the home directory shown as `~` (for messages and ssh_config).
    pub fn tilde(&self, path: &Path) -> String {
        match path.strip_prefix(&self.home) {
            Ok(rest) if !rest.as_os_str().is_empty() => format!("~/{}", rest.display()),
            _ => path.display().to_string(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.into())
    }

    #[test]
    fn defaults_under_home() {
        let p = Paths::from_vars(vars(&[("HOME", "/home/ann")])).unwrap();
        assert_eq!(
            p.config_file,
            Path::new("/home/ann/.config/jitssh/config.toml")
        );
        assert_eq!(p.state_dir, Path::new("/home/ann/.local/state/jitssh"));
        assert_eq!(
            p.known_hosts(),
            Path::new("/home/ann/.ssh/jitssh/known_hosts")
        );
        assert_eq!(p.tilde(&p.known_hosts()), "~/.ssh/jitssh/known_hosts");
        assert_eq!(p.tilde(Path::new("/etc/x")), "/etc/x");
    }

    #[test]
    fn honours_xdg_and_ignores_relative_values() {
        let p = Paths::from_vars(vars(&[
            ("HOME", "/h"),
            ("XDG_CONFIG_HOME", "/cfg"),
            ("XDG_STATE_HOME", "relative/state"),
        ]))
        .unwrap();
        assert_eq!(p.config_file, Path::new("/cfg/jitssh/config.toml"));
        assert_eq!(p.state_dir, Path::new("/h/.local/state/jitssh"));
        assert!(Paths::from_vars(vars(&[])).is_err());
        assert!(Paths::from_vars(vars(&[("HOME", "rel")])).is_err());
    }

    #[test]
    fn key_and_cert_names() {
        let key = Paths::key_file(Path::new("/d"), "default");
        assert_eq!(key, Path::new("/d/id_jitssh"));
        assert_eq!(Paths::cert_file(&key), Path::new("/d/id_jitssh-cert.pub"));
        assert_eq!(
            Paths::key_file(Path::new("/d"), "prod"),
            Path::new("/d/id_jitssh_prod")
        );
    }
}
