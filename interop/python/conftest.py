"""Fixtures: a real `ehub serve` process on a free loopback port with a temporary data dir."""
import os
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EHUB = os.environ.get("EHUB_BIN", os.path.join(ROOT, "target", "release", "ehub"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, data_dir, port=None, fsync="always", config=None, extra_args=()):
        self.data_dir = data_dir
        self.port = port or free_port()
        # AMQP over WebSockets (plain), served beside AMQP.
        self.ws_port = free_port()
        # The Blob endpoint (checkpoint stores), on its own free port.
        self.blob_port = free_port()
        # The management endpoint (health, hubs and consumer groups API).
        self.management_port = free_port()
        # The Kafka endpoint.
        self.kafka_port = free_port()
        self.fsync = fsync
        self.config = config
        self.extra_args = list(extra_args)
        self.proc = None

    def start(self):
        args = [EHUB, "serve", "--listen", f"127.0.0.1:{self.port}", "--listen-ws", f"127.0.0.1:{self.ws_port}",
                "--listen-blob", f"127.0.0.1:{self.blob_port}",
                "--listen-management", f"127.0.0.1:{self.management_port}",
                "--listen-kafka", f"127.0.0.1:{self.kafka_port}",
                "--data-dir", self.data_dir, "--fsync", self.fsync]
        if self.config:
            args += ["--config", self.config]
        args += self.extra_args
        if "--tls-self-signed" in args and "--listen-kafka-tls" not in args:
            # With TLS on, the Kafka endpoint's TLS listener defaults to the fixed 9093.
            args += ["--listen-kafka-tls", f"127.0.0.1:{free_port()}"]
        self.log = open(os.path.join(self.data_dir, "broker.log"), "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    self.log.flush()
                    with open(self.log.name, "rb") as f:
                        tail = f.read()[-2000:].decode("utf-8", "replace")
                    raise RuntimeError(f"broker exited early ({' '.join(args)}); its log ends:\n{tail}")
                time.sleep(0.02)
        raise RuntimeError("broker did not start listening")

    def kill9(self):
        self.proc.kill()
        self.proc.wait(5)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def conn_str(self, key="SAS_KEY_VALUE"):
        return (f"Endpoint=sb://localhost:{self.port};SharedAccessKeyName=RootManageSharedAccessKey;"
                f"SharedAccessKey={key};UseDevelopmentEmulator=true;")


@pytest.fixture
def broker():
    with tempfile.TemporaryDirectory() as d:
        b = Broker(d).start()
        yield b
        b.stop()
        assert b.proc.returncode == 0, "broker did not exit cleanly on SIGTERM"


@pytest.fixture
def broker_factory():
    made = []

    def make(**kw):
        d = tempfile.mkdtemp()
        b = Broker(d, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()
