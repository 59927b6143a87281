//! The vocabulary every store and both backends share: parameters,
//! values and rows, the error kinds, the transaction modes, the [`Conn`]
//! trait each backend implements, and the `$n` placeholder helpers.

use std::fmt;
use std::time::Duration;

/// How long a connection waits for another's lock (SQLite's busy timeout,
/// PostgreSQL's `lock_timeout`) before the operation fails as unavailable.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// Which database engine a connection talks to, for the rare query that
/// differs (JSON aggregation, DDL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A query parameter. Borrowed, so binding costs no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param<'a> {
    Null,
    Int(i64),
    Text(&'a str),
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}

impl From<u64> for Param<'_> {
    /// Unsigned values above `i64::MAX` saturate (times, counters and
    /// lifetimes never get there; ids are checked where they are parsed).
    fn from(v: u64) -> Self {
        Param::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<u32> for Param<'_> {
    fn from(v: u32) -> Self {
        Param::Int(i64::from(v))
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(v)
    }
}

impl<'a, T: Copy + Into<Param<'a>>> From<Option<T>> for Param<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Param::Null, Into::into)
    }
}

impl<'a> From<&'a Option<String>> for Param<'a> {
    fn from(v: &'a Option<String>) -> Self {
        v.as_deref().map_or(Param::Null, Param::Text)
    }
}

/// A value read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

impl<'a> From<&'a Value> for Param<'a> {
    /// A value read back, bound again (copying rows between databases).
    fn from(v: &'a Value) -> Self {
        match v {
            Value::Null => Param::Null,
            Value::Int(i) => Param::Int(*i),
            Value::Text(s) => Param::Text(s),
        }
    }
}

/// One result row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value, DbError> {
        self.0
            .get(i)
            .ok_or_else(|| DbError::decode(format!("column {i} is missing")))
    }

    pub fn int(&self, i: usize) -> Result<i64, DbError> {
        self.opt_int(i)?
            .ok_or_else(|| DbError::decode(format!("column {i} is NULL")))
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            Value::Text(_) => Err(DbError::decode(format!(
                "column {i} is text, expected an integer"
            ))),
        }
    }

    /// A non-negative integer (times, counts, seqs are stored as i64).
    pub fn u64(&self, i: usize) -> Result<u64, DbError> {
        let v = self.int(i)?;
        u64::try_from(v).map_err(|_| DbError::decode(format!("column {i} is negative ({v})")))
    }

    pub fn opt_u64(&self, i: usize) -> Result<Option<u64>, DbError> {
        self.opt_int(i)?
            .map(|v| {
                u64::try_from(v)
                    .map_err(|_| DbError::decode(format!("column {i} is negative ({v})")))
            })
            .transpose()
    }

    pub fn text(&self, i: usize) -> Result<String, DbError> {
        self.opt_text(i)?
            .ok_or_else(|| DbError::decode(format!("column {i} is NULL")))
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            Value::Int(_) => Err(DbError::decode(format!(
                "column {i} is an integer, expected text"
            ))),
        }
    }

    /// Whatever is stored, as text (NULL is empty): for verification, where
    /// a retyped value must show up as a mismatch, not a read error.
    pub fn lenient_text(&self, i: usize) -> String {
        match self.0.get(i) {
            Some(Value::Text(s)) => s.clone(),
            Some(Value::Int(v)) => v.to_string(),
            Some(Value::Null) | None => String::new(),
        }
    }

    pub fn value(&self, i: usize) -> Value {
        self.0.get(i).cloned().unwrap_or(Value::Null)
    }
}

/// What kind of failure, so callers can map it (unavailable vs conflict).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbErrorKind {
    /// Cannot connect, locked, read-only, disk full, I/O: try again later.
    Unavailable,
    /// A unique or primary key constraint refused the row.
    Conflict,
    /// A stored value does not have the expected type or shape.
    Decode,
    /// Anything else (a bad statement: a bug).
    Other,
}

/// A database error: the engine's message plus what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbError {
    pub kind: DbErrorKind,
    pub message: String,
}

impl DbError {
    pub fn new(kind: DbErrorKind, message: impl Into<String>) -> Self {
        DbError {
            kind,
            message: message.into(),
        }
    }

    pub fn decode(message: impl Into<String>) -> Self {
        DbError::new(DbErrorKind::Decode, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        DbError::new(DbErrorKind::Unavailable, message)
    }

    pub fn is_conflict(&self) -> bool {
        self.kind == DbErrorKind::Conflict
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DbError {}

/// How a transaction begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxMode {
    /// Will write: SQLite takes the write lock at once (`BEGIN IMMEDIATE`),
    /// so a transaction never fails half-way on a lock upgrade.
    Write,
    /// Read-only, one consistent snapshot for every statement.
    Snapshot,
}

/// One connection. Statements are prepared once per connection and cached.
pub trait Conn: Send {
    fn backend(&self) -> Backend;

    /// Run one statement; the number of rows changed.
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, DbError>;

    /// Run one query, handing each row to `f` as it is read (no collecting).
    fn query_each(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        f: &mut dyn FnMut(Row) -> Result<(), DbError>,
    ) -> Result<(), DbError>;

    /// Several statements without parameters (DDL, `SAVEPOINT`).
    fn batch(&mut self, sql: &str) -> Result<(), DbError>;

    fn begin(&mut self, mode: TxMode) -> Result<(), DbError>;
    fn commit(&mut self) -> Result<(), DbError>;
    /// Roll back the open transaction, if any.
    fn rollback(&mut self) -> Result<(), DbError>;
    fn in_transaction(&self) -> bool;

    /// Serialise appends to the audit chain across processes until the
    /// transaction ends. SQLite's `BEGIN IMMEDIATE` already did; PostgreSQL
    /// takes a transaction-scoped advisory lock.
    fn lock_chain(&mut self) -> Result<(), DbError>;

    /// Forget cached statements (after a failed transaction).
    fn reset(&mut self);

    /// False once the connection is known to be broken.
    fn is_healthy(&self) -> bool;

    /// All rows of a query.
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, DbError> {
        let mut rows = Vec::new();
        self.query_each(sql, params, &mut |r| {
            rows.push(r);
            Ok(())
        })?;
        Ok(rows)
    }

    /// The first row, if any.
    fn query_opt(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// Exactly one row.
    fn query_one(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Row, DbError> {
        self.query_opt(sql, params)?
            .ok_or_else(|| DbError::decode("the query returned no row"))
    }
}

/// `($1, $2), ($3, $4), …`: `rows` tuples of `width` parameters.
pub(crate) fn placeholders(rows: usize, width: usize) -> String {
    let mut out = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..width {
            if c > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!("${}", r * width + c + 1));
        }
        out.push(')');
    }
    out
}

/// Rewrite `$1, $2, …` to SQLite's `?1, ?2, …`, leaving string literals and
/// quoted identifiers alone.
pub(crate) fn to_sqlite_params(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                out.push(c);
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) => out.push('?'),
            None => out.push(c),
        }
    }
    out
}
