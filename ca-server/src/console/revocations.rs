//! Revocations: the list (newest first, paged), who revoked each entry and
//! when it reached the KRL this server serves; for operators, forms to
//! revoke a serial, a public key or an identity through
//! [`crate::revoke::revoke`], the operation `jitssh-ca revoke` runs.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::auth::{Form, Person, person, post_person};
use super::nav::Nav;
use super::render::{render, unavailable};
use super::rights::Capability;
use super::state::UiState;
use crate::audit::format_time;
use crate::clock::now_unix;
use crate::revocation::{KrlSeen, Revocation};
use crate::revoke::{self, RevokeError, Revoker};

/// Entries per page.
const PAGE: u32 = 50;

#[derive(Template)]
#[template(path = "console/revocations.html")]
struct RevocationsPage {
    nav: Nav,
    csrf: String,
    can_revoke: bool,
    issuers: Vec<String>,
    krl_version: u64,
    krl_loaded: String,
    rows: Vec<Row>,
    /// `?before=` of the next (older) page, when there is one.
    older: Option<u64>,
    /// Whether this is a later page (a link back to the newest).
    paged: bool,
    /// What the POST just revoked.
    done: Vec<String>,
    /// Why the form was refused (its fields kept in `typed`).
    error: Option<String>,
    /// Which form: `serial`, `key`, `subject`, or `list`.
    error_form: &'static str,
    typed: Typed,
}

/// What the person typed into the forms, shown again after a refusal.
#[derive(Default)]
struct Typed {
    serial: String,
    key: String,
    issuer: String,
    subject: String,
    reason: String,
}

/// One entry as shown.
struct Row {
    what: &'static str,
    value: String,
    /// A second line: the key's type, the identity's issuer.
    detail: Option<String>,
    when: String,
    by: String,
    reason: Option<String>,
    krl: String,
    in_force: bool,
}

/// `GET /ui/revocations[?before=ID]`.
pub(super) async fn revocations(State(s): State<UiState>, req: Request) -> Response {
    let me = match person(&s, &req, Capability::Revocations).await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let before = match query_before(req.uri().query()) {
        Ok(b) => b,
        Err(message) => {
            return page(
                &s,
                &me,
                None,
                Vec::new(),
                Some(("list", message)),
                Typed::default(),
            )
            .await;
        }
    };
    page(&s, &me, before, Vec::new(), None, Typed::default()).await
}

/// `POST /ui/revocations`: revoke what one of the three forms names.
pub(super) async fn revoke_post(State(s): State<UiState>, req: Request) -> Response {
    let (me, form) = match post_person(&s, req, Capability::Revoke).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let field = |name: &str| form.field(name).unwrap_or_default();
    let typed = Typed {
        serial: field("serial"),
        key: field("key"),
        issuer: field("issuer"),
        subject: field("subject"),
        reason: field("reason"),
    };
    let (which, target) = match parse_target(&s, &form, &typed) {
        Ok(t) => t,
        Err((which, message)) => {
            return page(&s, &me, None, Vec::new(), Some((which, message)), typed).await;
        }
    };
    let reason = match revoke::parse_reason(Some(&typed.reason)) {
        Ok(Some(r)) => r,
        Ok(None) => {
            let message = "Give a reason: it is recorded with the revocation and in the audit log.";
            return page(
                &s,
                &me,
                None,
                Vec::new(),
                Some((which, message.into())),
                typed,
            )
            .await;
        }
        Err(e) => {
            return page(
                &s,
                &me,
                None,
                Vec::new(),
                Some((which, e.to_string())),
                typed,
            )
            .await;
        }
    };
    let event = me.caller().event("revoke", now_unix());
    let max_ttl = s.authority.limits.max_ttl.as_secs();
    let added =
        match revoke::revoke(&s.authority.audit, &target, Some(reason), event, max_ttl).await {
            Ok(added) => added,
            Err(RevokeError::Invalid(message)) => {
                return page(&s, &me, None, Vec::new(), Some((which, message)), typed).await;
            }
            Err(e) => return unavailable("revoking", e),
        };
    // In this server's KRL now, not at the next one-second refresh.
    let cache = s.authority.revocations.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || cache.refresh(now_unix())).await {
        tracing::warn!(error = %e, "console: revoked; the next refresh loads it");
    }
    let done = added
        .iter()
        .map(|(kind, value)| {
            let (what, value, detail) = shown(kind, value);
            format!("{what} {value} {}", detail.unwrap_or_default())
                .trim_end()
                .to_owned()
        })
        .collect();
    page(&s, &me, None, done, None, Typed::default()).await
}

/// The target of the form that was sent (its `kind` field), or which form
/// was wrong and what to fix.
fn parse_target(
    s: &UiState,
    form: &Form,
    typed: &Typed,
) -> Result<(&'static str, crate::revocation::Target), (&'static str, String)> {
    let kind = form.field("kind").unwrap_or_default();
    let on = |which: &'static str| move |e: RevokeError| (which, e.to_string());
    match kind.as_str() {
        "serial" => revoke::parse_serial(&typed.serial)
            .map(|t| ("serial", t))
            .map_err(on("serial")),
        "key" => revoke::parse_key(&typed.key)
            .map(|t| ("key", t))
            .map_err(on("key")),
        "subject" => {
            let issuers = s.authority.verifier.issuer_urls();
            revoke::parse_subject(issuers.iter().map(String::as_str), &typed.issuer, &typed.subject)
                .map(|t| ("subject", t))
                .map_err(on("subject"))
        }
        _ => Err((
            "list",
            "Use one of the three forms on this page: it says whether a serial, a key or an identity is revoked.".into(),
        )),
    }
}

/// `?before=ID`, the only query this page takes.
fn query_before(query: Option<&str>) -> Result<Option<u64>, String> {
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return Ok(None);
    };
    match q.strip_prefix("before=").map(str::parse::<u64>) {
        Some(Ok(id)) => Ok(Some(id)),
        _ => Err("This page takes only ?before=ID, as its \"Older\" link gives. Showing the newest revocations.".into()),
    }
}

/// Render the page: the list (older than `before`), what was just revoked
/// (`done`), or a refusal (`error`, status 400, nothing changed).
async fn page(
    s: &UiState,
    me: &Person,
    before: Option<u64>,
    done: Vec<String>,
    error: Option<(&'static str, String)>,
    typed: Typed,
) -> Response {
    let store = s.authority.revocations.store().clone();
    let audit = s.authority.audit.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let mut entries = store.page(before, PAGE + 1).map_err(RevokeError::from)?;
        let more = entries.len() > PAGE as usize;
        entries.truncate(PAGE as usize);
        let who = revoke::revokers(&audit, &entries)?;
        Ok::<_, RevokeError>((entries, more, who))
    })
    .await;
    let (entries, more, who) = match listed {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return unavailable("listing revocations", e),
        Err(e) => return unavailable("listing revocations", e),
    };
    let now = now_unix();
    let cache = &s.authority.revocations;
    let krl_version = cache.get().version;
    let krl_loaded = match cache.krl_seen(krl_version) {
        KrlSeen::Since { at, .. } | KrlSeen::Before { at } => format_time(at),
        KrlSeen::NotYet => "not yet".into(),
    };
    let older = more.then(|| entries.last().map(|e| e.id)).flatten();
    let rows = entries.iter().map(|e| row(e, &who, cache, now)).collect();
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    render(
        status,
        &RevocationsPage {
            nav: me.nav(s, "/ui/revocations"),
            csrf: me.csrf(s),
            can_revoke: me.rights.has(Capability::Revoke),
            issuers: s.authority.verifier.issuer_urls(),
            krl_version,
            krl_loaded,
            rows,
            older,
            paged: before.is_some(),
            done,
            error_form: error.as_ref().map_or("", |e| e.0),
            error: error.map(|e| e.1),
            typed,
        },
    )
}

fn row(
    e: &Revocation,
    who: &HashMap<(String, String), Revoker>,
    cache: &crate::revocation::RevocationCache,
    now: u64,
) -> Row {
    let (what, value, detail) = shown(&e.kind, &e.value);
    let by = match who.get(&(e.kind.clone(), e.value.clone())) {
        Some(Revoker {
            who: Some(w),
            channel: Some(c),
        }) => format!("{w} ({c})"),
        Some(Revoker { who: Some(w), .. }) => w.clone(),
        Some(Revoker { who: None, .. }) => "jitssh-ca revoke, on the CA's host".into(),
        None => "the CA itself (an elevation grant ended, or during issuance)".into(),
    };
    let expired = e.expires_at.is_some_and(|t| t <= now);
    let krl = if expired {
        format!(
            "Left the KRL {}: every certificate it names has expired",
            format_time(e.expires_at.unwrap_or(now))
        )
    } else if e.kind == "subject" {
        // Subjects are not KRL entries: issuance refuses them, and their
        // certificates are revoked by serial (their own rows).
        match cache.krl_seen(e.id) {
            KrlSeen::NotYet => "Not in force here yet (this server reloads each second)".into(),
            _ => "Not a KRL entry: new certificates are refused; the ones already issued are listed by serial".into(),
        }
    } else {
        match cache.krl_seen(e.id) {
            KrlSeen::Since { at, version } => {
                format!(
                    "In this server's KRL since {} (version {version})",
                    format_time(at)
                )
            }
            KrlSeen::Before { at } => format!(
                "In this server's KRL since at least {} (when it loaded the list)",
                format_time(at)
            ),
            KrlSeen::NotYet => {
                "Not in this server's KRL yet: it reloads the list every second".into()
            }
        }
    };
    Row {
        what,
        value,
        detail,
        when: format_time(e.created_at),
        by,
        reason: e.reason.clone(),
        krl,
        in_force: !expired,
    }
}

/// An entry in words: what kind, its value, and a second line (the key's
/// type, the identity's issuer).
fn shown(kind: &str, value: &str) -> (&'static str, String, Option<String>) {
    match kind {
        "serial" => ("Serial", value.to_owned(), None),
        "key_id" => ("Key ID", value.to_owned(), None),
        "subject" => match value.split_once('\n') {
            Some((issuer, subject)) => {
                ("Identity", subject.to_owned(), Some(format!("at {issuer}")))
            }
            None => ("Identity", value.to_owned(), None),
        },
        "key" => match ssh_key::PublicKey::from_openssh(value) {
            Ok(k) => (
                "Key",
                k.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
                Some(k.algorithm().as_str().to_owned()),
            ),
            Err(_) => ("Key", value.to_owned(), None),
        },
        _ => ("Entry", value.to_owned(), None),
    }
}
