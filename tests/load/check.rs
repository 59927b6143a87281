//! After the run: every certificate returned has exactly one committed
//! `issued` audit row (same serials, same count), and the hash chain verifies.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

/// How the chain was verified.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// `issued` rows written during the run (warm-up included).
    pub issued_rows: u64,
    /// Certificates the CA returned (warm-up included).
    pub certificates: u64,
    /// Issued rows whose serial is not among the certificates returned.
    pub unknown_serials: u64,
    /// Certificates returned without an issued row.
    pub missing_rows: u64,
    /// Rows the chain verification covered (the whole log).
    pub chain_rows: u64,
    pub chain_ok: bool,
    /// `AuditStore::verify` (in-process) or `jitssh-ca audit --db DB verify`.
    pub verified_by: String,
}

impl AuditReport {
    pub fn ok(&self) -> bool {
        self.chain_ok
            && self.issued_rows == self.certificates
            && self.unknown_serials == 0
            && self.missing_rows == 0
    }
}

fn open(db: &Path) -> anyhow::Result<Connection> {
    Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening the audit database {} read-only", db.display()))
}

/// The last `seq` in the log (0 when empty): rows after it belong to this run.
pub fn last_seq(db: &Path) -> anyhow::Result<u64> {
    let conn = open(db)?;
    let seq: Option<i64> = conn.query_row("SELECT max(seq) FROM audit", [], |r| r.get(0))?;
    Ok(seq.map_or(0, |s| s.max(0).unsigned_abs()))
}

/// Compare the `issued` rows after `since_seq` with the serials returned.
pub fn compare(db: &Path, since_seq: u64, serials: &[u64]) -> anyhow::Result<(u64, u64, u64, u64)> {
    let conn = open(db)?;
    let mut stmt =
        conn.prepare("SELECT serial FROM audit WHERE seq > ?1 AND outcome = 'issued'")?;
    let since = i64::try_from(since_seq)?;
    let rows: Vec<Option<String>> = stmt
        .query_map([since], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(compare_serials(&rows, serials))
}

/// [`compare`] through the in-process CA's own store (any backend).
pub fn compare_store(
    store: &ca_server::audit::AuditStore,
    since_seq: u64,
    serials: &[u64],
) -> anyhow::Result<(u64, u64, u64, u64)> {
    let rows: Vec<Option<String>> = store
        .list(&ca_server::audit::Filter::default())?
        .into_iter()
        .filter(|r| r.seq > since_seq && r.event.outcome == "issued")
        .map(|r| r.event.serial)
        .collect();
    Ok(compare_serials(&rows, serials))
}

/// (issued rows, certificates, rows naming no returned serial, returned
/// serials without a row).
fn compare_serials(rows: &[Option<String>], serials: &[u64]) -> (u64, u64, u64, u64) {
    let returned: HashSet<u64> = serials.iter().copied().collect();
    let mut logged = HashSet::with_capacity(rows.len());
    let mut unknown = 0;
    for serial in rows {
        match serial.as_deref().and_then(|s| s.parse::<u64>().ok()) {
            Some(s) if returned.contains(&s) => {
                logged.insert(s);
            }
            _ => unknown += 1,
        }
    }
    let missing = returned.difference(&logged).count() as u64;
    (rows.len() as u64, serials.len() as u64, unknown, missing)
}

/// `jitssh-ca audit --db DB verify`: exit status and its `ok: N rows` line.
pub fn verify_with_cli(ca_bin: &Path, db: &Path) -> anyhow::Result<(bool, u64)> {
    let out = Command::new(ca_bin)
        .args(["audit", "--db"])
        .arg(db)
        .arg("verify")
        .output()
        .with_context(|| format!("running {}", ca_bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Ok((false, 0));
    }
    let Some(rows) = stdout
        .strip_prefix("ok: ")
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
    else {
        bail!("unexpected output from `jitssh-ca audit verify`: {stdout}");
    };
    Ok((true, rows))
}

/// `jitssh-ca` beside this executable (cargo puts both in target/PROFILE).
pub fn sibling_ca_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join("jitssh-ca");
    p.exists().then_some(p)
}
