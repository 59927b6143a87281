//! Live updates of To decide: `GET /ui/decide/events`, a server-sent event
//! stream that says "changed" after any elevation changes (the service's
//! [`crate::elevation::Elevations::changes`]); the page's script then fetches
//! the list again through the same rights check as the page. The event
//! carries nothing but a counter, so a stream shows no one anything.
//!
//! Bounded: at most `streams::PER_PERSON` streams per person (a new one
//! ends the oldest) and `streams::MAX_STREAMS` in all (then 503); each ends after
//! [`MAX_LIFETIME`] (the browser reconnects), sends at most one event per
//! [`MIN_GAP`], and before every event and keep-alive asks again whether
//! the session is live and still holds `decide`, ending when not. An idle
//! stream is a task and a timer. Opening or holding a stream is not
//! activity: it never keeps an idle session alive.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use tokio::time::Instant;

use super::auth::person_with;
use super::render::{problem, source_ip};
use super::rights::Capability;
use super::state::UiState;
use super::streams::Slot;

/// A stream ends after this; the browser's `EventSource` reconnects.
pub const MAX_LIFETIME: Duration = Duration::from_secs(300);

/// A comment is sent after this much silence: it keeps proxies and the
/// server's own idle timeout (default 30 s) from closing the connection,
/// and finds streams whose browser went away.
pub const KEEP_ALIVE: Duration = Duration::from_secs(20);
/// Changes closer together than this make one event.
pub const MIN_GAP: Duration = Duration::from_secs(1);
/// How long the browser waits before reconnecting.
const RETRY: Duration = Duration::from_secs(3);

/// `GET /ui/decide/events`.
pub(super) async fn events(State(s): State<UiState>, req: Request) -> Response {
    let headers = req.headers().clone();
    let ip = source_ip(&req);
    let me = match person_with(&s, &headers, ip.clone(), Capability::Decide, false).await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let key = format!("{}\n{}", me.identity.issuer, me.identity.subject);
    let Some(slot) = s.console.streams.take(key) else {
        let mut r = problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many live pages",
            "The CA holds as many live pages as it allows. Reload the page to see the latest.",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(30u32));
        return r;
    };
    let watch = Watch {
        changes: s.authority.elevations.changes(),
        s,
        headers,
        ip,
        ends: Instant::now() + MAX_LIFETIME,
        last_event: None,
        step: Step::Start,
        slot,
    };
    let stream = futures_util::stream::unfold(watch, |mut w| async move {
        let event = w.next().await?;
        Some((Ok::<_, Infallible>(event), w))
    });
    let mut r = Sse::new(stream).into_response();
    // Tell buffering proxies (nginx) to pass each event on at once.
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// Where a stream is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Start,
    Running,
    /// The session ended: the `ended` event went out; nothing follows.
    Done,
}

/// One stream's state.
struct Watch {
    s: UiState,
    headers: HeaderMap,
    ip: String,
    changes: watch::Receiver<u64>,
    ends: Instant,
    last_event: Option<Instant>,
    step: Step,
    slot: Slot,
}

impl Watch {
    /// The next thing to send, or `None` to end the stream.
    async fn next(&mut self) -> Option<Event> {
        match self.step {
            Step::Done => return None,
            Step::Start => {
                self.step = Step::Running;
                // Changes before this point are the page's: only later ones.
                self.changes.borrow_and_update();
                return Some(Event::default().retry(RETRY).comment("live"));
            }
            Step::Running => {}
        }
        let changed = tokio::select! {
            () = tokio::time::sleep_until(self.ends) => return None,
            () = self.slot.evicted() => return None,
            () = tokio::time::sleep(KEEP_ALIVE) => false,
            c = self.changes.changed() => {
                c.ok()?;
                true
            }
        };
        if changed {
            // Coalesce a burst: wait out the gap, then take every change so far.
            if let Some(at) = self.last_event {
                tokio::time::sleep_until((at + MIN_GAP).min(self.ends)).await;
            }
            self.changes.borrow_and_update();
        }
        if !self.still_allowed().await {
            self.step = Step::Done;
            return Some(Event::default().event("ended").data("session"));
        }
        if !changed {
            return Some(Event::default().comment("keep-alive"));
        }
        self.last_event = Some(Instant::now());
        Some(
            Event::default()
                .event("change")
                .data(self.changes.borrow().to_string()),
        )
    }

    /// Whether the session is live and still holds `decide` (not counted as
    /// activity).
    async fn still_allowed(&self) -> bool {
        person_with(
            &self.s,
            &self.headers,
            self.ip.clone(),
            Capability::Decide,
            false,
        )
        .await
        .is_ok()
    }
}
