//! Batch codec throughput: building, validating and iterating batches of 100-byte and
//! 1 KiB records. `cargo bench --bench codec`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use strata_record::{Batch, BatchBuilder};

fn build(record_size: usize, records: usize) -> Vec<u8> {
    let value = vec![b'x'; record_size];
    let mut b = BatchBuilder::new(1_700_000_000_000, records * (record_size + 16));
    for i in 0..records {
        b.append(1_700_000_000_000 + i as i64, None, Some(&value), &[]);
    }
    b.finish_vec()
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch");
    for &(size, n) in &[(100usize, 1000usize), (1024, 128)] {
        let value = vec![b'x'; size];
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("encode", size), &size, |b, _| {
            b.iter(|| {
                let mut bb = BatchBuilder::new(1_700_000_000_000, n * (size + 16));
                for i in 0..n {
                    bb.append(
                        1_700_000_000_000 + i as i64,
                        None,
                        Some(black_box(&value)),
                        &[],
                    );
                }
                black_box(bb.finish_vec())
            })
        });
        let bytes = build(size, n);
        g.bench_with_input(BenchmarkId::new("validate", size), &bytes, |b, bytes| {
            b.iter(|| black_box(Batch::validate(black_box(bytes)).unwrap().len()))
        });
        g.bench_with_input(BenchmarkId::new("decode", size), &bytes, |b, bytes| {
            b.iter(|| {
                let batch = Batch::parse(black_box(bytes)).unwrap();
                let mut total = 0usize;
                for r in batch.records() {
                    total += r.unwrap().value.map(|v| v.len()).unwrap_or(0);
                }
                black_box(total)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
