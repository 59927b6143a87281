//! [`Conn`] over PostgreSQL with the sync `postgres` client: prepared
//! statements cached per connection, bounded waits, errors with hints.

use std::collections::HashMap;
use std::time::Duration;

use ::postgres::error::SqlState;
use ::postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use ::postgres::{Client, Config, NoTls, Statement};
use bytes::BytesMut;

use super::conn::{Backend, Conn, DbError, DbErrorKind, LOCK_TIMEOUT, Param, Row, TxMode, Value};
use super::pg_tls::{self, PgTls};

/// The advisory lock key that serialises audit chain appends across
/// replicas ("jitssh" in ASCII).
const CHAIN_LOCK: i64 = 0x6a69_7473_7368;

pub(super) struct PgConn {
    /// Always `Some` until dropped.
    client: Option<Client>,
    shown: String,
    statements: HashMap<String, Statement>,
    in_tx: bool,
    /// An error said the session is gone or unusable (terminated by an
    /// administrator or a restart, network): never reuse it. The client
    /// itself may not know yet.
    broken: bool,
}

/// Bounded waits, so an unreachable or stuck database fails requests with
/// 503 instead of hanging them: connect, locks, statements, and a session
/// left idle inside a transaction (a replica that died holding the chain
/// lock releases it when its connection is dropped; a partitioned one
/// through this and TCP keepalives).
pub(super) fn tune(config: &mut Config) {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    config.tcp_user_timeout(Duration::from_secs(30));
    if config.get_application_name().is_none() {
        config.application_name("jitssh-ca");
    }
    let mut options = config.get_options().unwrap_or_default().to_owned();
    options.push_str(&format!(
        " -c lock_timeout={} -c statement_timeout=30000 -c idle_in_transaction_session_timeout=30000",
        LOCK_TIMEOUT.as_millis()
    ));
    config.options(options.trim());
}

/// The connection target without the password.
pub(super) fn shown(config: &Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            ::postgres::config::Host::Tcp(h) => h.clone(),
            ::postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgresql://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

/// A new client, over TLS unless the target's mode is `disable` (the
/// config's `ssl_mode` then fails the connection rather than go on in
/// clear when the server does not speak TLS).
pub(super) fn client(config: &Config, tls: &PgTls, shown: &str) -> Result<Client, DbError> {
    match tls.connector() {
        Some(rustls) => config.connect(rustls.clone()),
        None => config.connect(NoTls),
    }
    .map_err(|e| error(shown, &e))
}

impl PgConn {
    pub(super) fn connect(config: &Config, tls: &PgTls, shown: &str) -> Result<Self, DbError> {
        Ok(PgConn {
            client: Some(client(config, tls, shown)?),
            shown: shown.to_owned(),
            statements: HashMap::new(),
            in_tx: false,
            broken: false,
        })
    }

    /// Map a client error, remembering when it means the session is gone.
    fn fail(&mut self, e: &::postgres::Error) -> DbError {
        let err = error(&self.shown, e);
        if err.kind == DbErrorKind::Unavailable {
            self.broken = true;
        }
        err
    }

    fn client(&mut self) -> Result<&mut Client, DbError> {
        self.client
            .as_mut()
            .ok_or_else(|| DbError::unavailable("the database connection was closed"))
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, DbError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = match self.client()?.prepare(sql) {
            Ok(s) => s,
            Err(e) => return Err(self.fail(&e)),
        };
        if self.statements.len() >= 64 {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self, ty) {
            (Param::Null, _) => Ok(IsNull::Yes),
            (Param::Int(v), &Type::INT8) => v.to_sql(ty, out),
            (Param::Int(v), &Type::INT4) => i32::try_from(*v)?.to_sql(ty, out),
            (Param::Int(v), &Type::INT2) => i16::try_from(*v)?.to_sql(ty, out),
            (Param::Int(v), &Type::TEXT | &Type::VARCHAR) => v.to_string().as_str().to_sql(ty, out),
            (Param::Text(s), &Type::TEXT | &Type::VARCHAR | &Type::NAME | &Type::BPCHAR) => {
                s.to_sql(ty, out)
            }
            (p, ty) => Err(format!("cannot bind {p:?} to a {ty} parameter").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn value(row: &::postgres::Row, i: usize) -> Result<Value, ::postgres::Error> {
    let ty = row.columns()[i].type_();
    Ok(match *ty {
        Type::VOID => Value::Null,
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)?
            .map_or(Value::Null, Value::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map_or(Value::Null, |v| Value::Int(i64::from(v))),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map_or(Value::Null, |v| Value::Int(i64::from(v))),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map_or(Value::Null, |v| Value::Int(i64::from(v))),
        _ => row
            .try_get::<_, Option<String>>(i)?
            .map_or(Value::Null, Value::Text),
    })
}

impl Conn for PgConn {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, DbError> {
        let st = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let result = self.client()?.execute(&st, &refs);
        result.map_err(|e| self.fail(&e))
    }

    fn query_each(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        f: &mut dyn FnMut(Row) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        use ::postgres::fallible_iterator::FallibleIterator as _;
        let st = self.statement(sql)?;
        let shown = self.shown.clone();
        let mut lost = false;
        let result = (|| {
            let mut rows = self.client()?.query_raw(&st, params.iter()).map_err(|e| {
                let err = error(&shown, &e);
                lost = err.kind == DbErrorKind::Unavailable;
                err
            })?;
            loop {
                let next = rows.next().map_err(|e| {
                    let err = error(&shown, &e);
                    lost = err.kind == DbErrorKind::Unavailable;
                    err
                })?;
                let Some(r) = next else { break };
                let values = (0..r.len())
                    .map(|i| value(&r, i))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| DbError::decode(format!("{shown}: {e}")))?;
                f(Row(values))?;
            }
            Ok(())
        })();
        if lost {
            self.broken = true;
        }
        result
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        let result = self.client()?.batch_execute(sql);
        result.map_err(|e| self.fail(&e))
    }

    fn begin(&mut self, mode: TxMode) -> Result<(), DbError> {
        self.batch(match mode {
            TxMode::Write => "BEGIN",
            TxMode::Snapshot => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        })?;
        self.in_tx = true;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), DbError> {
        // Whatever COMMIT answers, the transaction is over.
        self.in_tx = false;
        self.batch("COMMIT")
    }

    fn rollback(&mut self) -> Result<(), DbError> {
        if !self.in_tx {
            return Ok(());
        }
        self.in_tx = false;
        self.batch("ROLLBACK")
    }

    fn in_transaction(&self) -> bool {
        self.in_tx
    }

    fn lock_chain(&mut self) -> Result<(), DbError> {
        self.query_each(
            "SELECT pg_advisory_xact_lock($1)",
            &[Param::Int(CHAIN_LOCK)],
            &mut |_| Ok(()),
        )
    }

    fn reset(&mut self) {
        self.statements.clear();
    }

    fn is_healthy(&self) -> bool {
        !self.broken && self.client.as_ref().is_some_and(|c| !c.is_closed())
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop_client(client);
        }
    }
}

/// Drop a client where blocking is allowed: closing it runs its own runtime,
/// which tokio forbids on a thread that drives async tasks.
pub(crate) fn drop_client(client: Client) {
    if tokio::runtime::Handle::try_current().is_ok() {
        let _ = std::thread::Builder::new()
            .name("pg-close".into())
            .spawn(move || drop(client));
    } else {
        drop(client);
    }
}

/// A PostgreSQL error with what to do about it.
pub(super) fn error(shown: &str, e: &::postgres::Error) -> DbError {
    if let Some(hint) = pg_tls::hint(e) {
        return DbError::unavailable(format!("{shown}: {e}; {hint}"));
    }
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection itself (refused, closed, timed out).
        return DbError::unavailable(format!(
            "{shown}: {e}; check that PostgreSQL is running and reachable, and the [database] url"
        ));
    };
    let (kind, hint) = if *code == SqlState::UNIQUE_VIOLATION {
        (DbErrorKind::Conflict, "")
    } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        (
            DbErrorKind::Unavailable,
            "; grant this database user access to jitssh's tables (and CREATE on the database for the first start)",
        )
    } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        (
            DbErrorKind::Unavailable,
            "; this server is a read-only standby: point [database] url at the primary",
        )
    } else if *code == SqlState::DISK_FULL || *code == SqlState::OUT_OF_MEMORY {
        (
            DbErrorKind::Unavailable,
            "; the database server is out of space or memory",
        )
    } else if *code == SqlState::LOCK_NOT_AVAILABLE || *code == SqlState::QUERY_CANCELED {
        (
            DbErrorKind::Unavailable,
            "; a lock or statement took too long (another replica stuck in a transaction?)",
        )
    } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        && e.as_db_error()
            .is_some_and(|d| d.message().contains("no encryption"))
    {
        // pg_hba.conf has no line for this connection without TLS.
        (
            DbErrorKind::Unavailable,
            "; the server may accept this user and database only over TLS: set [database] tls = \"verify-full\" \
             and ca_file (or tls = \"require\"); else check the user and database name in [database]",
        )
    } else if *code == SqlState::INVALID_PASSWORD
        || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        || *code == SqlState::INVALID_CATALOG_NAME
    {
        (
            DbErrorKind::Unavailable,
            "; check the user, password file and database name in [database]",
        )
    } else if code.code().starts_with("08")
        || code.code().starts_with("53")
        || code.code().starts_with("57")
        || code.code().starts_with("58")
    {
        // Connection exceptions, insufficient resources, operator
        // intervention (shutdown, crash recovery), system errors.
        (DbErrorKind::Unavailable, "; the database is unavailable")
    } else if code.code().starts_with("22") {
        (DbErrorKind::Decode, "")
    } else {
        (DbErrorKind::Other, "")
    };
    DbError::new(kind, format!("{shown}: {e}{hint}"))
}
