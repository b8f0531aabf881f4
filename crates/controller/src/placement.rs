//! Where a new topic's replicas go: Kafka's assignment, run by the node that proposes
//! the topic (the result travels in the command, so apply stays deterministic).
//!
//! Brokers are ordered so that racks alternate; partition `p`'s first replica (its
//! preferred leader) is broker `(start + p) mod n`, and its followers come after it
//! with a shift that grows every `n` partitions, so leaders and followers spread
//! evenly. With racks, a partition's replicas go to distinct racks while there are
//! racks it does not use yet.

use std::collections::{BTreeMap, BTreeSet};

use crate::state::NodeId;

/// A broker replicas may be placed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: NodeId,
    pub rack: Option<String>,
}

/// Places `partitions` partitions of `rf` replicas each on `brokers` (live ones);
/// `start` (any number; the proposer picks it at random) spreads topics' leaders.
pub fn place(
    brokers: &[Candidate],
    partitions: u32,
    rf: u32,
    start: usize,
) -> Result<Vec<Vec<NodeId>>, String> {
    let n = brokers.len();
    if rf == 0 {
        return Err("replication factor must be at least 1".into());
    }
    if rf as usize > n {
        return Err(format!(
            "replication factor {rf} needs {rf} live brokers; this cluster has {n} (lower --replication-factor or start more brokers)"
        ));
    }
    let ordered = rack_alternating(brokers);
    let racks: BTreeSet<&Option<String>> = ordered.iter().map(|b| &b.rack).collect();
    let rack_aware = racks.len() > 1 && racks.iter().all(|r| r.is_some());
    let mut out = Vec::with_capacity(partitions as usize);
    let mut shift = start % n.max(2).saturating_sub(1).max(1);
    for p in 0..partitions as usize {
        if p > 0 && p % n == 0 {
            shift += 1;
        }
        let first = (start + p) % n;
        let mut replicas = vec![ordered[first].id];
        let mut used_racks = BTreeSet::from([&ordered[first].rack]);
        let mut j = 0;
        while replicas.len() < rf as usize {
            // Candidates in Kafka's order for this partition; with racks, skip one on a
            // rack this partition has while an unused rack remains.
            let idx = (first + 1 + (shift + j) % (n - 1)) % n;
            j += 1;
            let b = &ordered[idx];
            if replicas.contains(&b.id) {
                if j > 2 * n {
                    // Every candidate seen twice: take the first free one.
                    let free = ordered
                        .iter()
                        .find(|c| !replicas.contains(&c.id))
                        .expect("rf <= n");
                    replicas.push(free.id);
                    used_racks.insert(&free.rack);
                }
                continue;
            }
            let all_racks_used = used_racks.len() >= racks.len();
            if rack_aware && !all_racks_used && used_racks.contains(&b.rack) && j <= n {
                continue;
            }
            replicas.push(b.id);
            used_racks.insert(&b.rack);
        }
        out.push(replicas);
    }
    Ok(out)
}

/// Brokers by id, reordered so that consecutive ones are on different racks where
/// possible (rack a, rack b, rack c, rack a, ...).
fn rack_alternating(brokers: &[Candidate]) -> Vec<Candidate> {
    let mut by_rack: BTreeMap<Option<String>, Vec<Candidate>> = BTreeMap::new();
    let mut sorted = brokers.to_vec();
    sorted.sort_by_key(|b| b.id);
    for b in sorted {
        by_rack.entry(b.rack.clone()).or_default().push(b);
    }
    let mut queues: Vec<std::collections::VecDeque<Candidate>> =
        by_rack.into_values().map(Into::into).collect();
    let mut out = Vec::with_capacity(brokers.len());
    while out.len() < brokers.len() {
        for q in &mut queues {
            if let Some(b) = q.pop_front() {
                out.push(b);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(racks: &[Option<&str>]) -> Vec<Candidate> {
        racks
            .iter()
            .enumerate()
            .map(|(i, r)| Candidate {
                id: i as NodeId + 1,
                rack: r.map(str::to_string),
            })
            .collect()
    }

    #[test]
    fn every_partition_gets_distinct_replicas_and_leaders_spread_evenly() {
        for n in 1..=6usize {
            for rf in 1..=n as u32 {
                for start in 0..7 {
                    // A whole number of rounds over the brokers: every broker then holds
                    // as many replicas, and leads as many, as any other.
                    let b = brokers(&vec![None; n]);
                    let count = 4 * n as u32;
                    let parts = place(&b, count, rf, start).unwrap();
                    assert_eq!(parts.len(), count as usize);
                    let mut leaders = BTreeMap::new();
                    let mut replicas = BTreeMap::new();
                    for p in &parts {
                        let set: BTreeSet<_> = p.iter().collect();
                        assert_eq!(set.len(), rf as usize, "distinct: {p:?}");
                        *leaders.entry(p[0]).or_insert(0) += 1;
                        for r in p {
                            *replicas.entry(*r).or_insert(0) += 1;
                        }
                    }
                    let spread = |m: &BTreeMap<NodeId, i32>| {
                        m.values().max().unwrap() - m.values().min().unwrap()
                    };
                    assert_eq!(spread(&leaders), 0, "n={n} rf={rf}: {leaders:?}");
                    assert_eq!(leaders.len(), n, "every broker leads some");
                    assert_eq!(spread(&replicas), 0, "n={n} rf={rf}: {replicas:?}");
                }
            }
        }
    }

    #[test]
    fn with_racks_a_partition_s_replicas_are_on_distinct_racks() {
        let b = brokers(&[
            Some("a"),
            Some("a"),
            Some("b"),
            Some("b"),
            Some("c"),
            Some("c"),
        ]);
        for start in 0..6 {
            for p in place(&b, 24, 3, start).unwrap() {
                let racks: BTreeSet<_> = p.iter().map(|id| &b[*id as usize - 1].rack).collect();
                assert_eq!(racks.len(), 3, "{p:?}");
            }
        }
        // Fewer racks than replicas: every rack is used, then any broker.
        let b = brokers(&[Some("a"), Some("a"), Some("b")]);
        for p in place(&b, 6, 3, 1).unwrap() {
            let racks: BTreeSet<_> = p.iter().map(|id| &b[*id as usize - 1].rack).collect();
            assert_eq!(racks.len(), 2, "{p:?}");
        }
    }

    #[test]
    fn too_few_brokers_is_an_error_that_says_how_many() {
        let e = place(&brokers(&[None, None]), 3, 3, 0).unwrap_err();
        assert!(
            e.contains("needs 3 live brokers; this cluster has 2"),
            "{e}"
        );
    }
}
