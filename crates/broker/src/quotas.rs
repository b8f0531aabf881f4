//! Kafka's client quotas: how many bytes per second each principal may produce and
//! fetch. A request is always served; what it costs is recorded against its principal,
//! and when the principal is over its rate the answer says how long to wait
//! (`throttle_time_ms`) and the listener holds the connection (Kafka mutes it; gRPC
//! delays the answer) for that long.
//!
//! Each principal has a balance per direction, refilled at its rate and holding at
//! most [`BURST`] of it: a request takes its bytes from the balance, and a negative
//! balance is the wait (debt / rate), at most [`MAX_THROTTLE`]. Sustained, a principal
//! gets its rate; idle, it may send one burst at once. With no quota set nothing is
//! recorded and nothing is locked.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use strata_auth::Principal;

use crate::error::BrokerError;

/// How much of its rate an idle principal may send at once.
pub const BURST: Duration = Duration::from_secs(1);
/// The longest wait asked for (Kafka's, with its default 11 one-second windows).
pub const MAX_THROTTLE: Duration = Duration::from_secs(10);

/// A principal's rates, bytes per second; 0 is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaRates {
    pub producer_byte_rate: u64,
    pub consumer_byte_rate: u64,
}

/// Which way the bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Produce,
    Fetch,
}

struct Balance {
    bytes: f64,
    at: Instant,
}

/// Every principal's balances.
pub struct Quotas {
    default: QuotaRates,
    overrides: HashMap<Principal, QuotaRates>,
    on: bool,
    balances: Mutex<HashMap<(Principal, Direction), Balance>>,
}

impl Quotas {
    /// From the broker's `quota_*` settings (checked by the config).
    pub fn new(
        default: QuotaRates,
        overrides: &BTreeMap<String, QuotaRates>,
    ) -> Result<Self, BrokerError> {
        let overrides: HashMap<Principal, QuotaRates> = overrides
            .iter()
            .map(|(p, r)| {
                Principal::parse(p)
                    .map(|p| (p, *r))
                    .map_err(|e| BrokerError::InvalidConfig(format!("quota_overrides: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let any = |r: &QuotaRates| r.producer_byte_rate > 0 || r.consumer_byte_rate > 0;
        Ok(Self {
            on: any(&default) || overrides.values().any(any),
            default,
            overrides,
            balances: Mutex::new(HashMap::new()),
        })
    }

    /// The rate `principal` has for `direction` (0: none).
    pub fn rate(&self, principal: &Principal, direction: Direction) -> u64 {
        let r = self.overrides.get(principal).unwrap_or(&self.default);
        match direction {
            Direction::Produce => r.producer_byte_rate,
            Direction::Fetch => r.consumer_byte_rate,
        }
    }

    /// Whether any quota is set.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// How long `principal` should still wait for what it moved already (without
    /// recording anything).
    pub fn owed(&self, principal: &Principal, direction: Direction) -> Duration {
        if !self.on {
            return Duration::ZERO;
        }
        self.record_at(principal, direction, 0, Instant::now())
    }

    /// Records `bytes` moved for `principal`; how long its client should now wait.
    pub fn record(&self, principal: &Principal, direction: Direction, bytes: u64) -> Duration {
        if !self.on {
            return Duration::ZERO;
        }
        self.record_at(principal, direction, bytes, Instant::now())
    }

    fn record_at(
        &self,
        principal: &Principal,
        direction: Direction,
        bytes: u64,
        now: Instant,
    ) -> Duration {
        let rate = self.rate(principal, direction);
        if rate == 0 {
            return Duration::ZERO;
        }
        let rate = rate as f64;
        let burst = rate * BURST.as_secs_f64();
        let floor = -rate * MAX_THROTTLE.as_secs_f64();
        let mut balances = self.balances.lock();
        // One entry per principal that moved bytes: bounded by the principals there are.
        let b = balances
            .entry((principal.clone(), direction))
            .or_insert(Balance {
                bytes: burst,
                at: now,
            });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * rate;
        b.bytes = (b.bytes + refill).min(burst) - bytes as f64;
        b.bytes = b.bytes.max(floor);
        b.at = now;
        if b.bytes >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.bytes / rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_over_its_rate_waits_for_its_debt_and_others_do_not() {
        let mut overrides = BTreeMap::new();
        overrides.insert(
            "User:fast".to_string(),
            QuotaRates {
                producer_byte_rate: 0,
                consumer_byte_rate: 1000,
            },
        );
        let q = Quotas::new(
            QuotaRates {
                producer_byte_rate: 1000,
                consumer_byte_rate: 0,
            },
            &overrides,
        )
        .unwrap();
        let (alice, fast) = (Principal::user("alice"), Principal::user("fast"));
        let t0 = Instant::now();
        // One second's worth goes at once; the next 500 bytes are half a second early.
        assert_eq!(
            q.record_at(&alice, Direction::Produce, 1000, t0),
            Duration::ZERO
        );
        let wait = q.record_at(&alice, Direction::Produce, 500, t0);
        assert_eq!(wait, Duration::from_millis(500));
        // After waiting it out, the balance is back to zero: no further wait.
        let t1 = t0 + wait;
        assert_eq!(
            q.record_at(&alice, Direction::Produce, 0, t1),
            Duration::ZERO
        );
        // Fetching has no default limit; an override sets one, and has no produce limit.
        assert_eq!(
            q.record_at(&alice, Direction::Fetch, 1 << 30, t1),
            Duration::ZERO
        );
        assert_eq!(
            q.record_at(&fast, Direction::Produce, 1 << 30, t1),
            Duration::ZERO
        );
        assert!(q.record_at(&fast, Direction::Fetch, 3000, t1) > Duration::ZERO);
        // A flood is asked to wait at most MAX_THROTTLE, and its debt stops there.
        assert_eq!(
            q.record_at(&alice, Direction::Produce, 1 << 40, t1),
            MAX_THROTTLE
        );
        let later = t1 + MAX_THROTTLE;
        assert_eq!(
            q.record_at(&alice, Direction::Produce, 0, later),
            Duration::ZERO
        );
        // No quota anywhere: nothing is recorded.
        let none = Quotas::new(QuotaRates::default(), &BTreeMap::new()).unwrap();
        assert_eq!(
            none.record(&alice, Direction::Produce, 1 << 40),
            Duration::ZERO
        );
        assert!(none.balances.lock().is_empty());
        // A malformed principal is a config error naming the key.
        let mut bad = BTreeMap::new();
        bad.insert("Group:x".to_string(), QuotaRates::default());
        let e = Quotas::new(QuotaRates::default(), &bad).err().unwrap();
        assert!(e.to_string().contains("quota_overrides"), "{e}");
    }
}
