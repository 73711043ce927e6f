"""Files with personal data belong to the service's user only: folders 0700, files 0600.

The state folder holds the database (names, mobiles, addresses, message bodies) and the
file outbox (whole e-mails and SMS texts). Modes are given where the files are created,
not left to the process umask (0022 by default: world-readable).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` if needed; every folder created here (parents too) is 0700."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        folder.mkdir(mode=DIR_MODE, exist_ok=True)
        folder.chmod(DIR_MODE)  # mkdir's mode is filtered by the umask
    return path


def private_opener(path: str, flags: int) -> int:
    """``open(..., opener=private_opener)``: a file created by that open is 0600."""
    return os.open(path, flags, FILE_MODE)


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists and nobody but its owner can read it (e.g. before SQLite
    creates it: its -wal and -shm files take the database file's mode)."""
    private_dir(path.parent)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(mode & ~0o077)
    return path
