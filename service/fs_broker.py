"""kombu's filesystem transport with atomic writes: the embedded mode's server-less broker.

kombu 5.x's filesystem channel creates a message file and then writes into it, while a consumer
polling the folder may move and read that file in between (an advisory lock does not stop
``shutil.move``). The worker then reads half a message, raises ``JSONDecodeError`` and dies, and
the message is gone (kombu issue #1551). The service benchmark lost 2 jobs in about 900 that way.

Here a message is written whole to a hidden file in the same folder and renamed to its final name,
so a consumer sees all of it or nothing. Hidden names do not end in ``.<queue>.msg`` and are
never picked up. Selected with Celery's ``broker_transport`` setting whenever the broker URL is
``filesystem://`` (``service.jobs.tasks.broker_config``, for senders and workers alike).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from time import monotonic

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

from models.io.atomic import atomic_write

__all__ = ["Channel", "Transport", "TRANSPORT"]

TRANSPORT = "service.fs_broker:Transport"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: dict, **kwargs: object) -> None:
        """Put ``payload`` on ``queue``: written to a hidden file, then renamed into place."""
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        try:
            with atomic_write(Path(self.data_folder_out) / name) as handle:
                handle.write(str_to_bytes(dumps(payload)))
        except OSError as error:
            raise filesystem.ChannelError(f"cannot add a message to {self.data_folder_out!r}") from error


    def get_table(self, exchange: str) -> list:
        """The exchange's bindings; kombu creates that file before writing it, so a reader racing the
        first binding can find it empty: read again for a moment instead of failing."""
        for _ in range(50):
            try:
                return super().get_table(exchange)
            except ValueError:  # JSONDecodeError: the binding is being written
                time.sleep(0.02)
        return super().get_table(exchange)


class Transport(filesystem.Transport):
    Channel = Channel
