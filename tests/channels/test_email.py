"""Email channel against a real aiosmtpd server on 127.0.0.1 (aiosmtplib unmocked)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import ssl
import urllib.parse
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

import service.channels.email as email_channel
from service.channels.base import (
    Attachment,
    ChannelConfigError,
    Envelope,
    PermanentDeliveryError,
    TransientDeliveryError,
    message_id_for,
)
from service.channels.email import (
    EmailChannel,
    SmtpSettings,
    build_message,
    campaign_key_header,
    classify,
    message_bytes,
)
from tests.channels.smtp_server import (
    DroppingHandler,
    RecordingHandler,
    RefusingMailHandler,
    RefusingRcptHandler,
    RunningServer,
    ScriptedDataHandler,
    StallingRcptHandler,
    password_authenticator,
    running_server,
)

trustme = pytest.importorskip("trustme")


@pytest.fixture(autouse=True, params=[False, True], ids=["sequential", "pipelined"])
def server_pipelining(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Every conversation here runs against a server without and with PIPELINING."""
    monkeypatch.setattr(RecordingHandler, "pipelining", request.param)
    return bool(request.param)


KEY = "2024-spring/liaison/2024-05/changchun/step1/zhangsan/email"
DOMAIN = "reminders.example.gov.cn"
SUBJECT = "【提醒】请于5月22日前报送联络员反馈表"
CSV = "单位,联络员\n长春市应急管理局,张三\n".encode()
CSV_NAME = "附件1：联络员反馈表.csv"
FIXED_NOW = datetime(2024, 5, 15, 8, 0, tzinfo=UTC)
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
XLSX_NAME = "附件2：逾期未报送单位清单（2024年5月第3周）.xlsx"
XLSX = bytes(range(256)) * 40  # 10 KB of every byte value
BOUNDARY = re.compile(rb"={15}\d{19}==")


def envelope(key: str = KEY, **changes: Any) -> Envelope:
    fields: dict[str, Any] = {
        "key": key,
        "channel": "email",
        "recipient_name": "长春市应急管理局 张三",
        "address": "zhangsan@163.com",
        "subject": SUBJECT,
        "text": "请于5月22日前报送。",
        "html": "<p>请于<b>5月22日</b>前报送。</p>",
        "attachments": (Attachment(CSV_NAME, CSV, "text/csv"),),
    }
    fields.update(changes)
    return Envelope(**fields)


def settings(server: RunningServer, **changes: Any) -> SmtpSettings:
    fields: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "security": "none",
        "from_addr": "ajw@example.gov.cn",
        "from_name": "吉林省安委办",
        "message_id_domain": DOMAIN,
        "pool_size": 2,
        "timeout": 5.0,
    }
    fields.update(changes)
    return SmtpSettings(**fields)


def render(env: Envelope, **changes: Any) -> bytes:
    fields: dict[str, Any] = {
        "from_addr": "ajw@example.gov.cn",
        "from_name": "吉林省安委办",
        "message_id_domain": DOMAIN,
        "date": FIXED_NOW,
    }
    fields.update(changes)
    return message_bytes(env, **fields)


def assert_wire_clean(raw: bytes) -> None:
    """7-bit, CRLF only, lines within RFC 5322's 78 characters (encoded-words: 76).

    The one exception: a field's first line holding a single unbreakable token (a long
    MIME type, Message-ID, X-Campaign-Key) stays whole rather than fold after the colon.
    """
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    lines = raw.split(b"\r\n")
    for line in lines:
        if len(line) > 78:
            assert len(line) <= 998 and line.count(b" ") == 1 and line[:1] not in b" \t", line
            assert b"=?" not in line
        if b"=?" in line:
            assert len(line) <= 76, line


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


@pytest.fixture
def ca_bundle(ca: Any, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


async def send_and_receive(**envelope_changes: Any) -> EmailMessage:
    handler = RecordingHandler()
    async with running_server(handler) as server:
        channel = EmailChannel(settings(server), clock=lambda: FIXED_NOW)
        try:
            await channel.send(envelope(**envelope_changes))
        finally:
            await channel.aclose()
        return parse(await handler.next_message())


async def test_subject_and_display_names_decode_back_to_chinese() -> None:
    """A Chinese subject and display names survive the wire (RFC 2047) intact."""
    msg = await send_and_receive()
    assert msg["Subject"] == SUBJECT
    assert msg["From"].addresses[0].display_name == "吉林省安委办"
    assert msg["To"].addresses[0].display_name == "长春市应急管理局 张三"
    assert msg["To"].addresses[0].addr_spec == "zhangsan@163.com"


async def test_text_and_html_alternatives_both_arrive() -> None:
    """The plain-text part and the HTML alternative are both delivered."""
    msg = await send_and_receive()
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text is not None and "请于5月22日前报送" in text.get_content()
    assert html is not None and "<b>5月22日</b>" in html.get_content()


async def test_message_id_date_and_key_header_come_from_key_and_clock() -> None:
    """Message-ID is message_id_for(key, domain); Date is the injected clock."""
    msg = await send_and_receive()
    assert msg["Message-ID"] == message_id_for(KEY, DOMAIN)
    assert msg["Date"].datetime == FIXED_NOW
    assert msg["X-Campaign-Key"] == KEY


async def test_attachment_name_and_csv_bytes_round_trip() -> None:
    """The Chinese attachment name decodes back and the CSV bytes are unchanged."""
    msg = await send_and_receive()
    [part] = list(msg.iter_attachments())
    assert part.get_filename() == CSV_NAME
    assert part["Content-Type"].params["name"] == CSV_NAME  # RFC 2047 fallback
    assert part.get_payload(decode=True) == CSV


def test_message_is_seven_bit_clean_on_the_wire() -> None:
    """Headers and bodies are pure ASCII, so relays without 8BITMIME accept them."""
    msg = build_message(
        envelope(),
        from_addr="ajw@example.gov.cn",
        from_name="吉林省安委办",
        message_id_domain=DOMAIN,
        date=FIXED_NOW,
    )
    raw = msg.as_bytes(policy=email.policy.SMTP)
    assert raw.isascii()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78


def test_header_injection_is_permanent() -> None:
    """A CR/LF smuggled into the subject is refused as a permanent error."""
    with pytest.raises(PermanentDeliveryError):
        build_message(
            envelope(subject="hi\r\nBcc: victim@example.org"),
            from_addr="ajw@example.gov.cn",
            from_name="",
            message_id_domain=DOMAIN,
            date=FIXED_NOW,
        )


async def test_4xx_is_transient_then_next_send_succeeds() -> None:
    """A 451 on DATA is transient (code kept); the retry on a fresh session lands."""
    handler = ScriptedDataHandler("451 4.3.0 try again later")
    async with running_server(handler) as server:
        channel = EmailChannel(settings(server))
        try:
            with pytest.raises(TransientDeliveryError) as caught:
                await channel.send(envelope())
            assert caught.value.code == "451"
            result = await channel.send(envelope())
        finally:
            await channel.aclose()
        assert result.provider_id == message_id_for(KEY, DOMAIN)
        assert parse(await handler.next_message())["X-Campaign-Key"] == KEY


async def test_5xx_on_data_is_permanent() -> None:
    """A 554 on DATA is a permanent failure carrying the code."""
    async with running_server(ScriptedDataHandler("554 5.7.1 rejected")) as server:
        channel = EmailChannel(settings(server))
        try:
            with pytest.raises(PermanentDeliveryError) as caught:
                await channel.send(envelope())
        finally:
            await channel.aclose()
    assert caught.value.code == "554"
    assert not isinstance(caught.value, ChannelConfigError)


async def test_refused_recipient_550_is_permanent() -> None:
    """An unknown mailbox (550 on RCPT) is a permanent failure with code 550."""
    async with running_server(RefusingRcptHandler("550 5.1.1 no such user")) as server:
        channel = EmailChannel(settings(server))
        try:
            with pytest.raises(PermanentDeliveryError) as caught:
                await channel.send(envelope())
        finally:
            await channel.aclose()
    assert caught.value.code == "550"


async def test_envelope_names_the_sender_the_recipient_and_the_size() -> None:
    """MAIL FROM is the configured sender with SIZE, RCPT TO the envelope's address."""
    handler = RecordingHandler()
    async with running_server(handler) as server:
        channel = EmailChannel(settings(server))
        try:
            await channel.send(envelope())
        finally:
            await channel.aclose()
        raw = await handler.next_message()
    sender, recipients, options = handler.envelopes[0]
    assert (sender, recipients) == ("ajw@example.gov.cn", ["zhangsan@163.com"])
    assert options == [f"SIZE={len(raw)}"]


async def test_an_address_outside_the_plain_form_is_quoted_as_aiosmtplib_does() -> None:
    """A quoted local part reaches RCPT TO the way aiosmtplib's own rcpt sends it."""
    handler = RecordingHandler()
    async with running_server(handler) as server:
        channel = EmailChannel(settings(server))
        try:
            await channel.send(envelope(address='"zhang san"@163.com'))
        finally:
            await channel.aclose()
    assert handler.envelopes[0][1] == ['"zhang san"@163.com']


async def test_refused_sender_is_permanent_and_the_session_is_reset() -> None:
    """A 550 on MAIL FROM is permanent (code 550) and the envelope is reset for reuse."""
    handler = RefusingMailHandler("550 5.7.1 sender not allowed")
    async with running_server(handler) as server:
        channel = EmailChannel(settings(server, pool_size=1))
        try:
            with pytest.raises(PermanentDeliveryError) as caught:
                await channel.send(envelope())
        finally:
            await channel.aclose()
    assert caught.value.code == "550"
    assert isinstance(caught.value.__cause__, aiosmtplib.SMTPSenderRefused)
    assert handler.resets == 1


async def test_a_server_silent_mid_transaction_fails_the_attempt_at_its_timeout() -> None:
    """No reply to RCPT: the attempt ends transient at the channel's timeout, not later."""
    handler = StallingRcptHandler()
    async with running_server(handler) as server:
        channel = EmailChannel(settings(server, timeout=0.5))
        started = asyncio.get_running_loop().time()
        try:
            with pytest.raises(TransientDeliveryError):
                await channel.send(envelope())
        finally:
            handler.release.set()
            await channel.aclose()
    assert asyncio.get_running_loop().time() - started < 3.0


async def test_dropped_connection_is_transient_and_not_resent() -> None:
    """A hang-up after DATA is transient and the channel does not resend on its own."""
    handler = DroppingHandler()
    async with running_server(handler) as server:
        channel = EmailChannel(settings(server))
        try:
            with pytest.raises(TransientDeliveryError):
                await channel.send(envelope())
        finally:
            await channel.aclose()
    assert handler.data_commands == 1


async def test_pool_reuses_connections_for_concurrent_sends() -> None:
    """Eight concurrent sends use at most pool_size server connections."""
    handler = RecordingHandler()
    async with running_server(handler) as server:
        channel = EmailChannel(settings(server, pool_size=2))
        try:
            for batch in range(2):
                keys = [f"{KEY}/{batch}/{i}" for i in range(4)]
                await asyncio.gather(*(channel.send(envelope(k)) for k in keys))
        finally:
            await channel.aclose()
        assert handler.messages.qsize() == 8
        assert server.connections <= 2


async def test_reconnects_when_pooled_connection_was_lost() -> None:
    """A pooled client whose connection is gone reconnects before sending."""
    handler = RecordingHandler()
    async with running_server(handler) as server:
        channel = EmailChannel(settings(server, pool_size=1))
        try:
            await channel.send(envelope())
            server.hang_up_all()
            await handler.next_message()
            await channel.send(envelope(f"{KEY}/again"))
        finally:
            await channel.aclose()
        assert handler.data_commands == 2
        assert server.connections == 2


async def test_busy_session_is_not_probed() -> None:
    """Back-to-back sends on one pooled session go without a NOOP round trip each."""
    handler = RecordingHandler()
    async with running_server(handler) as server:
        channel = EmailChannel(settings(server, pool_size=1))
        try:
            for i in range(3):
                await channel.send(envelope(f"{KEY}/{i}"))
        finally:
            await channel.aclose()
        assert handler.data_commands == 3
        assert handler.noop_commands == 0


async def test_idle_session_is_probed_before_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pooled session idle past PROBE_IDLE is checked with NOOP before MAIL FROM."""
    monkeypatch.setattr(email_channel, "PROBE_IDLE", 0.0)
    handler = RecordingHandler()
    async with running_server(handler) as server:
        channel = EmailChannel(settings(server, pool_size=1))
        try:
            await channel.send(envelope())
            await channel.send(envelope(f"{KEY}/again"))
        finally:
            await channel.aclose()
        assert handler.noop_commands == 1
        assert server.connections == 1


async def test_starttls_when_configured(server_tls: ssl.SSLContext, ca_bundle: str) -> None:
    """security="starttls" upgrades a server that requires STARTTLS."""
    handler = RecordingHandler()
    async with running_server(handler, starttls_context=server_tls) as server:
        channel = EmailChannel(settings(server, security="starttls", cert_bundle=ca_bundle))
        try:
            await channel.send(envelope())
        finally:
            await channel.aclose()
        assert parse(await handler.next_message())["Subject"] == SUBJECT


async def test_implicit_tls_when_configured(server_tls: ssl.SSLContext, ca_bundle: str) -> None:
    """security="tls" speaks TLS from the first byte (port 465 style)."""
    handler = RecordingHandler()
    async with running_server(handler, implicit_tls_context=server_tls) as server:
        channel = EmailChannel(settings(server, security="tls", cert_bundle=ca_bundle))
        try:
            await channel.send(envelope())
        finally:
            await channel.aclose()
        assert parse(await handler.next_message())["Subject"] == SUBJECT


async def test_untrusted_certificate_is_config_error(
    server_tls: ssl.SSLContext,
) -> None:
    """A certificate from an unknown CA is a configuration error, not a retry."""
    handler = RecordingHandler()
    async with running_server(handler, implicit_tls_context=server_tls) as server:
        channel = EmailChannel(settings(server, security="tls"))
        try:
            with pytest.raises(ChannelConfigError, match="TLS"):
                await channel.send(envelope())
        finally:
            await channel.aclose()


async def test_wrong_password_is_config_error(server_tls: ssl.SSLContext, ca_bundle: str) -> None:
    """A 535 authentication failure is a configuration error."""
    auth = password_authenticator(b"ajw", b"right-password")
    async with running_server(
        RecordingHandler(), starttls_context=server_tls, authenticator=auth
    ) as server:
        channel = EmailChannel(
            settings(
                server,
                security="starttls",
                cert_bundle=ca_bundle,
                username="ajw",
                password_env="SMTP_PASSWORD",
                environ={"SMTP_PASSWORD": "wrong-password"},
            )
        )
        try:
            with pytest.raises(ChannelConfigError) as caught:
                await channel.send(envelope())
        finally:
            await channel.aclose()
    assert caught.value.code == "535"


async def test_right_password_from_env_authenticates(
    server_tls: ssl.SSLContext, ca_bundle: str
) -> None:
    """The password read from the injected environment logs in and the mail lands."""
    handler = RecordingHandler()
    auth = password_authenticator(b"ajw", b"right-password")
    async with running_server(handler, starttls_context=server_tls, authenticator=auth) as server:
        channel = EmailChannel(
            settings(
                server,
                security="starttls",
                cert_bundle=ca_bundle,
                username="ajw",
                password_env="SMTP_PASSWORD",
                environ={"SMTP_PASSWORD": "right-password"},
            )
        )
        try:
            await channel.send(envelope())
        finally:
            await channel.aclose()
        assert parse(await handler.next_message())["Subject"] == SUBJECT


def test_password_never_in_repr_or_str() -> None:
    """Neither the settings nor the channel reveal the password when printed."""
    s = SmtpSettings(
        host="smtp.163.com",
        port=465,
        security="tls",
        from_addr="ajw@163.com",
        username="ajw@163.com",
        password_env="SMTP_PASSWORD",
        environ={"SMTP_PASSWORD": "s3cr3t-auth-code"},
    )
    channel = EmailChannel(s)
    shown = " ".join([repr(s), str(s), repr(channel), str(channel), repr(vars(s))])
    assert "s3cr3t-auth-code" not in shown
    assert s.password is not None and s.password.reveal() == "s3cr3t-auth-code"


def test_missing_password_variable_is_config_error() -> None:
    """A username whose password variable is unset fails at construction."""
    with pytest.raises(ChannelConfigError, match="SMTP_PASSWORD"):
        SmtpSettings(
            host="smtp.163.com",
            port=465,
            security="tls",
            from_addr="ajw@163.com",
            username="ajw@163.com",
            password_env="SMTP_PASSWORD",
            environ={},
        )


@pytest.mark.parametrize(
    ("exc", "expected", "code"),
    [
        (
            aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(450, "busy", "a@b.c")]
            ),
            TransientDeliveryError,
            "450",
        ),
        (aiosmtplib.SMTPReadTimeoutError("slow"), TransientDeliveryError, ""),
        (ValueError("bad address"), PermanentDeliveryError, ""),
        (aiosmtplib.SMTPAuthenticationError(535, "no"), ChannelConfigError, "535"),
    ],
)
def test_classification_table(exc: Exception, expected: type, code: str) -> None:
    """The stack.md section 3 table maps each failure to the right error class."""
    error = classify(exc)
    assert type(error) is expected
    assert error.code == code


def test_message_bytes_round_trip_through_bytes_parser() -> None:
    """Subject, names, both bodies and every attachment decode back unchanged."""
    text = "长春市应急管理局 张三 您好：\r\n请于5月22日前报送联络员反馈表。\n" * 20
    html = "<p>请于<b>5月22日</b>前报送。</p>\n" * 40
    raw = render(
        envelope(
            text=text,
            html=html,
            attachments=(
                Attachment(CSV_NAME, CSV, "text/csv"),
                Attachment(XLSX_NAME, XLSX, XLSX_MIME),
            ),
        )
    )
    assert_wire_clean(raw)
    msg = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    assert not msg.defects
    assert msg["Subject"] == SUBJECT
    [sender] = msg["From"].addresses
    [recipient] = msg["To"].addresses
    assert (sender.display_name, sender.addr_spec) == ("吉林省安委办", "ajw@example.gov.cn")
    assert (recipient.display_name, recipient.addr_spec) == (
        "长春市应急管理局 张三",
        "zhangsan@163.com",
    )
    assert msg["Date"].datetime == FIXED_NOW
    assert msg["Message-ID"] == message_id_for(KEY, DOMAIN)
    assert msg["X-Campaign-Key"] == KEY
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "multipart/mixed"
    plain = msg.get_body(preferencelist=("plain",))
    rich = msg.get_body(preferencelist=("html",))
    assert plain is not None and rich is not None
    # As EmailMessage.set_content did: LF line ends and one final LF.
    assert plain.get_content() == text.replace("\r\n", "\n")
    assert rich.get_content() == html
    for part in (plain, rich):
        assert part["Content-Transfer-Encoding"] == "base64"
        assert part.get_content_charset() == "utf-8"
    csv, xlsx = msg.iter_attachments()
    assert csv.get_content_type() == "text/csv"
    assert xlsx.get_content_type() == XLSX_MIME  # long type: folded, not mangled
    for part, name, data in ((csv, CSV_NAME, CSV), (xlsx, XLSX_NAME, XLSX)):
        assert part.get_filename() == name  # RFC 2231 filename*=
        assert part["Content-Type"].params["name"] == name  # RFC 2047 name= fallback
        assert part.get_payload(decode=True) == data
    assert b"filename*0*=utf-8''" in raw and b'name="=?utf-8?b?' in raw


def test_single_part_message_without_html_or_attachments() -> None:
    """Text only: the top level is the base64 text/plain part itself."""
    raw = render(envelope(html=None, attachments=()))
    assert_wire_clean(raw)
    msg = parse(raw)
    assert msg.get_content_type() == "text/plain"
    assert msg["Content-Transfer-Encoding"] == "base64"
    assert msg.get_content() == "请于5月22日前报送。\n"


@pytest.mark.parametrize(
    ("subject", "name", "key", "filename"),
    [
        ("【提醒】" + "请于5月22日前报送联络员反馈表" * 4, "吉林省长春市应急管理局", KEY, CSV_NAME),
        (
            "Reminder: please submit the liaison feedback form before 22 May, thanks",
            'Zhang, San "Z."',
            KEY + "/" + "changchun-emergency-management-bureau" * 2,
            "overdue-units-of-jilin-province-for-the-third-week-of-may-2024.csv",
        ),
        ("   spaced\tsubject  ", "Jilin Office", "2024/联络员/张三/email", "=?x?= a.csv"),
        ("", "", KEY, ""),
    ],
)
def test_long_and_odd_headers_fold_and_decode_back(
    subject: str, name: str, key: str, filename: str
) -> None:
    """Long or unusual values stay within 78 columns and parse back to themselves."""
    env = envelope(
        key=key,
        subject=subject,
        recipient_name=name,
        attachments=(Attachment(filename, CSV, "text/csv"),),
    )
    raw = render(env)
    assert_wire_clean(raw)
    msg = parse(raw)
    assert msg["Subject"] == subject
    assert msg["To"].addresses[0].display_name == name
    assert msg["X-Campaign-Key"] == campaign_key_header(key)  # plain ASCII
    assert urllib.parse.unquote(msg["X-Campaign-Key"]) == key
    [part] = list(msg.iter_attachments())
    assert part.get_filename() == filename
    assert part["Content-Type"].params["name"] == filename


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": "hi\nBcc: victim@example.org"},
        {"subject": "hi\rBcc: victim@example.org"},
        {"recipient_name": "张三\r\nBcc: victim@example.org"},
        {"address": "zhangsan@163.com\r\nBcc: victim@example.org"},
        {"key": f"{KEY}\r\nBcc: victim@example.org"},
        {"attachments": (Attachment("a\r\nBcc: x.csv", CSV, "text/csv"),)},
        {"attachments": (Attachment("附件\n.csv", CSV, "text/csv"),)},
        {"attachments": (Attachment("a.csv", CSV, "text/csv\r\nBcc: x"),)},
    ],
)
def test_line_breaks_in_any_header_value_are_permanent(changes: dict[str, Any]) -> None:
    """CR or LF in any value that becomes a header is refused, never sent."""
    with pytest.raises(PermanentDeliveryError, match="CR or LF"):
        render(envelope(**changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"from_name": "安委办\r\nBcc: victim@example.org"},
        {"from_addr": "ajw@example.gov.cn\nBcc: victim@example.org"},
        {"message_id_domain": "example.org\r\nBcc: victim@example.org"},
    ],
)
def test_line_breaks_in_sender_settings_are_permanent(changes: dict[str, Any]) -> None:
    """The sender name, address and Message-ID domain are checked as well."""
    with pytest.raises(PermanentDeliveryError):
        render(envelope(), **changes)


@pytest.mark.parametrize("address", ["", "not an address", "a@b@c", "张三@例子.中国"])
def test_unusable_address_is_permanent(address: str) -> None:
    """Unparseable or non-ASCII addresses are a permanent error, not a crash."""
    with pytest.raises(PermanentDeliveryError):
        render(envelope(address=address))


def test_naive_date_is_permanent() -> None:
    """A date without a time zone is refused."""
    with pytest.raises(PermanentDeliveryError, match="timezone"):
        render(envelope(), date=datetime(2024, 5, 15, 8, 0))  # noqa: DTZ001


async def test_channel_sends_exactly_message_bytes() -> None:
    """The wire carries message_bytes' output (boundaries aside), as the outbox does."""
    handler = RecordingHandler()
    async with running_server(handler) as server:
        channel = EmailChannel(settings(server), clock=lambda: FIXED_NOW)
        try:
            await channel.send(envelope())
        finally:
            await channel.aclose()
        received = await handler.next_message()
    expected = render(envelope())
    assert BOUNDARY.sub(b"B", received) == BOUNDARY.sub(b"B", expected)
