//! Login names bound to one identity: the `login_names` table beside the
//! audit log, this process's snapshot of it, and the operator's list,
//! release, map and import.
//!
//! A login name is one account on every host, so it belongs to one person:
//! the first (issuer, subject) that uses it at this CA (receives a
//! certificate, requests or approves an elevation) binds it, and every other
//! identity deriving the same name is refused (`login_name_taken`) until an
//! operator releases or maps it. Binding is an `INSERT … ON CONFLICT DO
//! NOTHING` and a read of the owner inside [`AuditStore::transact`] (so the
//! row and its audit row commit together, and concurrent first uses, also on
//! other replicas, end with one owner). A binding this process knows costs
//! no database round trip; the snapshot is reloaded when the table's version
//! changes (checked every second), so a release or map by `jitssh-ca
//! login-name` counts within about a second, like a revocation.
//!
//! `login_name_holders` remembers every identity that ever held a name: after
//! a release or map, the old and new holder are still one person for the
//! elevation rules (no approving your own request from the account a name
//! was moved to).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use ca_core::audit::AuditEvent;
use ca_core::{IdentityKind, LoginName, VerifiedIdentity};

use crate::audit::{AuditError, AuditStore, TxOutcome};
use crate::db::{Conn, Db, DbError};
use crate::params;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS login_names (
    login    TEXT PRIMARY KEY,
    issuer   TEXT NOT NULL,
    subject  TEXT NOT NULL,
    bound_at INTEGER NOT NULL,
    bound_by TEXT NOT NULL CHECK (bound_by IN ('first_use', 'operator'))
);
CREATE INDEX IF NOT EXISTS login_names_identity ON login_names(issuer, subject);
CREATE TABLE IF NOT EXISTS login_name_holders (
    login   TEXT NOT NULL,
    issuer  TEXT NOT NULL,
    subject TEXT NOT NULL,
    PRIMARY KEY (login, issuer, subject)
);
CREATE TABLE IF NOT EXISTS login_names_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);";

/// The same tables for PostgreSQL.
const POSTGRES: &str = "
CREATE TABLE IF NOT EXISTS login_names (
    login    TEXT PRIMARY KEY,
    issuer   TEXT NOT NULL,
    subject  TEXT NOT NULL,
    bound_at BIGINT NOT NULL,
    bound_by TEXT NOT NULL CHECK (bound_by IN ('first_use', 'operator'))
);
CREATE INDEX IF NOT EXISTS login_names_identity ON login_names(issuer, subject);
CREATE TABLE IF NOT EXISTS login_name_holders (
    login   TEXT NOT NULL,
    issuer  TEXT NOT NULL,
    subject TEXT NOT NULL,
    PRIMARY KEY (login, issuer, subject)
);
CREATE TABLE IF NOT EXISTS login_names_version (
    id      BIGINT PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);";

/// Say at start which issuers of people have no login rule: nobody from
/// them gets a personal principal (each denial says so too).
pub fn warn_about_issuers_without_a_rule(issuers: &[crate::oidc::IssuerConfig]) {
    for i in issuers {
        if i.kind == IdentityKind::Human && i.login.is_none() {
            tracing::warn!(
                issuer = %i.issuer,
                "this issuer of people has no login_claim: nobody from it gets a personal principal until [[issuers]] sets one (e.g. login_claim = \"email\" with email_domains)"
            );
        }
    }
}

/// Create the tables if missing (idempotent; run at start and by `db migrate`).
pub fn create_tables(db: &Db) -> Result<(), DbError> {
    crate::audit::ensure_tables(db, SCHEMA, POSTGRES)
}

#[derive(Debug, thiserror::Error)]
pub enum LoginNameError {
    #[error(
        "the login name {0:?} belongs to another identity at this CA (another account or issuer), so it is not issued to this one; if it is yours, ask the CA operator to map it to you (`jitssh-ca login-name map`)"
    )]
    Taken(String),
    #[error("no identity holds the login name {0:?} (`jitssh-ca login-name list` shows them)")]
    NotBound(String),
    #[error("{0}")]
    Invalid(String),
    /// The detail is logged, not shown to callers.
    #[error(
        "the CA's database is unavailable, so the login name could not be checked; try again shortly"
    )]
    Unavailable(String),
}

impl LoginNameError {
    /// Stable snake_case code (HTTP body, metrics, audit).
    pub fn code(&self) -> &'static str {
        match self {
            LoginNameError::Taken(_) => "login_name_taken",
            LoginNameError::NotBound(_) => "login_name_not_bound",
            LoginNameError::Invalid(_) => "invalid_request",
            LoginNameError::Unavailable(_) => "audit_unavailable",
        }
    }

    /// The database (not the caller) is at fault: retry later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, LoginNameError::Unavailable(_))
    }
}

impl From<DbError> for LoginNameError {
    fn from(e: DbError) -> Self {
        tracing::warn!(error = %e, "login-name table unavailable");
        LoginNameError::Unavailable(e.to_string())
    }
}

impl From<AuditError> for LoginNameError {
    fn from(e: AuditError) -> Self {
        tracing::warn!(error = %e, "login-name table unavailable");
        LoginNameError::Unavailable(e.to_string())
    }
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Binding {
    pub login: String,
    pub issuer: String,
    pub subject: String,
    pub bound_at: u64,
    /// `first_use` or `operator`.
    pub bound_by: String,
}

type Identity = (String, String);

#[derive(Default)]
struct Snapshot {
    version: u64,
    /// Login name → the identity holding it now.
    owners: HashMap<String, Identity>,
    /// Identity → every login name it ever held (`login_name_holders`:
    /// a release or map does not make two identities different people).
    held: HashMap<Identity, Vec<String>>,
}

impl Snapshot {
    fn hold(&mut self, login: &str, who: Identity) {
        let names = self.held.entry(who).or_default();
        if !names.iter().any(|n| n == login) {
            names.push(login.to_owned());
        }
    }
}

/// The bindings, and this process's view of them.
pub struct LoginNames {
    db: Db,
    audit: AuditStore,
    current: RwLock<Snapshot>,
}

impl LoginNames {
    /// Create the tables if needed and load the bindings.
    pub fn open(audit: AuditStore) -> Result<Self, DbError> {
        let db = audit.db().clone();
        create_tables(&db)?;
        let names = LoginNames {
            db,
            audit,
            current: RwLock::new(Snapshot::default()),
        };
        names.reload()?;
        Ok(names)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Snapshot> {
        self.current.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reload every binding.
    pub fn reload(&self) -> Result<(), DbError> {
        let (version, rows, holders) = self.db.with(|c| {
            let version = version(c)?;
            let rows = c.query("SELECT login, issuer, subject FROM login_names", &[])?;
            let holders = c.query("SELECT login, issuer, subject FROM login_name_holders", &[])?;
            Ok((version, rows, holders))
        })?;
        let mut snap = Snapshot {
            version,
            owners: HashMap::with_capacity(rows.len()),
            held: HashMap::with_capacity(holders.len()),
        };
        for r in rows {
            snap.owners.insert(r.text(0)?, (r.text(1)?, r.text(2)?));
        }
        for r in holders {
            snap.hold(&r.text(0)?, (r.text(1)?, r.text(2)?));
        }
        *self.write() = snap;
        Ok(())
    }

    /// Reload if the table changed since the last load (one small query
    /// otherwise).
    pub fn refresh(&self) -> Result<(), DbError> {
        let seen = self.read().version;
        if self.db.with(version)? != seen {
            self.reload()?;
        }
        Ok(())
    }

    /// Refresh every `every` in the background (off the async threads).
    pub fn spawn_refresher(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let names = self.clone();
                match tokio::task::spawn_blocking(move || names.refresh()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not refresh login names"),
                    Err(e) => tracing::warn!(error = %e, "login-name refresh panicked"),
                }
            }
        })
    }

    /// The identity holding `login`, as this process last saw it.
    pub fn owner(&self, login: &str) -> Option<(String, String)> {
        self.read().owners.get(login).cloned()
    }

    /// Every login name this process knows for `identity`: the one derived
    /// from its token now, and those bound to its issuer + subject (an
    /// operator may have mapped another). For comparing people.
    pub fn logins_of(&self, identity: &VerifiedIdentity) -> Vec<String> {
        let mut out = self.bound_to(&identity.issuer, &identity.subject);
        if let Some(l) = &identity.login
            && !out.iter().any(|o| o == l.as_str())
        {
            out.push(l.as_str().to_owned());
        }
        out
    }

    /// The login names `issuer` + `subject` holds or ever held.
    pub fn bound_to(&self, issuer: &str, subject: &str) -> Vec<String> {
        self.read()
            .held
            .get(&(issuer.to_owned(), subject.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// The login name of a person acting now must be theirs: bound to this
    /// issuer + subject, or free (then it becomes theirs, with an audit
    /// row). Workloads and people without a login name pass.
    pub async fn claim(&self, identity: &VerifiedIdentity, now: u64) -> Result<(), LoginNameError> {
        let Some(login) = &identity.login else {
            return Ok(());
        };
        if identity.kind != IdentityKind::Human {
            return Ok(());
        }
        let mine = |(i, s): &Identity| *i == identity.issuer && *s == identity.subject;
        // The hot path: a binding this process knows.
        match self.read().owners.get(login.as_str()) {
            Some(owner) if mine(owner) => return Ok(()),
            Some(_) => return Err(LoginNameError::Taken(login.to_string())),
            None => {}
        }
        let (name, issuer, subject) = (
            login.as_str().to_owned(),
            identity.issuer.clone(),
            identity.subject.clone(),
        );
        let email = identity.email.clone();
        let owner = self
            .audit
            .transact(move |c| {
                let inserted = c.execute(
                    "INSERT INTO login_names (login, issuer, subject, bound_at, bound_by)
                     VALUES ($1, $2, $3, $4, 'first_use') ON CONFLICT (login) DO NOTHING",
                    &params![&name, &issuer, &subject, now],
                )?;
                let row = c.query_one(
                    "SELECT issuer, subject FROM login_names WHERE login = $1",
                    &params![&name],
                )?;
                let owner = (row.text(0)?, row.text(1)?);
                let mut events = Vec::new();
                if inserted == 1 {
                    hold(c, &name, &issuer, &subject)?;
                    bump_version(c)?;
                    events.push(AuditEvent {
                        time: now,
                        action: "login_name_bind".into(),
                        outcome: "bound".into(),
                        issuer: Some(issuer),
                        subject: Some(subject),
                        email,
                        details: Some(
                            serde_json::json!({ "login": name, "bound_by": "first_use" }),
                        ),
                        ..Default::default()
                    });
                }
                Ok(TxOutcome {
                    events,
                    keep: true,
                    value: owner,
                })
            })
            .await?;
        let ok = mine(&owner);
        let mut snap = self.write();
        if ok {
            snap.hold(login.as_str(), owner.clone());
        }
        snap.owners.insert(login.as_str().to_owned(), owner);
        drop(snap);
        if ok {
            Ok(())
        } else {
            Err(LoginNameError::Taken(login.to_string()))
        }
    }

    /// Every binding, by login name.
    pub fn list(&self) -> Result<Vec<Binding>, LoginNameError> {
        let rows = self
            .db
            .with(|c| c.query(&format!("{BINDING} ORDER BY login"), &[]))?;
        rows.iter()
            .map(binding_of)
            .collect::<Result<_, DbError>>()
            .map_err(LoginNameError::from)
    }

    /// Free `login` (the next identity to use it binds it), with an audit
    /// row in the same commit. Returns the binding removed.
    pub async fn release(
        &self,
        login: &str,
        reason: Option<String>,
        now: u64,
    ) -> Result<Binding, LoginNameError> {
        let login = parse(login)?;
        let name = login.clone();
        let found = self
            .audit
            .transact(move |c| {
                let Some(old) = binding(c, &login)? else {
                    return Ok(TxOutcome {
                        events: vec![],
                        keep: false,
                        value: None,
                    });
                };
                c.execute("DELETE FROM login_names WHERE login = $1", &params![&login])?;
                bump_version(c)?;
                let event = operator_event("login_name_release", "released", &old, reason, now);
                Ok(TxOutcome {
                    events: vec![event],
                    keep: true,
                    value: Some(old),
                })
            })
            .await?;
        let old = found.ok_or(LoginNameError::NotBound(name))?;
        self.write().owners.remove(&old.login);
        Ok(old)
    }

    /// Give `login` to `issuer` + `subject` (whoever held it before loses
    /// it), with an audit row in the same commit. Returns the previous
    /// binding, if any.
    pub async fn map(
        &self,
        login: &str,
        issuer: &str,
        subject: &str,
        reason: Option<String>,
        now: u64,
    ) -> Result<Option<Binding>, LoginNameError> {
        let login = parse(login)?;
        if subject.is_empty() || ca_core::has_control_chars(subject) {
            return Err(LoginNameError::Invalid(
                "--subject must be the identity's `sub` claim: non-empty printable text".into(),
            ));
        }
        let new = Binding {
            login: login.clone(),
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
            bound_at: now,
            bound_by: "operator".into(),
        };
        let n = new.clone();
        let previous = self
            .audit
            .transact(move |c| {
                let old = binding(c, &n.login)?;
                c.execute(
                    "INSERT INTO login_names (login, issuer, subject, bound_at, bound_by)
                     VALUES ($1, $2, $3, $4, 'operator')
                     ON CONFLICT (login) DO UPDATE SET issuer = excluded.issuer,
                       subject = excluded.subject, bound_at = excluded.bound_at,
                       bound_by = excluded.bound_by",
                    &params![&n.login, &n.issuer, &n.subject, now],
                )?;
                hold(c, &n.login, &n.issuer, &n.subject)?;
                bump_version(c)?;
                let mut event = operator_event("login_name_map", "mapped", &n, reason, now);
                if let (Some(d), Some(o)) = (event.details.as_mut(), &old) {
                    d["previous"] = serde_json::json!({ "issuer": o.issuer, "subject": o.subject });
                }
                Ok(TxOutcome {
                    events: vec![event],
                    keep: true,
                    value: old,
                })
            })
            .await?;
        let mut snap = self.write();
        let who = (new.issuer, new.subject);
        snap.hold(&new.login, who.clone());
        snap.owners.insert(new.login, who);
        Ok(previous)
    }
}

fn parse(login: &str) -> Result<String, LoginNameError> {
    LoginName::parse(login)
        .map(|l| l.as_str().to_owned())
        .map_err(|e| LoginNameError::Invalid(e.to_string()))
}

fn operator_event(
    action: &str,
    outcome: &str,
    b: &Binding,
    reason: Option<String>,
    now: u64,
) -> AuditEvent {
    AuditEvent {
        time: now,
        action: action.into(),
        outcome: outcome.into(),
        issuer: Some(b.issuer.clone()),
        subject: Some(b.subject.clone()),
        reason,
        details: Some(serde_json::json!({ "login": b.login, "bound_by": "operator" })),
        ..Default::default()
    }
}

/// What `import` found in the audit log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Bound now (or, in a dry run, would be).
    pub bound: Vec<Binding>,
    /// Names already held, or received earlier by another identity:
    /// (name, issuer, subject of the identity that did not get it).
    pub refused: Vec<(String, String, String)>,
}

/// The personal login name an issued `user_cert` row carried, by the rule
/// its issuer has now: the verified email's local part for `"email"` rules
/// (the row keeps the verified email), else the default policy's reason
/// "NAME: the user's own login…". Only a name among the granted principals
/// counts: one the identity really received.
fn imported_name(
    issuers: &[crate::oidc::IssuerConfig],
    e: &ca_core::audit::AuditEvent,
) -> Option<String> {
    let issuer = issuers
        .iter()
        .find(|i| Some(&i.issuer) == e.issuer.as_ref())?;
    if issuer.kind != IdentityKind::Human || issuer.login.is_none() {
        return None;
    }
    let name = match issuer.login.source() {
        ca_core::login::LoginSource::Email => issuer
            .login
            .derive(&serde_json::Map::new(), e.email.as_deref())
            .ok()?,
        _ => e.decision_reasons.iter().find_map(|r| {
            let (name, rest) = r.split_once(": ")?;
            rest.starts_with("the user's own login")
                .then(|| LoginName::parse(name).ok())
                .flatten()
        })?,
    };
    e.granted_principals
        .iter()
        .any(|p| p == name.as_str())
        .then(|| name.as_str().to_owned())
}

impl LoginNames {
    /// Bind login names from certificates issued before bindings existed
    /// (`jitssh-ca login-name import`): in audit-log order, the first
    /// identity that received a name gets it, as if it had been bound then;
    /// names already bound stay as they are. One commit, one
    /// `login_name_bind` row per name bound.
    pub async fn import(
        &self,
        issuers: &[crate::oidc::IssuerConfig],
        dry_run: bool,
        now: u64,
    ) -> Result<ImportReport, LoginNameError> {
        let filter = crate::audit::Filter {
            action: Some("user_cert".into()),
            ..Default::default()
        };
        let rows = self.audit.list(&filter)?;
        let mut report = ImportReport::default();
        let mut first: HashMap<String, (String, String, u64)> = HashMap::new();
        for row in rows.iter().filter(|r| r.event.outcome == "issued") {
            let e = &row.event;
            let (Some(issuer), Some(subject), Some(name)) =
                (&e.issuer, &e.subject, imported_name(issuers, e))
            else {
                continue;
            };
            match first.get(&name) {
                None => {
                    first.insert(name, (issuer.clone(), subject.clone(), row.seq));
                }
                Some((i, s, _)) if i == issuer && s == subject => {}
                Some(_) => {
                    let other = (name, issuer.clone(), subject.clone());
                    if !report.refused.contains(&other) {
                        report.refused.push(other);
                    }
                }
            }
        }
        let mut wanted: Vec<(String, String, String, u64)> = first
            .into_iter()
            .map(|(name, (i, s, seq))| (name, i, s, seq))
            .collect();
        wanted.sort_by_key(|w| w.3);
        let (bound, held) = self
            .audit
            .transact(move |c| {
                let (mut bound, mut held, mut events) = (Vec::new(), Vec::new(), Vec::new());
                for (name, issuer, subject, seq) in wanted {
                    let inserted = c.execute(
                        "INSERT INTO login_names (login, issuer, subject, bound_at, bound_by)
                         VALUES ($1, $2, $3, $4, 'first_use') ON CONFLICT (login) DO NOTHING",
                        &params![&name, &issuer, &subject, now],
                    )?;
                    if inserted == 0 {
                        if binding(c, &name)?
                            .is_some_and(|b| b.issuer != issuer || b.subject != subject)
                        {
                            held.push((name, issuer, subject));
                        }
                        continue;
                    }
                    hold(c, &name, &issuer, &subject)?;
                    events.push(AuditEvent {
                        time: now,
                        action: "login_name_bind".into(),
                        outcome: "bound".into(),
                        issuer: Some(issuer.clone()),
                        subject: Some(subject.clone()),
                        details: Some(serde_json::json!({
                            "login": name, "bound_by": "import", "certificate_seq": seq,
                        })),
                        ..Default::default()
                    });
                    bound.push(Binding {
                        login: name,
                        issuer,
                        subject,
                        bound_at: now,
                        bound_by: "first_use".into(),
                    });
                }
                if !bound.is_empty() {
                    bump_version(c)?;
                }
                // A dry run writes nothing, not even its rows.
                Ok(TxOutcome {
                    events: if dry_run { vec![] } else { events },
                    keep: !dry_run,
                    value: (bound, held),
                })
            })
            .await?;
        report.bound = bound;
        report.refused.extend(held);
        if !dry_run {
            self.reload()?;
        }
        Ok(report)
    }
}

const BINDING: &str = "SELECT login, issuer, subject, bound_at, bound_by FROM login_names";

fn binding_of(r: &crate::db::Row) -> Result<Binding, DbError> {
    Ok(Binding {
        login: r.text(0)?,
        issuer: r.text(1)?,
        subject: r.text(2)?,
        bound_at: r.u64(3)?,
        bound_by: r.text(4)?,
    })
}

fn binding(c: &mut dyn Conn, login: &str) -> Result<Option<Binding>, DbError> {
    c.query_opt(&format!("{BINDING} WHERE login = $1"), &params![login])?
        .map(|r| binding_of(&r))
        .transpose()
}

/// Remember that `issuer` + `subject` held `login` (kept after a release or
/// map, for telling people apart).
fn hold(c: &mut dyn Conn, login: &str, issuer: &str, subject: &str) -> Result<(), DbError> {
    c.execute(
        "INSERT INTO login_name_holders (login, issuer, subject) VALUES ($1, $2, $3)
         ON CONFLICT (login, issuer, subject) DO NOTHING",
        &params![login, issuer, subject],
    )?;
    Ok(())
}

fn version(c: &mut dyn Conn) -> Result<u64, DbError> {
    Ok(
        c.query_opt("SELECT version FROM login_names_version WHERE id = 1", &[])?
            .map(|r| r.u64(0))
            .transpose()?
            .unwrap_or(0),
    )
}

fn bump_version(c: &mut dyn Conn) -> Result<(), DbError> {
    c.execute(
        "INSERT INTO login_names_version (id, version) VALUES (1, 1)
         ON CONFLICT (id) DO UPDATE SET version = login_names_version.version + 1",
        &[],
    )?;
    Ok(())
}
