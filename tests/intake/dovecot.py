"""A real Dovecot IMAP server for tests: own config, own folder, loopback only."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.polling import wait_until

DOVECOT = "/usr/sbin/dovecot"
PASSWORD = "secret-for-tests"


@dataclass
class Dovecot:
    host: str
    port: int
    base: Path

    @property
    def log(self) -> str:
        path = self.base / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(base: Path, port: int) -> str:
    return f"""
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# Tests log in with a wrong password on purpose: no delay, no growing per-IP penalty.
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 1
mail_location = maildir:{base}/mail/%u
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={base}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def start() -> tuple[Dovecot, subprocess.Popen[bytes]]:
    # Not under pytest's tmp_path: its parents are 0700 and the mail user must reach it.
    base = Path(tempfile.mkdtemp(prefix="dovecot-test-"))
    os.chmod(base, 0o755)
    for sub in ("run", "state", "mail", "home"):
        (base / sub).mkdir()
    for sub in ("mail", "home"):
        shutil.chown(base / sub, "dovecot", "dovecot")
    port = _free_port()
    conf = base / "dovecot.conf"
    conf.write_text(_config(base, port))
    with (base / "stderr.log").open("wb") as err:  # a file, not a pipe nobody drains
        proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stderr=err)
    server = Dovecot("127.0.0.1", port, base)

    def listening() -> bool:
        if proc.poll() is not None:
            err = (base / "stderr.log").read_text(errors="replace")
            raise RuntimeError(f"dovecot exited: {err}\n{server.log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_until(listening, 10, "dovecot to listen")
    return server, proc


def stop(server: Dovecot, proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    shutil.rmtree(server.base, ignore_errors=True)
