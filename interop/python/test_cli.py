"""The `ehub` command line and the official Python SDK read each other's events."""
import json
import subprocess

from azure.eventhub import EventData

from conftest import EHUB
from test_interop import HUB, collect, producer


def ehub(broker, *args, stdin=None):
    r = subprocess.run([EHUB, "--connection-string", broker.conn_str(), "--hub", HUB, *args],
                       input=stdin, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def test_what_the_cli_sends_the_sdk_reads(broker):
    ehub(broker, "send", "--partition", "2", "--property", "source=cli", "--property", "n=7", "first", "second")
    events, errors = collect(broker, 2, partition_id="2", starting_position="-1")
    assert not errors, errors
    assert [e.body_as_str() for e in events] == ["first", "second"]
    for e in events:
        assert e.properties == {b"source": b"cli", b"n": b"7"}


def test_what_the_sdk_sends_the_cli_reads(broker):
    with producer(broker) as p:
        batch = p.create_batch(partition_id="3")
        for i in range(3):
            e = EventData(f"sdk-{i}")
            e.properties = {"origin": "python", "i": i}
            batch.add(e)
        p.send_batch(batch)
    out = ehub(broker, "receive", "--partition", "3", "--from", "earliest", "--count", "3", "--timeout", "10",
               "--output", "json")
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["body"] for e in events] == ["sdk-0", "sdk-1", "sdk-2"]
    assert [e["properties"] for e in events] == [{"origin": "python", "i": i} for i in range(3)]
    assert [e["sequence_number"] for e in events] == [0, 1, 2]
    assert all(e["partition_id"] == "3" for e in events)
