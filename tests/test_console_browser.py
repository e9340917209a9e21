"""The portal and console in a real browser (Debian's Chromium via Playwright) against a real `mdmsim serve`.

Few and fast: one server and one browser for the module; each test has its own browser context (cookies).
"""

from __future__ import annotations

import pytest
from kits.admin_kit import PASSWORD, p12_for
from kits.browser import ADMIN_PASSWORD, browser_fixture, page_fixture, start_server  # noqa: F401 (fixtures)

USER_PASSWORD = "portal password 1"
HOSTILE = '<img src=x onerror="window.__xss=1">"><script>window.__xss=1</script>'


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("browser") / "data")
    try:
        for user in ("alice", "bob"):
            assert server.api("POST", "/api/v2/users", {"userId": user, "displayName": HOSTILE,
                                                        "custom": {"USER_CUSTOM1": HOSTILE}})[0] == 201
            assert server.api("PUT", f"/api/v2/users/{user}/password", {"password": USER_PASSWORD})[0] == 200
        status, setting = server.api("POST", "/api/v2/settings", {
            "kind": "user_provided", "name": "signing", "purpose": "smime_signing", "displayName": HOSTILE})
        assert status == 201, setting
        server.setting_id = setting["id"]
        yield server
    finally:
        server.stop()


def sign_in(page, live, user: str, password: str = USER_PASSWORD) -> None:
    page.goto(live.url + "/user")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def upload(page, tmp_path, p12: bytes, password: str) -> None:
    path = tmp_path / "identity.p12"
    path.write_bytes(p12)
    form = page.locator("form[enctype='multipart/form-data']").first
    form.locator("input[name=p12]").set_input_files(str(path))
    form.locator("input[name=password]").fill(password)
    form.locator("button[type=submit]").click()


def test_wrong_password_then_sign_in(page, live):
    sign_in(page, live, "alice", "not it")
    assert "wrong user name or password" in page.locator("[role=alert]").inner_text()
    sign_in(page, live, "alice")
    assert page.locator("h1").inner_text().startswith("Settings")
    cookie = next(c for c in page.context.cookies() if c["name"] == "mdmsim_user")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read the session


def test_upload_refusal_then_happy_path_and_isolation(page, live, tmp_path, browser):
    sign_in(page, live, "alice")
    upload(page, tmp_path, p12_for("alice"), "wrong password")
    assert "wrong password for this P12 file" in page.locator("[role=alert]").inner_text()
    upload(page, tmp_path, p12_for("alice"), PASSWORD)
    assert "certificate uploaded" in page.locator("[role=status]").inner_text()
    row = page.locator(f"tr[data-setting='{live.setting_id}']")
    assert "CN=alice" in row.inner_text()
    other = browser.new_context(ignore_https_errors=True).new_page()
    try:
        sign_in(other, live, "bob")
        assert "No certificates uploaded." in other.content() and "CN=alice" not in other.content()
    finally:
        other.context.close()


def test_a_forged_form_is_refused(page, live):
    sign_in(page, live, "alice")
    page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(i => i.value = 'forged')")
    page.locator("form[action$='/logout'] button").click()
    assert "did not come from this site" in page.content()
    page.goto(live.url + "/user")
    assert page.locator("h1").inner_text().startswith("Settings")  # still signed in: nothing changed


def test_hostile_names_are_shown_as_text(page, live):
    sign_in(page, live, "alice")
    assert page.evaluate("window.__xss") is None
    assert HOSTILE in page.locator("select[name=setting]").inner_text()


def test_admin_console_sign_in_and_a_hostile_device_name(page, live):
    assert live.authenticate("UDID-HOSTILE-0001", HOSTILE) == 200
    page.goto(live.url + "/admin")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "Devices"
    row = page.locator("#devices tr", has_text="UDID-HOSTILE-0001")
    assert HOSTILE in row.inner_text()  # shown as text, not run
    row.locator("a").click()
    assert page.locator("h1").inner_text() == HOSTILE
    assert page.evaluate("window.__xss") is None
    page.click("text=Force check-in")
    assert "not pushed" in page.locator("[role=alert]").inner_text()  # no push token yet: nothing to push
