"""The official Python SDK over `ehub serve`'s own TLS, as against the service: its default
transport (AMQP over TLS) and AMQP over WebSockets over TLS, trusting the development CA that
`--tls-self-signed` creates, with no UseDevelopmentEmulator."""
import os
import socket
import tempfile
import time

import pytest
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient, TransportType
from azure.eventhub.exceptions import ConnectError, EventHubError

from conftest import Broker, free_port


@pytest.fixture
def tls_broker():
    with tempfile.TemporaryDirectory() as d:
        tls_port, wss_port = free_port(), free_port()
        b = Broker(d, extra_args=["--tls-self-signed", "--listen-tls", f"127.0.0.1:{tls_port}",
                                  "--listen-wss", f"127.0.0.1:{wss_port}"]).start()
        b.tls_port, b.wss_port = tls_port, wss_port
        deadline = time.time() + 10
        for port in (tls_port, wss_port):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    assert time.time() < deadline, "TLS listeners did not start"
                    time.sleep(0.02)
        b.ca = os.path.join(d, "tls", "ca.pem")
        assert os.path.exists(b.ca)
        yield b
        b.stop()
        assert b.proc.returncode == 0


# As against Azure: no emulator flag, so the SDK uses TLS.
CS = "Endpoint=sb://localhost/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE"


def roundtrip(b, **kw):
    with EventHubProducerClient.from_connection_string(CS, eventhub_name="eh1", **kw) as p:
        assert p.get_partition_ids() == ["0", "1", "2", "3"]
        batch = p.create_batch(partition_id="1")
        batch.add(EventData("over tls"))
        p.send_batch(batch)
        last = p.get_partition_properties("1")["last_enqueued_sequence_number"]
    got = []
    c = EventHubConsumerClient.from_connection_string(CS, consumer_group="$Default", eventhub_name="eh1", **kw)

    def on_event(ctx, e):
        if e is not None:
            got.append(e)
            c.close()

    with c:
        c.receive(on_event, partition_id="1", starting_position=last, starting_position_inclusive=True,
                  max_wait_time=1)
    return [e.body_as_str() for e in got]


def test_amqp_over_tls_with_the_development_ca(tls_broker):
    kw = dict(transport_type=TransportType.Amqp, connection_verify=tls_broker.ca,
              custom_endpoint_address=f"sb://localhost:{tls_broker.tls_port}")
    assert roundtrip(tls_broker, **kw) == ["over tls"]


def test_amqp_over_websockets_over_tls_with_the_development_ca(tls_broker):
    # The SDK adds /$servicebus/websocket to the custom endpoint itself.
    kw = dict(transport_type=TransportType.AmqpOverWebsocket, connection_verify=tls_broker.ca,
              custom_endpoint_address=f"sb://localhost:{tls_broker.wss_port}")
    assert roundtrip(tls_broker, **kw) == ["over tls"]


def test_an_untrusted_certificate_is_refused(tls_broker):
    kw = dict(transport_type=TransportType.Amqp, retry_total=0,
              custom_endpoint_address=f"sb://localhost:{tls_broker.tls_port}")
    with EventHubProducerClient.from_connection_string(CS, eventhub_name="eh1", **kw) as p:
        with pytest.raises((ConnectError, EventHubError)) as e:
            p.get_partition_ids()
    assert "CERTIFICATE_VERIFY_FAILED" in str(e.value) or "certificate" in str(e.value).lower(), e.value
