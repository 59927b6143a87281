//! Live updates of To decide: `GET /ui/decide/events`, a server-sent event
//! stream that says "changed" after any elevation changes (the service's
//! [`crate::elevation::Elevations::changes`]); the page's script then fetches
//! the list again through the same rights check as the page. The event
//! carries nothing but a counter, so a stream shows no one anything.
//!
//! Bounded: at most [`PER_PERSON`] streams per person (a new one ends the
//! oldest) and [`MAX_STREAMS`] in all (then 503); each ends after
//! [`MAX_LIFETIME`] (the browser reconnects), sends at most one event per
//! [`MIN_GAP`], and before every event and keep-alive asks again whether
//! the session is live and still holds `decide`, ending when not. An idle
//! stream is a task and a timer. Opening or holding a stream is not
//! activity: it never keeps an idle session alive.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::auth::person_with;
use super::render::{problem, source_ip};
use super::rights::Capability;
use super::state::UiState;

/// Streams one person may hold at once (tabs, and streams of pages just
/// left that the server has not yet seen close).
pub const PER_PERSON: usize = 4;
/// Streams this process holds at once.
pub const MAX_STREAMS: usize = 1024;
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

/// The open streams, by person.
#[derive(Default)]
pub struct Streams {
    inner: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    next: u64,
    total: usize,
    by_person: HashMap<String, VecDeque<(u64, Arc<Notify>)>>,
}

/// One open stream's place; dropping it frees the place.
pub(super) struct Slot {
    streams: Arc<Streams>,
    person: String,
    id: u64,
    /// Notified when a newer stream of the same person takes the place.
    evicted: Arc<Notify>,
}

impl Streams {
    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        // A panic elsewhere while holding the lock leaves counts, nothing
        // unsafe: keep going with them.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many streams are open.
    pub fn count(&self) -> usize {
        self.open().total
    }

    /// A place for a stream of `person`, ending their oldest one if they
    /// hold [`PER_PERSON`] already; `None` when the process holds
    /// [`MAX_STREAMS`].
    pub(super) fn take(self: &Arc<Self>, person: String) -> Option<Slot> {
        let mut open = self.open();
        if open.total >= MAX_STREAMS {
            return None;
        }
        open.next += 1;
        open.total += 1;
        let id = open.next;
        let evicted = Arc::new(Notify::new());
        let mine = open.by_person.entry(person.clone()).or_default();
        if mine.len() >= PER_PERSON
            && let Some((_, oldest)) = mine.pop_front()
        {
            // Stored if the stream is not waiting now: it ends at its next wait.
            oldest.notify_one();
        }
        mine.push_back((id, evicted.clone()));
        Some(Slot {
            streams: self.clone(),
            person,
            id,
            evicted,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.streams.open();
        open.total = open.total.saturating_sub(1);
        if let Some(mine) = open.by_person.get_mut(&self.person) {
            mine.retain(|(id, _)| *id != self.id);
            if mine.is_empty() {
                open.by_person.remove(&self.person);
            }
        }
    }
}

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
            () = self.slot.evicted.notified() => return None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_person_holds_a_few_streams_and_a_new_one_ends_the_oldest() {
        let streams = Arc::new(Streams::default());
        let mut bobs: Vec<Slot> = (0..PER_PERSON)
            .map(|_| streams.take("bob".into()).unwrap())
            .collect();
        let carol = streams.take("carol".into()).unwrap();
        assert_eq!(streams.count(), PER_PERSON + 1);
        let newest = streams.take("bob".into()).unwrap();
        // The oldest of bob's is told to end; the others and carol's are not.
        let told = |s: &Slot| {
            let n = s.evicted.notified();
            futures_util::FutureExt::now_or_never(n).is_some()
        };
        assert!(told(&bobs[0]));
        assert!(bobs[1..].iter().all(|s| !told(s)));
        assert!(!told(&carol) && !told(&newest));
        // A place is free once the ended stream is dropped.
        bobs.remove(0);
        assert_eq!(streams.count(), PER_PERSON + 1);
        drop((bobs, carol, newest));
        assert_eq!(streams.count(), 0);
        assert!(streams.open().by_person.is_empty());
    }

    #[test]
    fn the_process_holds_at_most_max_streams() {
        let streams = Arc::new(Streams::default());
        let held: Vec<Slot> = (0..MAX_STREAMS)
            .map(|i| streams.take(format!("p{i}")).unwrap())
            .collect();
        assert!(streams.take("one more".into()).is_none());
        drop(held);
        assert!(streams.take("one more".into()).is_some());
    }
}
