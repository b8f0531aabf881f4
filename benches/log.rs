//! Log append and read throughput on a temp dir (page cache; no fsync), in batches of
//! 100-byte and 1 KiB records. `cargo bench --bench log`.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use strata_log::{Log, LogConfig, SystemClock};
use strata_record::BatchBuilder;

fn batch(size: usize, records: usize) -> Vec<u8> {
    let value = vec![b'y'; size];
    let mut b = BatchBuilder::new(1_700_000_000_000, records * (size + 16));
    for _ in 0..records {
        b.append(1_700_000_000_000, None, Some(&value), &[]);
    }
    b.finish_vec()
}

fn log(c: &mut Criterion) {
    let mut g = c.benchmark_group("log");
    for &(size, n) in &[(100usize, 1000usize), (1024, 128)] {
        let template = batch(size, n);
        g.throughput(Throughput::Bytes(template.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("append", size),
            &template,
            |b, template| {
                let dir = tempfile::tempdir().unwrap();
                let config = LogConfig {
                    segment_bytes: 256 << 20,
                    ..LogConfig::default()
                };
                let (mut log, _) =
                    Log::open(dir.path(), "bench-0", config, Arc::new(SystemClock)).unwrap();
                let mut buf = template.clone();
                b.iter(|| {
                    buf.copy_from_slice(template);
                    black_box(log.append(&mut buf, 0).unwrap())
                });
            },
        );
        g.bench_with_input(BenchmarkId::new("read", size), &template, |b, template| {
            let dir = tempfile::tempdir().unwrap();
            let (mut log, _) = Log::open(
                dir.path(),
                "bench-0",
                LogConfig::default(),
                Arc::new(SystemClock),
            )
            .unwrap();
            for _ in 0..200 {
                let mut buf = template.clone();
                log.append(&mut buf, 0).unwrap();
            }
            let end = log.log_end_offset();
            let mut at = 0;
            b.iter(|| {
                let out = log.read(at, template.len()).unwrap();
                at = (at + n as i64) % end;
                black_box(out.len())
            });
        });
    }
    g.finish();
}

criterion_group!(benches, log);
criterion_main!(benches);
