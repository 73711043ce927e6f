"""E-mail as Chinese clients send it is decoded: charsets, transfer encodings, forwards."""

from __future__ import annotations

import base64
import email
import email.policy
from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st

from service.intake.mail import parse_mail
from tests.intake.conftest import make_mail, progress_form

XLSX = progress_form("白山市安委会办公室", [1, 2])


def _foxmail_gb2312(text: str, filename: str) -> bytes:
    """A hand-built message the way Foxmail writes it: GB2312 encoded words, base64 body,
    the attachment name as an encoded word inside the quoted parameter."""
    enc = base64.b64encode(text.encode("gb18030")).decode()
    name = base64.b64encode(filename.encode("gb18030")).decode()
    att = base64.encodebytes(XLSX).decode()
    return (
        "From: =?GB2312?B?"
        + base64.b64encode("白山联络员".encode("gb2312")).decode()
        + "?= <Baishan-Liaison@Example.org>\r\n"
        "Subject: =?GB2312?B?" + base64.b64encode("第22周进展".encode("gb2312")).decode() + "?=\r\n"
        "Date: Fri, 2 Jun 2023 09:30:00 +0800\r\n"
        "Message-ID: <fox-1@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        '--B\r\nContent-Type: text/plain; charset="gb2312"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n" + enc + "\r\n"
        '--B\r\nContent-Type: application/octet-stream; name="=?GB2312?B?' + name + '?="\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="=?GB2312?B?'
        + name
        + '?="\r\n\r\n'
        + att
        + "\r\n--B--\r\n"
    ).encode("ascii")


def test_gb2312_headers_body_and_attachment_name_are_decoded() -> None:
    """Subject, sender name, body (with a GBK-only character) and file name decode."""
    mail = parse_mail(_foxmail_gb2312("本周数据见附件，请查收。镕", "附件2白山市.xlsx"))
    assert (mail.subject, mail.sender_name, mail.sender) == (
        "第22周进展",
        "白山联络员",
        "baishan-liaison@example.org",
    )
    assert "镕" in mail.text
    assert [(a.filename, a.data) for a in mail.attachments] == [("附件2白山市.xlsx", XLSX)]


def test_quoted_printable_body_is_decoded() -> None:
    """A quoted-printable UTF-8 body reads as text."""
    msg = EmailMessage()
    msg["From"] = "a@example.org"
    msg.set_content("进展情况：已开展宣传活动3场。", cte="quoted-printable")
    assert "已开展宣传活动3场" in parse_mail(msg.as_bytes()).text


def test_html_only_mail_gives_its_text() -> None:
    """An HTML-only mail (no text part) yields the visible text, without markup or styles."""
    raw = make_mail("a@example.org", body="本周无活动<style>p{}</style>", html=True)
    mail = parse_mail(raw)
    assert "本周无活动" in mail.text and "<" not in mail.text and "p{}" not in mail.text


def test_forwarded_message_attachments_are_found() -> None:
    """A liaison's mail forwarded as message/rfc822 still yields its spreadsheet."""
    inner = make_mail("baishan-liaison@example.org", [("周报.xlsx", XLSX)])
    outer = EmailMessage()
    outer["From"] = "office@example.org"
    outer["Subject"] = "Fw: 周报"
    outer.set_content("转发")
    outer.add_attachment(email.message_from_bytes(inner, policy=email.policy.default))
    mail = parse_mail(outer.as_bytes())
    assert [(a.filename, a.data) for a in mail.attachments] == [("周报.xlsx", XLSX)]


def test_base64_encoded_forward_is_unpacked() -> None:
    """A forwarded message sent base64-encoded (as some clients do) is still read."""
    inner = make_mail("baishan-liaison@example.org", [("周报.xlsx", XLSX)])
    outer = EmailMessage()
    outer["From"] = "office@example.org"
    outer.set_content("转发")
    outer.add_attachment(inner, maintype="message", subtype="rfc822")
    mail = parse_mail(outer.as_bytes())
    assert [(a.filename, a.data) for a in mail.attachments] == [("周报.xlsx", XLSX)]


def test_gbk_body_labelled_gb2312_is_not_garbled() -> None:
    """Clients label GBK text as gb2312: decoding uses the GB18030 superset."""
    raw = make_mail("a@example.org", body="镕", charset="gbk")
    raw = raw.replace(b'charset="gbk"', b'charset="gb2312"')
    assert "镕" in parse_mail(raw).text


def test_missing_or_broken_date_leaves_no_date() -> None:
    """A Date header that cannot be parsed is ignored (intake then uses the clock)."""
    raw = make_mail("a@example.org").replace(b"Date: ", b"Date: not a date X")
    assert parse_mail(raw).date is None


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=1500))
def test_arbitrary_bytes_parse_without_raising(raw: bytes) -> None:
    """Whatever the mailbox holds, parsing yields a Mail (intake then decides)."""
    mail = parse_mail(raw)
    assert mail.key


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=2000), st.binary(min_size=1, max_size=6))
def test_corrupted_mail_parses_without_raising(at: int, junk: bytes) -> None:
    """A real message with bytes overwritten (broken base64, headers) still parses."""
    raw = _foxmail_gb2312("本周数据见附件", "附件2.xlsx")
    parse_mail(raw[:at] + junk + raw[at + len(junk) :])


def test_a_charset_name_with_a_nul_byte_falls_back_to_utf8() -> None:
    """An encoded word whose charset holds a NUL (a damaged header) still gives text."""
    subject = "=?\x00tf-8?B?" + base64.b64encode("周报".encode()).decode() + "?="
    raw = make_mail("x@example.org", subject=subject)
    assert parse_mail(raw).subject == "周报"
