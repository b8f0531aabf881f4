"""confluent-kafka (librdkafka 2.x) against a Strata broker's Kafka listener.

Usage: confluent_client.py BOOTSTRAP. Exits non-zero with the failed check on stderr;
prints a JSON summary the Rust test checks against what gRPC shows.
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                   ConfigResource, NewPartitions, NewTopic)

BOOT = sys.argv[1]
DEADLINE_S = 60


def wait(futures):
    return {k: f.result(timeout=30) for k, f in futures.items()}


def admin_checks(a):
    wait(a.create_topics([NewTopic("ck", num_partitions=3, replication_factor=1,
                                   config={"retention.ms": "86400000"}),
                          NewTopic("ck-tmp", num_partitions=1, replication_factor=1)]))
    # Creating it again is refused with Kafka's error.
    try:
        wait(a.create_topics([NewTopic("ck", num_partitions=1, replication_factor=1)]))
        raise AssertionError("a second create of ck succeeded")
    except KafkaException as e:
        assert e.args[0].name() == "TOPIC_ALREADY_EXISTS", e
    res = ConfigResource(ConfigResource.Type.TOPIC, "ck")
    configs = list(wait(a.describe_configs([res])).values())[0]
    assert configs["retention.ms"].value == "86400000", configs["retention.ms"]
    alter = ConfigResource(ConfigResource.Type.TOPIC, "ck", incremental_configs=[
        ConfigEntry("retention.ms", "172800000",
                    incremental_operation=AlterConfigOpType.SET)])
    wait(a.incremental_alter_configs([alter]))
    configs = list(wait(a.describe_configs([res])).values())[0]
    assert configs["retention.ms"].value == "172800000", configs["retention.ms"]
    # Partitions are added, never removed.
    wait(a.create_partitions([NewPartitions("ck-tmp", 4)]))
    assert len(a.list_topics("ck-tmp", timeout=10).topics["ck-tmp"].partitions) == 4
    try:
        wait(a.create_partitions([NewPartitions("ck-tmp", 2)]))
        raise AssertionError("shrinking ck-tmp to 2 partitions succeeded")
    except KafkaException as e:
        assert e.args[0].name() == "INVALID_PARTITIONS", e
    wait(a.delete_topics(["ck-tmp"]))
    topics = a.list_topics(timeout=10).topics
    assert "ck" in topics and "ck-tmp" not in topics, sorted(topics)
    assert len(topics["ck"].partitions) == 3
    cluster = a.describe_cluster().result(timeout=30)
    assert len(cluster.nodes) == 1, cluster.nodes


def produce_all():
    """Every codec, acks 0/1/all, idempotence on with acks=all; returns what was sent."""
    sent = []
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        for acks in ["0", "1", "all"]:
            conf = {"bootstrap.servers": BOOT, "compression.type": codec, "acks": acks,
                    "enable.idempotence": acks == "all", "linger.ms": 5}
            p = Producer(conf)
            errors = []
            for i in range(20):
                key = f"{codec}-{acks}-{i}"
                p.produce("ck", key=key, value=f"value-{key}", partition=i % 3,
                          headers=[("codec", codec.encode())],
                          on_delivery=lambda err, msg: err and errors.append(err))
                sent.append(key)
            assert p.flush(30) == 0, "undelivered records"
            assert not errors, errors
    return sent


def consume(group, want, extra=None):
    """Reads until every key in `want` is seen; commits; returns the keys seen."""
    conf = {"bootstrap.servers": BOOT, "group.id": group,
            "auto.offset.reset": "earliest", "enable.auto.commit": False}
    conf.update(extra or {})
    c = Consumer(conf)
    c.subscribe(["ck"])
    seen = {}
    end = time.time() + DEADLINE_S
    while len(seen) < len(want) and time.time() < end:
        m = c.poll(1.0)
        if m is None:
            continue
        assert m.error() is None, m.error()
        key = m.key().decode()
        assert m.value().decode() == f"value-{key}", (key, m.value())
        assert dict(m.headers() or [])["codec"].decode() == key.split("-")[0]
        seen[key] = (m.partition(), m.offset())
    c.commit(asynchronous=False)
    committed = c.committed([TopicPartition("ck", p) for p in range(3)], timeout=30)
    c.close()
    return seen, {tp.partition: tp.offset for tp in committed}


def two_consumers(group, extra):
    """Two members of one group split the three partitions between them, disjointly."""
    base = {"bootstrap.servers": BOOT, "group.id": group, "auto.offset.reset": "earliest"}
    base.update(extra)
    a, b = Consumer(dict(base)), Consumer(dict(base))
    a.subscribe(["ck"])
    end = time.time() + DEADLINE_S
    while len(a.assignment()) != 3 and time.time() < end:
        a.poll(0.2)
    assert len(a.assignment()) == 3, ("first member alone", a.assignment())
    b.subscribe(["ck"])
    while time.time() < end:
        a.poll(0.2)
        b.poll(0.2)
        pa = {tp.partition for tp in a.assignment()}
        pb = {tp.partition for tp in b.assignment()}
        if pa and pb and not (pa & pb) and (pa | pb) == {0, 1, 2}:
            break
    pa = {tp.partition for tp in a.assignment()}
    pb = {tp.partition for tp in b.assignment()}
    assert pa and pb and not (pa & pb) and (pa | pb) == {0, 1, 2}, (pa, pb)
    b.close()
    # The one left gets everything back.
    while len(a.assignment()) != 3 and time.time() < end:
        a.poll(0.2)
    assert len(a.assignment()) == 3, ("after the other left", a.assignment())
    a.close()
    return sorted(pa), sorted(pb)


def main():
    a = AdminClient({"bootstrap.servers": BOOT})
    admin_checks(a)
    sent = produce_all()
    seen, committed = consume("cg", sent)
    missing = sorted(set(sent) - set(seen))
    assert not missing, f"{len(missing)} records never read: {missing[:5]}"
    classic = two_consumers("cg-classic", {"session.timeout.ms": 6000})
    consumer = two_consumers("cg-848", {"group.protocol": "consumer"})
    groups = {g.group_id for g in a.list_consumer_groups().result(timeout=30).valid}
    assert "cg" in groups, groups
    print(json.dumps({"sent": len(sent), "committed": committed,
                      "classic": classic, "consumer": consumer}))


if __name__ == "__main__":
    main()
