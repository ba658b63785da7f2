"""The official Python SDK on hubs and consumer groups created while `ehub serve` runs, through
its management API (port 5300 by default) with a SAS token signed as the SDK signs its own."""
import base64
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from azure.eventhub.exceptions import EventHubError


def sas(uri, key_name="RootManageSharedAccessKey", key="SAS_KEY_VALUE"):
    expiry = str(int(time.time()) + 3600)
    encoded = urllib.parse.quote_plus(uri)
    sig = base64.b64encode(hmac.new(key.encode(), f"{encoded}\n{expiry}".encode(), hashlib.sha256).digest())
    return (f"SharedAccessSignature sr={encoded}&sig={urllib.parse.quote_plus(sig)}"
            f"&se={expiry}&skn={key_name}")


def call(broker, method, path, body=None, token=None):
    req = urllib.request.Request(f"http://127.0.0.1:{broker.management_port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": token or sas("sb://localhost/")})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def first_event(broker, hub, consumer_group, **receive_args):
    """The first event the SDK's consumer receives from the earliest, as (partition, body)."""
    got = []
    c = EventHubConsumerClient.from_connection_string(broker.conn_str(), consumer_group=consumer_group,
                                                      eventhub_name=hub)

    def on_event(ctx, e):
        if e is not None:
            got.append((ctx.partition_id, e.body_as_str()))
            c.close()

    with c:
        c.receive(on_event, starting_position="-1", max_wait_time=1, **receive_args)
    return got


def test_health_is_the_emulators_shape(broker):
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.management_port}/health", timeout=10) as r:
        body = json.loads(r.read())
    assert r.status == 200 and body["status"] == "healthy" and body["message"] == "Service is healthy."


def test_the_sdk_uses_a_hub_and_consumer_group_created_at_run_time(broker):
    assert call(broker, "PUT", "/hubs/telemetry", {"partition_count": 2}, token="nope")[0] == 401
    status, hub = call(broker, "PUT", "/hubs/telemetry", {"partition_count": 2})
    assert status == 201, hub
    assert call(broker, "PUT", "/hubs/telemetry/consumergroups/dashboards")[0] == 201
    with EventHubProducerClient.from_connection_string(broker.conn_str(), eventhub_name="telemetry") as p:
        assert p.get_partition_ids() == ["0", "1"]
        batch = p.create_batch(partition_id="1")
        batch.add(EventData("reading"))
        p.send_batch(batch)
    assert first_event(broker, "telemetry", "dashboards", partition_id="1") == [("1", "reading")]

    # Deleted: the SDK gets the service's not-found.
    assert call(broker, "DELETE", "/hubs/telemetry")[0] == 200
    with EventHubProducerClient.from_connection_string(broker.conn_str(), eventhub_name="telemetry",
                                                       retry_total=0) as p:
        with pytest.raises(EventHubError) as e:
            p.get_partition_ids()
    assert "could not be found" in str(e.value)


def test_the_sdk_sees_and_uses_partitions_added_while_it_runs(broker):
    status, hub = call(broker, "PUT", "/hubs/growing", {"partition_count": 2})
    assert status == 201, hub
    with EventHubProducerClient.from_connection_string(broker.conn_str(), eventhub_name="growing") as p:
        assert p.get_partition_ids() == ["0", "1"]
        status, hub = call(broker, "PATCH", "/hubs/growing", {"partition_count": 4})
        assert status == 200 and hub["partition_ids"] == ["0", "1", "2", "3"], hub
        assert call(broker, "PATCH", "/hubs/growing", {"partition_count": 3})[0] == 400
        assert p.get_partition_ids() == ["0", "1", "2", "3"]
        batch = p.create_batch(partition_id="3")
        batch.add(EventData("on a new partition"))
        p.send_batch(batch)
    assert first_event(broker, "growing", "$Default") == [("3", "on a new partition")]
