//! The single writer thread: group commit of queued appends, one transaction
//! per batch, replies only after COMMIT.

use crate::db::placeholders;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ca_core::audit::{AuditEvent, GENESIS, chain_hash};
use tokio::sync::{mpsc, oneshot};

use crate::db::{Conn, Db, DbError, Param, TxMode};
use crate::params;

use super::checkpoint::Checkpoints;
use super::types::{AuditError, UsedToken};

/// How often expired `used_tokens` rows are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Used tokens are kept this long past their expiry, to cover clock skew and
/// the token verifier's leeway.
const PRUNE_GRACE_SECS: i64 = 3600;

/// Group commit's gather window (PostgreSQL's `commit_delay`). A busy CA
/// otherwise commits whatever queued during the previous COMMIT — 1–3 rows —
/// and every COMMIT costs the writer ~150–250 µs of CPU (WAL pages, fsync)
/// on top of ~50 µs per row. When the previous batch or the queue shows
/// concurrency, the writer first waits for more rows, in steps of
/// [`GATHER_POLL`], until a step brings nothing or the window ends. A lone
/// request never waits; under load the price is at most this much latency
/// (measured in docs/performance.md).
const GATHER_WINDOW: Duration = Duration::from_micros(1000);
/// Step of the gather window: it ends at the first step that brings nothing.
const GATHER_POLL: Duration = Duration::from_micros(250);
/// Jobs in one batch that count as concurrency.
const GATHER_AFTER: usize = 2;
/// A batch this large already spreads its COMMIT thin: stop gathering (and
/// when the queue alone holds this many, as when the writer is the
/// bottleneck, do not wait at all — waiting would only idle it).
const GATHER_ENOUGH: usize = 8;

/// Work for the writer.
pub(super) enum Job {
    Append {
        row: Box<NewRow>,
        reply: oneshot::Sender<Result<u64, AuditError>>,
    },
    /// A state change committed atomically with its audit rows
    /// ([`super::AuditStore::transact`]).
    Transact(Box<dyn TxJob>),
    /// `check_writable`: commit a heartbeat.
    Ping {
        reply: oneshot::Sender<Result<(), AuditError>>,
    },
    /// Make the writer exit, to test what callers see then.
    #[cfg(test)]
    Stop,
}

/// The writer's view of a [`super::AuditStore::transact`] call.
pub(super) trait TxJob: Send {
    /// Run the state change inside the batch's transaction. Returns the audit
    /// rows to append and whether to keep the state change (`false` rolls it
    /// back; the rows are appended either way, so refusals are audited).
    fn run(&mut self, conn: &mut dyn Conn) -> Result<(Vec<NewRow>, bool), DbError>;
    /// The change failed inside the batch and was rolled back alone: the
    /// caller gets `error` whether or not the batch commits.
    fn failed(&mut self, error: AuditError);
    /// After COMMIT (or the batch's failure): answer the caller.
    fn reply(self: Box<Self>, result: Result<(), AuditError>);
}

/// An event ready to insert: serialised once, columns extracted, numbers
/// range-checked, so nothing event-specific can fail inside the batch (a
/// failure there fails every append in it).
pub(super) struct NewRow {
    time: i64,
    action: String,
    outcome: String,
    subject: Option<String>,
    issuer: Option<String>,
    serial: Option<String>,
    principals: Vec<String>,
    json: String,
    token: Option<(String, i64)>,
}

impl NewRow {
    pub(super) fn new(event: AuditEvent, used: Option<UsedToken>) -> Result<Self, AuditError> {
        let time = i64::try_from(event.time)
            .map_err(|_| AuditError::Invalid(format!("time {} is out of range", event.time)))?;
        let token = used
            .as_ref()
            .map(|t| {
                i64::try_from(t.expires_at)
                    .map(|exp| (t.token_hash.clone(), exp))
                    .map_err(|_| {
                        AuditError::Invalid(format!("expires_at {} is out of range", t.expires_at))
                    })
            })
            .transpose()?;
        let json = serde_json::to_string(&event)
            .map_err(|e| AuditError::Invalid(format!("cannot serialise the event: {e}")))?;
        // PostgreSQL TEXT cannot hold NUL, and one bad row would fail the
        // whole batch: refuse it here, alone. (The JSON escapes NUL.)
        let columns = [&event.action, &event.outcome]
            .into_iter()
            .chain(event.subject.as_ref())
            .chain(event.issuer.as_ref())
            .chain(event.serial.as_ref());
        if columns
            .chain(used.as_ref().map(|t| &t.token_hash))
            .any(|c| c.contains('\0'))
        {
            return Err(AuditError::Invalid(
                "a column contains a NUL character".into(),
            ));
        }
        let principals = event_principals(&event);
        Ok(NewRow {
            time,
            action: event.action,
            outcome: event.outcome,
            subject: event.subject,
            issuer: event.issuer,
            serial: event.serial,
            principals,
            json,
            token,
        })
    }
}

/// Requested and granted principals, sorted and deduplicated: the rows of
/// `audit_principals` for this event.
pub(super) fn event_principals(event: &AuditEvent) -> Vec<String> {
    let mut all: Vec<String> = event
        .requested_principals
        .iter()
        .flatten()
        .chain(&event.granted_principals)
        .cloned()
        .collect();
    all.sort();
    all.dedup();
    all
}

/// Writer counters, readable from any thread.
#[derive(Default)]
pub(super) struct Counters {
    batches: AtomicU64,
    rows: AtomicU64,
    largest_batch: AtomicU64,
    failed_batches: AtomicU64,
}

/// What the writer has done since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Committed transactions.
    pub batches: u64,
    /// Audit rows committed.
    pub rows: u64,
    /// Most audit rows committed in one transaction.
    pub largest_batch: u64,
    /// Transactions rolled back (their appends got `Unavailable`).
    pub failed_batches: u64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> WriterStats {
        WriterStats {
            batches: self.batches.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
        }
    }
}

/// The last row's `(seq, hash)`, or `(0, GENESIS)` for an empty log.
pub(super) fn head(conn: &mut dyn Conn) -> Result<(u64, String), DbError> {
    match conn.query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])? {
        Some(r) => Ok((r.u64(0)?, r.text(1)?)),
        None => Ok((0, GENESIS.to_owned())),
    }
}

/// Rows per multi-row INSERT on PostgreSQL, where each statement is a
/// round trip (65,535 parameters allowed; an audit row takes 10). SQLite
/// has no round trip: one row per statement keeps a single cached
/// statement per table, which measured cheaper than preparing multi-row
/// ones of varying length.
fn rows_per_statement(conn: &dyn Conn) -> usize {
    match conn.backend() {
        crate::db::Backend::Sqlite => 1,
        crate::db::Backend::Postgres => 64,
    }
}

/// Append `rows` to the chain after `chain` (seq, hash), advancing it. For
/// each row: its seq, or `None` if its token was already spent (then nothing
/// of it is written). A few multi-row statements per call.
fn write_rows(
    conn: &mut dyn Conn,
    chain: &mut (u64, String),
    rows: &[&NewRow],
) -> Result<Vec<Option<u64>>, DbError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let per = rows_per_statement(conn);
    // 1. Spend the tokens: the database says which were fresh. A token twice
    // in this run is spent by its first row.
    let mut fresh = std::collections::HashSet::new();
    let tokens: Vec<(&str, i64)> = {
        let mut seen = std::collections::HashSet::new();
        rows.iter()
            .filter_map(|r| r.token.as_ref())
            .filter(|(h, _)| seen.insert(h.as_str()))
            .map(|(h, e)| (h.as_str(), *e))
            .collect()
    };
    for chunk in tokens.chunks(per) {
        let params: Vec<Param<'_>> = chunk
            .iter()
            .flat_map(|(h, e)| [Param::Text(h), Param::Int(*e)])
            .collect();
        if let [(hash, _)] = chunk {
            // One row (always, on SQLite): the changed-row count says
            // whether it was fresh. SQLite implements RETURNING with a
            // temporary trigger, so every such INSERT inside the batch's
            // transaction opened and freed a statement journal: 13 % of the
            // writer thread's samples in a profile at concurrency 64.
            let inserted = conn.execute(
                "INSERT INTO used_tokens (token_hash, expires_at) VALUES ($1, $2)
                 ON CONFLICT (expires_at, token_hash) DO NOTHING",
                &params,
            )?;
            if inserted == 1 {
                fresh.insert((*hash).to_owned());
            }
            continue;
        }
        conn.query_each(
            &format!(
                "INSERT INTO used_tokens (token_hash, expires_at) VALUES {}
                 ON CONFLICT (expires_at, token_hash) DO NOTHING RETURNING token_hash",
                placeholders(chunk.len(), 2)
            ),
            &params,
            &mut |r| {
                fresh.insert(r.text(0)?);
                Ok(())
            },
        )?;
    }
    // 2. Number and chain the rows that stay.
    let mut out = Vec::with_capacity(rows.len());
    let mut kept: Vec<(u64, &NewRow, String, String)> = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some((hash, _)) = &row.token
            && !fresh.remove(hash)
        {
            out.push(None);
            continue;
        }
        let seq = chain.0 + 1;
        let hash = chain_hash(seq, &chain.1, &row.json);
        let prev = std::mem::replace(&mut chain.1, hash.clone());
        chain.0 = seq;
        kept.push((seq, row, prev, hash));
        out.push(Some(seq));
    }
    // 3. The rows, then their principals.
    for chunk in kept.chunks(per) {
        let params: Vec<Param<'_>> = chunk
            .iter()
            .flat_map(|(seq, row, prev, hash)| {
                [
                    Param::from(*seq),
                    Param::Int(row.time),
                    Param::Text(&row.action),
                    Param::Text(&row.outcome),
                    Param::from(&row.subject),
                    Param::from(&row.issuer),
                    Param::from(&row.serial),
                    Param::Text(prev),
                    Param::Text(hash),
                    Param::Text(&row.json),
                ]
            })
            .collect();
        conn.execute(
            &format!(
                "INSERT INTO audit (seq, time, action, outcome, subject, issuer, serial, prev_hash, hash, event)
                 VALUES {}",
                placeholders(chunk.len(), 10)
            ),
            &params,
        )?;
    }
    let principals: Vec<(u64, &str)> = kept
        .iter()
        .flat_map(|(seq, row, _, _)| row.principals.iter().map(|p| (*seq, p.as_str())))
        .collect();
    for chunk in principals.chunks(per * 4) {
        let params: Vec<Param<'_>> = chunk
            .iter()
            .flat_map(|(seq, p)| [Param::from(*seq), Param::Text(p)])
            .collect();
        conn.execute(
            &format!(
                "INSERT INTO audit_principals (seq, principal) VALUES {}
                 ON CONFLICT (seq, principal) DO NOTHING",
                placeholders(chunk.len(), 2)
            ),
            &params,
        )?;
    }
    Ok(out)
}

/// Delete used tokens that expired more than the grace period before `now`.
pub(super) fn prune_used_tokens(conn: &mut dyn Conn, now: i64) -> Result<u64, DbError> {
    conn.execute(
        "DELETE FROM used_tokens WHERE expires_at < $1",
        &params![now.saturating_sub(PRUNE_GRACE_SECS)],
    )
}

pub(super) fn spawn(
    mut conn: Box<dyn Conn>,
    db: Db,
    jobs: mpsc::Receiver<Job>,
    counters: Arc<Counters>,
    max_batch: usize,
) -> std::io::Result<()> {
    let checkpoints = Checkpoints::start(&db).filter(|c| {
        c.adopt(conn.as_mut())
            .inspect_err(
                |e| tracing::warn!(error = %e, "the audit writer keeps SQLite's own checkpoints"),
            )
            .is_ok()
    });
    let writer = Writer {
        conn,
        path: db.describe(),
        db,
        counters,
        max_batch,
        failing: false,
        last_prune: None,
        checkpoints,
    };
    std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || writer.run(jobs))
        .map(drop)
}

struct Writer {
    conn: Box<dyn Conn>,
    /// To replace a broken connection (PostgreSQL restarted, network).
    db: Db,
    /// The database, for messages.
    path: String,
    counters: Arc<Counters>,
    max_batch: usize,
    /// The last batch failed: log recovery.
    failing: bool,
    last_prune: Option<Instant>,
    /// SQLite: WAL checkpoints off the writer's path ([`super::checkpoint`]).
    checkpoints: Option<Checkpoints>,
}

impl Writer {
    /// Until every `AuditStore` clone is dropped: wait for one job, take
    /// whatever else is queued (gathering a little longer under
    /// concurrency, see [`GATHER_WINDOW`]), commit them together, reply.
    fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut previous = 0;
        while let Some(first) = jobs.blocking_recv() {
            batch.push(first);
            self.take_queued(&mut jobs, &mut batch);
            if previous >= GATHER_AFTER || batch.len() >= GATHER_AFTER {
                self.gather(&mut jobs, &mut batch);
            }
            previous = batch.len();
            #[cfg(test)]
            if batch.iter().any(|j| matches!(j, Job::Stop)) {
                return;
            }
            // A panic here is a bug, but it must not take the writer (and so
            // every future issuance) down: treat it as a failed batch.
            let result = catch_unwind(AssertUnwindSafe(|| self.write(&mut batch)))
                .unwrap_or(Err(WriteFailure::Panic));
            match result {
                Ok(seqs) => {
                    self.committed(&mut batch, seqs);
                    if let Some(c) = &self.checkpoints {
                        c.after_commit(self.conn.as_mut());
                    }
                }
                Err(failure) => self.failed(&mut batch, failure),
            }
            self.maybe_prune();
        }
        tracing::debug!(db = %self.path, "audit writer finished");
    }

    /// Move every queued job into `batch`, up to `max_batch`.
    fn take_queued(&self, jobs: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
        while batch.len() < self.max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
    }

    /// Wait up to [`GATHER_WINDOW`] for more jobs, in steps of
    /// [`GATHER_POLL`]; stop early when the batch holds [`GATHER_ENOUGH`]
    /// (or `max_batch`) jobs or a step brought nothing (the burst is over).
    fn gather(&self, jobs: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
        let deadline = Instant::now() + GATHER_WINDOW;
        while batch.len() < GATHER_ENOUGH.min(self.max_batch) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(GATHER_POLL));
            let before = batch.len();
            self.take_queued(jobs, batch);
            if batch.len() == before {
                break;
            }
        }
    }

    /// One transaction for the whole batch, under the chain lock. Returns
    /// what each append got, in order: its seq, or `None` if its token was
    /// already used.
    fn write(&mut self, batch: &mut [Job]) -> Result<Vec<Option<u64>>, WriteFailure> {
        self.conn.begin(TxMode::Write)?;
        self.conn.lock_chain()?;
        let seqs = self.insert(batch)?;
        self.conn.commit()?;
        Ok(seqs)
    }

    fn insert(&mut self, batch: &mut [Job]) -> Result<Vec<Option<u64>>, DbError> {
        // Read inside the write transaction, under the lock: always the
        // committed truth, whichever process wrote last.
        let mut chain = head(self.conn.as_mut())?;
        let mut seqs = Vec::with_capacity(batch.len());
        let mut ping = false;
        let conn = self.conn.as_mut();
        // Appends are written in runs, a few statements per run whatever its
        // length (a round trip each on PostgreSQL); a state change ends the
        // run before it, so rows keep the order of the jobs.
        let mut run: Vec<&NewRow> = Vec::new();
        for job in batch.iter() {
            match job {
                Job::Append { row, .. } => run.push(row),
                Job::Transact(_) => {
                    seqs.extend(write_rows(conn, &mut chain, &run)?);
                    run.clear();
                }
                Job::Ping { .. } => ping = true,
                #[cfg(test)]
                Job::Stop => {}
            }
        }
        seqs.extend(write_rows(conn, &mut chain, &run)?);
        drop(run);
        // State changes, each in a savepoint: a refused change rolls back
        // alone while its refusal rows still join the batch. (Their rows
        // follow the appends of this batch in the chain: order between
        // concurrent callers is the writer's to choose.) A change that
        // fails (its statement or its rows: one caller's bad input) rolls
        // back alone too and fails that caller only; only an error the
        // rollback itself hits fails the batch.
        for job in batch.iter_mut() {
            if let Job::Transact(tx) = job {
                conn.batch("SAVEPOINT jitssh_tx")?;
                let before = chain.clone();
                let result = tx.run(conn).and_then(|(rows, keep)| {
                    if !keep {
                        conn.batch("ROLLBACK TO SAVEPOINT jitssh_tx")?;
                    }
                    let rows: Vec<&NewRow> = rows.iter().collect();
                    write_rows(conn, &mut chain, &rows).map(drop)
                });
                if let Err(e) = result {
                    conn.batch("ROLLBACK TO SAVEPOINT jitssh_tx")?;
                    chain = before;
                    tracing::warn!(error = %e, "an audited state change failed alone; the rest of its batch goes on");
                    tx.failed(AuditError::unavailable(&e));
                }
                conn.batch("RELEASE SAVEPOINT jitssh_tx")?;
            }
        }
        if ping {
            conn.execute(
                "INSERT INTO heartbeat (id, time) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET time = excluded.time",
                &params![unix_now()],
            )?;
        }
        Ok(seqs)
    }

    fn committed(&mut self, batch: &mut Vec<Job>, seqs: Vec<Option<u64>>) {
        let rows = seqs.iter().flatten().count() as u64;
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters.rows.fetch_add(rows, Ordering::Relaxed);
        self.counters
            .largest_batch
            .fetch_max(rows, Ordering::Relaxed);
        if self.failing {
            self.failing = false;
            tracing::info!(db = %self.path, "audit log is writable again");
        }
        let mut seqs = seqs.into_iter();
        for job in batch.drain(..) {
            match job {
                Job::Append { reply, .. } => {
                    let result = match seqs.next() {
                        Some(Some(seq)) => Ok(seq),
                        Some(None) => Err(AuditError::Replayed),
                        None => Err(AuditError::Unavailable(
                            "internal error: batch bookkeeping".into(),
                        )),
                    };
                    // The caller may have gone away; its row is committed anyway.
                    let _ = reply.send(result);
                }
                Job::Ping { reply } => {
                    let _ = reply.send(Ok(()));
                }
                Job::Transact(tx) => tx.reply(Ok(())),
                #[cfg(test)]
                Job::Stop => {}
            }
        }
    }

    fn failed(&mut self, batch: &mut Vec<Job>, failure: WriteFailure) {
        // Nothing of this batch may survive. (If COMMIT itself failed the
        // database has already rolled back; this is then a no-op.)
        if let Err(e) = self.conn.rollback() {
            tracing::error!(error = %e, "audit ROLLBACK failed");
        }
        // Cached statements may hold state from the failed transaction.
        self.conn.reset();
        if !self.conn.is_healthy() {
            self.reconnect();
        }
        self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
        self.failing = true;
        let error = match failure {
            WriteFailure::Db(e) => AuditError::unavailable(&e),
            WriteFailure::Panic => AuditError::Unavailable(format!(
                "internal error writing {}; see the log",
                self.path
            )),
        };
        tracing::error!(error = %error, jobs = batch.len(), "audit batch rolled back");
        let message = match &error {
            AuditError::Unavailable(m) => m.clone(),
            other => other.to_string(),
        };
        for job in batch.drain(..) {
            match job {
                Job::Append { reply, .. } => {
                    let _ = reply.send(Err(AuditError::Unavailable(message.clone())));
                }
                Job::Ping { reply } => {
                    let _ = reply.send(Err(AuditError::Unavailable(message.clone())));
                }
                Job::Transact(tx) => tx.reply(Err(AuditError::Unavailable(message.clone()))),
                #[cfg(test)]
                Job::Stop => {}
            }
        }
    }

    /// The connection broke: open a new one now, so the next batch can
    /// succeed (if this fails, the next failed batch tries again).
    fn reconnect(&mut self) {
        match self.db.connect() {
            Ok(mut conn) => {
                if let Some(c) = &self.checkpoints
                    && let Err(e) = c.adopt(conn.as_mut())
                {
                    tracing::warn!(error = %e, "audit writer reconnected with SQLite's own checkpoints");
                }
                tracing::info!(db = %self.path, "audit writer reconnected");
                self.conn = conn;
            }
            Err(e) => tracing::warn!(error = %e, "audit writer cannot reconnect yet"),
        }
    }

    fn maybe_prune(&mut self) {
        if self.failing || self.last_prune.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
            return;
        }
        self.last_prune = Some(Instant::now());
        match prune_used_tokens(self.conn.as_mut(), unix_now()) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "pruned expired used tokens"),
            Err(e) => tracing::warn!(error = %e, "could not prune expired used tokens"),
        }
    }
}

enum WriteFailure {
    Db(DbError),
    Panic,
}

impl From<DbError> for WriteFailure {
    fn from(e: DbError) -> Self {
        WriteFailure::Db(e)
    }
}

fn unix_now() -> i64 {
    i64::try_from(crate::clock::now_unix()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn principals_are_the_sorted_union() {
        let event = AuditEvent {
            requested_principals: Some(vec!["root".into(), "alice".into()]),
            granted_principals: vec!["alice".into(), "deploy".into()],
            ..AuditEvent::default()
        };
        assert_eq!(event_principals(&event), ["alice", "deploy", "root"]);
        assert!(event_principals(&AuditEvent::default()).is_empty());
    }

    #[test]
    fn placeholders_number_rows_and_columns() {
        assert_eq!(placeholders(1, 2), "($1, $2)");
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }

    #[test]
    fn prune_keeps_a_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::from(&dir.path().join("a.db"));
        let mut conn = db.connect().unwrap();
        super::super::schema::migrate(conn.as_mut(), &db).unwrap();
        let now = 1_000_000;
        for (hash, exp) in [
            ("old", now - PRUNE_GRACE_SECS - 1),
            ("grace", now - 10),
            ("live", now + 10),
        ] {
            conn.execute(
                "INSERT INTO used_tokens VALUES ($1, $2)",
                &params![hash, exp],
            )
            .unwrap();
        }
        assert_eq!(prune_used_tokens(conn.as_mut(), now).unwrap(), 1);
        let left: Vec<String> = conn
            .query(
                "SELECT token_hash FROM used_tokens ORDER BY token_hash",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.text(0).unwrap())
            .collect();
        assert_eq!(left, ["grace", "live"]);
    }
}
