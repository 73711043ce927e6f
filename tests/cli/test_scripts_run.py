"""Issue 12 point 1: scripts/run never touches the operator's state."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_script(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVICE_")}
    env.update(env_extra)
    return subprocess.run(
        [str(ROOT / "scripts" / "run")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )


def test_an_existing_folder_that_is_not_a_demo_is_refused(tmp_path: Path) -> None:
    """DEMO_STATE pointing at a folder the script did not make: exit 1, folder untouched."""
    precious = tmp_path / "state"
    precious.mkdir()
    (precious / "service.db").write_text("keep", encoding="utf-8")
    result = run_script({"DEMO_STATE": str(precious)})
    assert result.returncode == 1
    assert "不会删除" in result.stderr
    assert (precious / "service.db").read_text(encoding="utf-8") == "keep"


def test_the_demo_replays_into_its_own_folder(tmp_path: Path) -> None:
    """The operator's SERVICE_STATE_DIR stays untouched; the demo folder holds the outbox."""
    real = tmp_path / "real-state"
    real.mkdir()
    (real / "service.db").write_text("keep", encoding="utf-8")
    demo = tmp_path / "demo"
    env = {"SERVICE_STATE_DIR": str(real), "DEMO_STATE": str(demo), "UNTIL": "2023-05-23T00:00"}
    first = run_script(env)
    assert first.returncode == 0, first.stderr
    assert f"演示数据写入 / the demo writes only to: {demo}" in first.stderr
    assert (demo / "outbox" / "sms.jsonl").is_file() and (demo / "service.db").is_file()
    assert sorted(p.name for p in real.iterdir()) == ["service.db"]
    assert (real / "service.db").read_text(encoding="utf-8") == "keep"
    assert "[1/6]" in first.stderr and "[6/6]" in first.stderr
