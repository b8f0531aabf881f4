//! Per-topic configuration under Kafka's names.
//!
//! Every key is checked against [`KEYS`]; values are parsed and range-checked with an
//! error that names the key, the value and what is valid. A topic stores only the keys
//! set on it; everything else comes from the broker defaults.

use std::collections::BTreeMap;

use strata_log::{CompactConfig, LogConfig};

use crate::error::Error;

/// A config key: its name, default and a check of its value.
pub struct Key {
    pub name: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
    check: fn(&str) -> Result<(), String>,
}

fn long_at_least(min: i64) -> impl Fn(&str) -> Result<(), String> {
    move |v| match v.trim().parse::<i64>() {
        Ok(n) if n >= min => Ok(()),
        Ok(n) => Err(format!("must be at least {min}, got {n}")),
        Err(_) => Err(format!("must be an integer >= {min}")),
    }
}

fn check_retention(v: &str) -> Result<(), String> {
    long_at_least(-1)(v)
}
fn check_positive(v: &str) -> Result<(), String> {
    long_at_least(1)(v)
}
fn check_non_negative(v: &str) -> Result<(), String> {
    long_at_least(0)(v)
}
fn check_segment_bytes(v: &str) -> Result<(), String> {
    long_at_least(1024)(v)?;
    match v.trim().parse::<i64>() {
        Ok(n) if n <= i32::MAX as i64 => Ok(()),
        _ => Err(format!("must be at most {}", i32::MAX)),
    }
}
fn check_message_bytes(v: &str) -> Result<(), String> {
    long_at_least(64)(v)?;
    match v.trim().parse::<i64>() {
        Ok(n) if n <= 128 * 1024 * 1024 => Ok(()),
        _ => Err("must be at most 134217728 (128 MiB)".into()),
    }
}
fn check_cleanup(v: &str) -> Result<(), String> {
    CleanupPolicy::parse(v).map(|_| ())
}
fn check_ratio(v: &str) -> Result<(), String> {
    match v.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(()),
        _ => Err("must be a number from 0 to 1".into()),
    }
}

/// `cleanup.policy`: delete old segments, keep the latest record per key, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

impl CleanupPolicy {
    pub fn parse(v: &str) -> Result<Self, String> {
        let mut p = Self {
            delete: false,
            compact: false,
        };
        for part in v.split(',').map(str::trim) {
            match part {
                "delete" => p.delete = true,
                "compact" => p.compact = true,
                _ => {
                    return Err("must be delete, compact, or both (compact,delete)".into());
                }
            }
        }
        Ok(p)
    }
}

fn check_local_retention(v: &str) -> Result<(), String> {
    long_at_least(-2)(v).map_err(|e| format!("{e} (-2: same as the total retention, -1: no limit)"))
}
fn check_bool(v: &str) -> Result<(), String> {
    match v.trim() {
        "true" | "false" => Ok(()),
        _ => Err("must be true or false".into()),
    }
}
fn check_min_isr(v: &str) -> Result<(), String> {
    long_at_least(1)(v)
}

/// Every topic config this broker knows.
pub const KEYS: &[Key] = &[
    Key {
        name: "cleanup.policy",
        default: "delete",
        doc: "delete old segments, compact (keep the latest record per key), or compact,delete",
        check: check_cleanup,
    },
    Key {
        name: "delete.retention.ms",
        default: "86400000",
        doc: "how long compaction keeps a tombstone after the values it deletes",
        check: check_non_negative,
    },
    Key {
        name: "flush.messages",
        default: "9223372036854775807",
        doc: "fsync after this many records",
        check: check_positive,
    },
    Key {
        name: "flush.ms",
        default: "9223372036854775807",
        doc: "fsync when unflushed data is this old",
        check: check_non_negative,
    },
    Key {
        name: "local.retention.bytes",
        default: "-2",
        doc: "largest local size before uploaded segments leave the disk; -2 same as retention.bytes",
        check: check_local_retention,
    },
    Key {
        name: "local.retention.ms",
        default: "-2",
        doc: "age after which uploaded segments leave the disk; -2 same as retention.ms",
        check: check_local_retention,
    },
    Key {
        name: "max.message.bytes",
        default: "1048588",
        doc: "largest record batch accepted",
        check: check_message_bytes,
    },
    Key {
        name: "message.timestamp.after.max.ms",
        default: "3600000",
        doc: "how far past the broker clock a record timestamp may be (CreateTime)",
        check: check_non_negative,
    },
    Key {
        name: "message.timestamp.before.max.ms",
        default: "9223372036854775807",
        doc: "how far before the broker clock a record timestamp may be (CreateTime)",
        check: check_non_negative,
    },
    Key {
        name: "min.cleanable.dirty.ratio",
        default: "0.5",
        doc: "compact when the uncompacted share of sealed segments is at least this",
        check: check_ratio,
    },
    Key {
        name: "min.insync.replicas",
        default: "1",
        doc: "replicas that must have a record for acks=all",
        check: check_min_isr,
    },
    Key {
        name: "remote.storage.enable",
        default: "true",
        doc: "seal old segments to the object store as Parquet (never for compacted topics)",
        check: check_bool,
    },
    Key {
        name: "retention.bytes",
        default: "-1",
        doc: "largest partition size before old segments are deleted; -1 no limit",
        check: check_retention,
    },
    Key {
        name: "retention.ms",
        default: "604800000",
        doc: "age after which segments are deleted; -1 forever",
        check: check_retention,
    },
    Key {
        name: "segment.bytes",
        default: "1073741824",
        doc: "size at which the active segment rolls",
        check: check_segment_bytes,
    },
    Key {
        name: "segment.ms",
        default: "604800000",
        doc: "age at which the active segment rolls",
        check: check_positive,
    },
];

fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

fn unknown_key(name: &str) -> Error {
    let valid: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
    Error::InvalidConfig(format!(
        "unknown config key {name:?}; valid keys are: {}",
        valid.join(", ")
    ))
}

/// Checks one key and value.
pub fn validate(name: &str, value: &str) -> Result<(), Error> {
    let k = key(name).ok_or_else(|| unknown_key(name))?;
    (k.check)(value)
        .map_err(|why| Error::InvalidConfig(format!("invalid value {value:?} for {name}: {why}")))
}

/// Checks a whole set of overrides, each key and how they go together.
pub fn validate_all(configs: &BTreeMap<String, String>) -> Result<(), Error> {
    configs.iter().try_for_each(|(k, v)| validate(k, v))?;
    let compact = configs
        .get("cleanup.policy")
        .and_then(|v| CleanupPolicy::parse(v).ok())
        .is_some_and(|p| p.compact);
    if compact && configs.get("remote.storage.enable").map(|v| v.trim()) == Some("true") {
        // As in Kafka (KIP-405): the cold tier holds dense offset ranges, one Parquet
        // object per segment, and compaction rewrites segments in place.
        return Err(Error::InvalidConfig(
            "remote.storage.enable=true cannot be combined with cleanup.policy=compact: compacted topics stay on local disk; drop remote.storage.enable or use cleanup.policy=delete".into(),
        ));
    }
    Ok(())
}

/// The effective configuration of a topic: broker defaults overlaid by topic overrides.
#[derive(Debug, Clone)]
pub struct EffectiveConfig {
    values: BTreeMap<&'static str, (String, bool)>,
}

impl EffectiveConfig {
    pub fn new(defaults: &BTreeMap<String, String>, overrides: &BTreeMap<String, String>) -> Self {
        let mut values = BTreeMap::new();
        for k in KEYS {
            let (v, is_default) = match overrides.get(k.name) {
                Some(v) => (v.clone(), false),
                None => (
                    defaults
                        .get(k.name)
                        .cloned()
                        .unwrap_or_else(|| k.default.to_string()),
                    true,
                ),
            };
            values.insert(k.name, (v, is_default));
        }
        Self { values }
    }

    /// (name, value, is_default) for every key.
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, &str, bool)> {
        self.values.iter().map(|(k, (v, d))| (*k, v.as_str(), *d))
    }

    fn get(&self, name: &str) -> &str {
        &self.values[name].0
    }

    fn long(&self, name: &str) -> i64 {
        self.get(name).trim().parse().expect("validated config")
    }

    /// `min.insync.replicas`: the in-sync set an `acks=all` produce needs.
    pub fn min_insync_replicas(&self) -> usize {
        self.long("min.insync.replicas").max(1) as usize
    }

    pub fn max_message_bytes(&self) -> usize {
        self.long("max.message.bytes") as usize
    }

    /// (`message.timestamp.before.max.ms`, `message.timestamp.after.max.ms`).
    pub fn timestamp_bounds(&self) -> (i64, i64) {
        (
            self.long("message.timestamp.before.max.ms"),
            self.long("message.timestamp.after.max.ms"),
        )
    }

    pub fn remote_enabled(&self) -> bool {
        self.get("remote.storage.enable").trim() == "true" && !self.cleanup_policy().compact
    }

    pub fn cleanup_policy(&self) -> CleanupPolicy {
        CleanupPolicy::parse(self.get("cleanup.policy")).expect("validated config")
    }

    /// Total retention (both tiers): (retention.ms, retention.bytes).
    pub fn total_retention(&self) -> (i64, i64) {
        (self.long("retention.ms"), self.long("retention.bytes"))
    }

    /// What the local log keeps: local.retention.* with the cold tier on (-2 falls back
    /// to the total retention), the total retention without it.
    fn local_retention(&self) -> (i64, i64) {
        let (ms, bytes) = self.total_retention();
        if !self.remote_enabled() {
            return (ms, bytes);
        }
        let pick = |local: i64, total: i64| if local == -2 { total } else { local };
        (
            pick(self.long("local.retention.ms"), ms),
            pick(self.long("local.retention.bytes"), bytes),
        )
    }

    pub fn log_config(&self) -> LogConfig {
        let policy = self.cleanup_policy();
        let (retention_ms, retention_bytes) = if policy.delete {
            self.local_retention()
        } else {
            // compact alone: nothing is deleted for its age or the log's size.
            (-1, -1)
        };
        let compact = policy.compact.then(|| CompactConfig {
            delete_retention_ms: self.long("delete.retention.ms"),
            min_cleanable_dirty_ratio: self
                .get("min.cleanable.dirty.ratio")
                .trim()
                .parse()
                .expect("validated config"),
            ..CompactConfig::default()
        });
        LogConfig {
            compact,
            segment_bytes: self.long("segment.bytes") as u64,
            segment_ms: self.long("segment.ms"),
            retention_ms,
            retention_bytes,
            flush_messages: self.long("flush.messages") as u64,
            flush_ms: self.long("flush.ms"),
            ..LogConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_keys_and_values_name_what_is_valid() {
        let e = validate("retention.hours", "1").unwrap_err().to_string();
        assert!(
            e.contains("unknown config key \"retention.hours\"") && e.contains("retention.ms"),
            "{e}"
        );
        let e = validate("retention.ms", "soon").unwrap_err().to_string();
        assert!(
            e.contains("retention.ms") && e.contains("integer >= -1"),
            "{e}"
        );
        let e = validate("segment.bytes", "10").unwrap_err().to_string();
        assert!(e.contains("at least 1024"), "{e}");
        let e = validate("cleanup.policy", "compress")
            .unwrap_err()
            .to_string();
        assert!(e.contains("delete, compact, or both"), "{e}");
        validate("cleanup.policy", "compact,delete").unwrap();
        let both = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("remote.storage.enable".to_string(), "true".to_string()),
        ]);
        let e = validate_all(&both).unwrap_err().to_string();
        assert!(e.contains("compacted topics stay on local disk"), "{e}");
        let e = validate("min.cleanable.dirty.ratio", "2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("from 0 to 1"), "{e}");
        validate("retention.ms", "-1").unwrap();
    }

    #[test]
    fn overrides_win_over_defaults() {
        let defaults = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        let overrides = BTreeMap::from([("segment.bytes".to_string(), "2048".to_string())]);
        let c = EffectiveConfig::new(&defaults, &overrides);
        let lc = c.log_config();
        assert_eq!(lc.retention_ms, 1000);
        assert_eq!(lc.segment_bytes, 2048);
        let seg = c.entries().find(|e| e.0 == "segment.bytes").unwrap();
        assert!(!seg.2);
    }

    #[test]
    fn compact_alone_deletes_nothing_by_age_and_never_offloads() {
        let compact = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        let c = EffectiveConfig::new(&BTreeMap::new(), &compact);
        let lc = c.log_config();
        assert_eq!((lc.retention_ms, lc.retention_bytes), (-1, -1));
        assert_eq!(lc.compact.unwrap().delete_retention_ms, 86_400_000);
        assert!(!c.remote_enabled());
        let both = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact,delete".to_string()),
            ("retention.ms".to_string(), "1000".to_string()),
        ]);
        let lc = EffectiveConfig::new(&BTreeMap::new(), &both).log_config();
        assert_eq!(lc.retention_ms, 1000);
        assert!(lc.compact.is_some());
        let delete = EffectiveConfig::new(&BTreeMap::new(), &BTreeMap::new()).log_config();
        assert!(delete.compact.is_none());
    }
}
