"""Mail transactions on an SMTP session that aiosmtplib opened, on our own protocol.

aiosmtplib opens and secures each pooled session (greeting, EHLO, STARTTLS, AUTH: the
parts where a maintained library's care matters most). The transactions then run here,
over the same transport (``transport.set_protocol``), for two reasons measured in bench
figure 1: aiosmtplib parses one reply per read, so it cannot pipeline (RFC 2920), and per
message it costs a lock, a future and a ``wait_for`` per command plus two regex passes
over the whole body. Here, against a server that offers PIPELINING, ``MAIL FROM``,
``RCPT TO`` and ``DATA`` leave in one write and their three replies are read together;
the content is written from the protocol callback the moment ``354`` arrives, and the
next message's commands may follow it at once, before its reply (RFC 2920 §3.1: content
may open a group), so a message costs one round trip on a busy session. Without
PIPELINING, one command per round trip, as aiosmtplib does.

Several transactions may be under way on one session; replies are matched to them in
order. A failed connection fails every one of them: those with no reply yet carry
``stage = "mail"`` (safe to send again), the others' outcome is unknown, as for a
connection lost during any single transaction.

Errors are aiosmtplib's own exception classes, so :func:`.email.classify` maps them as
before: a refused sender or recipient, a refused DATA, a disconnect (marked
``stage = "mail"`` when the server sent no reply to MAIL FROM yet: nothing of the message
was accepted then, so a retry on a new session cannot duplicate it). A reply line over
aiosmtplib's limit or one without a status code is a protocol error (code 421 family:
transient), and the session is not reused.
"""

from __future__ import annotations

import asyncio
import collections
import re
from collections.abc import Callable

from aiosmtplib import (
    SMTPDataError,
    SMTPRecipientRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPStatus,
)
from aiosmtplib.response import SMTPResponse

MAX_LINE = 8192  # aiosmtplib's MAX_LINE_LENGTH
MAX_REPLY = 1 << 17  # aiosmtplib's MAX_RESPONSE_LENGTH
_RCPT_OK = (SMTPStatus.completed, SMTPStatus.will_forward)
_LEADING_DOT = re.compile(rb"(?m)^\.")  # RFC 5321 §4.5.2 transparency
_NEWLINE_DOT = re.compile(rb"\n\.")  # searched 3x faster than bytes' own ``in`` here
_BARE_EOL = re.compile(rb"\r\n|\r|\n")


class SmtpWire(asyncio.Protocol):
    """One session after its handshake: replies parsed as they arrive, in order."""

    def __init__(self, transport: asyncio.Transport, *, pipelining: bool) -> None:
        self.transport = transport
        self.pipelining = pipelining
        self._buf = bytearray()
        self._replies: collections.deque[SMTPResponse] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        # Pipelined transactions in reply order; only the last may still wait to write.
        self._txns: collections.deque[_Pipelined] = collections.deque()

    @classmethod
    def take_over(cls, transport: asyncio.BaseTransport, *, pipelining: bool) -> SmtpWire:
        """Route ``transport`` (idle between commands) to a new wire from now on."""
        assert isinstance(transport, asyncio.Transport)
        wire = cls(transport, pipelining=pipelining)
        transport.set_protocol(wire)
        return wire

    @property
    def usable(self) -> bool:
        return self._error is None and not self.transport.is_closing()

    @property
    def busy(self) -> int:
        """Transactions under way on this session (pipelined ones may overlap)."""
        return len(self._txns)

    # -- protocol callbacks -----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        self._buf += data
        try:
            self._parse()
        except SMTPResponseException as exc:
            self._fail(exc)
            self.transport.close()
            return
        if self._txns:
            self._advance()
        self._wake()

    def eof_received(self) -> bool:
        self._fail(SMTPServerDisconnected("Unexpected EOF received"))
        return False  # closes the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(SMTPServerDisconnected(f"Connection lost: {exc}" if exc else "Connection lost"))

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        for txn in self._txns:
            if txn.future.done():
                continue
            failure = error
            if not txn.replies and isinstance(error, SMTPServerDisconnected):
                # Not even MAIL FROM was answered: nothing of the message was accepted.
                failure = SMTPServerDisconnected(str(error))
                failure.stage = "mail"  # type: ignore[attr-defined]
            txn.future.set_exception(failure)
            txn.future.exception()  # retrieved: the caller may be gone (cancelled)
        self._txns.clear()
        self._wake()

    def _advance(self) -> None:
        """Move the transactions on from inside the protocol callback, without waking their
        tasks: the body (or the lone ``.`` that ends a refused envelope's data, or the RSET
        after a refused DATA) is written the moment the third reply arrives, with the next
        transaction's commands in the same write (RFC 2920: message content may open a
        group). A task wakes once, with all its replies in hand."""
        replies, txns = self._replies, self._txns
        while replies and txns:
            head = txns[0]
            head.replies.append(replies.popleft())
            if len(head.replies) == 3:
                mail, rcpt, data = head.replies
                if data.code != SMTPStatus.start_input:
                    out = b"RSET\r\n"  # the envelope may still hold MAIL FROM
                elif mail.code == SMTPStatus.completed and rcpt.code in _RCPT_OK:
                    out = head.body
                else:
                    # RFC 2920 §3.1: DATA accepted although the envelope was not; end
                    # the (empty) data at once, never send the message.
                    out = b".\r\n"
                head.data_done = True
                if head.on_data_done is not None:
                    head.on_data_done()
                if len(txns) > 1 and not txns[1].written:
                    txns[1].written = True
                    out += txns[1].commands
                self.transport.write(out)
            elif len(head.replies) == 4:
                txns.popleft()
                head.future.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _parse(self) -> None:
        """Move every complete reply (``NNN-...`` lines ending in ``NNN ...``) to the queue."""
        buf = self._buf
        start = 0
        lines: list[bytes] = []
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            line = bytes(buf[start : end + 1])
            if len(line) > MAX_LINE:
                raise SMTPResponseException(SMTPStatus.invalid_response, "Response too long")
            code = line[:3]
            if not code.isdigit():
                text = line.decode("utf-8", "replace").strip()
                raise SMTPResponseException(
                    SMTPStatus.invalid_response, f"Malformed SMTP response line: {text}"
                )
            start = end + 1
            lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                text = b"\n".join(lines).decode("utf-8", "surrogateescape")
                self._replies.append(SMTPResponse(int(code), text))
                del buf[:start]
                start = 0
                lines = []
        if len(buf) > MAX_REPLY:
            raise SMTPResponseException(SMTPStatus.invalid_response, "Response too long")

    async def reply(self) -> SMTPResponse:
        """The next reply, in the order the commands were written."""
        while not self._replies:
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._replies.popleft()

    def _write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self.transport.is_closing():
            raise SMTPServerDisconnected("Connection lost")
        self.transport.write(data)

    # -- commands -----------------------------------------------------------------------

    async def command(self, line: bytes) -> SMTPResponse:
        """One command line (NOOP, RSET, QUIT) and its reply."""
        self._write(line + b"\r\n")
        return await self.reply()

    async def send_mail(
        self,
        mail: bytes,
        rcpt: bytes,
        body: bytes,
        *,
        crlf: bool = False,
        on_data_done: Callable[[], None] | None = None,
    ) -> str:
        """MAIL (``mail`` = ``FROM:<a> [SIZE=n]``), RCPT (``TO:<b>``), DATA, body.

        ``body`` is the message as it is; transparency and CRLF are applied here only when
        needed (``crlf``: its line ends are known to be CRLF already, as the MIME writer's
        are, so they are not checked). Returns the final reply's text. A refusal raises
        after every reply already asked for was read, so the session stays in step: a
        pipelined refusal is reset here (RSET, or the lone ``.`` that ends a DATA accepted
        for a refused envelope); without pipelining the caller resets it.
        ``on_data_done`` (pipelined only) is called, from the protocol callback, once the
        content (or what ends a refused transaction) is written: from then on another
        transaction's commands may be written behind it.
        """
        mail_cmd = b"MAIL " + mail + b"\r\n"
        rcpt_cmd = b"RCPT " + rcpt + b"\r\n"
        if self.pipelining:
            if self._error is not None:
                raise self._error
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            commands = mail_cmd + rcpt_cmd + b"DATA\r\n"
            txn = _Pipelined(commands, data_lines(body, crlf=crlf), done, on_data_done)
            tail = self._txns[-1] if self._txns else None
            if tail is None or tail.data_done:
                # Nothing under way, or the last transaction's DATA phase is over (its
                # content is on its way): these commands may follow at once.
                self._write(txn.commands)
                txn.written = True
            self._txns.append(txn)
            await done
            mail_reply, rcpt_reply, data_reply = txn.replies[:3]
            _check_envelope(mail, rcpt, mail_reply, rcpt_reply, data_reply)
            final = txn.replies[3]
            if final.code != SMTPStatus.completed:
                raise SMTPDataError(final.code, final.message)
            return final.message
        else:
            self._write(mail_cmd)
            mail_reply = await self._first_reply()
            rcpt_reply = data_reply = mail_reply
            if mail_reply.code == SMTPStatus.completed:
                self._write(rcpt_cmd)
                rcpt_reply = await self.reply()
                if rcpt_reply.code in _RCPT_OK:
                    self._write(b"DATA\r\n")
                    data_reply = await self.reply()
        _check_envelope(mail, rcpt, mail_reply, rcpt_reply, data_reply)
        self._write(data_lines(body, crlf=crlf))
        final = await self.reply()
        if final.code != SMTPStatus.completed:
            raise SMTPDataError(final.code, final.message)
        return final.message

    async def _first_reply(self) -> SMTPResponse:
        try:
            return await self.reply()
        except SMTPServerDisconnected as exc:
            exc.stage = "mail"  # type: ignore[attr-defined]
            raise


def data_lines(body: bytes, *, crlf: bool = False) -> bytes:
    """``body`` as DATA content: CRLF line ends, leading dots doubled, ``.`` line ending it.

    Unless ``crlf`` says they are, three counts decide whether the line ends are all CRLF
    already (no copy then).
    """
    if not crlf:
        pairs = body.count(b"\r\n")
        if body.count(b"\r") != pairs or body.count(b"\n") != pairs:
            body = _BARE_EOL.sub(b"\r\n", body)
    if body.startswith(b".") or _NEWLINE_DOT.search(body):
        body = _LEADING_DOT.sub(b"..", body)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def _address(argument: bytes) -> str:
    """The address inside ``FROM:<a> ...`` / ``TO:<b>``, for the exception."""
    text = argument.decode("ascii", "replace")
    return text[text.find("<") + 1 : text.rfind(">")] if "<" in text else text


class _Pipelined:
    """A pipelined transaction: its commands and DATA content, the replies so far (done at
    four: MAIL, RCPT, DATA, and the content's, the lone dot's or the RSET's)."""

    __slots__ = ("body", "commands", "data_done", "future", "on_data_done", "replies", "written")

    def __init__(
        self,
        commands: bytes,
        body: bytes,
        future: asyncio.Future[None],
        on_data_done: Callable[[], None] | None,
    ) -> None:
        self.commands = commands
        self.body = body
        self.future = future
        self.on_data_done = on_data_done  # called, in the callback, once data_done
        self.replies: list[SMTPResponse] = []
        self.written = False  # its commands are on the wire
        self.data_done = False  # what follows its DATA reply is on the wire


def _check_envelope(
    mail: bytes, rcpt: bytes, mail_reply: SMTPResponse, rcpt_reply: SMTPResponse, data: SMTPResponse
) -> None:
    """Raise what aiosmtplib raises for a refused sender, recipient or DATA command."""
    if mail_reply.code != SMTPStatus.completed:
        raise SMTPSenderRefused(mail_reply.code, mail_reply.message, _address(mail))
    if rcpt_reply.code not in _RCPT_OK:
        raise SMTPRecipientRefused(rcpt_reply.code, rcpt_reply.message, _address(rcpt))
    if data.code != SMTPStatus.start_input:
        raise SMTPDataError(data.code, data.message)
