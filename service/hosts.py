"""Which hosts only this machine reaches: the one rule behind every plaintext exception
(SMTP, SMS, IMAP) and behind doctor's check that links point somewhere people can open."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1, localhost (and ``*.localhost``); brackets of ``[::1]`` allowed."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
