"""kafka-python 3.x and aiokafka against a Strata broker's Kafka listener: produce,
consume from the earliest offset in a classic group, commit, and read the commit back.

Usage: kafka_python_client.py BOOTSTRAP. Exits non-zero with the failed check on stderr;
prints a JSON summary.
"""
import asyncio
import json
import sys
import time

BOOT = sys.argv[1]
N = 50


def kafka_python():
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=BOOT)
    admin.create_topics([NewTopic("kp", num_partitions=2, replication_factor=1)])
    # kafka-python 3 is idempotent by default: InitProducerId, sequences.
    p = KafkaProducer(bootstrap_servers=BOOT, acks="all", compression_type="gzip")
    for i in range(N):
        p.send("kp", key=f"k{i}".encode(), value=f"kafka-python-{i}".encode(),
               headers=[("h", b"kp")], partition=i % 2)
    p.flush(timeout=30)
    p.close()
    c = KafkaConsumer("kp", bootstrap_servers=BOOT, group_id="kpg",
                      auto_offset_reset="earliest", enable_auto_commit=False,
                      consumer_timeout_ms=15000)
    seen = {}
    end = time.time() + 60
    for m in c:
        assert m.value == f"kafka-python-{m.key.decode()[1:]}".encode(), m
        assert m.headers == [("h", b"kp")], m.headers
        seen[m.key] = m.offset
        if len(seen) == N or time.time() > end:
            break
    assert len(seen) == N, f"read {len(seen)} of {N}"
    c.commit()
    committed = {p: c.committed(TopicPartition("kp", p)) for p in (0, 1)}
    assert sum(committed.values()) == N, committed
    c.close()
    groups = [g["group_id"] for g in admin.list_groups()]
    assert "kpg" in groups, groups
    admin.close()
    return committed


async def aiokafka_run():
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=BOOT, acks="all", enable_idempotence=True)
    await p.start()
    try:
        for i in range(N):
            await p.send_and_wait("kp", key=f"a{i}".encode(), value=f"aiokafka-{i}".encode(),
                                  partition=i % 2)
    finally:
        await p.stop()
    c = AIOKafkaConsumer("kp", bootstrap_servers=BOOT, group_id="aio",
                         auto_offset_reset="earliest", enable_auto_commit=False)
    await c.start()
    seen = set()
    try:
        end = time.time() + 60
        while len(seen) < 2 * N and time.time() < end:
            batch = await c.getmany(timeout_ms=1000)
            for msgs in batch.values():
                for m in msgs:
                    seen.add(m.key)
        await c.commit()
    finally:
        await c.stop()
    assert len(seen) == 2 * N, f"aiokafka read {len(seen)} of {2 * N}"
    return len(seen)


def main():
    committed = kafka_python()
    read = asyncio.run(aiokafka_run())
    print(json.dumps({"kafka_python_committed": committed, "aiokafka_read": read}))


if __name__ == "__main__":
    main()
