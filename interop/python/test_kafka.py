"""Real Kafka clients from PyPI against `ehub serve`'s Kafka endpoint: confluent-kafka
(librdkafka), kafka-python and aiokafka. They authenticate as on Event Hubs (SASL PLAIN, user
`$ConnectionString`, a connection string as password) and share hubs, partitions and sequence
numbers with AMQP clients (the official azure-eventhub SDK here)."""
import asyncio
import os
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient

import aiokafka
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTopicPartition


def kafka_conf(b, **extra):
    conf = {
        "bootstrap.servers": f"127.0.0.1:{b.kafka_port}",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "PLAIN",
        "sasl.username": "$ConnectionString",
        "sasl.password": b.conn_str(),
        "broker.address.family": "v4",
    }
    conf.update(extra)
    return conf


def kp_conf(b, **extra):
    conf = dict(
        bootstrap_servers=f"127.0.0.1:{b.kafka_port}",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username="$ConnectionString",
        sasl_plain_password=b.conn_str(),
    )
    conf.update(extra)
    return conf


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.02)


def produce_all(conf, records):
    """Produces (partition, key, value, headers) records; returns their (partition, offset)s."""
    p = Producer(conf)
    out, errors = [], []

    def done(err, msg):
        (errors if err else out).append(err or (msg.partition(), msg.offset()))

    for part, key, value, headers in records:
        p.produce("eh1", key=key, value=value, headers=headers, partition=part, on_delivery=done)
    assert p.flush(30) == 0
    assert errors == []
    return out


def amqp_read(b, partition, count, timeout=20):
    """Reads `count` events of a partition from the start through the official AMQP SDK."""
    client = EventHubConsumerClient.from_connection_string(b.conn_str(), consumer_group="$Default", eventhub_name="eh1")
    got = []

    def on_event(ctx, event):
        if event is not None:
            got.append(event)
            if len(got) >= count:
                client.close()

    deadline = time.time() + timeout
    with client:
        t = threading.Thread(target=client.receive, kwargs=dict(on_event=on_event, partition_id=str(partition),
                                                                starting_position="-1", max_wait_time=1))
        t.start()
        while t.is_alive() and time.time() < deadline and len(got) < count:
            time.sleep(0.05)
    client.close()
    t.join(10)
    return got


def test_confluent_producer_acks_idempotence_and_compression_reach_amqp_consumers(broker):
    # Every compression, idempotent or not, acks all, 1 and 0: each record stored once, in order.
    expected = []
    for comp in ["none", "gzip", "snappy", "lz4", "zstd"]:
        for idem, acks in [(True, "all"), (False, "1")]:
            recs = [(0, b"key-%d" % i, b"%s-%s-%d" % (comp.encode(), acks.encode(), i), [("h", b"\x00\x01")])
                    for i in range(20)]
            conf = kafka_conf(broker, **{"acks": acks, "enable.idempotence": idem, "compression.type": comp,
                                         "linger.ms": 5})
            offsets = produce_all(conf, recs)
            assert [p for p, _ in offsets] == [0] * 20
            assert [o for _, o in offsets] == list(range(len(expected), len(expected) + 20))
            expected += [r[2] for r in recs]
    # acks=0: no answer from the broker, still stored.
    produce_all(kafka_conf(broker, acks="0"), [(0, None, b"fire-and-forget", None)])
    expected.append(b"fire-and-forget")

    events = amqp_read(broker, 0, len(expected))
    assert [e.body_as_str(encoding="latin-1").encode("latin-1") for e in events] == expected
    # Offset = sequence number; the key rides as x-opt-kafka-key; headers are binary properties.
    assert [e.sequence_number for e in events] == list(range(len(expected)))
    assert events[0].system_properties[b"x-opt-kafka-key"] == b"key-0"
    assert events[0].properties[b"h"] == b"\x00\x01"
    assert events[0].partition_key is None, "the Kafka key is never the Event Hubs partition key"


def test_amqp_events_read_through_kafka_as_the_service_maps_them(broker):
    with EventHubProducerClient.from_connection_string(broker.conn_str(), eventhub_name="eh1") as p:
        batch = p.create_batch(partition_key="pk-7")
        for i in range(3):
            e = EventData(b"amqp-%d" % i)
            e.properties = {"kind": "Notification", "n": i}
            e.content_type = "application/json"
            batch.add(e)
        p.send_batch(batch)
    c = KafkaConsumer(**kp_conf(broker, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=5000))
    parts = [KTopicPartition("eh1", i) for i in range(4)]
    c.assign(parts)
    c.seek_to_beginning()
    got = [m for m in c]
    c.close()
    assert [m.value for m in got] == [b"amqp-0", b"amqp-1", b"amqp-2"]
    assert [m.offset for m in got] == [0, 1, 2]
    h = dict(got[0].headers)
    assert h["x-opt-partition-key"] == b"pk-7"
    assert h["content-type"] == b"application/json"
    # Other application properties arrive AMQP-encoded, constructor byte included.
    assert h["kind"] == b"\xa1\x0cNotification"
    assert got[0].key is None
    # Timestamps are enqueued times, in milliseconds, close to now.
    assert abs(got[0].timestamp / 1000 - time.time()) < 60


def test_assign_from_earliest_latest_and_a_time(broker):
    conf = kafka_conf(broker, acks="all")
    produce_all(conf, [(1, None, b"early-%d" % i, None) for i in range(5)])
    time.sleep(0.05)
    boundary = int(time.time() * 1000)
    time.sleep(0.05)
    produce_all(conf, [(1, None, b"late-%d" % i, None) for i in range(5)])

    c = KafkaConsumer(**kp_conf(broker, group_id=None, consumer_timeout_ms=3000))
    tp = KTopicPartition("eh1", 1)
    assert c.beginning_offsets([tp]) == {tp: 0}
    assert c.end_offsets([tp]) == {tp: 10}
    found = c.offsets_for_times({tp: boundary})[tp]
    assert found.offset == 5
    assert c.offsets_for_times({tp: int(time.time() * 1000) + 60_000})[tp] is None
    c.assign([tp])
    c.seek(tp, found.offset)
    assert [m.value for m in c] == [b"late-%d" % i for i in range(5)]
    # From latest: only what arrives after.
    c.seek_to_end(tp)
    assert c.position(tp) == 10  # resolved now, before the next event arrives
    produce_all(conf, [(1, None, b"newest", None)])
    assert [m.value for m in c] == [b"newest"]
    c.close()


def test_subscribe_with_two_members_rebalance_commit_restart_and_resume(broker_factory):
    b = broker_factory(fsync="always").start()
    conf = kafka_conf(b, acks="all")
    produce_all(conf, [(i % 4, None, b"first-%d" % i, None) for i in range(40)])

    def consumer(name):
        c = Consumer(kafka_conf(b, **{"group.id": "orders", "auto.offset.reset": "earliest",
                                      "enable.auto.commit": False, "client.id": name,
                                      "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}))
        assigned = []
        c.subscribe(["eh1"], on_assign=lambda _c, ps: assigned.append(sorted(p.partition for p in ps)))
        return c, assigned

    def poll_until(consumers, pred, timeout=30):
        seen = []
        deadline = time.time() + timeout
        while time.time() < deadline and not pred(seen):
            for c in consumers:
                m = c.poll(0.1)
                if m is not None and not m.error():
                    seen.append((c, m.partition(), m.offset(), m.value()))
        return seen

    a, a_assigned = consumer("a")
    first = poll_until([a], lambda s: len(s) >= 1)
    assert first, "the first member received events"
    bb, b_assigned = consumer("b")
    # Both members end up with two partitions each.
    poll_until([a, bb], lambda s: a_assigned and b_assigned and len(a_assigned[-1]) == 2 and len(b_assigned[-1]) == 2)
    assert sorted(a_assigned[-1] + b_assigned[-1]) == [0, 1, 2, 3]
    # b leaves: a takes all four.
    bb.close()
    poll_until([a], lambda s: len(a_assigned[-1]) == 4)
    assert a_assigned[-1] == [0, 1, 2, 3]
    # a reads everything, then commits offset 10 on every partition (after seq 9).
    a.commit(offsets=[TopicPartition("eh1", p, 10) for p in range(4)], asynchronous=False)
    a.close()

    b.stop()
    b.start()
    produce_all(kafka_conf(b, acks="all"), [(i % 4, None, b"second-%d" % i, None) for i in range(8)])
    c, _ = consumer("c")
    seen = poll_until([c], lambda s: len(s) >= 8)
    c.close()
    # Resumed from the committed offsets: nothing before offset 10 again.
    assert len(seen) == 8
    assert all(off >= 10 for _, _, off, _ in seen)
    assert sorted(v for *_, v in seen) == sorted(b"second-%d" % i for i in range(8))


def test_kafka_python_groups_commit_and_list(broker):
    produce_all(kafka_conf(broker, acks="all"), [(2, None, b"kp-%d" % i, None) for i in range(6)])
    c = KafkaConsumer("eh1", **kp_conf(broker, group_id="kp-group", auto_offset_reset="earliest",
                                       enable_auto_commit=False, consumer_timeout_ms=8000))
    got = []
    for m in c:
        got.append(m.value)
        if len(got) == 6:
            break
    c.commit()
    tp = KTopicPartition("eh1", 2)
    assert c.committed(tp) == 6
    c.close()
    admin = KafkaAdminClient(**kp_conf(broker))
    assert {"group_id": "kp-group", "protocol_type": "consumer", "group_state": "Empty"} in admin.list_groups()
    assert admin.list_group_offsets("kp-group")["kp-group"][tp].offset == 6
    admin.close()
    assert got == [b"kp-%d" % i for i in range(6)]


def test_aiokafka_produce_and_consume_in_a_group(broker):
    async def run():
        common = dict(bootstrap_servers=f"127.0.0.1:{broker.kafka_port}", security_protocol="SASL_PLAINTEXT",
                      sasl_mechanism="PLAIN", sasl_plain_username="$ConnectionString",
                      sasl_plain_password=broker.conn_str())
        p = aiokafka.AIOKafkaProducer(acks="all", compression_type="gzip", **common)
        await p.start()
        md = [await p.send_and_wait("eh1", b"aio-%d" % i, key=b"k", partition=3) for i in range(5)]
        await p.stop()
        assert [m.offset for m in md] == list(range(5))
        c = aiokafka.AIOKafkaConsumer("eh1", group_id="aio", auto_offset_reset="earliest", **common)
        await c.start()
        got = []
        try:
            async with asyncio.timeout(30):
                async for m in c:
                    got.append(m.value)
                    if len(got) == 5:
                        break
            await c.commit()
        finally:
            await c.stop()
        return got

    assert asyncio.run(run()) == [b"aio-%d" % i for i in range(5)]


def raw(b):
    s = socket.create_connection(("127.0.0.1", b.kafka_port), timeout=5)

    def call(api, version, body=b"", cid=1):
        header = struct.pack(">hhih", api, version, cid, 4) + b"test"
        if version >= 3 and api == 18:
            header += b"\x00"  # flexible request header: tagged fields
        msg = header + body
        s.sendall(struct.pack(">i", len(msg)) + msg)
        n = struct.unpack(">i", recv(4))[0]
        return recv(n)

    def recv(n):
        out = b""
        while len(out) < n:
            chunk = s.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out

    return s, call


def test_unknown_versions_bad_credentials_and_malformed_requests(broker):
    s, call = raw(broker)
    # An ApiVersions version from the future: UNSUPPORTED_VERSION (35) in the v0 form, with our
    # ranges, and the connection stays open.
    resp = call(18, 9, cid=7)
    cid, err = struct.unpack(">ih", resp[:6])
    assert (cid, err) == (7, 35)
    resp = call(18, 0, cid=8)
    assert struct.unpack(">ih", resp[:6]) == (8, 0)
    # Anything but the SASL handshake before authentication closes the connection.
    with pytest.raises((ConnectionError, OSError)):
        call(3, 1, b"\xff\xff\xff\xff")
    s.close()

    # A wrong key: the client is told why authentication failed.
    errors = []
    p = Producer({**kafka_conf(broker), "sasl.password": broker.conn_str(key="d3Jvbmc="),
                  "error_cb": errors.append})
    deadline = time.time() + 10
    while not errors and time.time() < deadline:
        p.poll(0.2)
    assert errors and "Authentication failed: InvalidSignature" in errors[0].str(), errors

    # A malformed request closes its own connection only.
    s2, call2 = raw(broker)
    with pytest.raises((ConnectionError, OSError)):
        call2(18, 3, b"\x07garbage")
    s2.close()
    produce_all(kafka_conf(broker, acks="all"), [(0, None, b"still-serving", None)])


def kcat(b, *args, stdin=None, timeout=30):
    """Runs kcat (Debian's, on librdkafka 2.0.2) against the broker; returns its stdout lines."""
    exe = shutil.which("kcat")
    assert exe, "kcat is not installed (scripts/test installs it with apt-get)"
    cmd = [exe, "-b", f"127.0.0.1:{b.kafka_port}", "-X", "security.protocol=SASL_PLAINTEXT",
           "-X", "sasl.mechanisms=PLAIN", "-X", "sasl.username=$ConnectionString",
           "-X", f"sasl.password={b.conn_str()}", "-X", "broker.address.family=v4", *args]
    r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode().splitlines()


def test_kcat_produces_compressed_and_consumes_by_offset_time_and_group(broker):
    want = [f"kcat-{z}-{i}-{'a' * 40}" for z in ["gzip", "lz4"] for i in range(25)]
    # Old librdkafka compresses only because Produce is advertised from version 0 (KAFKA-18659).
    kcat(broker, "-P", "-t", "eh1", "-p", "3", "-z", "gzip", "-X", "acks=all", "-X", "enable.idempotence=true",
         stdin="".join(w + "\n" for w in want[:25]).encode())
    boundary = int(time.time() * 1000)
    time.sleep(0.05)
    kcat(broker, "-P", "-t", "eh1", "-p", "3", "-z", "lz4", "-X", "acks=all", stdin="".join(w + "\n" for w in want[25:]).encode())
    fmt = ["-f", "%o %s\n"]
    got = kcat(broker, "-C", "-t", "eh1", "-p", "3", "-o", "beginning", "-e", "-q", *fmt)
    assert got == [f"{i} {v}" for i, v in enumerate(want)]
    assert kcat(broker, "-C", "-t", "eh1", "-p", "3", "-o", "end", "-e", "-q") == []
    got = kcat(broker, "-C", "-t", "eh1", "-p", "3", "-o", f"s@{boundary}", "-e", "-q", *fmt)
    assert got == [f"{i} {v}" for i, v in enumerate(want)][25:]
    # A balanced consumer (-G) commits; a second run of the group starts after the commits.
    group = ["-G", "kcat-group", "-X", "auto.offset.reset=earliest", "-e", "-q", "-f", "%s\n", "eh1"]
    assert sorted(kcat(broker, *group)) == sorted(want)
    kcat(broker, "-P", "-t", "eh1", "-p", "3", stdin=b"after-commit\n")
    assert kcat(broker, *group) == ["after-commit"]


def test_kill9_during_idempotent_acks_all_production_loses_and_doubles_nothing(broker_factory):
    b = broker_factory(fsync="always").start()
    c = Consumer(kafka_conf(b, **{"group.id": "durable", "enable.auto.commit": False}))
    c.commit(offsets=[TopicPartition("eh1", 0, 123)], asynchronous=False)
    c.close()

    acked, failed = [], []
    p = Producer(kafka_conf(b, **{"acks": "all", "enable.idempotence": True, "linger.ms": 2,
                                  "message.timeout.ms": 60000}))

    def done(err, msg):
        if err:
            failed.append(err)
        else:
            acked.append((msg.partition(), msg.offset(), msg.value()))

    total = 30000
    killed_with = None
    for i in range(total):
        while True:
            try:
                p.produce("eh1", value=b"v%06d" % i, partition=i % 4, on_delivery=done)
                break
            except BufferError:
                p.poll(0.05)
        if i % 250 == 249:
            p.poll(0.005)  # acknowledgements arrive all along
        if killed_with is None and len(acked) >= 5000:
            # Killed with acknowledgements arriving and batches in flight.
            killed_with = (len(acked), i + 1)
            b.kill9()
            time.sleep(0.5)
            b.start()
    assert killed_with and killed_with[0] < killed_with[1], killed_with
    assert p.flush(90) == 0
    assert failed == []
    assert len(acked) == total

    stored = {}
    k = KafkaConsumer(**kp_conf(b, group_id=None, consumer_timeout_ms=5000, max_partition_fetch_bytes=4 << 20))
    k.assign([KTopicPartition("eh1", i) for i in range(4)])
    k.seek_to_beginning()
    for m in k:
        stored.setdefault(m.value, []).append((m.partition, m.offset))
    k.close()
    # Every acknowledged record is there once, where its acknowledgement said.
    assert all(stored.get(v) == [(part, off)] for part, off, v in acked), \
        [(v, stored.get(v)) for part, off, v in acked if stored.get(v) != [(part, off)]][:5]
    assert sum(len(x) for x in stored.values()) == total
    # The group's commit survived too.
    c = Consumer(kafka_conf(b, **{"group.id": "durable"}))
    assert c.committed([TopicPartition("eh1", 0)], timeout=10)[0].offset == 123
    c.close()


def test_sasl_ssl_with_the_development_ca(broker_factory):
    """SASL_SSL as on the service's port 9093: TLS with the broker's certificate (here its
    development CA), hostname checked, then SASL PLAIN with the connection string."""
    from conftest import free_port
    tls_port = free_port()
    b = broker_factory(extra_args=["--tls-self-signed", "--listen-tls", f"127.0.0.1:{free_port()}",
                                   "--listen-kafka-tls", f"127.0.0.1:{tls_port}"]).start()
    wait_port(tls_port)
    ca = os.path.join(b.data_dir, "tls", "ca.pem")
    ssl = {"bootstrap.servers": f"127.0.0.1:{tls_port}", "security.protocol": "SASL_SSL", "ssl.ca.location": ca}
    conf = kafka_conf(b, acks="all", **{"enable.idempotence": True}, **ssl)
    want = [b"tls-%d" % i for i in range(20)]
    assert produce_all(conf, [(0, b"k", v, None) for v in want]) == [(0, i) for i in range(20)]

    # librdkafka reads them back over TLS; the advertised address keeps it on the TLS port.
    c = Consumer(kafka_conf(b, **ssl, **{"group.id": "tls-group", "auto.offset.reset": "earliest"}))
    c.assign([TopicPartition("eh1", 0, 0)])
    got = []
    deadline = time.time() + 20
    while len(got) < 20 and time.time() < deadline:
        m = c.poll(1)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    assert got == want

    # kafka-python: the same, and the AMQP SDK sees what Kafka produced over TLS.
    kc = KafkaConsumer(**kp_conf(b, bootstrap_servers=f"127.0.0.1:{tls_port}", security_protocol="SASL_SSL",
                                 ssl_cafile=ca, group_id=None, consumer_timeout_ms=3000))
    kc.assign([KTopicPartition("eh1", 0)])
    kc.seek(KTopicPartition("eh1", 0), 0)
    assert [m.value for m in kc] == want
    kc.close()
    assert [e.body_as_str() for e in amqp_read(b, 0, 20)] == [v.decode() for v in want]

    # Without trusting the CA, the handshake fails: nothing is sent in the clear.
    untrusted = Producer({**conf, "ssl.ca.location": "probe", "message.timeout.ms": 3000})
    outcome = []
    untrusted.produce("eh1", value=b"never", partition=0, on_delivery=lambda err, msg: outcome.append(err))
    untrusted.flush(10)
    assert len(outcome) == 1 and outcome[0] is not None, outcome
    assert [e.body_as_str() for e in amqp_read(b, 0, 21, timeout=3)] == [v.decode() for v in want]
