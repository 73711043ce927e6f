"""``service doctor``'s SMS check: a status query proves the credentials, sends nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.config import Settings
from service.doctor import check_channels
from tests.channels.conftest import ALIYUN_KEY_ID, ALIYUN_SECRET, AliyunFake, LoopbackServer

ROOT = Path(__file__).resolve().parents[2]


def settings_for(tmp_path: Path, server: LoopbackServer) -> Settings:
    channels = tmp_path / "channels.yaml"
    channels.write_text(
        "sms:\n  backend: aliyun\n"
        f"  access_key_id: {ALIYUN_KEY_ID}\n  secret_env: DOCTOR_ALIYUN_SECRET\n"
        f"  sign_name: 吉林省安委办\n  endpoint: {server.url}\n"
        "  allow_plaintext: true\n"  # the fake gateway is http:// on loopback
        "  templates:\n    reminder: {code: SMS_1, params: [unit]}\n",
        encoding="utf-8",
    )
    return Settings(
        schedule=ROOT / "schedules" / "jilin-2023.yaml",
        contacts=ROOT / "contacts",
        templates=ROOT / "templates",
        state_dir=tmp_path / "state",
        channels_file=channels,
    )


@pytest.mark.parametrize(("secret", "accepted"), [(ALIYUN_SECRET, True), ("wrong", False)])
async def test_sms_credentials_are_checked_by_a_query(
    tmp_path: Path,
    aliyun_server: LoopbackServer,
    monkeypatch: pytest.MonkeyPatch,
    secret: str,
    accepted: bool,
) -> None:
    """The right secret passes, a wrong one fails; only QuerySendDetails reaches the gateway."""
    monkeypatch.setenv("DOCTOR_ALIYUN_SECRET", secret)
    checks = await check_channels(
        settings_for(tmp_path, aliyun_server),
        None,
        offline=False,
        now=datetime.now(UTC),  # the channel queries from here to its own (real) today
    )
    by_key = {c.key: c for c in checks}
    assert by_key["channels"].ok, by_key["channels"].detail
    sms = by_key["sms"]
    assert sms.ok is accepted, sms.detail
    fake = aliyun_server.provider
    assert isinstance(fake, AliyunFake)
    assert fake.sends() == []
    assert len(fake.queries()) == (1 if accepted else 0)
