"""A sink SMTP server for the benchmarks, meant to run in its own process.

``python -m bench.smtp_sink RECORD_FILE`` listens on 127.0.0.1 (a free port, printed as
the first line of stdout), accepts every message, and appends ``<time.time()> <Message-ID>``
to RECORD_FILE the moment it accepts each one (the firing-lateness figure reads it).
It offers PIPELINING in EHLO, as the relays the service talks to do (Postfix, Exim,
Exchange, Coremail, Tencent Exmail); aiosmtpd reads pipelined commands in order but does
not say so itself. The bare aiosmtplib baseline does not pipeline either way.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

_MID = b"\r\nMessage-ID: "


class SinkHandler:
    def __init__(self, record: Path) -> None:
        self._fh = record.open("a", encoding="ascii")
        self.count = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves it to a hook that replaces EHLO
        responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        accepted = time.time()
        raw: bytes = envelope.original_content or envelope.content
        start = raw.find(_MID)
        mid = "-"
        if start >= 0:
            start += len(_MID)
            mid = raw[start : raw.find(b"\r\n", start)].decode("ascii", "replace")
        self._fh.write(f"{accepted:.6f} {mid}\n")
        self._fh.flush()  # the benchmark reads the file while we run
        self.count += 1
        return "250 2.0.0 OK"


async def serve(record: Path) -> None:
    loop = asyncio.get_running_loop()
    handler = SinkHandler(record)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="bench-sink", ident="bench sink"),
        host="127.0.0.1",
        port=0,
    )
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1])))
