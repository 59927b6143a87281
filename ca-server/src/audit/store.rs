//! `AuditStore`: the handle every part of the server appends through (one
//! group-committing writer thread per process) and reads from.

use std::sync::Arc;

use ca_core::audit::AuditEvent;
use tokio::sync::{mpsc, oneshot};

use crate::db::{Conn, Db, DbError, TxMode};

use super::schema;
use super::types::{
    AuditError, Refused, SERIAL_BLOCK_BITS, StoreOptions, TxOutcome, UsedToken, refusal_row,
};
use super::writer::{self, WriterStats};

struct TxJobImpl<T, F> {
    op: Option<F>,
    value: Option<T>,
    /// Set when the change failed alone inside its batch.
    error: Option<AuditError>,
    reply: oneshot::Sender<Result<T, AuditError>>,
}

impl<T, F> writer::TxJob for TxJobImpl<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Conn) -> Result<TxOutcome<T>, DbError> + Send + 'static,
{
    fn run(&mut self, conn: &mut dyn Conn) -> Result<(Vec<writer::NewRow>, bool), DbError> {
        let op = self
            .op
            .take()
            .ok_or_else(|| DbError::unavailable("internal error: transaction ran twice"))?;
        let out = op(conn)?;
        let rows = out
            .events
            .into_iter()
            .map(|e| writer::NewRow::new(e, None))
            .collect::<Result<Vec<_>, AuditError>>()
            .map_err(|e| DbError::decode(e.to_string()))?;
        self.value = Some(out.value);
        Ok((rows, out.keep))
    }

    fn failed(&mut self, error: AuditError) {
        self.value = None;
        self.error = Some(error);
    }

    fn reply(self: Box<Self>, result: Result<(), AuditError>) {
        let this = *self;
        let answer = result.and(this.error.map_or(Ok(()), Err));
        let answer = answer.and_then(|()| {
            this.value.ok_or_else(|| {
                AuditError::Unavailable("internal error: transaction did not run".into())
            })
        });
        let _ = this.reply.send(answer);
    }
}

/// Handle to the audit log. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct AuditStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    /// `None` for a read-only store.
    jobs: Option<mpsc::Sender<writer::Job>>,
    counters: Arc<writer::Counters>,
}

impl std::fmt::Debug for AuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditStore")
            .field("db", &self.inner.db)
            .field("writable", &self.inner.jobs.is_some())
            .finish()
    }
}

impl AuditStore {
    /// Open (an SQLite file is created with mode 0600 if missing) the log in
    /// `db` and start its writer thread.
    pub fn open(db: impl Into<Db>) -> Result<Self, AuditError> {
        Self::open_with(db, StoreOptions::default())
    }

    /// [`AuditStore::open`] with explicit tuning.
    pub fn open_with(db: impl Into<Db>, options: StoreOptions) -> Result<Self, AuditError> {
        let db = db.into();
        let unavailable = |e: DbError| AuditError::unavailable(&e);
        let mut conn = db.connect().map_err(unavailable)?;
        let head = crate::db::off_runtime(|| {
            schema::migrate(conn.as_mut(), &db)?;
            writer::head(conn.as_mut()).map_err(unavailable)
        })
        .unwrap_or_else(|| Err(AuditError::Unavailable("internal error: migration".into())))?;
        tracing::info!(db = %db.describe(), last_seq = head.0, "audit log open");

        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let counters = Arc::new(writer::Counters::default());
        writer::spawn(
            conn,
            db.clone(),
            rx,
            counters.clone(),
            options.max_batch.max(1),
        )
        .map_err(|e| {
            AuditError::Unavailable(format!("cannot start the audit writer thread: {e}"))
        })?;
        Ok(AuditStore {
            inner: Arc::new(Inner {
                db,
                jobs: Some(tx),
                counters,
            }),
        })
    }

    /// Open an existing log for reading only (`audit list/show/verify`):
    /// no writer, nothing created; appends return `Unavailable`.
    pub fn open_read_only(db: impl Into<Db>) -> Result<Self, AuditError> {
        let db = db.into();
        if let Some(path) = db.sqlite_path()
            && !path.exists()
        {
            return Err(AuditError::read(DbError::unavailable(format!(
                "{} does not exist; check the path",
                path.display()
            ))));
        }
        let store = AuditStore {
            inner: Arc::new(Inner {
                db,
                jobs: None,
                counters: Arc::default(),
            }),
        };
        // Fail now, with the location, if it cannot be read.
        store
            .inner
            .db
            .with(|c| c.query_opt("SELECT seq FROM audit LIMIT 1", &[]).map(drop))
            .map_err(AuditError::read)?;
        Ok(store)
    }

    /// The database the log lives in.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The file path or URL, for messages.
    pub fn describe(&self) -> String {
        self.inner.db.describe()
    }

    /// Append `event` (and record `used_token`) in the next group commit.
    /// Returns the row's `seq` once it is durably committed, or
    /// [`AuditError::Replayed`] (and records nothing) if the token was
    /// already used, by this process or another replica.
    ///
    /// If the future is dropped after the event was queued, the row may still
    /// be committed: that is safe (an audit row without a certificate).
    pub async fn append(
        &self,
        event: AuditEvent,
        used_token: Option<UsedToken>,
    ) -> Result<u64, AuditError> {
        let row = Box::new(writer::NewRow::new(event, used_token)?);
        let (reply, rx) = oneshot::channel();
        self.send(writer::Job::Append { row, reply }).await?;
        rx.await.map_err(|_| self.stopped())?
    }

    /// Every refusal after authentication gets its own row (`outcome =
    /// "denied"`, the error's code, and its message as the reason unless the
    /// steps already recorded the policy's reasons). Nothing is written when
    /// the audit log is what failed. A failure to append is logged: the
    /// caller's refusal stands either way.
    pub async fn append_refusal(&self, event: AuditEvent, refusal: &(dyn Refused + Sync)) {
        if refusal.audit_unavailable() {
            return;
        }
        if let Err(ae) = self.append(refusal_row(event, refusal), None).await {
            tracing::error!(error = %ae, code = refusal.code(), "could not audit a refusal");
        }
    }

    /// Run a state change (`op`, on the writer's connection, inside the next
    /// group commit) atomically with the audit rows it returns. Replies only
    /// after COMMIT. With `keep: false` the state change is rolled back but
    /// its rows are still appended (a refused transition is audited).
    ///
    /// Changes run one at a time on the writer, under the chain lock that
    /// also serialises other replicas, so a conditional `UPDATE` inside `op`
    /// settles races between concurrent callers.
    pub async fn transact<T, F>(&self, op: F) -> Result<T, AuditError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> Result<TxOutcome<T>, DbError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = TxJobImpl {
            op: Some(op),
            value: None,
            error: None,
            reply,
        };
        self.send(writer::Job::Transact(Box::new(job))).await?;
        rx.await.map_err(|_| self.stopped())?
    }

    /// For `/readyz`: a real write transaction through the writer (it updates
    /// a heartbeat row and commits), so locks, read-only files, full disks
    /// and an unreachable database all show up.
    pub async fn check_writable(&self) -> Result<(), AuditError> {
        let (reply, rx) = oneshot::channel();
        self.send(writer::Job::Ping { reply }).await?;
        rx.await.map_err(|_| self.stopped())?
    }

    /// Counters showing how well group commit is batching.
    pub fn stats(&self) -> WriterStats {
        self.inner.counters.snapshot()
    }

    /// A block of certificate serials for this process, unique across
    /// restarts and replicas: the block number, allocated in the database.
    /// Serials are `block << SERIAL_BLOCK_BITS | n`.
    pub fn serial_block(&self, holder: &str, now: u64) -> Result<u64, AuditError> {
        let db = &self.inner.db;
        db.transaction(TxMode::Write, |c| {
            c.lock_chain()?;
            let last = c
                .query_one("SELECT max(id) FROM serial_blocks", &[])?
                .opt_u64(0)?;
            let next = match last {
                Some(last) => last + 1,
                // First block in this database: start above every serial
                // already issued (older releases used milliseconds << 16).
                None => {
                    let max_serial = c
                        .query_one(
                            "SELECT max(CAST(serial AS BIGINT)) FROM audit WHERE serial IS NOT NULL",
                            &[],
                        )?
                        .opt_u64(0)?
                        .unwrap_or(0);
                    (max_serial >> SERIAL_BLOCK_BITS) + 1
                }
            };
            c.execute(
                "INSERT INTO serial_blocks (id, created_at, holder) VALUES ($1, $2, $3)",
                &crate::params![next, now, holder],
            )?;
            Ok(next)
        })
        .map_err(|e| AuditError::unavailable(&e))
        .and_then(|block| {
            if block >= 1 << (63 - SERIAL_BLOCK_BITS) {
                Err(AuditError::Unavailable(
                    "certificate serial blocks are exhausted".into(),
                ))
            } else {
                Ok(block)
            }
        })
    }

    /// A 32-byte secret named `name`, the same for every process and replica
    /// on this database: made by whichever asks first, read by the rest.
    pub fn shared_secret(&self, name: &str) -> Result<[u8; 32], AuditError> {
        let db = &self.inner.db;
        let mut fresh = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut fresh);
        let fresh = hex::encode(fresh);
        let stored = db
            .transaction(TxMode::Write, |c| {
                c.execute(
                    "INSERT INTO server_secrets (name, value) VALUES ($1, $2)
                     ON CONFLICT (name) DO NOTHING",
                    &crate::params![name, &fresh],
                )?;
                c.query_one(
                    "SELECT value FROM server_secrets WHERE name = $1",
                    &crate::params![name],
                )?
                .text(0)
            })
            .map_err(|e| AuditError::unavailable(&e))?;
        hex::decode(&stored)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| AuditError::Corrupt {
                db: db.describe(),
                seq: 0,
                problem: format!("server secret {name} is not 32 hex bytes"),
            })
    }

    pub(super) async fn send(&self, job: writer::Job) -> Result<(), AuditError> {
        let jobs = self.inner.jobs.as_ref().ok_or_else(|| {
            AuditError::Unavailable(format!("{} was opened read-only", self.describe()))
        })?;
        jobs.send(job).await.map_err(|_| self.stopped())
    }

    fn stopped(&self) -> AuditError {
        AuditError::Unavailable(format!(
            "the audit writer for {} has stopped; restart jitssh-ca (its log says why)",
            self.describe()
        ))
    }
}
