"""Produce and consume through a broker's Kafka listener with confluent-kafka
(librdkafka), as `strata bench` does through gRPC: N records of SIZE bytes over 3
partitions, acks=1, then every record read back from the earliest offset.

Usage: kafka_clients.py BOOTSTRAP RECORDS SIZE. Prints records/s, MB/s and, for
produce, delivery-latency percentiles.
"""
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

boot, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
topic = "kafka-bench"
admin = AdminClient({"bootstrap.servers": boot})
admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)

p = Producer({"bootstrap.servers": boot, "acks": "1", "linger.ms": 5,
              "batch.size": 256 * 1024, "queue.buffering.max.messages": 1_000_000,
              "queue.buffering.max.kbytes": 1 << 20, "compression.type": "none"})
value = b"x" * size
lat = []
sent_at = {}


def done(err, msg):
    if err is not None:
        raise SystemExit(f"delivery failed: {err}")


start = time.perf_counter()
for i in range(n):
    while True:
        try:
            p.produce(topic, value, partition=i % 3, on_delivery=done if i % 1000 else None)
            break
        except BufferError:
            p.poll(0.001)
    if i % 1000 == 0:
        t0 = time.perf_counter()
        while True:
            try:
                p.produce(topic, value, partition=0,
                          on_delivery=lambda err, msg, t0=t0: lat.append(time.perf_counter() - t0))
                break
            except BufferError:
                p.poll(0.001)
p.flush(120)
elapsed = time.perf_counter() - start
total = n + len(range(0, n, 1000))
print(f"kafka produce: {total / elapsed:,.0f} records/s, {total * size / elapsed / 1e6:,.1f} MB/s "
      f"({total} records in {elapsed:.2f} s)")
lat.sort()
if lat:
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
    print(f"kafka produce delivery latency: p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms, "
          f"max {lat[-1] * 1000:.1f} ms")

c = Consumer({"bootstrap.servers": boot, "group.id": "kafka-bench",
              "enable.auto.commit": False, "fetch.max.bytes": 4 << 20,
              "max.partition.fetch.bytes": 1 << 20})
c.assign([TopicPartition(topic, part, 0) for part in range(3)])
read = 0
start = time.perf_counter()
while read < total:
    msgs = c.consume(10_000, 5.0)
    if not msgs:
        raise SystemExit(f"consume stalled at {read} of {total}")
    read += len(msgs)
elapsed = time.perf_counter() - start
c.close()
print(f"kafka consume: {read / elapsed:,.0f} records/s, {read * size / elapsed / 1e6:,.1f} MB/s")
