//! Reading the log back: filtered listing, single rows, export as JSON Lines,
//! used tokens, and chain verification.

use std::io::Write;

use ca_core::audit::{AuditEvent, ChainError, ChainRow, verify_chain};
use rusqlite::types::Value;
use rusqlite::{OptionalExtension, Row, params_from_iter};

use super::writer::event_principals;
use super::{AuditError, AuditStore, Filter, StoredEvent, UsedToken};

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
const ROW_COLUMNS: &str = "seq, hash, prev_hash, event";

struct RawRow {
    seq: u64,
    hash: String,
    prev_hash: String,
    event: String,
}

impl RawRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawRow {
            seq: get_u64(r, 0)?,
            hash: r.get(1)?,
            prev_hash: r.get(2)?,
            event: r.get(3)?,
        })
    }
}

impl AuditStore {
    /// Unexpired used tokens (`expires_at >= now`), to seed the in-memory
    /// replay guard at startup.
    pub fn used_tokens(&self, now: u64) -> Result<Vec<UsedToken>, AuditError> {
        let conn = self.reader()?;
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let read = |e| AuditError::read(self.path(), e);
        let mut stmt = conn
            .prepare("SELECT token_hash, expires_at FROM used_tokens WHERE expires_at >= ?1")
            .map_err(read)?;
        let tokens = stmt
            .query_map([now], |r| {
                Ok(UsedToken {
                    token_hash: r.get(0)?,
                    expires_at: get_u64(r, 1)?,
                })
            })
            .map_err(read)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read)?;
        Ok(tokens)
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
        let conn = self.reader()?;
        let raw = conn
            .query_row(
                &format!("SELECT {ROW_COLUMNS} FROM audit WHERE seq = ?1"),
                [seq],
                RawRow::from_row,
            )
            .optional()
            .map_err(|e| AuditError::read(self.path(), e))?;
        raw.map(|raw| self.stored(raw)).transpose()
    }

    /// Write matching rows as JSON Lines,
    /// `{"seq":..,"hash":..,"prev_hash":..,"event":{..}}`, oldest first.
    /// `event` is the stored JSON byte for byte, so the line's `event` text
    /// rehashes to `hash`. Returns the number of lines.
    pub fn export(&self, filter: &Filter, out: &mut dyn Write) -> Result<u64, AuditError> {
        let mut out = std::io::BufWriter::new(out);
        let mut lines = 0u64;
        self.each(filter, |raw| {
            // Refuse to emit a line that is not JSON.
            serde_json::from_str::<serde::de::IgnoredAny>(&raw.event)
                .map_err(|e| self.corrupt(raw.seq, format!("event is not JSON: {e}")))?;
            let line = format!(
                "{{\"seq\":{},\"hash\":{},\"prev_hash\":{},\"event\":{}}}\n",
                raw.seq,
                json_string(&raw.hash),
                json_string(&raw.prev_hash),
                raw.event
            );
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
        let mut conn = self.reader()?;
        let read = |e| AuditError::read(self.path(), e);
        // One snapshot for both queries.
        let tx = conn.transaction().map_err(read)?;
        let orphan: Option<u64> = tx
            .query_row(
                "SELECT min(seq) FROM audit_principals WHERE seq NOT IN (SELECT seq FROM audit)",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|seq| seq.map(|s| u64::try_from(s).unwrap_or(0)))
            .map_err(read)?;
        let mut stmt = tx
            .prepare(
                "SELECT a.seq, a.prev_hash, a.hash, a.event,
                        a.time, a.action, a.outcome, a.subject, a.issuer, a.serial,
                        (SELECT json_group_array(p.principal) FROM audit_principals p WHERE p.seq = a.seq)
                 FROM audit a ORDER BY a.seq",
            )
            .map_err(read)?;
        let mut rows = stmt
            .query_map([], |r| {
                let chain = ChainRow {
                    seq: get_u64(r, 0)?,
                    prev_hash: text(r.get(1)?),
                    hash: text(r.get(2)?),
                    event: text(r.get(3)?),
                };
                let mut index = [
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                ];
                for (i, v) in index.iter_mut().enumerate() {
                    *v = r.get(4 + i)?;
                }
                let principals = text(r.get(10)?);
                Ok((chain, index, principals))
            })
            .map_err(read)?;

        let mut read_error = None;
        let mut index_error = None;
        // Hashes of the last two rows handed to verify_chain: if it stops at
        // the last one, the one before is the last good row.
        let mut last_hashes = (
            ca_core::audit::GENESIS.to_owned(),
            ca_core::audit::GENESIS.to_owned(),
        );
        let stream = std::iter::from_fn(|| match rows.next()? {
            Ok((chain, index, principals)) => {
                if index_error.is_none() {
                    index_error = check_index(&chain, &index, &principals);
                }
                last_hashes = (std::mem::take(&mut last_hashes.1), chain.hash.clone());
                Some(chain)
            }
            Err(e) => {
                read_error = Some(e);
                None
            }
        });
        let verdict = verify_chain(stream);
        if let Some(e) = read_error {
            return Err(read(e));
        }
        if index_error.is_none()
            && let Some(seq) = orphan
        {
            index_error = Some(IndexMismatch {
                seq,
                column: "principals",
            });
        }
        Ok(match verdict {
            Ok((rows, last_hash)) => VerifyReport {
                rows,
                last_hash,
                error: None,
                index_error,
            },
            Err(error) => {
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

    /// Run `f` on each row matching `filter`, oldest first, without
    /// collecting them.
    fn each(
        &self,
        filter: &Filter,
        mut f: impl FnMut(RawRow) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        let conn = self.reader()?;
        let (sql, params) = filter_sql(filter);
        let read = |e| AuditError::read(self.path(), e);
        let mut stmt = conn.prepare(&sql).map_err(read)?;
        let rows = stmt
            .query_map(params_from_iter(params), RawRow::from_row)
            .map_err(read)?;
        for row in rows {
            f(row.map_err(read)?)?;
        }
        Ok(())
    }

    fn stored(&self, raw: RawRow) -> Result<StoredEvent, AuditError> {
        let event: AuditEvent = serde_json::from_str(&raw.event)
            .map_err(|e| self.corrupt(raw.seq, format!("event does not parse: {e}")))?;
        Ok(StoredEvent {
            seq: raw.seq,
            hash: raw.hash,
            event,
            raw: raw.event,
        })
    }

    fn corrupt(&self, seq: u64, problem: String) -> AuditError {
        AuditError::Corrupt {
            path: self.path().to_owned(),
            seq,
            problem,
        }
    }
}

/// The SELECT for `filter`, with its parameters.
fn filter_sql(filter: &Filter) -> (String, Vec<Value>) {
    let mut conds = Vec::new();
    let mut params = Vec::new();
    if let Some(s) = &filter.subject {
        conds.push("subject = ?");
        params.push(Value::Text(s.clone()));
    }
    if let Some(p) = &filter.principal {
        conds.push("seq IN (SELECT seq FROM audit_principals WHERE principal = ?)");
        params.push(Value::Text(p.clone()));
    }
    if let Some(t) = filter.since {
        conds.push("time >= ?");
        params.push(Value::Integer(i64::try_from(t).unwrap_or(i64::MAX)));
    }
    if let Some(t) = filter.until {
        conds.push("time < ?");
        params.push(Value::Integer(i64::try_from(t).unwrap_or(i64::MAX)));
    }
    if let Some(a) = &filter.action {
        conds.push("action = ?");
        params.push(Value::Text(a.clone()));
    }
    let mut sql = format!("SELECT {ROW_COLUMNS} FROM audit");
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    match filter.limit {
        Some(limit) => {
            params.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
            sql = format!("SELECT * FROM ({sql} ORDER BY seq DESC LIMIT ?) ORDER BY seq");
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
            i64::try_from(event.time).map_or(Value::Null, Value::Integer),
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

/// A column read leniently for verification: whatever was stored, as text,
/// so a retyped value shows up as a chain error rather than a read error.
fn text(v: Value) -> String {
    match v {
        Value::Text(s) => s,
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => f.to_string(),
        Value::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
        Value::Null => String::new(),
    }
}

/// Unsigned columns are stored as SQLite integers (i64).
fn get_u64(r: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    let v: i64 = r.get(i)?;
    u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, v))
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_sql_combines_and_limits_newest() {
        let (sql, params) = filter_sql(&Filter::default());
        assert_eq!(
            sql,
            "SELECT seq, hash, prev_hash, event FROM audit ORDER BY seq"
        );
        assert!(params.is_empty());

        let (sql, params) = filter_sql(&Filter {
            subject: Some("s".into()),
            since: Some(10),
            limit: Some(3),
            ..Filter::default()
        });
        assert_eq!(
            sql,
            "SELECT * FROM (SELECT seq, hash, prev_hash, event FROM audit WHERE subject = ? AND time >= ? \
             ORDER BY seq DESC LIMIT ?) ORDER BY seq"
        );
        assert_eq!(
            params,
            [
                Value::Text("s".into()),
                Value::Integer(10),
                Value::Integer(3)
            ]
        );
    }
}
