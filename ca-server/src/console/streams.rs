//! The live-update streams a process holds: at most [`PER_PERSON`] per
//! person (a new one ends that person's oldest) and [`MAX_STREAMS`] in all.
//! Each stream holds a [`Slot`]; dropping it frees the place.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Streams one person may hold at once (tabs, and streams of pages just
/// left that the server has not yet seen close).
pub const PER_PERSON: usize = 4;
/// Streams this process holds at once.
pub const MAX_STREAMS: usize = 1024;

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

impl Slot {
    /// Resolves when a newer stream of the same person took this place.
    pub(super) async fn evicted(&self) {
        self.evicted.notified().await;
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
