"""Mail transactions on our own SMTP protocol, against scripted loopback servers.

aiosmtpd answers every command as it reads it, so it cannot show that commands were
pipelined; these servers hold their replies on purpose, send several in one write, split
one across writes, or break the protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from service.channels.base import Envelope, PermanentDeliveryError, TransientDeliveryError
from service.channels.email import EmailChannel, SmtpSettings
from service.channels.smtp_wire import data_lines

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
EHLO = b"250-scripted\r\n250-SIZE 1000000\r\n250-PIPELINING\r\n250 HELP\r\n"


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[list[int]]:
    """Serve ``script`` after a greeting and EHLO; yields [port, connections so far]."""
    state = [0, 0]

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state[1] += 1
        writer.write(b"220 scripted ESMTP\r\n")
        line = await reader.readline()
        assert line.startswith(b"EHLO"), line
        writer.write(EHLO)
        try:
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    state[0] = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()


async def read_commands(reader: asyncio.StreamReader) -> list[bytes]:
    """MAIL, RCPT and DATA of one pipelined transaction, as their verbs."""
    return [(await reader.readline()).split(b" ")[0].strip() for _ in range(3)]


async def read_body(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n.\r\n")


def channel(port: int) -> EmailChannel:
    return EmailChannel(
        SmtpSettings(
            host="127.0.0.1",
            port=port,
            security="none",
            from_addr="ajw@example.gov.cn",
            pool_size=1,
            timeout=2.0,
        )
    )


def envelope(**changes: Any) -> Envelope:
    fields: dict[str, Any] = {
        "key": "camp/obl/2023-W22/u1/step1/p1/email",
        "channel": "email",
        "recipient_name": "联络员",
        "address": "liaison@example.org",
        "subject": "【提醒】请报送",
        "text": "请于6月1日前报送。",
    }
    fields.update(changes)
    return Envelope(**fields)


async def test_offered_pipelining_sends_mail_rcpt_and_data_in_one_go() -> None:
    """With PIPELINING offered, MAIL, RCPT and DATA arrive before any reply is sent."""
    bodies: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # No reply until all three have arrived.
        assert await read_commands(reader) == [b"MAIL", b"RCPT", b"DATA"]
        writer.write(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go on\r\n")  # one segment
        bodies.append(await read_body(reader))
        writer.write(b"250 2.0.0 queued as 1\r\n")
        await reader.readline()

    async with scripted(script) as (port, _):
        ch = channel(port)
        result = await ch.send(envelope())
        await ch.aclose()
    assert result.detail == "2.0.0 queued as 1"
    assert b"Subject:" in bodies[0]


async def test_a_reply_split_across_reads_and_multiline_replies_are_read_whole() -> None:
    """Replies arriving a few bytes at a time, multi-line ones included, are joined."""

    async def dribble(writer: asyncio.StreamWriter, data: bytes) -> None:
        for i in range(0, len(data), 3):
            writer.write(data[i : i + 3])
            await writer.drain()
            await asyncio.sleep(0)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_commands(reader)
        await dribble(writer, b"250-sender\r\n250 ok\r\n250 2.1.5 ok\r\n354 go on\r\n")
        await read_body(reader)
        await dribble(writer, b"250-2.0.0 first line\r\n250 2.0.0 second line\r\n")
        await reader.readline()

    async with scripted(script) as (port, _):
        ch = channel(port)
        result = await ch.send(envelope())
        await ch.aclose()
    assert result.detail == "2.0.0 first line\n2.0.0 second line"


async def test_data_accepted_after_a_refused_recipient_sends_no_message() -> None:
    """A server that says 354 after refusing RCPT gets only the end of data (which ends
    the transaction: no RSET needed), and the session goes on to its QUIT."""
    seen: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_commands(reader)
        writer.write(b"250 ok\r\n550 5.1.1 no such user\r\n354 go on\r\n")
        seen.append(await reader.readline())  # the lone "."
        writer.write(b"554 no valid recipients\r\n")
        seen.append(await reader.readline())
        writer.write(b"221 bye\r\n")

    async with scripted(script) as (port, _):
        ch = channel(port)
        with pytest.raises(PermanentDeliveryError, match="no such user"):
            await ch.send(envelope())
        await ch.aclose()
    assert seen == [b".\r\n", b"QUIT\r\n"]


async def test_a_refused_data_command_is_reset_before_the_next_message() -> None:
    """DATA refused (no 354): the wire sends RSET, then the next message's commands."""
    seen: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_commands(reader)
        writer.write(b"250 ok\r\n250 ok\r\n554 5.7.1 not now\r\n")
        seen.append(await reader.readline())
        writer.write(b"250 reset\r\n")
        seen.extend(await read_commands(reader))
        writer.write(b"250 ok\r\n250 ok\r\n354 go on\r\n")
        await read_body(reader)
        writer.write(b"250 queued\r\n")
        await reader.readline()

    async with scripted(script) as (port, _):
        ch = channel(port)
        with pytest.raises(PermanentDeliveryError, match="not now"):
            await ch.send(envelope())
        assert (await ch.send(envelope())).detail == "queued"
        await ch.aclose()
    assert seen == [b"RSET\r\n", b"MAIL", b"RCPT", b"DATA"]


async def test_the_next_message_is_pipelined_behind_the_content_of_the_last() -> None:
    """With one session, the second message's commands arrive before the first one's
    content is answered: one round trip per message, not two."""
    order: list[str] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_commands(reader)
        order.append("commands 0")
        writer.write(b"250 ok\r\n250 ok\r\n354 go on\r\n")
        await read_body(reader)
        order.append("content 0")
        await read_commands(reader)  # before content 0 is answered: only if pipelined
        order.append("commands 1")
        writer.write(b"250 first\r\n250 ok\r\n250 ok\r\n354 go on\r\n")
        await read_body(reader)
        order.append("content 1")
        writer.write(b"250 second\r\n")
        await reader.readline()

    async with scripted(script) as (port, _):
        ch = channel(port)
        first, second = await asyncio.gather(
            ch.send(envelope()), ch.send(envelope(key="camp/obl/2023-W22/u2/step1/p2/email"))
        )
        await ch.aclose()
    assert order == ["commands 0", "content 0", "commands 1", "content 1"]
    assert (first.detail, second.detail) == ("first", "second")


async def test_a_malformed_reply_is_transient_and_the_session_is_not_reused() -> None:
    """A reply line without a status code fails the attempt; the next opens a new session."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_commands(reader)
        if state[1] == 1:
            writer.write(b"hello there\r\n")
            await reader.read()  # until the client hangs up
            return
        writer.write(b"250 ok\r\n250 ok\r\n354 go on\r\n")
        await read_body(reader)
        writer.write(b"250 queued\r\n")
        await reader.readline()

    async with scripted(script) as state:
        ch = channel(state[0])
        with pytest.raises(TransientDeliveryError, match="Malformed SMTP response line"):
            await ch.send(envelope())
        assert (await ch.send(envelope())).detail == "queued"
        await ch.aclose()
    assert state[1] == 2


async def test_a_line_break_in_the_recipient_is_permanent_and_nothing_is_written() -> None:
    """An address with CR/LF never reaches the wire as a command (no command injection)."""
    received: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read())

    async with scripted(script) as (port, _):
        ch = channel(port)
        with pytest.raises(PermanentDeliveryError):
            await ch.send(envelope(address="a@example.org>\r\nRCPT TO:<b@example.org"))
        await ch.aclose()
    assert b"RCPT" not in b"".join(received)


def test_clean_crlf_content_only_gets_the_end_of_data_line() -> None:
    """The MIME writer's CRLF output goes out as it is, ended by ``.``."""
    assert data_lines(b"Subject: x\r\n\r\nbody\r\n") == b"Subject: x\r\n\r\nbody\r\n.\r\n"


def test_bare_line_ends_become_crlf_and_leading_dots_are_doubled() -> None:
    """RFC 5321 transparency and line ends, whatever the content's line ends were."""
    assert data_lines(b".top\nmid\r.dot\r\nend") == b"..top\r\nmid\r\n..dot\r\nend\r\n.\r\n"


def test_content_known_to_be_crlf_still_gets_its_leading_dots_doubled() -> None:
    """Skipping the line-end check never skips transparency."""
    assert data_lines(b".a\r\nb\r\n.c\r\n", crlf=True) == b"..a\r\nb\r\n..c\r\n.\r\n"
