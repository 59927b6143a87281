//! Reading the log back: filtered listing, single rows, export as JSON Lines,
//! used tokens, and chain verification.

use std::io::Write;

use ca_core::audit::{AuditEvent, ChainError, ChainRow};

use crate::db::{Backend, Conn, DbError, Param, Row, TxMode, Value};
use crate::params;

use super::store::AuditStore;
use super::types::{AuditError, Filter, StoredEvent, UsedToken};
use super::writer::event_principals;

/// The outcome of [`AuditStore::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Rows that verified before the first chain error (all rows if none).
    pub rows: u64,
    /// Hash of the last verified row: anchor it elsewhere to detect deletion
    /// of rows from the end.
    pub last_hash: String,
    /// The first row that breaks the chain.
    pub error: Option<ChainError>,
    /// The first row whose indexed columns (or principal rows) disagree with
    /// its event JSON, which would make `list` filters lie.
    pub index_error: Option<IndexMismatch>,
}

impl VerifyReport {
    /// No chain break and no index disagreement.
    pub fn is_ok(&self) -> bool {
        self.error.is_none() && self.index_error.is_none()
    }
}

/// A row whose index columns do not match its event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("row {seq}: column `{column}` does not match the event; the index was edited")]
pub struct IndexMismatch {
    pub seq: u64,
    /// `time`, `action`, ..., `principals`, or `event` if the JSON does not parse.
    pub column: &'static str,
}

/// Columns for `StoredEvent` and export.
pub(super) const ROW_COLUMNS: &str = "seq, hash, prev_hash, event";

pub(super) struct RawRow {
    pub(super) seq: u64,
    pub(super) hash: String,
    pub(super) prev_hash: String,
    pub(super) event: String,
}

impl RawRow {
    pub(super) fn from_row(r: &Row) -> Result<Self, DbError> {
        Ok(RawRow {
            seq: r.u64(0)?,
            hash: r.text(1)?,
            prev_hash: r.text(2)?,
            event: r.text(3)?,
        })
    }
}

impl AuditStore {
    /// Unexpired used tokens (`expires_at >= now`), to seed the in-memory
    /// replay guard at startup.
    pub fn used_tokens(&self, now: u64) -> Result<Vec<UsedToken>, AuditError> {
        self.db()
            .with(|c| {
                c.query(
                    "SELECT token_hash, expires_at FROM used_tokens WHERE expires_at >= $1",
                    &params![now],
                )?
                .iter()
                .map(|r| {
                    Ok(UsedToken {
                        token_hash: r.text(0)?,
                        expires_at: r.u64(1)?,
                    })
                })
                .collect()
            })
            .map_err(AuditError::read)
    }

    /// Rows matching `filter`, oldest first.
    pub fn list(&self, filter: &Filter) -> Result<Vec<StoredEvent>, AuditError> {
        let mut out = Vec::new();
        self.each(filter, |raw| {
            out.push(self.stored(raw)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Row `seq`, if it exists.
    pub fn show(&self, seq: u64) -> Result<Option<StoredEvent>, AuditError> {
        let Ok(seq) = i64::try_from(seq) else {
            return Ok(None);
        };
        let raw = self
            .db()
            .with(|c| {
                c.query_opt(
                    &format!("SELECT {ROW_COLUMNS} FROM audit WHERE seq = $1"),
                    &params![seq],
                )?
                .map(|r| RawRow::from_row(&r))
                .transpose()
            })
            .map_err(AuditError::read)?;
        raw.map(|raw| self.stored(raw)).transpose()
    }

    /// Write matching rows as JSON Lines,
    /// `{"seq":..,"hash":..,"prev_hash":..,"event":{..}}`, oldest first.
    /// `event` is the stored JSON byte for byte, so the line's `event` text
    /// rehashes to `hash`. Returns the number of lines.
    pub fn export(&self, filter: &Filter, out: &mut (dyn Write + Send)) -> Result<u64, AuditError> {
        let mut out = std::io::BufWriter::new(out);
        let mut lines = 0u64;
        self.each(filter, |raw| {
            let line = self.export_line(&raw)?;
            out.write_all(line.as_bytes()).map_err(AuditError::Export)?;
            lines += 1;
            Ok(())
        })?;
        out.flush().map_err(AuditError::Export)?;
        Ok(lines)
    }

    /// Stream every row, in seq order and in one read snapshot, through
    /// [`verify_chain`], and check each row's index columns against its event.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        self.db()
            .with(|c| {
                // One snapshot for both queries.
                c.begin(TxMode::Snapshot)?;
                unbounded_statements(c)?;
                let report = verify_in(c);
                let _ = c.rollback();
                report
            })
            .map_err(AuditError::read)
    }

    /// Run `f` on each row matching `filter`, oldest first, without
    /// collecting them.
    fn each(
        &self,
        filter: &Filter,
        mut f: impl FnMut(RawRow) -> Result<(), AuditError> + Send,
    ) -> Result<(), AuditError> {
        let (sql, values) = filter_sql(filter, self.db().backend());
        let mut failed = None;
        let result = self.db().with(|c| {
            let params: Vec<Param<'_>> = values.iter().map(Param::from).collect();
            c.begin(TxMode::Snapshot)?;
            let read = unbounded_statements(c).and_then(|()| {
                c.query_each(&sql, &params, &mut |r| {
                    let raw = RawRow::from_row(&r)?;
                    f(raw).map_err(|e| {
                        failed = Some(e);
                        DbError::unavailable("stopped")
                    })
                })
            });
            let _ = c.rollback();
            read
        });
        if let Some(e) = failed {
            return Err(e);
        }
        result.map_err(AuditError::read)
    }

    /// The export line of a row read back (the format of [`AuditStore::export`]).
    pub fn export_row(&self, row: &StoredEvent) -> Result<String, AuditError> {
        self.export_line(&RawRow {
            seq: row.seq,
            hash: row.hash.clone(),
            prev_hash: row.prev_hash.clone(),
            event: row.raw.clone(),
        })
    }

    /// One export line (see [`AuditStore::export`]), newline included;
    /// refuses a row whose event is not JSON.
    fn export_line(&self, raw: &RawRow) -> Result<String, AuditError> {
        serde_json::from_str::<serde::de::IgnoredAny>(&raw.event)
            .map_err(|e| self.corrupt(raw.seq, format!("event is not JSON: {e}")))?;
        Ok(format!(
            "{{\"seq\":{},\"hash\":{},\"prev_hash\":{},\"event\":{}}}\n",
            raw.seq,
            json_string(&raw.hash),
            json_string(&raw.prev_hash),
            raw.event
        ))
    }

    pub(super) fn stored(&self, raw: RawRow) -> Result<StoredEvent, AuditError> {
        let event: AuditEvent = serde_json::from_str(&raw.event)
            .map_err(|e| self.corrupt(raw.seq, format!("event does not parse: {e}")))?;
        Ok(StoredEvent {
            seq: raw.seq,
            hash: raw.hash,
            prev_hash: raw.prev_hash,
            event,
            raw: raw.event,
        })
    }

    fn corrupt(&self, seq: u64, problem: String) -> AuditError {
        AuditError::Corrupt {
            db: self.describe(),
            seq,
            problem,
        }
    }
}

/// Lift PostgreSQL's statement timeout for the rest of this transaction.
/// The server's 30 s bound keeps requests from hanging on a stuck database;
/// the operator's whole-log reads (`audit list/export/verify`, `db
/// migrate`) stream one query over every row, which takes longer than that
/// on a large log (100,000 rows took over 30 s to verify in a debug build).
fn unbounded_statements(c: &mut dyn Conn) -> Result<(), DbError> {
    match c.backend() {
        Backend::Sqlite => Ok(()),
        Backend::Postgres => c.batch("SET LOCAL statement_timeout = 0"),
    }
}

/// [`AuditStore::verify`] inside its snapshot.
fn verify_in(c: &mut dyn Conn) -> Result<VerifyReport, DbError> {
    let orphan = c
        .query_one(
            // NOT EXISTS, not NOT IN: an anti-join on the primary key, where
            // PostgreSQL runs NOT IN as a subplan per row once the seqs no
            // longer fit in work_mem.
            "SELECT min(p.seq) FROM audit_principals p
             WHERE NOT EXISTS (SELECT 1 FROM audit a WHERE a.seq = p.seq)",
            &[],
        )?
        .opt_u64(0)?;
    let principals = match c.backend() {
        Backend::Sqlite => {
            "(SELECT json_group_array(p.principal) FROM audit_principals p WHERE p.seq = a.seq)"
        }
        Backend::Postgres => {
            "(SELECT coalesce(json_agg(p.principal), '[]')::text FROM audit_principals p WHERE p.seq = a.seq)"
        }
    };
    let sql = format!(
        "SELECT a.seq, a.prev_hash, a.hash, a.event,
                a.time, a.action, a.outcome, a.subject, a.issuer, a.serial, {principals}
         FROM audit a ORDER BY a.seq"
    );
    let mut index_error = None;
    // Hashes of the last two rows handed to verify_chain: if it stops at the
    // last one, the one before is the last good row.
    let mut last_hashes = (
        ca_core::audit::GENESIS.to_owned(),
        ca_core::audit::GENESIS.to_owned(),
    );
    let mut verifier = ca_core::audit::ChainVerifier::default();
    let mut broken = None;
    c.query_each(&sql, &[], &mut |r| {
        if broken.is_some() {
            return Ok(());
        }
        let chain = ChainRow {
            seq: r.u64(0)?,
            prev_hash: r.lenient_text(1),
            hash: r.lenient_text(2),
            event: r.lenient_text(3),
        };
        if index_error.is_none() {
            let index = [4, 5, 6, 7, 8, 9].map(|i| r.value(i));
            index_error = check_index(&chain, &index, &r.lenient_text(10));
        }
        last_hashes = (std::mem::take(&mut last_hashes.1), chain.hash.clone());
        if let Err(e) = verifier.push(&chain) {
            broken = Some(e);
        }
        Ok(())
    })?;
    if index_error.is_none()
        && let Some(seq) = orphan
    {
        index_error = Some(IndexMismatch {
            seq,
            column: "principals",
        });
    }
    Ok(match broken {
        None => {
            let (rows, last_hash) = verifier.finish();
            VerifyReport {
                rows,
                last_hash,
                error: None,
                index_error,
            }
        }
        Some(error) => {
            let first_bad = match &error {
                ChainError::Gap { expected, .. } => *expected,
                ChainError::Link { seq } | ChainError::Edited { seq } => *seq,
            };
            VerifyReport {
                rows: first_bad.saturating_sub(1),
                last_hash: last_hashes.0,
                error: Some(error),
                index_error,
            }
        }
    })
}

/// A filter parameter, owned until the query borrows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum FilterValue {
    Int(i64),
    Text(String),
}

impl<'a> From<&'a FilterValue> for Param<'a> {
    fn from(v: &'a FilterValue) -> Self {
        match v {
            FilterValue::Int(i) => Param::Int(*i),
            FilterValue::Text(s) => Param::Text(s),
        }
    }
}

/// The WHERE conditions of `filter` (joined with AND; `$n` numbered from
/// `params.len() + 1`), appending their parameters to `params`. The one
/// translation of a [`Filter`] into SQL, shared by `list`/`export` and the
/// console's search.
pub(super) fn filter_conditions(
    filter: &Filter,
    backend: Backend,
    params: &mut Vec<FilterValue>,
) -> Vec<String> {
    let mut conds = Vec::new();
    let mut push = |cond: &str, v: FilterValue| {
        params.push(v);
        conds.push(cond.replace('?', &format!("${}", params.len())));
    };
    if let Some(s) = &filter.subject {
        push("subject = ?", FilterValue::Text(s.clone()));
    }
    if let Some(p) = &filter.principal {
        push(
            "seq IN (SELECT seq FROM audit_principals WHERE principal = ?)",
            FilterValue::Text(p.clone()),
        );
    }
    if let Some(t) = filter.since {
        push(
            "time >= ?",
            FilterValue::Int(i64::try_from(t).unwrap_or(i64::MAX)),
        );
    }
    if let Some(t) = filter.until {
        push(
            "time < ?",
            FilterValue::Int(i64::try_from(t).unwrap_or(i64::MAX)),
        );
    }
    if let Some(a) = &filter.action {
        push("action = ?", FilterValue::Text(a.clone()));
    }
    if let Some(o) = &filter.outcome {
        push("outcome = ?", FilterValue::Text(o.clone()));
    }
    if let Some(s) = &filter.serial {
        push("serial = ?", FilterValue::Text(s.clone()));
    }
    if let Some(p) = &filter.subject_or_email {
        // The email is only in the event's JSON (no column, no index): the
        // console bounds the rows this condition examines.
        let email = match backend {
            Backend::Sqlite => "json_extract(event, '$.email')",
            Backend::Postgres => "(event::json ->> 'email')",
        };
        params.push(FilterValue::Text(p.clone()));
        let n = params.len();
        conds.push(format!("(subject = ${n} OR {email} = ${n})"));
    }
    conds
}

/// The SELECT for `filter`, with its parameters.
fn filter_sql(filter: &Filter, backend: Backend) -> (String, Vec<FilterValue>) {
    let mut params = Vec::new();
    let conds = filter_conditions(filter, backend, &mut params);
    let mut sql = format!("SELECT {ROW_COLUMNS} FROM audit");
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    match filter.limit {
        Some(limit) => {
            params.push(FilterValue::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
            sql = format!(
                "SELECT * FROM ({sql} ORDER BY seq DESC LIMIT ${}) AS newest ORDER BY seq",
                params.len()
            );
        }
        None => sql.push_str(" ORDER BY seq"),
    }
    (sql, params)
}

/// The first index column of a row that disagrees with its event.
fn check_index(chain: &ChainRow, index: &[Value; 6], principals: &str) -> Option<IndexMismatch> {
    let mismatch = |column| {
        Some(IndexMismatch {
            seq: chain.seq,
            column,
        })
    };
    let Ok(event) = serde_json::from_str::<AuditEvent>(&chain.event) else {
        return mismatch("event");
    };
    let opt = |v: &Option<String>| v.clone().map_or(Value::Null, Value::Text);
    let expected = [
        (
            "time",
            i64::try_from(event.time).map_or(Value::Null, Value::Int),
        ),
        ("action", Value::Text(event.action.clone())),
        ("outcome", Value::Text(event.outcome.clone())),
        ("subject", opt(&event.subject)),
        ("issuer", opt(&event.issuer)),
        ("serial", opt(&event.serial)),
    ];
    for ((column, want), got) in expected.iter().zip(index) {
        if want != got {
            return mismatch(column);
        }
    }
    let mut stored: Vec<String> = serde_json::from_str(principals).unwrap_or_default();
    stored.sort();
    if stored != event_principals(&event) {
        return mismatch("principals");
    }
    None
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_sql_combines_and_limits_newest() {
        let (sql, params) = filter_sql(&Filter::default(), Backend::Sqlite);
        assert_eq!(
            sql,
            "SELECT seq, hash, prev_hash, event FROM audit ORDER BY seq"
        );
        assert!(params.is_empty());

        let (sql, params) = filter_sql(
            &Filter {
                subject: Some("s".into()),
                since: Some(10),
                limit: Some(3),
                ..Filter::default()
            },
            Backend::Sqlite,
        );
        assert_eq!(
            sql,
            "SELECT * FROM (SELECT seq, hash, prev_hash, event FROM audit WHERE subject = $1 AND time >= $2 \
             ORDER BY seq DESC LIMIT $3) AS newest ORDER BY seq"
        );
        assert_eq!(
            params,
            [
                FilterValue::Text("s".into()),
                FilterValue::Int(10),
                FilterValue::Int(3)
            ]
        );
    }
}
