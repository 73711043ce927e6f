"""Keeping received files: content-addressed, 0600, never a partial file at the final path."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import stat

import pytest

from service.intake import files
from service.intake.core import Intake


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_temporary_name_left_by_a_crashed_process_is_skipped(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stale .in- file with the name this process would use is left alone, not reused."""
    monkeypatch.setattr(files, "_TEMP_NAMES", itertools.count())
    sha = _sha(b"form")
    folder = intake.files / sha[:2]
    folder.mkdir(parents=True)
    stale = folder / f".in-{os.getpid()}-0"
    stale.write_bytes(b"half a file")
    path = intake._keep(sha, b"form")
    assert (path.read_bytes(), stale.read_bytes()) == (b"form", b"half a file")


def test_a_folder_removed_during_a_pass_is_made_again(intake: Intake) -> None:
    """The folders are made once per intake; if one disappears, the next file remakes it."""
    first, second = b"a" * 10, b"b" * 10
    intake._keep(_sha(first), first)
    shutil.rmtree(intake.files)
    assert intake._keep(_sha(second), second).read_bytes() == second


def test_kept_file_is_0600_whatever_the_umask(intake: Intake) -> None:
    """A permissive umask does not widen the kept file's mode."""
    old = os.umask(0)
    try:
        path = intake._keep(_sha(b"x"), b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".in-")]
