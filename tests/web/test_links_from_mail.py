"""Personal links taken from the e-mails the daemon's cycle writes (issue 10), through the
console's /l/ route: revoking a person refuses the old e-mail's link, the next one works."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx

from service.clock import VirtualClock
from service.cycle import Reconciler
from service.web.state import WebState
from tests.conftest import local

from .conftest import links_in_outbox

MAIL = "changchun-liaison@example.org"


async def test_revoking_refuses_the_old_mail_link_and_the_next_mail_works(
    client: httpx.AsyncClient,
    reconciler: Reconciler,
    web_state: WebState,
    web_clock: VirtualClock,
    tmp_path: Path,
) -> None:
    """Monday's link opens the console; after revoke_links it is refused, Thursday's works."""
    folder = tmp_path / "outbox" / "email"
    await reconciler.run_cycle("test")  # Monday 06-26 10:00
    [monday] = links_in_outbox(folder, MAIL)
    assert (await client.get(urlsplit(monday).path)).status_code == 303
    await web_state.accounts.revoke_links("changchun-liaison")
    web_clock.set(local("2023-06-29T09:00"))  # W26's first reminder
    await reconciler.run_cycle("test")
    first, thursday = links_in_outbox(folder, MAIL)
    assert first == monday and thursday != monday
    assert (await client.get(urlsplit(monday).path)).status_code == 403
    assert (await client.get(urlsplit(thursday).path)).status_code == 303
