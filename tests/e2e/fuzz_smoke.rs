//! A short run of the fuzz targets (`tests/fuzz`, run for long with `cargo fuzz`): the
//! committed corpus and seeds, then thousands of deterministic mutations of them. Each
//! target runs on a thread of its own with a deadline, so a hang fails the test.

#[path = "../fuzz/src/targets.rs"]
#[allow(dead_code)]
mod targets;

use std::path::PathBuf;
use std::time::{Duration, Instant};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../tests/fuzz/corpus/{target}"))
}

/// The committed corpus of `target`, and its seeds.
fn inputs(target: &str) -> Vec<Vec<u8>> {
    let mut out = targets::seeds(target);
    if let Ok(dir) = std::fs::read_dir(corpus_dir(target)) {
        for e in dir.flatten() {
            out.push(std::fs::read(e.path()).unwrap());
        }
    }
    out
}

/// One mutation of `input`, as libFuzzer's simplest ones: flip, overwrite with a value
/// that breaks lengths (0, -1, -12, i32::MAX), cut, duplicate or drop a slice.
fn mutate(x: &mut u64, input: &[u8]) -> Vec<u8> {
    let mut next = || {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    };
    let mut v = input.to_vec();
    for _ in 0..1 + next() % 3 {
        if v.is_empty() {
            v.push(next() as u8);
            continue;
        }
        let at = (next() as usize) % v.len();
        match next() % 6 {
            0 => v[at] ^= 1 << (next() % 8),
            1 => {
                let word = [0i32, -1, -12, i32::MAX, 61][(next() % 5) as usize].to_be_bytes();
                for (i, b) in word.iter().enumerate() {
                    if let Some(slot) = v.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            2 => v.truncate(at),
            3 => {
                let end = (at + 1 + (next() as usize) % 64).min(v.len());
                let piece = v[at..end].to_vec();
                v.splice(at..at, piece);
            }
            4 => {
                let end = (at + 1 + (next() as usize) % 64).min(v.len());
                v.drain(at..end);
            }
            _ => v[at] = next() as u8,
        }
    }
    v
}

fn smoke(target: &'static str, run: fn(&[u8]), budget: Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let started = Instant::now();
        let base = inputs(target);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut n = 0u64;
        for input in &base {
            run(input);
            n += 1;
        }
        while started.elapsed() < budget {
            for input in &base {
                let m = mutate(&mut x, input);
                let _ = tx.send(Err(m.clone()));
                run(&m);
                n += 1;
            }
        }
        let _ = tx.send(Ok(n));
    });
    let mut last = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Err(input)) => last = input,
            Ok(Ok(n)) => {
                assert!(n > 100, "{target}: only {n} inputs ran");
                return;
            }
            Err(_) => panic!(
                "fuzz target {target} panicked or hung on input (hex) {}",
                last.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
        }
    }
}

#[test]
fn fuzz_smoke_batch_codec() {
    smoke("batch", targets::batch, Duration::from_secs(2));
}

#[test]
fn fuzz_smoke_segment_recovery_and_reads() {
    smoke("segment", targets::segment, Duration::from_secs(3));
}

#[test]
fn fuzz_smoke_parquet_decode() {
    smoke("parquet", targets::parquet, Duration::from_secs(3));
}

#[test]
fn fuzz_smoke_kafka_request_decoder() {
    smoke("kafka", targets::kafka, Duration::from_secs(3));
}

/// Writes the seeds into the corpus directories (`cargo test --test e2e -- --ignored
/// write_fuzz_seeds`), where `cargo fuzz` starts from them.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    for target in ["batch", "segment", "parquet", "kafka"] {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in targets::seeds(target).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), s).unwrap();
        }
    }
}
