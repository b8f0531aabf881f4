//! A history checker for fault tests that move data, with Jepsen's anomaly names.
//!
//! A test records what the broker acknowledged (offset and value of each record) and
//! every pass a consumer made over a partition (records in delivery order); `check`
//! then names what went wrong:
//! - lost write: an acknowledged offset that the last read, from at or below it, lacks;
//! - one offset two values: an offset acknowledged or read with different bytes;
//! - duplicate: one value delivered at two offsets (values are unique by construction);
//! - gap: a read skipped offsets between two it delivered;
//! - non-monotonic read: a read delivered an offset at or below one it delivered before.

use std::collections::BTreeMap;
use std::fmt;

/// One thing wrong with a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    LostWrite {
        offset: i64,
    },
    OneOffsetTwoValues {
        offset: i64,
        first: Vec<u8>,
        then: Vec<u8>,
    },
    Duplicate {
        value: Vec<u8>,
        offsets: (i64, i64),
    },
    Gap {
        after: i64,
        next: i64,
    },
    NonMonotonicRead {
        after: i64,
        next: i64,
    },
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |v: &[u8]| String::from_utf8_lossy(&v[..v.len().min(40)]).into_owned();
        match self {
            Anomaly::LostWrite { offset } => write!(f, "lost write: offset {offset}"),
            Anomaly::OneOffsetTwoValues {
                offset,
                first,
                then,
            } => write!(
                f,
                "one offset two values: offset {offset} held {:?}, then {:?}",
                text(first),
                text(then)
            ),
            Anomaly::Duplicate { value, offsets } => write!(
                f,
                "duplicate: {:?} at offsets {} and {}",
                text(value),
                offsets.0,
                offsets.1
            ),
            Anomaly::Gap { after, next } => write!(f, "gap: {after} then {next}"),
            Anomaly::NonMonotonicRead { after, next } => {
                write!(f, "non-monotonic read: {after} then {next}")
            }
        }
    }
}

/// One consumer pass: where it started, and (offset, value) in delivery order.
type Pass = (i64, Vec<(i64, Vec<u8>)>);

/// What was acknowledged and what was read.
#[derive(Default)]
pub struct History {
    acked: BTreeMap<i64, Vec<u8>>,
    reads: Vec<Pass>,
    /// For a compacted topic: the key acknowledged at each offset. Then a read may skip
    /// an offset whose key was acknowledged again later (compaction removes it), and
    /// only the latest offset of each key must be delivered.
    keys: Option<BTreeMap<i64, Vec<u8>>>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// The broker acknowledged `value` at `offset`.
    pub fn ack(&mut self, offset: i64, value: Vec<u8>) {
        self.acked.insert(offset, value);
    }

    /// The highest acknowledged offset.
    pub fn last_acked(&self) -> Option<i64> {
        self.acked.keys().next_back().copied()
    }

    /// The broker acknowledged `value` under `key` at `offset`, on a compacted topic.
    pub fn ack_keyed(&mut self, offset: i64, key: Vec<u8>, value: Vec<u8>) {
        self.acked.insert(offset, value);
        self.keys
            .get_or_insert_with(BTreeMap::new)
            .insert(offset, key);
    }

    /// Offsets whose record compaction must keep: every offset, or on a compacted topic
    /// the latest offset of each key.
    fn must_keep(&self) -> std::collections::BTreeSet<i64> {
        match &self.keys {
            None => self.acked.keys().copied().collect(),
            Some(keys) => {
                let mut latest: BTreeMap<&Vec<u8>, i64> = BTreeMap::new();
                for (o, k) in keys {
                    latest.insert(k, *o);
                }
                latest.into_values().collect()
            }
        }
    }

    /// Whether a read may skip from `after` to `next`: on a compacted topic, when every
    /// offset in between was superseded.
    fn may_skip(&self, keep: &std::collections::BTreeSet<i64>, after: i64, next: i64) -> bool {
        self.keys.is_some() && keep.range(after + 1..next).next().is_none()
    }

    /// One consumer pass that started at offset `from`, records in delivery order.
    pub fn read(&mut self, from: i64, records: impl IntoIterator<Item = (i64, Vec<u8>)>) {
        self.reads.push((from, records.into_iter().collect()));
    }

    /// Every anomaly in the history (see the module docs).
    pub fn check(&self) -> Vec<Anomaly> {
        let mut out = Vec::new();
        let keep = self.must_keep();
        let mut seen: BTreeMap<i64, &Vec<u8>> = self.acked.iter().map(|(o, v)| (*o, v)).collect();
        for (from, pass) in &self.reads {
            let mut prev: Option<i64> = None;
            let mut at_value: BTreeMap<&Vec<u8>, i64> = BTreeMap::new();
            for (offset, value) in pass {
                match prev {
                    Some(p) if *offset <= p => out.push(Anomaly::NonMonotonicRead {
                        after: p,
                        next: *offset,
                    }),
                    Some(p) if *offset > p + 1 && !self.may_skip(&keep, p, *offset) => {
                        out.push(Anomaly::Gap {
                            after: p,
                            next: *offset,
                        })
                    }
                    None if *offset > *from && !self.may_skip(&keep, from - 1, *offset) => out
                        .push(Anomaly::Gap {
                            after: from - 1,
                            next: *offset,
                        }),
                    _ => {}
                }
                prev = Some(prev.map_or(*offset, |p| p.max(*offset)));
                match seen.get(offset) {
                    Some(v) if *v != value => out.push(Anomaly::OneOffsetTwoValues {
                        offset: *offset,
                        first: (*v).clone(),
                        then: value.clone(),
                    }),
                    Some(_) => {}
                    None => {
                        seen.insert(*offset, value);
                    }
                }
                if let Some(other) = at_value.insert(value, *offset)
                    && other != *offset
                {
                    out.push(Anomaly::Duplicate {
                        value: value.clone(),
                        offsets: (other, *offset),
                    });
                }
            }
        }
        if let Some((from, last)) = self.reads.last() {
            let delivered: std::collections::BTreeSet<i64> = last.iter().map(|(o, _)| *o).collect();
            for offset in keep.iter().filter(|o| **o >= *from) {
                if !delivered.contains(offset) {
                    out.push(Anomaly::LostWrite { offset: *offset });
                }
            }
        }
        out
    }

    /// Panics naming every anomaly (the first 20) if there is any.
    pub fn assert_clean(&self, what: &str) {
        let found = self.check();
        if !found.is_empty() {
            let names: Vec<String> = found.iter().take(20).map(|a| a.to_string()).collect();
            panic!(
                "{what}: {} anomalies, first: {}",
                found.len(),
                names.join("; ")
            );
        }
    }
}

#[test]
fn the_checker_names_each_anomaly() {
    let v = |s: &str| s.as_bytes().to_vec();
    let mut h = History::new();
    for (o, s) in [(0, "a"), (1, "b"), (2, "c"), (3, "d")] {
        h.ack(o, v(s));
    }
    h.read(0, [(0, v("a")), (1, v("b")), (2, v("c")), (3, v("d"))]);
    assert!(h.check().is_empty());
    h.read(0, [(0, v("a")), (2, v("x")), (1, v("b")), (4, v("a"))]);
    let found = h.check();
    assert!(
        found.contains(&Anomaly::Gap { after: 0, next: 2 }),
        "{found:?}"
    );
    assert!(found.contains(&Anomaly::NonMonotonicRead { after: 2, next: 1 }));
    assert!(found.contains(&Anomaly::OneOffsetTwoValues {
        offset: 2,
        first: v("c"),
        then: v("x")
    }));
    assert!(found.contains(&Anomaly::Duplicate {
        value: v("a"),
        offsets: (0, 4)
    }));
    assert!(found.contains(&Anomaly::LostWrite { offset: 3 }));
}

#[test]
fn on_a_compacted_topic_only_superseded_offsets_may_be_skipped() {
    let v = |s: &str| s.as_bytes().to_vec();
    let mut h = History::new();
    for (o, k, val) in [
        (0, "a", "a0"),
        (1, "b", "b1"),
        (2, "a", "a2"),
        (3, "c", "c3"),
    ] {
        h.ack_keyed(o, v(k), v(val));
    }
    // Offset 0 (a, superseded by 2) may go; 1 (b) and 3 (c) may not.
    h.read(0, [(1, v("b1")), (2, v("a2")), (3, v("c3"))]);
    assert!(h.check().is_empty(), "{:?}", h.check());
    h.read(0, [(0, v("a0")), (2, v("a2"))]);
    let found = h.check();
    assert!(
        found.contains(&Anomaly::Gap { after: 0, next: 2 }),
        "{found:?}"
    );
    assert!(
        found.contains(&Anomaly::LostWrite { offset: 3 }),
        "{found:?}"
    );
    assert!(
        !found.contains(&Anomaly::LostWrite { offset: 0 }),
        "{found:?}"
    );
}
