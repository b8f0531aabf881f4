"""confluent-kafka (librdkafka 2.x) against a Strata cluster's Kafka listeners.

Usage:
  confluent_cluster.py BOOTSTRAP admin TOPIC
      creates TOPIC (2 partitions, 3 replicas) and checks what the cluster describes.
  confluent_cluster.py BOOTSTRAP grow TOPIC N
      raises TOPIC to N partitions; prints {"error": NAME} if refused, else
      {"partitions": N} once each has a leader and three in-sync replicas.
  confluent_cluster.py BOOTSTRAP produce TOPIC N
      sends N records (idempotent, acks=all) in steps of 100, printing each
      acknowledgement as a JSON line {"p", "o", "v"} as it comes, so the caller can kill
      a broker mid-way; librdkafka retries what a dead leader did not acknowledge.
  confluent_cluster.py BOOTSTRAP consume TOPIC GROUP N
      reads in group GROUP from the earliest offset until N records came, printing each
      as a JSON line {"p", "o", "v"}, commits, and prints the committed offsets.

Exits non-zero with the failed check on stderr.
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

BOOT = sys.argv[1]
DEADLINE_S = 120


def out(obj):
    print(json.dumps(obj), flush=True)


def admin(topic):
    a = AdminClient({"bootstrap.servers": BOOT})
    fs = a.create_topics([NewTopic(topic, num_partitions=2, replication_factor=3)])
    for f in fs.values():
        f.result(timeout=30)
    end = time.time() + DEADLINE_S
    while time.time() < end:
        md = a.list_topics(topic, timeout=10)
        t = md.topics[topic]
        if t.error is None and all(p.leader >= 0 and len(p.isrs) == 3
                                   for p in t.partitions.values()):
            break
        time.sleep(0.1)
    assert sorted(md.brokers) == [1, 2, 3], md.brokers
    parts = md.topics[topic].partitions
    assert sorted(parts) == [0, 1], parts
    for p in parts.values():
        assert sorted(p.replicas) == [1, 2, 3], p.replicas
        assert sorted(p.isrs) == [1, 2, 3], p.isrs
    cluster = a.describe_cluster().result(timeout=30)
    assert sorted(n.id for n in cluster.nodes) == [1, 2, 3], cluster.nodes
    out({"leaders": {str(n): p.leader for n, p in parts.items()}})


def grow(topic, n):
    """Raises topic's partition count to n; prints the error's name if refused, else the
    count once every partition has a leader and three in-sync replicas."""
    a = AdminClient({"bootstrap.servers": BOOT})
    try:
        for f in a.create_partitions([NewPartitions(topic, n)]).values():
            f.result(timeout=30)
    except KafkaException as e:
        out({"error": e.args[0].name()})
        return
    end = time.time() + DEADLINE_S
    while time.time() < end:
        parts = a.list_topics(topic, timeout=10).topics[topic].partitions
        if len(parts) == n and all(p.leader >= 0 and len(p.isrs) == 3
                                   for p in parts.values()):
            out({"partitions": n})
            return
        time.sleep(0.1)
    raise SystemExit(f"{topic} did not show {n} led partitions in {DEADLINE_S} s: {parts}")


def produce(topic, n):
    p = Producer({"bootstrap.servers": BOOT, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5, "message.timeout.ms": DEADLINE_S * 1000,
                  "retry.backoff.ms": 100, "reconnect.backoff.max.ms": 1000})
    errors = []

    def report(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            out({"p": msg.partition(), "o": msg.offset(), "v": msg.value().decode()})

    for start in range(0, n, 100):
        for i in range(start, min(start + 100, n)):
            p.produce(topic, value=f"kc-{i}", partition=i % 2, on_delivery=report)
        assert p.flush(DEADLINE_S) == 0, "undelivered records"
        assert not errors, errors
    out({"produced": n})


def consume(topic, group, n):
    c = Consumer({"bootstrap.servers": BOOT, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    seen = 0
    end = time.time() + DEADLINE_S
    while seen < n and time.time() < end:
        m = c.poll(1.0)
        if m is None:
            continue
        assert m.error() is None, m.error()
        out({"p": m.partition(), "o": m.offset(), "v": m.value().decode()})
        seen += 1
    assert seen == n, f"read {seen} of {n} records"
    c.commit(asynchronous=False)
    committed = c.committed([TopicPartition(topic, p) for p in range(2)], timeout=30)
    c.close()
    out({"committed": {str(tp.partition): tp.offset for tp in committed}})


def main():
    cmd, topic = sys.argv[2], sys.argv[3]
    if cmd == "admin":
        admin(topic)
    elif cmd == "grow":
        grow(topic, int(sys.argv[4]))
    elif cmd == "produce":
        produce(topic, int(sys.argv[4]))
    elif cmd == "consume":
        consume(topic, sys.argv[4], int(sys.argv[5]))
    else:
        raise SystemExit(f"unknown command {cmd!r}: use admin, grow, produce or consume")


if __name__ == "__main__":
    main()
