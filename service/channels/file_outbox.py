"""File outbox: the default channel; writes .eml files and SMS JSON lines locally."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, tzinfo
from pathlib import Path

from service.channels.base import (
    Channel,
    ChannelName,
    Envelope,
    PermanentDeliveryError,
    SendResult,
    TransientDeliveryError,
    message_id_for,
    out_id_for,
)
from service.channels.mime import Clock, message_bytes, utc_now
from service.channels.sms_common import sms_segments
from service.private import private_dir, private_opener


class FileOutbox:
    """Contacts nobody: email goes to ``<folder>/email/*.eml``, SMS to ``sms.jsonl``.

    One instance serves both channels; the dispatcher registers
    ``outbox.for_channel("email")`` and ``outbox.for_channel("sms")``. ``send`` also
    accepts either kind directly. Email is idempotent by key (one file per key); SMS
    lines are appended at least once.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        from_addr: str,
        from_name: str = "",
        message_id_domain: str = "",
        sms_signature: str = "",
        clock: Clock = utc_now,
        durable: bool = True,
        tz: tzinfo = UTC,
    ) -> None:
        self.folder = Path(folder)
        # fsync each file: the daemon's default. A replay into a scratch folder skips it.
        self.durable = durable
        self._known: set[str] | None = None  # digests already on disk, scanned once
        self.from_addr = from_addr
        self.from_name = from_name
        self.message_id_domain = message_id_domain or from_addr.rpartition("@")[2]
        if not self.message_id_domain:
            raise ValueError("message_id_domain is empty and from_addr has no domain")
        self.sms_signature = sms_signature
        self._clock = clock
        self.tz = tz  # the campaign's zone: file names and sms.jsonl read like the rest
        # Serialises the exists-check + write so two sends of one key make one file.
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"FileOutbox({str(self.folder)!r})"

    def for_channel(self, name: ChannelName) -> Channel:
        """A Channel view that accepts only envelopes of ``name``."""
        if name not in ("email", "sms"):
            raise ValueError(f"unknown channel {name!r}")
        return OutboxChannel(self, name)

    async def send(self, envelope: Envelope) -> SendResult:
        if envelope.channel == "email":
            return await self._send_email(envelope)
        if envelope.channel == "sms":
            return await self._send_sms(envelope)
        raise PermanentDeliveryError(f"unknown channel {envelope.channel!r}")

    async def aclose(self) -> None:
        """Nothing to release: every write opens and closes its own file."""

    @property
    def email_folder(self) -> Path:
        return self.folder / "email"

    @property
    def sms_file(self) -> Path:
        return self.folder / "sms.jsonl"

    async def _send_email(self, envelope: Envelope) -> SendResult:
        now = self._clock()
        raw = message_bytes(  # the bytes EmailChannel puts on the wire
            envelope,
            from_addr=self.from_addr,
            from_name=self.from_name,
            message_id_domain=self.message_id_domain,
            date=now,
        )
        digest = out_id_for(envelope.key)
        # Timestamp first so a directory listing sorts by creation time.
        local = now.astimezone(self.tz)
        stamp = local.strftime("%Y%m%dT%H%M%S%f") + (
            local.strftime("%z") if local.utcoffset() else "Z"
        )
        target = self.email_folder / f"{stamp}-{digest}.eml"
        async with self._lock:
            try:
                if self._known is None:
                    self._known = await asyncio.to_thread(_scan, self.email_folder)
                path, written = await asyncio.to_thread(
                    _write_once, target, digest, raw, self._known, self.durable
                )
            except OSError as exc:
                raise _disk_error(target, exc) from exc
        detail = f"{'wrote' if written else 'already in outbox'} {path}"
        return SendResult(
            provider_id=message_id_for(envelope.key, self.message_id_domain),
            detail=detail,
        )

    async def _send_sms(self, envelope: Envelope) -> SendResult:
        try:
            segments = sms_segments(envelope.text, self.sms_signature)
        except ValueError as exc:  # over the 500-character provider limit
            raise PermanentDeliveryError(f"SMS refused: {exc}") from exc
        record = {
            "at": self._clock().astimezone(self.tz).isoformat(),
            "key": envelope.key,
            "to": envelope.address,
            "name": envelope.recipient_name,
            "template": envelope.sms_template,
            "params": dict(envelope.sms_params),
            "text": envelope.text,
            "segments": segments,
        }
        line = json.dumps(record, ensure_ascii=False) + "\n"
        async with self._lock:
            try:
                await asyncio.to_thread(_append_line, self.sms_file, line, self.durable)
            except OSError as exc:
                raise _disk_error(self.sms_file, exc) from exc
        return SendResult(provider_id=out_id_for(envelope.key), detail=f"appended {self.sms_file}")


class OutboxChannel:
    """One channel's view of a :class:`FileOutbox`."""

    def __init__(self, outbox: FileOutbox, name: ChannelName) -> None:
        self.outbox = outbox
        self.name: ChannelName = name

    def __repr__(self) -> str:
        return f"OutboxChannel({self.name!r}, {self.outbox!r})"

    async def send(self, envelope: Envelope) -> SendResult:
        if envelope.channel != self.name:
            raise PermanentDeliveryError(
                f"{envelope.channel} envelope sent to the {self.name} outbox"
            )
        return await self.outbox.send(envelope)

    async def aclose(self) -> None:
        await self.outbox.aclose()


def _disk_error(path: Path, exc: OSError) -> TransientDeliveryError:
    # Transient: an operator can free disk space or fix permissions, and the message
    # must stay unsent until then.
    reason = exc.strerror or type(exc).__name__
    return TransientDeliveryError(f"cannot write outbox file {path}: {reason}")


def _scan(folder: Path) -> set[str]:
    """Digests of the .eml files already written (one directory listing, not one per send)."""
    if not folder.is_dir():
        return set()
    return {p.stem.rpartition("-")[2] for p in folder.glob("*.eml")}


def _write_once(
    target: Path, digest: str, raw: bytes, known: set[str], durable: bool
) -> tuple[Path, bool]:
    folder = target.parent
    if digest in known:
        return next(iter(sorted(folder.glob(f"*-{digest}.eml"))), target), False
    private_dir(folder)
    tmp = folder / f".{target.name}.tmp"
    try:
        with open(tmp, "wb", opener=private_opener) as fh:
            fh.write(raw)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(folder)
    known.add(digest)
    return target, True


def _append_line(path: Path, line: str, durable: bool = True) -> None:
    private_dir(path.parent)
    with open(path, "a", encoding="utf-8", opener=private_opener) as fh:
        fh.write(line)
        fh.flush()
        if durable:
            os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself survive a power cut, not just the file's bytes.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
