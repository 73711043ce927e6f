"""Console pages on both backends: sign-in, dashboard, unit page, liaison page, overdue."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from service.cycle import Reconciler
from service.store.ledger import Ledger
from service.web.state import WebState

from .conftest import PASSWORD, Login, csrf_of


async def test_anonymous_page_goes_to_login(client: httpx.AsyncClient) -> None:
    """A page asked for without a session redirects to the login form."""
    r = await client.get("/dashboard")
    assert r.status_code == 303 and r.headers["location"] == "/login"


async def test_operator_sees_dashboard_in_chinese(login: Login) -> None:
    """The operator's dashboard lists open obligations with overdue counts."""
    c = await login("operator")
    r = await c.get("/dashboard")
    assert r.status_code == 200
    assert "活动进展情况统计表" in r.text and "逾期" in r.text and "<progress" in r.text


async def test_wrong_password_is_refused_and_throttled(client: httpx.AsyncClient, users) -> None:  # type: ignore[no-untyped-def]
    """After three failures even the right password is refused for a while."""
    for _ in range(3):
        page = await client.get("/login")
        r = await client.post(
            "/login", data={"name": "operator", "password": "nope", "csrf": csrf_of(page.text)}
        )
        assert r.status_code == 401 and "用户名或密码错误" in r.text
    page = await client.get("/login")
    r = await client.post(
        "/login", data={"name": "operator", "password": PASSWORD, "csrf": csrf_of(page.text)}
    )
    assert r.status_code == 429 and "尝试次数过多" in r.text


async def test_login_without_csrf_is_refused(client: httpx.AsyncClient, users) -> None:  # type: ignore[no-untyped-def]
    """A login form posted without the CSRF token is refused."""
    r = await client.post("/login", data={"name": "operator", "password": PASSWORD})
    assert r.status_code == 403


async def test_operator_records_a_submission(login: Login, ledger: Ledger) -> None:
    """Recording from the unit page writes to the ledger with the operator as actor."""
    c = await login("operator")
    page = await c.get("/units/changchun")
    r = await c.post(
        "/units/changchun/submissions",
        data={"csrf": csrf_of(page.text), "occurrence": "weekly-progress@2023-W25", "count": "1"},
    )
    assert r.status_code == 303
    rows = await ledger.history("changchun")
    assert [(x.period, x.source, x.recorded_by) for x in rows] == [
        ("2023-W25", "admin", "session:operator")
    ]
    page = await c.get("/units/changchun")
    assert "补报" in page.text  # done after the due moment


async def test_bad_count_names_the_field_and_writes_nothing(login: Login, ledger: Ledger) -> None:
    """A non-numeric count re-renders the page with a Chinese message; nothing is written."""
    c = await login("operator")
    page = await c.get("/units/changchun")
    r = await c.post(
        "/units/changchun/submissions",
        data={"csrf": csrf_of(page.text), "occurrence": "weekly-progress@2023-W25", "count": "x"},
    )
    assert r.status_code == 400 and "数量：必须是整数" in r.text
    assert await ledger.history("changchun") == []


async def test_retract_from_unit_page(login: Login, ledger: Ledger) -> None:
    """The office retracts a liaison's submission with a reason; the audit trail shows it."""
    from service.submissions import NewSubmission
    from tests.conftest import local

    [sid] = await ledger.record(
        [
            NewSubmission(
                "changchun",
                "weekly-progress",
                "2023-W26",
                1,
                local("2023-06-26T09:00"),
                "liaison-link",
            )
        ],
        "link:changchun-liaison",
    )
    c = await login("operator")
    page = await c.get("/units/changchun")
    assert "联络员链接" in page.text
    r = await c.post(
        "/units/changchun/retract",
        data={"csrf": csrf_of(page.text), "submission_id": str(sid), "reason": "重复报送"},
    )
    assert r.status_code == 303
    page = await c.get("/units/changchun")
    assert "已撤销（session:operator：重复报送）" in page.text
    assert (await ledger.history("changchun"))[0].retracted_at is not None


async def test_liaison_marks_item_submitted(link_client, ledger: Ledger) -> None:  # type: ignore[no-untyped-def]
    """已报送 on the liaison page records source liaison-link for the person's own unit."""
    c = await link_client("changchun-liaison")
    page = await c.get("/me")
    assert page.status_code == 200 and "长春市安委会办公室" in page.text
    assert 'action="/me/uploads" enctype="multipart/form-data"' in page.text
    r = await c.post(
        "/me/submissions",
        data={
            "csrf": csrf_of(page.text),
            "obligation": "weekly-progress",
            "period": "2023-W26",
            "note": "已邮件报送",
        },
    )
    assert r.status_code == 303 and r.headers["location"] == "/me?saved=1"
    [row] = await ledger.history("changchun")
    assert (row.period, row.source, row.recorded_by) == (
        "2023-W26",
        "liaison-link",
        "link:changchun-liaison",
    )


async def test_liaison_cannot_submit_for_unopened_period(link_client, ledger: Ledger) -> None:  # type: ignore[no-untyped-def]
    """A period that has not started yet is refused with a field message."""
    c = await link_client("changchun-liaison")
    page = await c.get("/me")
    r = await c.post(
        "/me/submissions",
        data={"csrf": csrf_of(page.text), "obligation": "monthly-leads", "period": "2023-09"},
    )
    assert r.status_code == 400 and "周期：该周期尚未开始" in r.text
    assert await ledger.history("changchun") == []


async def test_tampered_link_gets_plain_page_and_log_line(
    client: httpx.AsyncClient,
    web_state: WebState,
    web_clock,
    caplog,  # type: ignore[no-untyped-def]
) -> None:
    """A tampered token: 403 with a plain explanation, and a warning naming the reason."""
    from structlog.testing import capture_logs

    token = web_state.signer.issue("changchun-liaison", 1, web_clock.now())
    with capture_logs() as logs:
        r = await client.get(f"/l/{token[:-2]}xx")
    assert r.status_code == 403 and "链接无效或已过期" in r.text
    assert any(e.get("reason") == "tampered" for e in logs)
    assert token not in str(logs)


async def test_expired_link_is_refused(
    client: httpx.AsyncClient,
    web_state: WebState,
    web_clock,  # type: ignore[no-untyped-def]
) -> None:
    """A link past its lifetime is refused."""
    from datetime import timedelta

    token = web_state.signer.issue("changchun-liaison", 1, web_clock.now() - timedelta(days=46))
    r = await client.get(f"/l/{token}")
    assert r.status_code == 403


async def test_revoked_link_is_refused(
    client: httpx.AsyncClient,
    web_state: WebState,
    web_clock,  # type: ignore[no-untyped-def]
) -> None:
    """After revoke_links the person's earlier link no longer opens a session."""
    token = web_state.signer.issue("changchun-liaison", 1, web_clock.now())
    await web_state.accounts.revoke_links("changchun-liaison")
    r = await client.get(f"/l/{token}")
    assert r.status_code == 403


async def test_rotated_key_refuses_every_link(
    client: httpx.AsyncClient,
    web_state: WebState,
    web_clock,  # type: ignore[no-untyped-def]
) -> None:
    """A link signed with an old key is refused once the key changed."""
    from service.links import LinkSigner

    old = LinkSigner("o" * 32).issue("changchun-liaison", 1, web_clock.now())
    r = await client.get(f"/l/{old}")
    assert r.status_code == 403


async def test_supervisor_overdue_page_shows_scope_only(login: Login) -> None:
    """A supervisor of changchun sees its overdue units with liaison phones, not others'."""
    c = await login("sup-r")
    r = await c.get("/overdue")
    assert r.status_code == 200
    assert "农安县安委会办公室" in r.text and "+86" in r.text
    assert "吉林市安委会办公室" not in r.text


async def test_supervisor_exports_xlsx_and_csv(login: Login) -> None:
    """Overdue exports come as XLSX and CSV with the liaison's phone, formula-safe."""
    import io

    from openpyxl import load_workbook

    c = await login("sup-r")
    r = await c.get("/overdue.csv")
    assert r.status_code == 200 and r.content.startswith(b"\xef\xbb\xbf")
    text = r.content.decode("utf-8-sig")
    assert "农安县安委会办公室" in text and "吉林市" not in text
    r = await c.get("/overdue.xlsx")
    sheet = load_workbook(io.BytesIO(r.content)).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][0] == "事项" and any("农安县安委会办公室" in row for row in rows)
    # phones are text cells starting with '+', neutralised so no formula is ever stored
    assert all(not (isinstance(v, str) and v.startswith("+")) for row in rows[1:] for v in row)


async def test_security_headers_on_pages(client: httpx.AsyncClient) -> None:
    """Every response carries CSP without inline script, frame-ancestors none, no-referrer."""
    r = await client.get("/login")
    csp = r.headers["content-security-policy"]
    assert "script-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "<script" not in r.text


async def test_session_cookie_is_httponly_samesite(client: httpx.AsyncClient) -> None:
    """The session cookie is HttpOnly and SameSite=Lax."""
    r = await client.get("/login")
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie


async def test_liaison_page_shows_no_phone_numbers(link_client) -> None:  # type: ignore[no-untyped-def]
    """The liaison page shows no mobile number of anyone (only the office's desk phone)."""
    c = await link_client("changchun-liaison")
    page = await c.get("/me")
    assert "+86" not in page.text and "138000000" not in page.text


async def test_supervisor_person_link_opens_scope(link_client) -> None:  # type: ignore[no-untyped-def]
    """A supervisor from the directory enters by link and sees their own subtree."""
    c = await link_client("yanbian-supervisor")
    r = await c.get("/overdue")
    assert r.status_code == 200 and "延吉市安委会办公室" in r.text
    assert (await c.get("/units/changchun")).status_code == 403


async def test_masked_phone_outside_scope(login: Login) -> None:
    """The office-wide overdue page of a supervisor's parent scope is refused, not masked."""
    c = await login("sup-e")
    assert (await c.get("/overdue?scope=changchun")).status_code == 403
    assert (await c.get("/overdue.csv?scope=jilin")).status_code == 403


async def test_markup_in_a_note_is_escaped(login: Login) -> None:
    """Text from people (a note) is shown as text, never as markup."""
    c = await login("operator")
    page = await c.get("/units/changchun")
    await c.post(
        "/units/changchun/submissions",
        data={
            "csrf": csrf_of(page.text),
            "occurrence": "weekly-progress@2023-W25",
            "note": "<script>alert(1)</script>",
        },
    )
    page = await c.get("/units/changchun")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and "<script" not in page.text


async def test_liaison_reminders_name_channels_and_occurrences_in_chinese(
    link_client: Callable[[str], Awaitable[httpx.AsyncClient]],
    reconciler: Reconciler,
) -> None:
    """The liaison page's recent reminders read 邮件/短信 and the obligation's title, never
    ``weekly-progress@2023-W25``."""
    await reconciler.run_cycle("test")  # 06-26 10:00: the overdue bundle goes out
    client = await link_client("changchun-liaison")
    page = (await client.get("/me")).text
    recent = page.split("最近的提醒", 1)[1]
    assert "邮件" in recent and "短信" in recent and "活动进展情况统计表（2023-W25）" in recent
    assert "weekly-progress@" not in recent and ">email<" not in recent
