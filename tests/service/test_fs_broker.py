"""The embedded broker's transport: a consumer never sees half a message (kombu issue #1551)."""

from __future__ import annotations

import os
import threading
from queue import Empty

import pytest
from kombu import Connection
from kombu.transport import filesystem

from service.fs_broker import Transport
from worker.celery_app import torch_threads


def _connection(folder, transport) -> Connection:
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "control_folder": str(folder)}
    return Connection(transport=transport, transport_options=options)


def test_writes_are_atomic_while_a_consumer_polls(tmp_path) -> None:
    """Large messages published from one thread while another drains the queue: every one arrives whole."""
    n, payload = 150, "x" * 2_000_000
    received, errors = [], []

    def consume() -> None:
        with _connection(tmp_path, Transport) as connection:
            queue = connection.SimpleQueue("q")
            while len(received) < n:
                try:
                    message = queue.get(timeout=20)
                except Exception as error:  # a half-written file surfaces here as a decode error
                    errors.append(error)
                    return
                received.append(message.payload["i"])
                message.ack()

    with _connection(tmp_path, Transport) as connection:
        queue = connection.SimpleQueue("q")  # declared and bound before the consumer starts
        consumer = threading.Thread(target=consume)
        consumer.start()
        for i in range(n):
            queue.put({"i": i, "blob": payload})
    consumer.join(60)
    assert errors == [] and sorted(received) == list(range(n))
    assert [name for name in os.listdir(tmp_path) if name.startswith(".staging-")] == []


def test_a_file_being_written_is_invisible_to_the_consumer(tmp_path) -> None:
    (tmp_path / ".staging-abc").write_bytes(b'{"half": ')  # what a writer leaves mid-write
    with _connection(tmp_path, Transport) as connection:
        channel = connection.default_channel
        assert issubclass(type(channel), filesystem.Channel)
        with pytest.raises(Empty):
            channel._get("q")


def test_torch_threads_share_the_cores_out() -> None:
    assert torch_threads(1, cores=16) == 16
    assert torch_threads(4, cores=16) == 4 and torch_threads(32, cores=16) == 1
    assert torch_threads(4, configured=3, cores=16) == 3


def test_no_message_file_is_visible_before_its_content_is_complete(tmp_path, monkeypatch) -> None:
    """Deterministic: while the payload is being encoded and written, no ``.msg`` file may exist yet
    (kombu's own channel creates it empty first; a consumer polling then reads nothing)."""
    import service.fs_broker as fs_broker

    seen = []
    real = fs_broker.dumps

    def encode_and_look(payload):
        seen.append(sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".msg")))
        return real(payload)

    monkeypatch.setattr(fs_broker, "dumps", encode_and_look)
    with _connection(tmp_path, Transport) as connection:
        connection.SimpleQueue("visible").put({"i": 1})  # a queue of its own: kombu keeps exchange state per process
    assert seen == [[]] and len([p for p in tmp_path.iterdir() if p.name.endswith(".visible.msg")]) == 1
