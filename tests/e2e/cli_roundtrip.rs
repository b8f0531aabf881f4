//! A million records through `strata produce` and back through `strata consume`.

use std::collections::HashMap;
use std::io::Write;
use std::process::Stdio;

use crate::helpers::*;

const RECORDS: usize = 1_000_000;

fn value_for(i: usize) -> String {
    // 100 bytes: a readable prefix that names the record, padded deterministically.
    let head = format!("value-{i:08}-");
    let pad: String = (0..100 - head.len())
        .map(|j| (b'a' + ((i + j) % 26) as u8) as char)
        .collect();
    head + &pad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_records_round_trip_through_the_cli_exactly_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .create_topic("roundtrip", 3, 1, Default::default())
        .await
        .unwrap();

    let mut input = Vec::with_capacity(RECORDS * 112);
    for i in 0..RECORDS {
        writeln!(input, "key-{i:07}\t{}", value_for(i)).unwrap();
    }
    let addr = broker.addr.clone();
    let produce = tokio::task::spawn_blocking(move || {
        let mut child = strata()
            .args([
                "produce",
                "roundtrip",
                "--key-separator",
                "\t",
                "--broker",
                &addr,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let summary = String::from_utf8_lossy(&produce.stderr);
    assert!(produce.status.success(), "produce failed: {summary}");
    assert!(
        summary.contains(&format!("produced {RECORDS} records")),
        "{summary}"
    );

    let addr = broker.addr.clone();
    let consume = tokio::task::spawn_blocking(move || {
        strata()
            .args([
                "consume",
                "roundtrip",
                "--offset",
                "earliest",
                "--output",
                "json",
                "--broker",
                &addr,
            ])
            .args(["--max-records", &RECORDS.to_string()])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        consume.status.success(),
        "consume failed: {}",
        String::from_utf8_lossy(&consume.stderr)
    );

    let mut next_offset: HashMap<u64, i64> = HashMap::new();
    let mut seen = vec![false; RECORDS];
    let mut last_index_in_partition: HashMap<u64, usize> = HashMap::new();
    let mut lines = 0;
    for line in consume
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
    {
        lines += 1;
        let v: serde_json::Value = serde_json::from_slice(line).unwrap();
        let partition = v["partition"].as_u64().unwrap();
        let offset = v["offset"].as_i64().unwrap();
        let key = v["key"].as_str().unwrap();
        let i: usize = key.strip_prefix("key-").unwrap().parse().unwrap();
        // Offsets dense from 0 and in order within each partition.
        let expect = next_offset.entry(partition).or_insert(0);
        assert_eq!(
            offset, *expect,
            "partition {partition}: offsets must be dense and ordered"
        );
        *expect += 1;
        // Records keep their produce order within a partition.
        if let Some(&prev) = last_index_in_partition.get(&partition) {
            assert!(i > prev, "partition {partition}: record {i} after {prev}");
        }
        last_index_in_partition.insert(partition, i);
        // The key-hash partitioner put the key where Kafka's would.
        assert_eq!(
            partition as u32,
            strata_client::partitioner::partition_for_key(key.as_bytes(), 3)
        );
        assert_eq!(v["value"].as_str().unwrap(), value_for(i), "value of {key}");
        assert!(!seen[i], "{key} delivered twice");
        seen[i] = true;
        assert!(v["timestamp"].as_i64().unwrap() > 0);
    }
    assert_eq!(lines, RECORDS);
    assert!(seen.iter().all(|&s| s), "every record delivered");
    assert_eq!(next_offset.len(), 3, "all partitions used");
    broker.stop().await;
}
