"""Personal links in e-mails (issue 10): signed for the recipient with the store's current
link version and the injected clock; never in SMS; none without SERVICE_LINK_SECRET."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from service.channels.base import Envelope
from service.links import LinkSigner, PersonLinks
from service.store.accounts import Accounts

from .test_dispatcher import World, local, one
from .test_dispatcher import world as world  # the fixture

SECRET = "k" * 32
LIAISON, MAIL = "changchun-liaison", "changchun-liaison@example.org"
_URL = re.compile(r"https?://\S+/l/([A-Za-z0-9_.\-]+)")


def links_on(world: World) -> tuple[LinkSigner, Accounts]:
    """Give the world's dispatcher personal links; returns the signer and the accounts."""
    signer = LinkSigner(SECRET)
    accounts = Accounts(world.engine, world.clock)
    world.dispatcher.links = PersonLinks(signer, accounts, "https://aqsc.example.org")
    return signer, accounts


async def reminder_to_liaison(world: World, since: str | None, now: str) -> Envelope:
    """Plan, then send at ``now``, the liaison's weekly-progress reminder e-mail."""
    await world.insert(one(world, LIAISON, "email", since, now, "reminder1-1wd"))
    await world.at(now)
    await world.dispatcher.run()
    [mail] = world.email.to(MAIL)[-1:]
    return mail


def token_in(text: str) -> str:
    match = _URL.search(text)
    assert match, f"no personal link in:\n{text}"
    return match.group(1)


@pytest.fixture
def w22(world: World) -> World:
    """The world with the clock on 2023-06-01 09:00 (W22's first reminder)."""
    world.clock.set(local("2023-06-01T09:00"))
    return world


async def test_reminder_email_carries_a_link_for_its_recipient(w22: World) -> None:
    """A reminder e-mail's link verifies for its recipient with version 1, 45 days long."""
    signer, _ = links_on(w22)
    mail = await reminder_to_liaison(w22, "2023-06-01T08:59", "2023-06-01T09:00")
    assert "已报送？点此登记（无需密码，45天内有效）：https://aqsc.example.org/l/" in mail.text
    token = token_in(mail.text)
    assert mail.html is not None and f'href="https://aqsc.example.org/l/{token}"' in mail.html
    claims = signer.verify(token, w22.clock.now())
    assert (claims.person, claims.version) == (LIAISON, 1)
    assert claims.expires == local("2023-06-01T09:00") + timedelta(days=45)


async def test_stored_body_hides_the_link(w22: World) -> None:
    """The outbox keeps the e-mail's text without the token (operators read it)."""
    links_on(w22)
    mail = await reminder_to_liaison(w22, "2023-06-01T08:59", "2023-06-01T09:00")
    stored = next(r for r in (await w22.rows()).values() if r["recipient_id"] == LIAISON)
    assert token_in(mail.text) not in stored["body"]
    assert "（个人链接，已隐去）" in stored["body"]


async def test_sms_never_carries_the_link(w22: World) -> None:
    """The same moment's SMS to the liaison has no link, in its text or its variables."""
    links_on(w22)
    await w22.insert(
        one(w22, LIAISON, "sms", "2023-06-01T08:59", "2023-06-01T09:00", "reminder1-1wd")
    )
    await w22.dispatcher.run()
    [sms] = w22.sms.sent
    assert "/l/" not in sms.text and not any("/l/" in v for v in sms.sms_params.values())


async def test_revoked_person_gets_a_new_version_and_the_old_link_is_refused(w22: World) -> None:
    """After revoke_links the next e-mail carries version 2; a version-1 token is stale."""
    signer, accounts = links_on(w22)
    first = await reminder_to_liaison(w22, "2023-06-01T08:59", "2023-06-01T09:00")
    old = signer.verify(token_in(first.text), w22.clock.now())
    assert await accounts.revoke_links(LIAISON) == 2
    second = await reminder_to_liaison(w22, "2023-06-08T08:59", "2023-06-08T09:00")
    new = signer.verify(token_in(second.text), w22.clock.now())
    assert new.version == 2 == await accounts.link_version(LIAISON)
    assert old.version != await accounts.link_version(LIAISON)  # the console refuses it


async def test_no_secret_means_no_link_and_the_usual_words(w22: World) -> None:
    """Without links configured the reminder is sent as before, asking nothing new."""
    mail = await reminder_to_liaison(w22, "2023-06-01T08:59", "2023-06-01T09:00")
    assert "/l/" not in mail.text and "点此登记" not in mail.text
    assert "如已报送，请忽略本提醒。" in mail.text


async def test_link_versions_reads_many_people_at_once(w22: World) -> None:
    """link_versions answers 1 for people never revoked and the stored version otherwise."""
    _, accounts = links_on(w22)
    await accounts.revoke_links("jilin-city-liaison")
    assert await accounts.link_versions([LIAISON, "jilin-city-liaison"]) == {
        LIAISON: 1,
        "jilin-city-liaison": 2,
    }


async def test_supervisor_digest_carries_the_supervisor_link(world: World) -> None:
    """A digest e-mail carries its supervisor's link (it opens the live overdue list)."""
    signer, _ = links_on(world)
    slot = local("2023-05-23T09:30")
    await world.at(slot)
    await world.insert(
        [
            m
            for m in world.runtime.planner.digest_messages(slot, {}, slot)
            if (m.recipient_id, m.channel) == ("yanbian-supervisor", "email")
        ]
    )
    await world.dispatcher.run()
    [mail] = world.email.sent
    assert "查看最新逾期名单（无需密码，45天内有效）：" in mail.text
    assert signer.verify(token_in(mail.text), slot).person == "yanbian-supervisor"
