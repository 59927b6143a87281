//! Just-in-time elevation: request a role with a reason; the policy
//! approves, denies or asks approvers; the grant starts at approval and ends
//! by itself. Every transition commits together with its audit row.
//!
//! The rules enforced here whatever the policy says: nobody approves their
//! own request (same issuer + subject, or the same verified email); each
//! approver counts once; only a pending request inside its deadline can be
//! decided; an approval counts only for the exact request (its hash) it was
//! given for; a grant never outlives its role's maximum or
//! `[elevation] max_grant`. Certificates carry a role's principals only while
//! the requester's grant is active ([`GrantIndex`], read by `issue`).

mod people;
mod store;

/// Create the elevation tables if missing (as `Elevations::open` does).
pub fn create_tables(db: &Db) -> Result<(), crate::db::DbError> {
    store::create_tables(db)
}
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ca_core::audit::AuditEvent;
use ca_core::elevation::{
    ElevationError, ElevationRequest, Outcome, Role, RoleName, enforce_approval, enforce_elevation,
    parse_comment, request_hash,
};
use ca_core::identity::Party;
use ca_core::policy::ActiveGrant;
use ca_core::wire::{Elevation, ElevationCreate, ElevationDecide, ElevationVote};
use ca_core::{IdentityKind, Principal, Refusal, VerifiedIdentity};
use rand_core::{OsRng, RngCore as _};
use serde_json::json;

use crate::audit::{AuditError, AuditStore, TxOutcome};
use crate::config::ElevationConfig;
use crate::db::{Conn, Db, DbError};
use crate::policy::{PolicyEngine, PolicySnapshot};
pub use store::Row;
use webhook::{Notification, Notifier};

/// Everything that can stop an elevation call. `http` maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum ElevationOpError {
    #[error("request body is not valid JSON for this endpoint: {0}")]
    BadBody(String),
    #[error("{0}")]
    Request(#[from] ElevationError),
    #[error(
        "this CA's policy defines no roles, so there is nothing to elevate to; ask the CA operator"
    )]
    NotConfigured,
    #[error("no role {role} is defined; roles: {known}")]
    UnknownRole { role: String, known: String },
    #[error("denied by policy: {}", .reasons.join("; "))]
    Denied { reasons: Vec<String> },
    #[error(
        "the CA's policy could not decide ({0}); nothing was changed. Ask the CA operator to check the policy"
    )]
    PolicyError(String),
    #[error("no elevation {0} that you may see")]
    NotFound(String),
    #[error("elevation {id} is {state}; only a pending request can be {action}")]
    NotPending {
        id: String,
        state: String,
        action: &'static str,
    },
    #[error("elevation {id} is {state}; nothing to cancel")]
    NotCancellable { id: String, state: String },
    /// A conditional `UPDATE` changed no row: the stored request was not in
    /// the state just read (changed outside this writer, or its deadline
    /// passed). Nothing was written.
    #[error(
        "elevation {id} changed while it was being {action}, so nothing was changed; look at it again with `jitssh requests` (or `jitssh-ca elevation list`)"
    )]
    Changed { id: String, action: &'static str },
    #[error(
        "you cannot approve or deny your own elevation request; ask an approver (cancel it with `jitssh cancel`)"
    )]
    SelfApproval,
    #[error("you already approved elevation {0}; each approver counts once")]
    AlreadyApproved(String),
    #[error(
        "elevation {0} is not the request you reviewed (its request_hash differs); look at it again with `jitssh requests`"
    )]
    RequestChanged(String),
    #[error("you may not decide elevation {id}: {}", .reasons.join("; "))]
    NotApprover { id: String, reasons: Vec<String> },
    #[error("only the requester can cancel elevation {0}; approvers deny, operators revoke")]
    NotRequester(String),
    #[error("only people can approve or deny elevations; workload identities cannot")]
    WorkloadApprover,
    #[error("{0}")]
    LoginName(#[from] crate::logins::LoginNameError),
    #[error(
        "you already have {0} pending elevation requests; cancel some (`jitssh cancel ID`) or wait for a decision"
    )]
    TooManyPending(u64),
    #[error("too many elevation calls for this identity; retry in {0} s")]
    RateLimited(u64),
    #[error("this identity has been revoked at this CA; ask the CA operator")]
    Revoked,
    #[error("the audit log cannot be written, so nothing was changed; try again shortly")]
    AuditUnavailable(#[source] AuditError),
    #[error("cannot read elevations: {0}")]
    Store(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ElevationOpError {
    /// Stable snake_case code, shared by the HTTP body and audit rows.
    pub fn code(&self) -> &'static str {
        match self {
            ElevationOpError::BadBody(_) => "invalid_request",
            ElevationOpError::Request(e) => e.code(),
            ElevationOpError::NotConfigured => "elevation_not_configured",
            ElevationOpError::UnknownRole { .. } => "unknown_role",
            ElevationOpError::Denied { .. } => "denied_by_policy",
            ElevationOpError::PolicyError(_) => "policy_error",
            ElevationOpError::NotFound(_) => "elevation_not_found",
            ElevationOpError::NotPending { .. } => "elevation_not_pending",
            ElevationOpError::NotCancellable { .. } => "elevation_not_cancellable",
            ElevationOpError::Changed { .. } => "elevation_changed",
            ElevationOpError::SelfApproval => "self_approval",
            ElevationOpError::AlreadyApproved(_) => "already_approved",
            ElevationOpError::RequestChanged(_) => "request_changed",
            ElevationOpError::NotApprover { .. } => "not_an_approver",
            ElevationOpError::NotRequester(_) => "not_the_requester",
            ElevationOpError::WorkloadApprover => "workload_approver",
            ElevationOpError::LoginName(e) => e.code(),
            ElevationOpError::TooManyPending(_) => "too_many_pending",
            ElevationOpError::RateLimited(_) => "rate_limited",
            ElevationOpError::Revoked => "revoked",
            ElevationOpError::AuditUnavailable(_) => "audit_unavailable",
            ElevationOpError::Store(_) => "database_unavailable",
            ElevationOpError::Internal(_) => "internal_error",
        }
    }
}

/// Active grants by issuer and subject, for the issuance path. Rebuilt from
/// the database after every transition this process commits and every
/// second (so `jitssh-ca elevation revoke`, a separate process, takes effect
/// within a second).
#[derive(Default)]
pub struct GrantIndex {
    by_identity: ArcSwap<HashMap<String, HashMap<String, Vec<ActiveGrant>>>>,
}

impl GrantIndex {
    /// The grants of `issuer` + `subject` still active at `now`.
    pub fn active(&self, issuer: &str, subject: &str, now: u64) -> Vec<ActiveGrant> {
        let map = self.by_identity.load();
        if map.is_empty() {
            return Vec::new();
        }
        map.get(issuer)
            .and_then(|m| m.get(subject))
            .map(|v| v.iter().filter(|g| g.ends_at > now).cloned().collect())
            .unwrap_or_default()
    }

    fn replace(&self, rows: Vec<Row>) {
        let mut map: HashMap<String, HashMap<String, Vec<ActiveGrant>>> = HashMap::new();
        for row in rows {
            let (issuer, subject) = (row.requester.issuer.clone(), row.requester.subject.clone());
            if let Some(grant) = active_grant(row) {
                map.entry(issuer)
                    .or_default()
                    .entry(subject)
                    .or_default()
                    .push(grant);
            }
        }
        self.by_identity.store(Arc::new(map));
    }
}

/// An approved row as the issuance path sees it.
fn active_grant(row: Row) -> Option<ActiveGrant> {
    let ends_at = row.grant_end?;
    let principals = row
        .principals
        .iter()
        .filter_map(|p| Principal::parse(p).ok())
        .collect();
    Some(ActiveGrant {
        id: row.id,
        role: row.role,
        principals,
        ends_at,
    })
}

/// The elevation service: requests, decisions, grants.
pub struct Elevations {
    db: Db,
    audit: AuditStore,
    policy: Arc<PolicyEngine>,
    config: ElevationConfig,
    grants: Arc<GrantIndex>,
    notifier: Option<Notifier>,
    /// Login-name bindings (`people`); `None` in operator commands, where
    /// only derived login names are compared.
    logins: Option<Arc<crate::logins::LoginNames>>,
}

/// What a request's caller is: the verified identity and where it came from.
pub struct Caller<'a> {
    pub identity: &'a VerifiedIdentity,
    pub source_ip: &'a str,
}

impl Caller<'_> {
    fn party(&self) -> Party {
        party(self.identity)
    }

    fn event(&self, action: &str, now: u64) -> AuditEvent {
        AuditEvent {
            time: now,
            action: action.into(),
            issuer: Some(self.identity.issuer.clone()),
            subject: Some(self.identity.subject.clone()),
            email: self.identity.email.clone(),
            source_ip: Some(self.source_ip.to_owned()),
            ..Default::default()
        }
    }
}

fn party(id: &VerifiedIdentity) -> Party {
    Party {
        issuer: id.issuer.clone(),
        subject: id.subject.clone(),
        email: id.email.clone(),
    }
}

/// How many elevations `list` returns at most.
const LIST_LIMIT: usize = 200;

/// Undecided requests one person may have open at once: enough for real
/// work, few enough that nobody floods approvers (or the webhook).
pub const MAX_PENDING_PER_REQUESTER: u64 = 10;

impl Elevations {
    /// Create the tables if needed and load the active grants.
    pub fn open(
        db: impl Into<Db>,
        audit: AuditStore,
        policy: Arc<PolicyEngine>,
        config: ElevationConfig,
        now: u64,
    ) -> anyhow::Result<Self> {
        let db = db.into();
        store::create_tables(&db)
            .map_err(|e| anyhow::anyhow!("cannot create the elevation tables: {e}"))?;
        // Ending a grant revokes its certificates in the same transaction.
        crate::revocation::RevocationStore::open(db.clone())
            .map_err(|e| anyhow::anyhow!("cannot create the revocations table: {e}"))?;
        let notifier = config.webhook.clone().map(Notifier::new).transpose()?;
        let this = Elevations {
            db,
            audit,
            policy,
            config,
            grants: Arc::new(GrantIndex::default()),
            notifier,
            logins: None,
        };
        this.refresh(now)
            .map_err(|e| anyhow::anyhow!("cannot load active elevation grants: {e}"))?;
        Ok(this)
    }

    /// The active-grant index (this process's view, refreshed after its
    /// own commits and every second).
    pub fn grants(&self) -> Arc<GrantIndex> {
        self.grants.clone()
    }

    /// The grants of `issuer` + `subject` active at `now`, for issuance. With
    /// one process (SQLite) the index is current after every commit. With
    /// replicas (PostgreSQL) a grant approved or revoked on another replica
    /// must count at once, so this reads the database (one indexed query, on
    /// a blocking thread: never holding up the async workers for a round
    /// trip).
    pub async fn active_for(
        &self,
        issuer: &str,
        subject: &str,
        now: u64,
    ) -> Result<Vec<ActiveGrant>, ElevationOpError> {
        if self.db.backend() == crate::db::Backend::Sqlite {
            return Ok(self.grants.active(issuer, subject, now));
        }
        let rows = self.active_rows(issuer, subject, now).await?;
        Ok(rows.into_iter().filter_map(active_grant).collect())
    }

    /// The grants of `issuer` + `subject` active at `now`, read from the
    /// database on a blocking thread.
    async fn active_rows(
        &self,
        issuer: &str,
        subject: &str,
        now: u64,
    ) -> Result<Vec<Row>, ElevationOpError> {
        let (db, issuer, subject) = (self.db.clone(), issuer.to_owned(), subject.to_owned());
        tokio::task::spawn_blocking(move || {
            db.with(|c| store::active_of(c, &issuer, &subject, now))
        })
        .await
        .map_err(|e| ElevationOpError::Store(e.to_string()))?
        .map_err(|e| ElevationOpError::Store(e.to_string()))
    }

    /// Whether every grant in `ids` of `issuer` + `subject` is still active
    /// at `now`, read from the database whatever the backend. Issuance asks
    /// after a certificate relying on them is on record: a grant that ended
    /// in between revoked only the certificates recorded before it ended.
    pub async fn still_active(
        &self,
        issuer: &str,
        subject: &str,
        ids: Vec<String>,
        now: u64,
    ) -> Result<bool, ElevationOpError> {
        let rows = self.active_rows(issuer, subject, now).await?;
        Ok(ids.iter().all(|id| rows.iter().any(|r| r.id == *id)))
    }

    /// Reload the active grants from the database.
    pub fn refresh(&self, now: u64) -> Result<(), ElevationOpError> {
        let rows = self.read(|c| store::active(c, now))?;
        self.grants.replace(rows);
        Ok(())
    }

    /// After a committed change the answer stands; a failed refresh only
    /// delays the index until the next one-second refresh (logged).
    fn refresh_after_commit(&self, now: u64) {
        if let Err(e) = self.refresh(now) {
            tracing::warn!(error = %e, "could not refresh active elevation grants after a change");
        }
    }

    /// Refuse a revoked identity (`jitssh-ca revoke --subject`) any
    /// elevation call that changes something. Read from the database, so a
    /// revocation made anywhere counts at once.
    fn refuse_revoked(&self, who: &Caller<'_>) -> Result<(), ElevationOpError> {
        let (issuer, subject) = (&who.identity.issuer, &who.identity.subject);
        if self.read(|c| crate::revocation::subject_revoked(c, issuer, subject))? {
            return Err(ElevationOpError::Revoked);
        }
        Ok(())
    }

    /// Run a read on a pooled connection.
    fn read<T: Send>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, DbError> + Send,
    ) -> Result<T, ElevationOpError> {
        self.db
            .with(f)
            .map_err(|e| ElevationOpError::Store(e.to_string()))
    }

    fn notify(
        &self,
        event: &'static str,
        actor: Option<Party>,
        comment: Option<String>,
        e: &Elevation,
        now: u64,
    ) {
        if let Some(n) = &self.notifier {
            n.notify(Notification {
                event,
                time: now,
                actor,
                comment,
                elevation: e.clone(),
            });
        }
    }

    /// Start the background work: webhook delivery, the one-second grant
    /// refresh, and expiry of undecided requests and ended grants.
    pub fn spawn_background(self: &Arc<Self>) {
        if let Some(n) = &self.notifier {
            n.spawn();
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = crate::clock::now_unix();
                if let Err(e) = this.sweep(now).await {
                    tracing::warn!(error = %e, "elevation expiry sweep failed; will retry");
                }
                if let Err(e) = this.refresh(now) {
                    tracing::warn!(error = %e, "could not refresh active elevation grants");
                }
            }
        });
    }

    /// The role `name` from `policy`'s role table (the snapshot the caller
    /// also asks for its decision).
    fn role(policy: &PolicySnapshot, name: &str) -> Result<Role, ElevationOpError> {
        let roles = policy.roles();
        if roles.is_empty() {
            return Err(ElevationOpError::NotConfigured);
        }
        let parsed = RoleName::parse(name)?;
        let role = roles
            .get(&parsed)
            .cloned()
            .ok_or_else(|| ElevationOpError::UnknownRole {
                role: parsed.to_string(),
                known: roles
                    .iter()
                    .map(|r| r.name.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        Ok(role)
    }

    /// `POST /v1/elevations`.
    pub async fn create(
        &self,
        caller: &Caller<'_>,
        body: &[u8],
        now: u64,
    ) -> Result<Elevation, ElevationOpError> {
        let mut event = caller.event("elevation_request", now);
        let result = self.create_steps(caller, body, now, &mut event).await;
        if let Err(e) = &result {
            self.audit_refusal(event, e).await;
        }
        result
    }

    async fn create_steps(
        &self,
        caller: &Caller<'_>,
        body: &[u8],
        now: u64,
        event: &mut AuditEvent,
    ) -> Result<Elevation, ElevationOpError> {
        self.refuse_revoked(caller)?;
        let body: ElevationCreate =
            serde_json::from_slice(body).map_err(|e| ElevationOpError::BadBody(e.to_string()))?;
        let req = ElevationRequest::parse(&body)?;
        event.reason = Some(req.reason.clone());
        event.requested_ttl = req.ttl.map(|t| t.as_secs());
        event.details = Some(json!({"role": req.role}));
        // The role and the decision from one policy version.
        let policy = self.policy.snapshot();
        let role = Self::role(&policy, req.role.as_str())?;
        let (issuer, subject) = (&caller.identity.issuer, &caller.identity.subject);
        let pending = self.read(|c| store::pending_count(c, issuer, subject, now))?;
        if pending >= MAX_PENDING_PER_REQUESTER {
            return Err(ElevationOpError::TooManyPending(pending));
        }
        event.requested_principals = Some(role.principals.iter().map(|p| p.to_string()).collect());

        let input = json!({
            "identity": caller.identity,
            "request": {
                "kind": "elevation_request",
                "role": req.role,
                "ttl_seconds": req.ttl.map(|t| t.as_secs()),
                "reason": req.reason,
                "source_ip": caller.source_ip,
            },
            "role": role_input(&role),
            "time": time_input(now),
        });
        let eval = policy
            .evaluate_elevation(&input)
            .map_err(|e| ElevationOpError::PolicyError(e.to_string()))?;
        event.policy_hash = Some(eval.policy_hash.clone());
        let outcome = enforce_elevation(eval.decision.as_ref(), &role, &req, self.config.max_grant)
            .map_err(refusal)?;

        let id = new_id();
        let requester = caller.party();
        let principals: Vec<String> = role.principals.iter().map(|p| p.to_string()).collect();
        let (state, ttl, approvals_required, reasons) = match outcome {
            Outcome::Deny { reasons } => {
                event.decision_reasons = reasons.clone();
                return Err(ElevationOpError::Denied { reasons });
            }
            Outcome::Approve { ttl, reasons } => ("approved", ttl, 0, reasons),
            Outcome::Pending {
                ttl,
                approvals,
                reasons,
            } => ("pending", ttl, approvals, reasons),
        };
        // A person acting: their login name is theirs, or now becomes theirs.
        self.claim_login(caller, now).await?;
        let hash = request_hash(
            &id,
            &requester,
            &role.name,
            &role.principals,
            ttl,
            &req.reason,
            now,
        );
        let approved = state == "approved";
        let row = Row {
            id: id.clone(),
            requester: requester.clone(),
            requester_groups: caller.identity.groups.clone(),
            role: role.name.to_string(),
            principals: principals.clone(),
            ttl_seconds: ttl.as_secs(),
            reason: req.reason.clone(),
            reasons: reasons.clone(),
            approvals_required,
            state: state.into(),
            created_at: now,
            pending_until: now + self.config.pending_timeout.as_secs(),
            grant_start: approved.then_some(now),
            grant_end: approved.then_some(now + ttl.as_secs()),
            closed_by: None,
            request_hash: hash.clone(),
            policy_hash: eval.policy_hash.clone(),
        };
        event.outcome = state.into();
        event.decision_reasons = reasons;
        event.ttl_seconds = Some(ttl.as_secs());
        if approved {
            event.granted_principals = principals;
        }
        event.details = Some(details(&row, None));
        let stored = row.clone();
        let ev = event.clone();
        self.audit
            .transact(move |conn| {
                store::insert(conn, &stored)?;
                Ok(TxOutcome {
                    events: vec![ev],
                    keep: true,
                    value: (),
                })
            })
            .await
            .map_err(ElevationOpError::AuditUnavailable)?;
        event.outcome = "done".into();
        if approved {
            self.refresh_after_commit(now);
        }
        let wire = row.to_wire(vec![], now, false);
        self.notify(
            if approved {
                "elevation.approved"
            } else {
                "elevation.pending"
            },
            Some(requester),
            None,
            &wire,
            now,
        );
        tracing::info!(id = %id, role = %role.name, state, who = %caller.identity.display_name(), "elevation requested");
        Ok(wire)
    }

    /// Audit a refused call (unless the database is the problem, or the
    /// change already committed its own row).
    async fn audit_refusal(&self, mut event: AuditEvent, e: &ElevationOpError) {
        if matches!(e, ElevationOpError::AuditUnavailable(_)) || event.outcome == "done" {
            return;
        }
        event.outcome = "denied".into();
        event.code = Some(e.code().into());
        if event.decision_reasons.is_empty() {
            event.decision_reasons = vec![e.to_string()];
        }
        if let Err(ae) = self.audit.append(event, None).await {
            tracing::error!(error = %ae, "could not audit an elevation refusal");
        }
    }

    /// May `who` decide `row` (approve or deny)? The server's rules first,
    /// then the policy's `approval_decision`.
    fn may_decide(
        &self,
        who: &Caller<'_>,
        row: &Row,
        votes: &[(ElevationVote, String)],
        action: &str,
        now: u64,
    ) -> Result<(Vec<String>, String), ElevationOpError> {
        if who.identity.kind != IdentityKind::Human {
            return Err(ElevationOpError::WorkloadApprover);
        }
        if self.same_person_as_requester(who.identity, row) {
            return Err(ElevationOpError::SelfApproval);
        }
        let policy = self.policy.snapshot();
        let role = RoleName::parse(&row.role)
            .ok()
            .and_then(|n| policy.roles().get(&n).cloned());
        let input = json!({
            "identity": who.identity,
            "request": {
                "kind": "elevation_approval",
                "action": action,
                "id": row.id,
                "role": row.role,
                "principals": row.principals,
                "ttl_seconds": row.ttl_seconds,
                "reason": row.reason,
                "created_at": row.created_at,
                "requester": {
                    "issuer": row.requester.issuer,
                    "subject": row.requester.subject,
                    "email": row.requester.email,
                    "groups": row.requester_groups,
                },
                "approvals": votes.iter().map(|(v, _)| json!({
                    "issuer": v.issuer, "subject": v.subject, "email": v.email, "time": v.time,
                })).collect::<Vec<_>>(),
                "approvals_required": row.approvals_required,
                "source_ip": who.source_ip,
            },
            "role": role.as_ref().map(role_input),
            "time": time_input(now),
        });
        let eval = policy
            .evaluate_approval(&input)
            .map_err(|e| ElevationOpError::PolicyError(e.to_string()))?;
        match enforce_approval(eval.decision.as_ref()) {
            Ok(reasons) => Ok((reasons, eval.policy_hash)),
            Err(Refusal::Denied { reasons }) => Err(ElevationOpError::NotApprover {
                id: row.id.clone(),
                reasons,
            }),
            Err(Refusal::PolicyError(m)) => Err(ElevationOpError::PolicyError(m)),
        }
    }

    /// The row and its votes, visible or not (callers check visibility).
    fn load_row(&self, id: &str) -> Result<(Row, Vec<(ElevationVote, String)>), ElevationOpError> {
        if id.is_empty() || id.len() > 64 || ca_core::has_control_chars(id) {
            return Err(ElevationOpError::NotFound(ca_core::escape_control(id)));
        }
        let (row, votes) = self.read(|c| {
            let Some(row) = store::load(c, id)? else {
                return Ok((None, Vec::new()));
            };
            Ok((Some(row), store::votes(c, id)?))
        })?;
        let row = row.ok_or_else(|| ElevationOpError::NotFound(id.to_owned()))?;
        Ok((row, votes))
    }

    /// Whether `who` may see `row`: the requester, anyone who voted or
    /// closed it, and anyone the policy lets decide it.
    fn visible(
        &self,
        who: &Caller<'_>,
        row: &Row,
        votes: &[(ElevationVote, String)],
        now: u64,
    ) -> (bool, bool) {
        let me = who.party();
        if row.requester.issuer == me.issuer && row.requester.subject == me.subject {
            return (true, false);
        }
        let voted = votes
            .iter()
            .any(|(v, _)| v.issuer == me.issuer && v.subject == me.subject)
            || row
                .closed_by
                .as_ref()
                .is_some_and(|c| c.issuer == me.issuer && c.subject == me.subject);
        let can = self.may_decide(who, row, votes, "approve", now).is_ok();
        let pending = row.state_at(now) == "pending";
        (voted || can, can && pending && !voted)
    }

    /// `GET /v1/elevations/{id}`.
    pub fn get(&self, who: &Caller<'_>, id: &str, now: u64) -> Result<Elevation, ElevationOpError> {
        let (row, votes) = self.load_row(id)?;
        let (visible, can_decide) = self.visible(who, &row, &votes, now);
        if !visible {
            return Err(ElevationOpError::NotFound(id.to_owned()));
        }
        Ok(row.to_wire(votes.into_iter().map(|(v, _)| v).collect(), now, can_decide))
    }

    /// `GET /v1/elevations?state=...`: the caller's own requests and the
    /// pending ones the caller may decide; `state` filters by the state read
    /// at `now` (`active` means approved and not yet ended; `all` or none).
    pub fn list(
        &self,
        who: &Caller<'_>,
        state: Option<&str>,
        now: u64,
    ) -> Result<Vec<Elevation>, ElevationOpError> {
        let filter = match state {
            None | Some("all") | Some("") => None,
            Some(
                s @ ("pending" | "approved" | "active" | "denied" | "expired" | "cancelled"
                | "revoked"),
            ) => Some(s),
            Some(other) => {
                return Err(ElevationOpError::BadBody(format!(
                    "unknown state {:?}: use pending, active, approved, denied, expired, cancelled, revoked or all",
                    ca_core::escape_control(other)
                )));
            }
        };
        let me = who.party();
        let candidates = self.read(|c| {
            let (own, pending) = store::candidates(c, &me, LIST_LIMIT)?;
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::new();
            for row in own.into_iter().chain(pending) {
                if !seen.insert(row.id.clone()) {
                    continue;
                }
                let st = row.state_at(now);
                let keep = match filter {
                    None => true,
                    Some("active") | Some("approved") => st == "approved",
                    Some(f) => st == f,
                };
                if keep {
                    let votes = store::votes(c, &row.id)?;
                    out.push((row, votes));
                }
            }
            Ok(out)
        })?;
        let mut out = Vec::new();
        for (row, votes) in candidates {
            let (visible, can_decide) = self.visible(who, &row, &votes, now);
            if visible {
                out.push(row.to_wire(votes.into_iter().map(|(v, _)| v).collect(), now, can_decide));
            }
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// `POST /v1/elevations/{id}/approve`.
    pub async fn approve(
        &self,
        who: &Caller<'_>,
        id: &str,
        body: &[u8],
        now: u64,
    ) -> Result<Elevation, ElevationOpError> {
        self.decide(who, id, body, now, true).await
    }

    /// `POST /v1/elevations/{id}/deny`.
    pub async fn deny(
        &self,
        who: &Caller<'_>,
        id: &str,
        body: &[u8],
        now: u64,
    ) -> Result<Elevation, ElevationOpError> {
        self.decide(who, id, body, now, false).await
    }

    async fn decide(
        &self,
        who: &Caller<'_>,
        id: &str,
        body: &[u8],
        now: u64,
        approve: bool,
    ) -> Result<Elevation, ElevationOpError> {
        let action = if approve {
            "elevation_approve"
        } else {
            "elevation_deny"
        };
        let mut event = who.event(action, now);
        event.details = Some(json!({"elevation_id": ca_core::escape_control(id)}));
        let result = self
            .decide_steps(who, id, body, now, approve, &mut event)
            .await;
        if let Err(e) = &result {
            self.audit_refusal(event, e).await;
        }
        result
    }

    async fn decide_steps(
        &self,
        who: &Caller<'_>,
        id: &str,
        body: &[u8],
        now: u64,
        approve: bool,
        event: &mut AuditEvent,
    ) -> Result<Elevation, ElevationOpError> {
        self.refuse_revoked(who)?;
        let body: ElevationDecide = parse_optional_body(body)?;
        let comment = parse_comment(body.comment.as_deref())?;
        let (row, votes) = self.load_row(id)?;
        event.details = Some(details(&row, comment.as_deref()));
        let verb = if approve { "approved" } else { "denied" };
        let state = row.state_at(now);
        if state == "approved" && !approve {
            let hash = body.request_hash.clone();
            return self
                .deny_active(who, row, &votes, hash, comment, now, event)
                .await;
        }
        if state != "pending" {
            // Say what it is only to those who may see it.
            if !self.visible(who, &row, &votes, now).0 {
                return Err(ElevationOpError::NotFound(id.to_owned()));
            }
            return Err(ElevationOpError::NotPending {
                id: id.to_owned(),
                state: state.to_owned(),
                action: verb,
            });
        }
        let (reasons, policy_hash) = match self.may_decide(
            who,
            &row,
            &votes,
            if approve { "approve" } else { "deny" },
            now,
        ) {
            Ok(r) => r,
            Err(e @ ElevationOpError::NotApprover { .. }) => {
                // Not an approver: whether it exists is none of their business.
                if !self.visible(who, &row, &votes, now).0 {
                    return Err(ElevationOpError::NotFound(id.to_owned()));
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        event.policy_hash = Some(policy_hash);
        event.decision_reasons = reasons;
        if body
            .request_hash
            .as_ref()
            .is_some_and(|h| *h != row.request_hash)
        {
            return Err(ElevationOpError::RequestChanged(id.to_owned()));
        }
        self.claim_login(who, now).await?;
        let voter_logins = self.logins_of(who.identity);
        let bound = self.login_lookup();
        let me = who.party();
        let vote = ElevationVote {
            issuer: me.issuer.clone(),
            subject: me.subject.clone(),
            email: me.email.clone(),
            comment: comment.clone(),
            time: now,
        };
        let seen_hash = row.request_hash.clone();
        let id_owned = id.to_owned();
        let base = event.clone();
        // Decided on the writer, one change at a time: re-read, re-check, write.
        let result = self
            .audit
            .transact(move |conn| {
                let mut ev = base;
                let refuse = |ev, e| Ok(refused(ev, e));
                let Some(current) = store::load(conn, &id_owned)? else {
                    return refuse(ev, ElevationOpError::NotFound(id_owned.clone()));
                };
                let state = current.state_at(now).to_owned();
                if state != "pending" {
                    return refuse(
                        ev,
                        ElevationOpError::NotPending {
                            id: id_owned.clone(),
                            state,
                            action: verb,
                        },
                    );
                }
                if current.request_hash != seen_hash {
                    return refuse(ev, ElevationOpError::RequestChanged(id_owned.clone()));
                }
                // Every conditional UPDATE must change its row: 0 rows means
                // the state read above is not the stored one, and the whole
                // change (vote included) rolls back with a refusal row.
                let changed = || ElevationOpError::Changed {
                    id: id_owned.clone(),
                    action: verb,
                };
                if !approve {
                    let updated =
                        store::close(conn, &id_owned, &["pending"], "denied", Some(&vote), now)?;
                    if updated == store::Updated::Nothing {
                        return refuse(ev, changed());
                    }
                    ev.outcome = "denied".into();
                    ev.code = None;
                    ev.details = Some(details(
                        &Row {
                            state: "denied".into(),
                            ..current.clone()
                        },
                        vote.comment.as_deref(),
                    ));
                    let mut closed = current;
                    closed.state = "denied".into();
                    closed.closed_by = Some(vote);
                    return Ok(TxOutcome {
                        events: vec![ev],
                        keep: true,
                        value: Ok(closed),
                    });
                }
                let prior = store::votes(conn, &id_owned)?;
                let me = Party {
                    issuer: vote.issuer.clone(),
                    subject: vote.subject.clone(),
                    email: vote.email.clone(),
                };
                // One vote per person: by identity, verified email, or a
                // login name bound to the earlier voter.
                if prior.iter().any(|(v, _)| {
                    me.same_person_with_logins(
                        &Party {
                            issuer: v.issuer.clone(),
                            subject: v.subject.clone(),
                            email: v.email.clone(),
                        },
                        &voter_logins,
                        &bound(&v.issuer, &v.subject),
                    )
                }) {
                    return refuse(ev, ElevationOpError::AlreadyApproved(id_owned.clone()));
                }
                store::insert_vote(conn, &id_owned, &vote, &current.request_hash)?;
                let counted = prior
                    .iter()
                    .filter(|(_, h)| *h == current.request_hash)
                    .count()
                    + 1;
                let mut now_row = current.clone();
                if counted >= current.approvals_required as usize {
                    let updated = store::approve(conn, &id_owned, now, current.ttl_seconds)?;
                    if updated == store::Updated::Nothing {
                        return refuse(ev, changed());
                    }
                    now_row.state = "approved".into();
                    now_row.grant_start = Some(now);
                    now_row.grant_end = Some(now + current.ttl_seconds);
                    ev.outcome = "approved".into();
                    ev.granted_principals = current.principals.clone();
                    ev.ttl_seconds = Some(current.ttl_seconds);
                } else {
                    ev.outcome = "recorded".into();
                }
                let mut d = details(&now_row, vote.comment.as_deref());
                d["approvals"] = json!(counted);
                ev.details = Some(d);
                Ok(TxOutcome {
                    events: vec![ev],
                    keep: true,
                    value: Ok(now_row),
                })
            })
            .await
            .map_err(ElevationOpError::AuditUnavailable)?;
        // The transaction audited itself, refusal or not.
        event.outcome = "done".into();
        let row = result?;
        if row.state == "approved" {
            self.refresh_after_commit(now);
        }
        let votes = self.read(|c| store::votes(c, id)).unwrap_or_default();
        let wire = row.to_wire(votes.into_iter().map(|(v, _)| v).collect(), now, false);
        let kind = match (approve, row.state.as_str()) {
            (false, _) => "elevation.denied",
            (true, "approved") => "elevation.approved",
            _ => "elevation.approval",
        };
        self.notify(kind, Some(me), comment, &wire, now);
        tracing::info!(id, state = %row.state, who = %who.identity.display_name(), "elevation decided");
        Ok(wire)
    }

    /// A deny after approval: someone who may decide the request ends its
    /// active grant early (→ `revoked`, as an operator's revoke), and with it
    /// the certificates issued under it. The requester cancels instead.
    #[allow(clippy::too_many_arguments)] // the named inputs of one step
    async fn deny_active(
        &self,
        who: &Caller<'_>,
        row: Row,
        votes: &[(ElevationVote, String)],
        request_hash: Option<String>,
        comment: Option<String>,
        now: u64,
        event: &mut AuditEvent,
    ) -> Result<Elevation, ElevationOpError> {
        match self.may_decide(who, &row, votes, "deny", now) {
            Ok((reasons, policy_hash)) => {
                event.policy_hash = Some(policy_hash);
                event.decision_reasons = reasons;
            }
            Err(e @ ElevationOpError::NotApprover { .. }) => {
                if !self.visible(who, &row, votes, now).0 {
                    return Err(ElevationOpError::NotFound(row.id.clone()));
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        if request_hash.is_some_and(|h| h != row.request_hash) {
            return Err(ElevationOpError::RequestChanged(row.id.clone()));
        }
        let me = who.party();
        let by = ElevationVote {
            issuer: me.issuer,
            subject: me.subject,
            email: me.email,
            comment,
            time: now,
        };
        self.close(event, &row.id, by, now, "elevation.revoked")
            .await
    }

    /// `POST /v1/elevations/{id}/cancel`: the requester withdraws a pending
    /// request (→ cancelled) or drops an active grant early (→ revoked).
    pub async fn cancel(
        &self,
        who: &Caller<'_>,
        id: &str,
        body: &[u8],
        now: u64,
    ) -> Result<Elevation, ElevationOpError> {
        let mut event = who.event("elevation_cancel", now);
        event.details = Some(json!({"elevation_id": ca_core::escape_control(id)}));
        let result = async {
            self.refuse_revoked(who)?;
            let body: ElevationDecide = parse_optional_body(body)?;
            let comment = parse_comment(body.comment.as_deref())?;
            let (row, votes) = self.load_row(id)?;
            let me = who.party();
            if !(row.requester.issuer == me.issuer && row.requester.subject == me.subject) {
                if !self.visible(who, &row, &votes, now).0 {
                    return Err(ElevationOpError::NotFound(id.to_owned()));
                }
                return Err(ElevationOpError::NotRequester(id.to_owned()));
            }
            let by = ElevationVote {
                issuer: me.issuer.clone(),
                subject: me.subject.clone(),
                email: me.email.clone(),
                comment,
                time: now,
            };
            self.close(&mut event, id, by, now, "elevation.cancelled")
                .await
        }
        .await;
        if let Err(e) = &result {
            self.audit_refusal(event, e).await;
        }
        result
    }

    /// `jitssh-ca elevation revoke`: an operator ends a pending request or an
    /// active grant. `operator` names who did it (for the audit row).
    pub async fn revoke(
        &self,
        id: &str,
        operator: &str,
        reason: Option<String>,
        now: u64,
    ) -> Result<Elevation, ElevationOpError> {
        let mut event = AuditEvent {
            time: now,
            action: "elevation_revoke".into(),
            subject: Some(operator.to_owned()),
            reason: reason.clone(),
            details: Some(json!({"elevation_id": ca_core::escape_control(id)})),
            ..Default::default()
        };
        let by = ElevationVote {
            issuer: "jitssh-ca".into(),
            subject: operator.to_owned(),
            email: None,
            comment: reason,
            time: now,
        };
        let result = self
            .close(&mut event, id, by, now, "elevation.revoked")
            .await;
        if let Err(e) = &result {
            self.audit_refusal(event, e).await;
        }
        result
    }

    /// Close `id` (pending → cancelled/revoked, active → revoked).
    async fn close(
        &self,
        event: &mut AuditEvent,
        id: &str,
        by: ElevationVote,
        now: u64,
        kind: &'static str,
    ) -> Result<Elevation, ElevationOpError> {
        let id_owned = id.to_owned();
        let base = event.clone();
        let operator = kind == "elevation.revoked";
        let result = self
            .audit
            .transact(move |conn| {
                let mut ev = base;
                let Some(current) = store::load(conn, &id_owned)? else {
                    return Ok(refused(ev, ElevationOpError::NotFound(id_owned.clone())));
                };
                let state = current.state_at(now).to_owned();
                let to = match (state.as_str(), operator) {
                    ("pending", false) => "cancelled",
                    ("pending", true) | ("approved", _) => "revoked",
                    _ => {
                        let e = ElevationOpError::NotCancellable {
                            id: id_owned.clone(),
                            state,
                        };
                        return Ok(refused(ev, e));
                    }
                };
                let updated = store::close(
                    conn,
                    &id_owned,
                    &[current.state.as_str()],
                    to,
                    Some(&by),
                    now,
                )?;
                if updated == store::Updated::Nothing {
                    let e = ElevationOpError::Changed {
                        id: id_owned.clone(),
                        action: to,
                    };
                    return Ok(refused(ev, e));
                }
                // An active grant ended early: the certificates issued under
                // it are revoked in this same transaction.
                let revoked_serials = match (state.as_str(), current.grant_start) {
                    ("approved", Some(start)) => crate::revocation::revoke_grant_certificates(
                        conn,
                        &current.requester.issuer,
                        &current.requester.subject,
                        &current.principals,
                        start,
                        now,
                        &format!("elevation {id_owned} ended early ({to})"),
                    )?,
                    _ => Vec::new(),
                };
                let mut closed = current;
                closed.state = to.into();
                if closed.grant_end.is_some() {
                    closed.grant_end = Some(now);
                }
                closed.closed_by = Some(by.clone());
                ev.outcome = to.into();
                let mut d = details(&closed, by.comment.as_deref());
                if state == "approved" {
                    d["revoked_serials"] = json!(
                        revoked_serials
                            .iter()
                            .map(u64::to_string)
                            .collect::<Vec<_>>()
                    );
                }
                ev.details = Some(d);
                Ok(TxOutcome {
                    events: vec![ev],
                    keep: true,
                    value: Ok(closed),
                })
            })
            .await
            .map_err(ElevationOpError::AuditUnavailable)?;
        event.outcome = "done".into();
        let row = result?;
        self.refresh_after_commit(now);
        let wire = row.to_wire(vec![], now, false);
        let actor = row.closed_by.as_ref().map(|c| Party {
            issuer: c.issuer.clone(),
            subject: c.subject.clone(),
            email: c.email.clone(),
        });
        self.notify(
            if row.state == "cancelled" {
                "elevation.cancelled"
            } else {
                kind
            },
            actor,
            row.closed_by.as_ref().and_then(|c| c.comment.clone()),
            &wire,
            now,
        );
        tracing::info!(id, state = %row.state, "elevation closed");
        Ok(wire)
    }

    /// Record expiry of undecided requests and ended grants (one audit row
    /// each). Reads see them expired anyway; this makes it a transition.
    pub async fn sweep(&self, now: u64) -> Result<usize, ElevationOpError> {
        let expired = self
            .audit
            .transact(move |conn| {
                let due = store::expire_due(conn, now)?;
                let events = due
                    .iter()
                    .map(|row| {
                        let mut d = details(row, None);
                        d["from"] = json!(row.state);
                        AuditEvent {
                            time: now,
                            action: "elevation_expire".into(),
                            outcome: "expired".into(),
                            issuer: Some(row.requester.issuer.clone()),
                            subject: Some(row.requester.subject.clone()),
                            email: row.requester.email.clone(),
                            details: Some(d),
                            ..Default::default()
                        }
                    })
                    .collect();
                Ok(TxOutcome {
                    events,
                    keep: true,
                    value: due,
                })
            })
            .await
            .map_err(ElevationOpError::AuditUnavailable)?;
        for row in &expired {
            let mut r = row.clone();
            r.state = "expired".into();
            self.notify(
                "elevation.expired",
                None,
                None,
                &r.to_wire(vec![], now, false),
                now,
            );
        }
        Ok(expired.len())
    }

    /// For `jitssh-ca elevation list/show` (operator view: everything).
    pub fn all(&self, limit: usize) -> Result<Vec<Row>, ElevationOpError> {
        self.read(|c| store::all(c, limit))
    }

    /// For `jitssh-ca elevation show`.
    pub fn show(&self, id: &str, now: u64) -> Result<Elevation, ElevationOpError> {
        let (row, votes) = self.load_row(id)?;
        Ok(row.to_wire(votes.into_iter().map(|(v, _)| v).collect(), now, false))
    }
}

/// A transition refused inside the writer: roll the change back, still
/// append the refusal row.
fn refused(mut ev: AuditEvent, e: ElevationOpError) -> TxOutcome<Result<Row, ElevationOpError>> {
    ev.outcome = "denied".into();
    ev.code = Some(e.code().into());
    ev.decision_reasons = vec![e.to_string()];
    TxOutcome {
        events: vec![ev],
        keep: false,
        value: Err(e),
    }
}

fn parse_optional_body(body: &[u8]) -> Result<ElevationDecide, ElevationOpError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ElevationDecide::default());
    }
    serde_json::from_slice(body).map_err(|e| ElevationOpError::BadBody(e.to_string()))
}

fn refusal(r: Refusal) -> ElevationOpError {
    match r {
        Refusal::Denied { reasons } => ElevationOpError::Denied { reasons },
        Refusal::PolicyError(m) => ElevationOpError::PolicyError(m),
    }
}

fn role_input(role: &Role) -> serde_json::Value {
    json!({
        "name": role.name,
        "principals": role.principals,
        "max_ttl_seconds": role.max_ttl.as_secs(),
        "description": role.description,
    })
}

fn time_input(now: u64) -> serde_json::Value {
    json!({
        "unix": now,
        "unix_ns": i64::try_from(now).unwrap_or(i64::MAX).saturating_mul(1_000_000_000),
    })
}

fn details(row: &Row, comment: Option<&str>) -> serde_json::Value {
    json!({
        "elevation_id": row.id,
        "role": row.role,
        "state": row.state,
        "requester": row.requester,
        "approvals_required": row.approvals_required,
        "grant_ends_at": row.grant_end,
        "request_hash": row.request_hash,
        "comment": comment,
    })
}

/// `el_` and 24 hex digits (96 random bits): unguessable, so an id alone
/// reveals nothing and cannot be enumerated.
fn new_id() -> String {
    let mut b = [0u8; 12];
    OsRng.fill_bytes(&mut b);
    format!("el_{}", hex::encode(b))
}
