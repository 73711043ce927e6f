"""The office mailbox: one IMAP pass takes in every message not yet handled.

The standard library's imaplib, run in a worker thread: one connection, a handful of
commands per pass, and no extra dependency (aioimaplib would add one for no gain at a few
hundred messages a day). Handled messages get the keyword ``$Recorded`` (or are moved to
``SERVICE_IMAP_MOVE_TO``); nothing is ever deleted or expunged. A message is flagged only
after intake has recorded it, and intake is idempotent, so a crash in between re-reads it
harmlessly on the next pass.
"""

from __future__ import annotations

import asyncio
import dataclasses
import imaplib
import os
import re
import select
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog

from ..clock import Clock
from ..errors import ConfigError, Problem
from ..hosts import is_loopback
from ..logs import mask_text
from .core import Intake, Outcome

log = structlog.get_logger("service.intake.mailbox")
DONE = "$Recorded"
FAILED = "$IntakeFailed"
_BATCH = 50  # messages fetched per FETCH: bounds memory at 50 × the largest message


@dataclass(frozen=True)
class MailboxConfig:
    host: str
    user: str
    password: str = field(repr=False)
    port: int = 993
    tls: bool = True
    folder: str = "INBOX"
    move_to: str | None = None
    timeout: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MailboxConfig:
        """``SERVICE_IMAP_*``; the password only from the environment, never logged."""
        env = os.environ if env is None else env
        missing = [
            name
            for name in ("SERVICE_IMAP_HOST", "SERVICE_IMAP_USER", "SERVICE_IMAP_PASSWORD")
            if not env.get(name)
        ]
        if missing:
            raise ConfigError(
                [Problem("environment", None, n, "未设置（邮箱收取需要）") for n in missing]
            )
        tls = env.get("SERVICE_IMAP_TLS", "1").strip().lower() not in ("0", "no", "false")
        try:
            port = int(env.get("SERVICE_IMAP_PORT") or (993 if tls else 143))
        except ValueError:
            raise ConfigError(
                [Problem("environment", None, "SERVICE_IMAP_PORT", "不是端口号")]
            ) from None
        host = env["SERVICE_IMAP_HOST"]
        if not tls and not is_loopback(host):
            raise ConfigError(
                [
                    Problem(
                        "environment",
                        None,
                        "SERVICE_IMAP_TLS",
                        f"邮箱连接未加密：密码和邮件内容会以明文在网络上传输。{host!r} 不是本机"
                        "回环地址；SERVICE_IMAP_TLS=0 只允许用于本机回环地址"
                        "（127.0.0.1、::1、localhost）上的测试服务器，其他主机必须使用 TLS",
                    )
                ]
            )
        return cls(
            host=host,
            user=env["SERVICE_IMAP_USER"],
            password=env["SERVICE_IMAP_PASSWORD"],
            port=port,
            tls=tls,
            folder=env.get("SERVICE_IMAP_FOLDER") or "INBOX",
            move_to=env.get("SERVICE_IMAP_MOVE_TO") or None,
        )


@dataclass
class PollResult:
    fetched: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    failed: int = 0


class _Session:
    """Blocking IMAP calls; every method runs in a worker thread."""

    def __init__(self, cfg: MailboxConfig) -> None:
        self.cfg = cfg
        if cfg.tls:
            self.imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                cfg.host, cfg.port, ssl_context=ssl.create_default_context(), timeout=cfg.timeout
            )
        else:
            self.imap = imaplib.IMAP4(cfg.host, cfg.port, timeout=cfg.timeout)
        try:
            self._ok(self.imap.login(cfg.user, cfg.password), "LOGIN")
            self._ok(self.imap.select(_quote(cfg.folder)), f"SELECT {cfg.folder}")
        except BaseException:
            self.close()
            raise
        # The greeting's capabilities may be the pre-login subset: ask again.
        typ, caps = self.imap.capability()
        words = caps[0].split() if typ == "OK" and caps and isinstance(caps[0], bytes) else []
        self.can_move = b"MOVE" in words
        self.can_idle = b"IDLE" in words

    def _ok(self, reply: tuple[str, Sequence[Any]], what: str) -> Sequence[Any]:
        typ, data = reply
        if typ != "OK":
            raise imaplib.IMAP4.error(f"{what}: {typ} {data!r}")
        return data

    def pending(self) -> list[bytes]:
        data = self._ok(
            self.imap.uid("SEARCH", "UNKEYWORD", DONE, "UNKEYWORD", FAILED, "UNDELETED"),
            "SEARCH",
        )
        first = data[0] if data else b""
        return first.split() if isinstance(first, bytes) else []

    def fetch(self, uids: list[bytes]) -> list[tuple[bytes, bytes]]:
        data = self._ok(self.imap.uid("FETCH", b",".join(uids).decode(), "(BODY.PEEK[])"), "FETCH")
        out = []
        for item in data:
            if isinstance(item, tuple) and len(item) == 2:
                m = re.search(rb"UID (\d+)", item[0])
                if m:
                    out.append((m.group(1), item[1]))
        return out

    def done(self, uids: list[bytes], keyword: str) -> None:
        """Flag (and move) handled messages: one command for a whole batch."""
        if not uids:
            return
        ids = b",".join(uids).decode()
        self._ok(self.imap.uid("STORE", ids, "+FLAGS", f"({keyword})"), "STORE")
        if self.cfg.move_to and keyword == DONE:
            target = _quote(self.cfg.move_to)
            if self.can_move:
                self._ok(self.imap.uid("MOVE", ids, target), "MOVE")
            else:  # copy only: the original keeps its keyword and is never expunged
                self._ok(self.imap.uid("COPY", ids, target), "COPY")

    def idle(self, seconds: float, cancelled: threading.Event, idling: threading.Event) -> bool:
        """IMAP IDLE (RFC 2177) for up to ``seconds``: True when new mail was announced.

        imaplib (before Python 3.14) has no IDLE; after SELECT its read buffer is empty,
        so the exchange runs on the raw socket and ends at the tagged reply, leaving
        imaplib's state as it was. ``cancelled`` is checked every half second.
        """
        sock = self.imap.sock
        tag = b"IDLE1"
        sock.sendall(tag + b" IDLE\r\n")
        buf, got = b"", False
        deadline = time.monotonic() + seconds
        while True:
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                if line.startswith(b"+"):
                    idling.set()
                elif line.startswith(tag + b" "):
                    raise imaplib.IMAP4.error(f"IDLE refused: {line!r}")
                elif line.endswith((b" EXISTS", b" RECENT")):
                    got = True
            remaining = deadline - time.monotonic()
            if got or cancelled.is_set() or remaining <= 0:
                break
            pending = getattr(sock, "pending", lambda: 0)()  # TLS may hold decrypted bytes
            if pending or select.select([sock], [], [], min(0.5, remaining))[0]:
                chunk = sock.recv(65536)
                if not chunk:
                    raise OSError("IMAP server closed the connection during IDLE")
                buf += chunk
        sock.sendall(b"DONE\r\n")
        while True:
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                if line.startswith(tag + b" "):
                    if not line.startswith(tag + b" OK"):
                        raise imaplib.IMAP4.error(f"IDLE ended with {line!r}")
                    return got
            chunk = sock.recv(65536)  # blocking, bounded by the connection's timeout
            if not chunk:
                raise OSError("IMAP server closed the connection after IDLE")
            buf += chunk

    def close(self) -> None:
        try:
            self.imap.logout()
        except Exception:  # the connection may already be gone; nothing to keep
            pass


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def poll(intake: Intake, cfg: MailboxConfig) -> PollResult:
    """One pass over the folder: take in every message without our keyword, then flag it."""
    result = PollResult()
    session = await asyncio.to_thread(_Session, cfg)
    try:
        uids = await asyncio.to_thread(session.pending)
        for start in range(0, len(uids), _BATCH):
            batch = await asyncio.to_thread(session.fetch, uids[start : start + _BATCH])
            handled: dict[str, list[bytes]] = {DONE: [], FAILED: []}
            try:
                result.fetched += len(batch)
                taken = await intake.take_messages([raw for _uid, raw in batch])
                for (uid, _raw), outcome in zip(batch, taken, strict=True):
                    if not isinstance(outcome, Exception):
                        result.outcomes += outcome
                        handled[DONE].append(uid)
                        continue
                    # A bug must not stall the mailbox: park the message, visibly.
                    log.error("intake of a message failed", uid=uid.decode(), exc_info=outcome)
                    await intake.store.add_review(
                        "submission",
                        None,
                        f"邮件处理失败（IMAP UID {uid.decode()}）：{type(outcome).__name__}",
                        {"uid": uid.decode(), "folder": cfg.folder},
                    )
                    handled[FAILED].append(uid)
                    result.failed += 1
            finally:  # flag what was handled even if the pass stops midway
                for keyword, done in handled.items():
                    await asyncio.to_thread(session.done, done, keyword)
    finally:
        await asyncio.to_thread(session.close)
    log.info("mailbox polled", fetched=result.fetched, failed=result.failed)
    return result


async def watch(
    make_intake: Callable[[], Intake],
    cfg: MailboxConfig,
    clock: Clock,
    interval: float,
    stop: asyncio.Event,
    idling: threading.Event | None = None,
) -> int:
    """Poll until ``stop``: between passes wait for new mail with IMAP IDLE where the
    server offers it (at most ``interval`` seconds), else sleep ``interval``. ``idling``
    is set once the server confirms IDLE. Returns the number of passes.

    The intake is rebuilt each pass so that a directory change confirmed in
    ``service review`` (another process) is used for the next mails. A failed pass (server
    down, login refused) is logged and retried; it never ends the watch.
    """
    passes = 0
    intake: Intake | None = None
    while not stop.is_set():
        try:
            intake = make_intake()
        except ConfigError as exc:
            if intake is None:
                raise
            log.warning("directory reload refused; keeping the previous one", error=str(exc))
        try:
            await poll(intake, cfg)
        except (OSError, imaplib.IMAP4.error) as exc:
            log.warning("mailbox pass failed; retrying", host=cfg.host, error=str(exc)[:200])
        passes += 1
        if stop.is_set():
            break
        if await _idle(cfg, interval, stop, idling):
            continue
        sleeper = asyncio.ensure_future(
            clock.sleep_until(clock.now() + timedelta(seconds=interval))
        )
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (sleeper, stopper):
            task.cancel()
    return passes


async def _idle(
    cfg: MailboxConfig, seconds: float, stop: asyncio.Event, idling: threading.Event | None
) -> bool:
    """Wait for new mail with IDLE; False when the server does not offer it or fails."""
    cancelled = threading.Event()

    def wait() -> bool:
        session = _Session(cfg)
        try:
            if not session.can_idle:
                return False
            session.idle(seconds, cancelled, idling or threading.Event())
            return True
        finally:
            session.close()

    waiter = asyncio.ensure_future(asyncio.to_thread(wait))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        cancelled.set()  # ends the thread's IDLE within half a second
        return await waiter
    except (OSError, imaplib.IMAP4.error) as exc:
        log.warning("mailbox IDLE failed; polling on the interval", error=str(exc)[:200])
        return False
    finally:
        stopper.cancel()


HOOK_TIMEOUT = 15.0  # seconds per socket operation: a silent server delays a cycle this long


def cycle_hook(
    cfg: MailboxConfig, make_intake: Callable[[], Intake]
) -> Callable[[], Awaitable[None]]:
    """One mailbox pass as the daemon's ``before_cycle`` work (see ``Daemon``).

    ``make_intake`` is called each pass so that the daemon's reloaded model is used. A
    failed pass (server down, login refused) never reaches the cycle: it is logged once
    per outage (host and the server's reply, never the user or the password) and the
    next cycle tries again; the recovery is logged too.
    """
    cfg = dataclasses.replace(cfg, timeout=min(cfg.timeout, HOOK_TIMEOUT))
    failing = False

    async def hook() -> None:
        nonlocal failing
        try:
            await poll(make_intake(), cfg)
        except (OSError, imaplib.IMAP4.error) as exc:
            if not failing:
                log.warning(
                    "mailbox pass failed; cycles go on, the next one retries",
                    host=f"{cfg.host}:{cfg.port}",
                    error=safe_error(exc, cfg),
                )
            failing = True
            return
        if failing:
            log.info("mailbox reachable again", host=f"{cfg.host}:{cfg.port}")
        failing = False

    return hook


def safe_error(exc: BaseException, cfg: MailboxConfig) -> str:
    """The error for a log line: the user name and password masked if a server echoed them."""
    text = f"{type(exc).__name__}: {exc}"[:200]
    for secret in (cfg.password, cfg.user):
        if secret:
            text = text.replace(secret, "***")
    return mask_text(text)


async def probe(cfg: MailboxConfig) -> str:
    """``service doctor``: log in and select the folder, read nothing, change nothing."""

    def check() -> str:
        session = _Session(dataclasses.replace(cfg, timeout=min(cfg.timeout, HOOK_TIMEOUT)))
        try:
            waiting = len(session.pending())
        finally:
            session.close()
        mode = "TLS" if cfg.tls else "未加密（仅本机回环地址）"
        where = f"{cfg.host}:{cfg.port}（{mode}）"
        return f"{where}登录成功，文件夹 {cfg.folder} 可打开，待处理邮件 {waiting} 封"

    return await asyncio.to_thread(check)
