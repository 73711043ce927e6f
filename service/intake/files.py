"""Received files kept as they came: content-addressed under STATE/intake/, owner-only."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

_TEMP_NAMES = itertools.count()


class KeptFiles:
    """``root/ab/abcdef…`` (the SHA-256 of the bytes), mode 0600, folders 0700.

    A file is written under a temporary name and renamed, so the final path never holds
    part of a file. The folders are made once per instance (a mailbox pass keeps hundreds
    of files; each intake lives for one pass), and a file is created 0600 rather than
    chmod-ed afterwards: fewer system calls per file.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._folders: set[str] = set()  # root/xx folders known to exist

    def keep(self, sha: str, data: bytes) -> Path:
        folder = self.root / sha[:2]
        path = folder / sha
        if path.exists():
            return path
        while True:
            if sha[:2] not in self._folders:
                self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
                folder.mkdir(exist_ok=True, mode=0o700)
                self._folders.add(sha[:2])
            tmp = folder / f".in-{os.getpid()}-{next(_TEMP_NAMES)}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # left by a crashed process with the same pid
                continue
            except FileNotFoundError:  # the folder was removed meanwhile: make it again
                if sha[:2] not in self._folders:
                    raise
                self._folders.discard(sha[:2])
                continue
            break
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), 0o600)  # whatever the umask
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path
