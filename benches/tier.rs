//! Cold-tier codec throughput: a sealed segment of 100-byte records written as Parquet
//! (what an upload costs in CPU) and its row groups decoded back into stored batches
//! (what an empty-cache cold read costs). `cargo bench --bench tier`.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::file::metadata::ParquetMetaDataReader;
use std::hint::black_box;
use strata_record::BatchBuilder;
use strata_tier::codec::{Span, decode_row_group};
use strata_tier::remote::{DEFAULT_ROWS_PER_GROUP, upload_segment_file};

const RECORDS: usize = 200_000;

// As in the broker binary: mimalloc, tuned by `strata::tune_process_memory`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A segment like `strata bench produce` writes: 100-byte values cut from a 4 KiB
/// pseudo-random buffer, in batches of about 256 KiB.
fn segment() -> Vec<u8> {
    let mut payload = vec![0u8; 100 + 4096];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in payload.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = b'a' + (x % 26) as u8;
    }
    let mut out = Vec::new();
    let mut next = 0usize;
    while next < RECORDS {
        let mut b = BatchBuilder::new(1_700_000_000_000, 256 * 1024);
        let n = 2300.min(RECORDS - next);
        for j in next..next + n {
            let off = j % 4096;
            b.append(1_700_000_000_000, None, Some(&payload[off..off + 100]), &[]);
        }
        let mut bytes = b.finish_vec();
        strata_record::set_base_offset(&mut bytes, next as i64);
        out.extend_from_slice(&bytes);
        next += n;
    }
    out
}

fn tier(c: &mut Criterion) {
    strata::tune_process_memory();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("00000000000000000000.log");
    let data = segment();
    std::fs::write(&file, &data).unwrap();
    let bucket = strata_tier::store::open("memory://").unwrap();
    let mut g = c.benchmark_group("tier");
    g.sample_size(10);
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.bench_function("upload 100 B", |b| {
        b.iter(|| {
            rt.block_on(upload_segment_file(
                &bucket,
                "t",
                "id",
                0,
                &file,
                0..=RECORDS as i64 - 1,
                DEFAULT_ROWS_PER_GROUP,
            ))
            .unwrap()
        })
    });
    let seg = rt
        .block_on(upload_segment_file(
            &bucket,
            "t",
            "id",
            0,
            &file,
            0..=RECORDS as i64 - 1,
            DEFAULT_ROWS_PER_GROUP,
        ))
        .unwrap();
    let object = rt
        .block_on(async {
            use object_store::ObjectStoreExt;
            let path = object_store::path::Path::from(seg.key.as_str());
            bucket.store.get(&path).await?.bytes().await
        })
        .unwrap();
    let meta = ParquetMetaDataReader::new()
        .parse_and_finish(&object)
        .unwrap();
    let meta = ArrowReaderMetadata::try_new(Arc::new(meta), Default::default()).unwrap();
    let span = Span {
        start: 0,
        object_len: object.len() as u64,
        bytes: object.clone(),
    };
    eprintln!(
        "segment: {} B of batches, {} B of Parquet in {} row groups; uncompressed {} B",
        data.len(),
        object.len(),
        seg.row_groups.len(),
        meta.metadata()
            .row_groups()
            .iter()
            .map(|g| g.total_byte_size())
            .sum::<i64>()
    );
    g.bench_function("decode 100 B", |b| {
        b.iter(|| {
            let mut n = 0;
            for rg in 0..seg.row_groups.len() {
                n += decode_row_group(black_box(&span), &meta, rg).unwrap().len();
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, tier);
criterion_main!(benches);
