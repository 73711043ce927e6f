"""One daemon per SQLite state: an OS lock on a file next to the database.

Two ``service run`` (or ``simulate``) processes on one SQLite file would each send what
the other claimed once its lease looks expired to them. ``flock`` is released by the
kernel when its holder exits, however it exits (SIGKILL included): no stale lock to
clean up. PostgreSQL replicas share a database by design and take no lock.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError, Problem
from .private import FILE_MODE, private_dir
from .store.db import normalise_url

_held: dict[Path, tuple[int, int]] = {}  # lock file -> (fd, depth): re-entrant per process


def lock_path(db_url: str) -> Path | None:
    """The lock file of a SQLite database URL (None: not a SQLite file)."""
    url = normalise_url(db_url)
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if not path or path == ":memory:":
        return None
    return Path(f"{path}.lock")


@contextmanager
def exclusive_state(db_url: str) -> Iterator[None]:
    """Hold the state's lock for the duration; ConfigError names the holder's pid."""
    path = lock_path(db_url)
    if path is None:
        yield
        return
    with hold(path):
        yield


@contextmanager
def hold(path: Path) -> Iterator[None]:
    key = Path(os.path.realpath(path))
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
    else:
        private_dir(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                [
                    Problem(
                        str(path),
                        None,
                        "",
                        f"另一个服务进程（pid {holder}）正在使用这个状态目录；"
                        "同一个 SQLite 状态只能由一个 service run / simulate 使用，"
                        "请先停止它，或换一个状态目录",
                    )
                ]
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        _held[key] = (fd, 1)
    try:
        yield
    finally:
        fd, depth = _held[key]
        if depth > 1:
            _held[key] = (fd, depth - 1)
        else:
            del _held[key]
            os.close(fd)  # closing the last descriptor releases the flock
