//! Fetch sessions (KIP-227): a consumer that fetches many partitions sends them once;
//! later fetches name only what changed (a new position, a partition added or
//! forgotten), and answers carry only partitions with news (records, a moved high
//! watermark or log start, an error).
//!
//! A session belongs to no connection: it is found by id and must be used with the
//! epoch it expects next (INVALID_FETCH_SESSION_EPOCH otherwise, and a client then
//! starts a new one). At most [`MAX_SESSIONS`] are kept; the least recently used goes
//! first, and its client gets FETCH_SESSION_ID_NOT_FOUND and starts over. Sessions live
//! in memory: a restart forgets them the same way.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

/// Kafka's `max.incremental.fetch.session.cache.slots` default.
pub const MAX_SESSIONS: usize = 1000;

/// One partition of a session, as its last request left it.
#[derive(Debug, Clone)]
pub struct Part {
    pub topic_id: Uuid,
    pub offset: i64,
    pub max_bytes: i32,
    pub leader_epoch: i32,
    /// (high watermark, log start) last answered; `None` before the first answer.
    pub sent: Option<(i64, i64)>,
}

pub type Key = (String, i32);

#[derive(Debug)]
struct Session {
    /// The epoch the next request must carry.
    epoch: i32,
    parts: BTreeMap<Key, Part>,
    last_used: u64,
}

/// Why an incremental fetch cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    NotFound,
    WrongEpoch,
}

#[derive(Default)]
pub struct FetchSessions {
    inner: parking_lot::Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<i32, Session>,
    clock: u64,
}

impl FetchSessions {
    /// Ends session `id` (a client's epoch -1 or 0 with its id), if any.
    pub fn close(&self, id: i32) {
        self.inner.lock().sessions.remove(&id);
    }

    /// A new session over `parts`; its id. The next request carries epoch 1.
    pub fn create(&self, parts: BTreeMap<Key, Part>) -> i32 {
        let mut g = self.inner.lock();
        if g.sessions.len() >= MAX_SESSIONS
            && let Some((&oldest, _)) = g.sessions.iter().min_by_key(|(_, s)| s.last_used)
        {
            g.sessions.remove(&oldest);
        }
        g.clock += 1;
        let last_used = g.clock;
        // Random, so one client cannot guess (and disturb) another's session.
        let id = loop {
            let id = (uuid::Uuid::new_v4().as_u128() as i32) & i32::MAX;
            if id != 0 && !g.sessions.contains_key(&id) {
                break id;
            }
        };
        g.sessions.insert(
            id,
            Session {
                epoch: 1,
                parts,
                last_used,
            },
        );
        id
    }

    /// An incremental request: applies its changes (`updates` added or moved,
    /// `forgotten` dropped) and returns every partition of the session to fetch.
    pub fn update(
        &self,
        id: i32,
        epoch: i32,
        updates: BTreeMap<Key, Part>,
        forgotten: &[Key],
    ) -> Result<Vec<(Key, Part)>, SessionError> {
        let mut g = self.inner.lock();
        g.clock += 1;
        let now = g.clock;
        let s = g.sessions.get_mut(&id).ok_or(SessionError::NotFound)?;
        if s.epoch != epoch {
            return Err(SessionError::WrongEpoch);
        }
        s.epoch = s.epoch.checked_add(1).unwrap_or(1);
        s.last_used = now;
        for k in forgotten {
            s.parts.remove(k);
        }
        for (k, mut p) in updates {
            p.sent = s.parts.get(&k).and_then(|old| old.sent);
            s.parts.insert(k, p);
        }
        Ok(s.parts
            .iter()
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect())
    }

    /// Records what was answered for `key`; whether it is news to the client (it
    /// differs from what the session last answered).
    pub fn answered(&self, id: i32, key: &Key, hw: i64, log_start: i64) -> bool {
        let mut g = self.inner.lock();
        let Some(p) = g.sessions.get_mut(&id).and_then(|s| s.parts.get_mut(key)) else {
            return true;
        };
        let news = p.sent != Some((hw, log_start));
        p.sent = Some((hw, log_start));
        news
    }

    pub fn len(&self) -> usize {
        self.inner.lock().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(offset: i64) -> Part {
        Part {
            topic_id: Uuid::nil(),
            offset,
            max_bytes: 1024,
            leader_epoch: -1,
            sent: None,
        }
    }

    #[test]
    fn a_session_keeps_its_partitions_and_checks_its_epoch() {
        let s = FetchSessions::default();
        let id = s.create(BTreeMap::from([
            (("a".into(), 0), part(0)),
            (("a".into(), 1), part(5)),
        ]));
        assert!(
            s.answered(id, &("a".into(), 0), 10, 0),
            "first answer is news"
        );
        assert!(
            !s.answered(id, &("a".into(), 0), 10, 0),
            "same again is not"
        );
        // Epoch 1 moves partition 0, forgets partition 1, adds b-0.
        let parts = s
            .update(
                id,
                1,
                BTreeMap::from([(("a".into(), 0), part(7)), (("b".into(), 0), part(0))]),
                &[("a".into(), 1)],
            )
            .unwrap();
        let keys: Vec<_> = parts.iter().map(|(k, p)| (k.clone(), p.offset)).collect();
        assert_eq!(keys, vec![(("a".into(), 0), 7), (("b".into(), 0), 0)]);
        assert!(
            !s.answered(id, &("a".into(), 0), 10, 0),
            "what was sent is kept"
        );
        assert_eq!(
            s.update(id, 1, BTreeMap::new(), &[]).unwrap_err(),
            SessionError::WrongEpoch
        );
        assert!(s.update(id, 2, BTreeMap::new(), &[]).is_ok());
        s.close(id);
        assert_eq!(
            s.update(id, 3, BTreeMap::new(), &[]).unwrap_err(),
            SessionError::NotFound
        );
    }

    #[test]
    fn the_least_recently_used_session_goes_first_when_full() {
        let s = FetchSessions::default();
        let ids: Vec<i32> = (0..MAX_SESSIONS)
            .map(|_| s.create(BTreeMap::new()))
            .collect();
        // The first is used again: the second is now the oldest.
        s.update(ids[0], 1, BTreeMap::new(), &[]).unwrap();
        s.create(BTreeMap::new());
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.update(ids[0], 2, BTreeMap::new(), &[]).is_ok());
        assert_eq!(
            s.update(ids[1], 1, BTreeMap::new(), &[]).unwrap_err(),
            SessionError::NotFound
        );
    }
}
