//! The `[database]` section: which backend, its TLS settings folded into the
//! PostgreSQL url, and opening it.

use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::raw::RawDatabase;

/// Where the CA keeps its state (`[database]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    /// One process, one SQLite file.
    Sqlite(PathBuf),
    /// Several replicas, one PostgreSQL database. `[database] tls` and
    /// `ca_file` are in `url` as `sslmode` and `sslrootcert` (what
    /// [`crate::db::Target::postgres`] reads).
    Postgres {
        url: String,
        password_file: Option<PathBuf>,
    },
}

impl Database {
    /// A handle to the database (connections open on first use). Reads the
    /// password file and the TLS CA file now, so a missing one is a clear
    /// startup error.
    pub fn open(&self) -> Result<crate::db::Db, ConfigError> {
        use crate::db::{Db, Target};
        match self {
            Database::Sqlite(path) => Ok(Db::new(Target::Sqlite(path.clone()))),
            Database::Postgres { url, password_file } => {
                let password = password_file
                    .as_ref()
                    .map(|f| crate::secret_file::read_line(f, "[database] password_file"))
                    .transpose()
                    .map_err(|e| ConfigError::Invalid(e.to_string()))?;
                // The messages name the [database] key at fault.
                let target = Target::postgres(url, password.as_deref())
                    .map_err(|e| ConfigError::Invalid(e.message))?;
                Ok(Db::new(target))
            }
        }
    }

    /// The SQLite file, if that is the backend.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(p) => Some(p),
            Database::Postgres { .. } => None,
        }
    }
}

/// `[database]` → one backend: SQLite (`path`, the default) or PostgreSQL
/// (`url`), never both, and never a password in the url.
pub(super) fn resolve(
    raw: &RawDatabase,
    abs: &dyn Fn(&Path) -> PathBuf,
) -> Result<Database, ConfigError> {
    match (&raw.path, &raw.url) {
        (Some(_), Some(_)) => Err(ConfigError::Invalid(
            "[database] has both path (SQLite) and url (PostgreSQL): keep one".into(),
        )),
        (_, Some(url)) => {
            if url.contains("password=") || url_has_password(url) {
                return Err(ConfigError::Invalid(
                    "[database] url contains a password: put it in password_file instead".into(),
                ));
            }
            Ok(Database::Postgres {
                url: postgres_tls(url, raw, abs)?,
                password_file: raw.password_file.as_deref().map(abs),
            })
        }
        (path, None) => {
            if raw.password_file.is_some() {
                return Err(ConfigError::Invalid(
                    "[database] password_file is for url (PostgreSQL); SQLite has no password"
                        .into(),
                ));
            }
            if raw.tls.is_some() || raw.ca_file.is_some() {
                return Err(ConfigError::Invalid(
                    "[database] tls and ca_file are for url (PostgreSQL); an SQLite file needs no TLS".into(),
                ));
            }
            Ok(Database::Sqlite(abs(path
                .as_deref()
                .unwrap_or(Path::new("audit.db")))))
        }
    }
}

/// `postgresql://user:secret@host/...`: a password in the authority part.
fn url_has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// The PostgreSQL url with `[database] tls` and `ca_file` (made absolute)
/// added as libpq's `sslmode` and `sslrootcert`. What they mean, the
/// default and the checks between them are [`crate::db::Target::postgres`]'s,
/// at [`Database::open`].
fn postgres_tls(
    url: &str,
    raw: &RawDatabase,
    abs: &dyn Fn(&Path) -> PathBuf,
) -> Result<String, ConfigError> {
    let tls = raw
        .tls
        .as_deref()
        .map(|t| {
            t.parse::<crate::db::TlsMode>()
                .map_err(|why| ConfigError::Invalid(format!("[database] tls = {t:?}: {why}")))
        })
        .transpose()?;
    let ca_file = raw.ca_file.as_deref().map(abs);
    let ca_file = ca_file
        .as_deref()
        .map(|p| {
            p.to_str().ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "[database] ca_file {}: the path must be UTF-8",
                    p.display()
                ))
            })
        })
        .transpose()?;
    Ok(crate::db::with_tls_params(url, tls, ca_file))
}
