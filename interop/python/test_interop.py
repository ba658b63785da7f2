"""The unmodified official Python SDK (azure-eventhub 5.15.1) against `ehub serve`."""
import datetime
import threading
import time

import pytest
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient, TransportType
from azure.eventhub.exceptions import (AuthenticationError, ConnectError, EventDataSendError, EventHubError)

HUB = "eh1"


def producer(broker, **kw):
    return EventHubProducerClient.from_connection_string(broker.conn_str(kw.pop("key", "SAS_KEY_VALUE")),
                                                         eventhub_name=kw.pop("hub", HUB), **kw)


def consumer(broker, **kw):
    return EventHubConsumerClient.from_connection_string(broker.conn_str(), consumer_group=kw.pop("cg", "$Default"),
                                                         eventhub_name=HUB, **kw)


def collect(broker, want, timeout=15, batch=False, client_kw=None, **receive_kw):
    """Receives until `want` events arrived or `timeout` passed; returns the events."""
    got, errors = [], []
    done = threading.Event()
    c = consumer(broker, **(client_kw or {}))

    def on_event(ctx, e):
        if e is not None:
            got.append(e)
        if len(got) >= want:
            done.set()

    def on_batch(ctx, events):
        got.extend(events)
        if len(got) >= want:
            done.set()

    def on_error(ctx, err):
        errors.append(err)
        done.set()

    if batch:
        t = threading.Thread(target=c.receive_batch, kwargs=dict(on_event_batch=on_batch, on_error=on_error, **receive_kw))
    else:
        t = threading.Thread(target=c.receive, kwargs=dict(on_event=on_event, on_error=on_error, **receive_kw))
    t.start()
    done.wait(timeout)
    c.close()
    t.join(10)
    return got, errors


def send(broker, bodies, **batch_kw):
    with producer(broker) as p:
        b = p.create_batch(**batch_kw)
        for x in bodies:
            b.add(EventData(x))
        p.send_batch(b)


def test_properties_have_the_service_shapes(broker):
    with producer(broker) as p:
        props = p.get_eventhub_properties()
        assert props["eventhub_name"] == HUB
        assert props["partition_ids"] == ["0", "1", "2", "3"]
        assert isinstance(props["created_at"], datetime.datetime)
        assert p.get_partition_ids() == ["0", "1", "2", "3"]
        empty = p.get_partition_properties("2")
        assert empty["is_empty"] is True
        assert empty["last_enqueued_sequence_number"] == -1
        assert empty["last_enqueued_offset"] == "-1"
        p.send_event(EventData("x"), partition_id="2")
        full = p.get_partition_properties("2")
        assert full["is_empty"] is False
        assert full["last_enqueued_sequence_number"] == 0
        assert full["beginning_sequence_number"] == 0


def test_send_partition_single_and_batch_then_receive_from_earliest(broker):
    with producer(broker) as p:
        p.send_event(EventData("single"), partition_id="1")
        b = p.create_batch(partition_id="1")
        for i in range(10):
            b.add(EventData(f"batched-{i}", ))
        p.send_batch(b)
        p.send_batch([EventData("list-0"), EventData("list-1")], partition_id="1")
    got, errors = collect(broker, 13, partition_id="1", starting_position="-1")
    assert not errors
    assert [e.body_as_str() for e in got] == ["single"] + [f"batched-{i}" for i in range(10)] + ["list-0", "list-1"]
    assert [e.sequence_number for e in got] == list(range(13))
    offsets = [int(e.offset) for e in got]
    assert offsets == sorted(offsets) and len(set(offsets)) == 13
    assert all(e.enqueued_time is not None for e in got)


def test_properties_and_system_properties_round_trip(broker):
    with producer(broker) as p:
        e = EventData("with-props")
        e.properties = {"color": "blue", "n": 7, "f": 1.5, "flag": True}
        e.content_type = "text/plain"
        e.correlation_id = "corr-1"
        e.message_id = "msg-1"
        p.send_event(e, partition_id="0")
    got, errors = collect(broker, 1, partition_id="0", starting_position="-1")
    assert not errors and len(got) == 1
    r = got[0]
    assert r.properties == {b"color": b"blue", b"n": 7, b"f": 1.5, b"flag": True}
    assert r.content_type == "text/plain"
    assert r.correlation_id == "corr-1"
    assert r.message_id == "msg-1"
    assert r.system_properties[b"x-opt-sequence-number"] == 0


def test_partition_key_uses_the_service_hash(broker):
    # lookup3 vectors from the reference: key "7" -> partition 3, "abcd" -> 2, "a" -> 0 (4 partitions)
    for key, pid in [("7", "3"), ("abcd", "2"), ("a", "0")]:
        send(broker, [f"k-{key}-{i}" for i in range(3)], partition_key=key)
        got, errors = collect(broker, 3, partition_id=pid, starting_position="-1", timeout=10)
        assert not errors
        mine = [e for e in got if e.body_as_str().startswith(f"k-{key}-")]
        assert len(mine) == 3, (key, pid, [e.body_as_str() for e in got])
        assert all(e.partition_key == key.encode() for e in mine)


def test_hub_level_sends_spread_round_robin(broker):
    with producer(broker) as p:
        for i in range(8):
            p.send_event(EventData(f"rr-{i}"))
        counts = [p.get_partition_properties(str(i))["last_enqueued_sequence_number"] + 1 for i in range(4)]
    assert counts == [2, 2, 2, 2]


def test_every_kind_of_starting_position(broker):
    send(broker, [f"e{i}" for i in range(10)], partition_id="0")
    all_events, _ = collect(broker, 10, partition_id="0", starting_position="-1")
    assert len(all_events) == 10
    cases = [
        ({"starting_position": 4, "starting_position_inclusive": True}, 4),
        ({"starting_position": 4, "starting_position_inclusive": False}, 5),
        ({"starting_position": all_events[6].offset, "starting_position_inclusive": True}, 6),
        ({"starting_position": all_events[6].offset, "starting_position_inclusive": False}, 7),
    ]
    for kw, first in cases:
        got, errors = collect(broker, 10 - first, partition_id="0", timeout=10, **kw)
        assert not errors, kw
        assert [e.sequence_number for e in got] == list(range(first, 10)), kw
    # By enqueued time: everything at or after the first event's time.
    t0 = all_events[0].enqueued_time
    got, _ = collect(broker, 10, partition_id="0", starting_position=t0, starting_position_inclusive=True, timeout=10)
    assert [e.sequence_number for e in got] == list(range(10))
    # Latest: only events sent after the receiver attached.
    got_latest = []

    def later():
        time.sleep(2)
        send(broker, ["after-attach"], partition_id="0")

    t = threading.Thread(target=later)
    t.start()
    got_latest, errors = collect(broker, 1, partition_id="0", starting_position="@latest", timeout=15)
    t.join()
    assert [e.body_as_str() for e in got_latest] == ["after-attach"]


def test_receive_batch_respects_max_batch_size(broker):
    send(broker, [f"b{i}" for i in range(25)], partition_id="3")
    sizes = []
    got = []
    c = consumer(broker)
    done = threading.Event()

    def on_batch(ctx, events):
        sizes.append(len(events))
        got.extend(events)
        if len(got) >= 25:
            done.set()

    t = threading.Thread(target=c.receive_batch, kwargs=dict(on_event_batch=on_batch, partition_id="3",
                                                              starting_position="-1", max_batch_size=10))
    t.start()
    done.wait(15)
    c.close()
    t.join(10)
    assert len(got) == 25
    assert max(sizes) <= 10


def test_receive_all_partitions_with_in_memory_checkpoints(broker):
    with producer(broker) as p:
        for pid in ["0", "1", "2", "3"]:
            p.send_batch([EventData(f"p{pid}-{i}") for i in range(3)], partition_id=pid)
    got, errors = collect(broker, 12, starting_position="-1", timeout=30)
    assert not errors
    assert sorted(e.body_as_str() for e in got) == sorted(f"p{pid}-{i}" for pid in "0123" for i in range(3))


def test_two_non_epoch_receivers_both_see_every_event(broker):
    send(broker, [f"s{i}" for i in range(5)], partition_id="2")
    results = [None, None]

    def run(i):
        results[i] = collect(broker, 5, partition_id="2", starting_position="-1", timeout=15)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    for got, errors in results:
        assert not errors
        assert [e.body_as_str() for e in got] == [f"s{i}" for i in range(5)]


def test_higher_owner_level_steals_the_partition(broker):
    errors = []
    first = consumer(broker)
    started = threading.Event()

    def on_event(ctx, e):
        started.set()

    def on_error(ctx, err):
        errors.append(err)

    t = threading.Thread(target=first.receive, kwargs=dict(on_event=on_event, on_error=on_error, partition_id="1",
                                                           owner_level=1, max_wait_time=0.5, starting_position="-1"))
    t.start()
    started.wait(10)
    got, errs2 = collect(broker, 1, partition_id="1", owner_level=2, starting_position="-1", timeout=8)
    deadline = time.time() + 10
    while not errors and time.time() < deadline:
        time.sleep(0.1)
    first.close()
    t.join(10)
    assert not errs2
    assert errors, "the lower owner level receiver was not disconnected"
    assert "stolen" in str(errors[0]).lower() or "epoch" in str(errors[0]).lower(), str(errors[0])


def test_wrong_key_is_an_authentication_error(broker):
    with producer(broker, key="not-the-key", retry_total=0) as p:
        with pytest.raises((AuthenticationError, ConnectError, EventHubError)) as ei:
            p.get_eventhub_properties()
    assert "401" in str(ei.value) or "auth" in str(ei.value).lower() or "signature" in str(ei.value).lower()
    with producer(broker, key="not-the-key", retry_total=0) as p:
        with pytest.raises((AuthenticationError, ConnectError, EventHubError)):
            p.send_event(EventData("x"), partition_id="0")


class FakeJwtCredential:
    """A token credential, as azure-identity's are; ehub serve accepts `jwt` tokens unverified."""

    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken
        return AccessToken("header.payload.signature", int(time.time()) + 3600)


def producer_with_token(broker, hub):
    return EventHubProducerClient(fully_qualified_namespace=f"localhost:{broker.port}", eventhub_name=hub,
                                  credential=FakeJwtCredential(), use_tls=False, retry_total=0)


def consumer_with_token(broker, hub):
    return EventHubConsumerClient(fully_qualified_namespace=f"localhost:{broker.port}", eventhub_name=hub,
                                  consumer_group="$Default", credential=FakeJwtCredential(), use_tls=False,
                                  retry_total=0)


NOT_FOUND = ("could not be found", "404")


@pytest.mark.parametrize("credential", ["sas", "token"])
def test_unknown_hub_is_not_found_at_every_step(broker, credential):
    # As on the service, a valid credential for a hub that does not exist is answered "not found"
    # (404 with the service's text) wherever the SDK asks first: the token, a management read, a link.
    def make_producer():
        if credential == "sas":
            return producer(broker, hub="nope", retry_total=0)
        return producer_with_token(broker, "nope")

    for operation in ("get_eventhub_properties", "create_batch", "send_event"):
        with make_producer() as p:
            started = time.time()
            with pytest.raises((AuthenticationError, ConnectError, EventHubError)) as ei:
                if operation == "send_event":
                    p.send_event(EventData("x"), partition_id="0")
                else:
                    getattr(p, operation)()
            assert any(s in str(ei.value) for s in NOT_FOUND), (operation, str(ei.value))
            assert time.time() - started < 10, f"{operation} took {time.time() - started:.1f} s"

    c = (EventHubConsumerClient.from_connection_string(broker.conn_str(), consumer_group="$Default",
                                                       eventhub_name="nope", retry_total=0)
         if credential == "sas" else consumer_with_token(broker, "nope"))
    errors = []
    t = threading.Thread(target=c.receive, kwargs=dict(on_event=lambda ctx, e: None,
                                                        on_error=lambda ctx, err: errors.append(err),
                                                        starting_position="-1"))
    t.start()
    deadline = time.time() + 15
    while not errors and time.time() < deadline:
        time.sleep(0.1)
    c.close()
    t.join(10)
    assert errors, "receive reported no error for an unknown hub"
    assert any(s in str(errors[0]) for s in NOT_FOUND), str(errors[0])


def test_a_token_credential_works_for_a_known_hub(broker):
    with producer_with_token(broker, HUB) as p:
        assert p.get_partition_ids() == ["0", "1", "2", "3"]
        p.send_event(EventData("via a token credential"), partition_id="1")
    got, errors = collect(broker, 1, partition_id="1", starting_position="-1")
    assert not errors
    assert [e.body_as_str() for e in got] == ["via a token credential"]


def test_oversized_event_is_rejected_and_the_link_survives(broker):
    with producer(broker, retry_total=0) as p:
        # The SDK checks sizes itself; a list bypasses create_batch and reaches the broker.
        with pytest.raises((EventDataSendError, EventHubError, ValueError)) as ei:
            p.send_event(EventData(b"x" * (1024 * 1024 + 100)), partition_id="0")
        p.send_event(EventData("small-after-big"), partition_id="0")
    got, errors = collect(broker, 1, partition_id="0", starting_position="-1")
    assert [e.body_as_str() for e in got] == ["small-after-big"]


def test_amqp_over_websockets(broker):
    # The SDK adds /$servicebus/websocket to the custom endpoint itself.
    ws = dict(transport_type=TransportType.AmqpOverWebsocket, custom_endpoint_address=f"sb://127.0.0.1:{broker.ws_port}")
    with producer(broker, **ws) as p:
        assert p.get_partition_ids() == ["0", "1", "2", "3"]
        b = p.create_batch(partition_id="3")
        b.add(EventData("over websockets"))
        p.send_batch(b)
        assert p.get_partition_properties("3")["last_enqueued_sequence_number"] == 0
    got, errors = collect(broker, 1, client_kw=ws, partition_id="3", starting_position="-1")
    assert not errors, errors
    assert [e.body_as_str() for e in got] == ["over websockets"]
