"""`mdmsim demo --web` and `mdmsim load --web` / `fleet --web` in a real browser (Debian's Chromium, Playwright).

Each command runs as the user runs it (a child process printing its URL); the tests wait on page conditions,
never sleep. A screenshot of each test's last page is kept in its tmp dir as the artefact.
"""

from __future__ import annotations

import email
import email.policy
import json
import urllib.error
import urllib.request
from itertools import pairwise

import pytest
from kits.browser import CHROMIUM, CHROMIUM_ARGS, start_live_command, start_server, sync_playwright

HOSTILE = '<img src=x onerror="window.__xss=1">"><script>window.__xss=1</script>'
WAIT = 60_000  # ms: a loaded shared machine; every wait ends as soon as its condition holds


@pytest.fixture(scope="module")
def browser():
    start = sync_playwright()
    with start() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT)
    page.on("dialog", lambda dialog: pytest.fail(f"a script ran: {dialog.message}"))
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    yield page
    page.screenshot(path=str(tmp_path / "last-page.png"), full_page=True)
    context.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors  # our pages obey their own CSP


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    command = start_live_command(["demo", "--web", "--devices", "8", "--seed", "1"],
                                 tmp_path_factory.mktemp("demo") / "demo.log")
    yield command
    command.stop()


def devices(page, demo) -> list[dict]:
    page.goto(demo.url)
    return page.eval_on_selector_all("#devices tbody tr", """rows => rows.map(row => ({
        href: row.querySelector("a").getAttribute("href"), iOS: row.cells[2].textContent,
        address: row.cells[3].textContent, profile: row.cells[4].textContent}))""")


def pick(rows, profile: str, *, ios: str | None = None, skip: tuple = ()) -> dict:
    """A device on `profile` (and iOS `ios`); 9.3.3 only when asked, its S/MIME rules are the old ones."""
    return next(r for r in rows if r["profile"] == profile and r not in skip
                and (r["iOS"] == ios if ios else r["iOS"] != "9.3.3"))


def compose(page, demo, device: dict, to: str, subject: str, encrypt: str = "default", text: str = "hello") -> str:
    page.goto(demo.url.rstrip("/").rsplit("/", 1)[0] + device["href"])
    page.select_option("select[name=to]", to)
    page.fill("input[name=subject]", subject)
    page.fill("textarea[name=text]", text)
    page.check(f"input[name=encrypt][value={encrypt}]")
    page.click("#send")
    page.wait_for_url("**/message/*")
    return page.url


def raw(url: str) -> email.message.Message:
    with urllib.request.urlopen(url + "/raw", timeout=30) as answer:
        return email.message_from_bytes(answer.read(), policy=email.policy.compat32)


def wire_types(page) -> list[str]:
    return page.locator("#wire .mime-type").all_inner_texts()


def test_the_demo_answers_only_under_its_token(demo):
    origin, token = demo.url.rstrip("/").rsplit("/", 1)
    near = token[:-1] + ("A" if token[-1] != "A" else "B")  # one character off, never the token itself
    for wrong in (origin + "/", f"{origin}/{near}/", f"{origin}/{token[:-1]}/", f"{origin}/static/demo.js"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(wrong, timeout=30)
        assert refused.value.code == 404
    assert demo.url.startswith("http://127.0.0.1:")


def test_the_toggle_changes_the_next_message_from_encrypted_to_not(page, demo):
    rows = devices(page, demo)
    assert page.locator("#readiness tbody tr").count() >= 2  # readiness by iOS version is on the page
    # Exchange 1 encrypts by default, without a per-message switch; iOS 17.5 honours SMIMEEncryptByDefault.
    sender = pick(rows, "Exchange 1", ios="17.5")
    recipient = pick(rows, "Exchange 1", skip=(sender,))
    first = compose(page, demo, sender, recipient["address"], "before the toggle")
    assert page.locator("#outcome").inner_text() == "signed, ENCRYPTED"
    assert wire_types(page) == ["application/pkcs7-mime"]
    assert page.locator("#decrypted-with").inner_text() == "decrypted with the current key"
    assert page.locator("#opened .mime .mime-type").all_inner_texts() == [
        "multipart/signed", "text/plain", "application/pkcs7-signature"]
    assert {r["address"] for r in [sender, recipient]} <= set(page.locator("#holders td").all_inner_texts())
    assert raw(first).get_content_type() == "application/pkcs7-mime"

    page.goto(demo.url.rstrip("/").rsplit("/", 1)[0] + sender["href"])
    assert page.locator("#encrypt-by-default").inner_text() == "yes"
    page.click("button[data-switch=encryptionByDefault]")  # the admin turns it off: profile → device
    page.wait_for_selector("[role=status]:has-text('Encrypt by default is now off')")
    assert page.locator("#encrypt-by-default").inner_text() == "no"
    assert page.locator("#commands tr").last.inner_text().split() == ["InstallProfile", "Acknowledged"]

    second = compose(page, demo, sender, recipient["address"], "after the toggle")
    assert page.locator("#outcome").inner_text() == "signed, not encrypted"
    assert wire_types(page) == ["multipart/signed", "text/plain", "application/pkcs7-signature"]
    assert "not encrypted" in page.locator("#holders").inner_text()
    message = raw(second)
    assert message.get_content_type() == "multipart/signed"
    assert [part.get_content_type() for part in message.get_payload()] == ["text/plain",
                                                                           "application/pkcs7-signature"]
    page.goto(demo.url.rstrip("/").rsplit("/", 1)[0] + sender["href"])
    page.click("button[data-switch=encryptionByDefault]")  # back as it was, for the other tests
    page.wait_for_selector("[role=status]:has-text('Encrypt by default is now on')")


def test_the_per_message_switch_and_a_recipient_without_a_certificate(page, demo):
    rows = devices(page, demo)
    sender = pick(rows, "Exchange 2")  # offers the per-message switch
    compose(page, demo, sender, "carol@partner.test", "Contract draft", encrypt="on")
    assert page.locator("#outcome").inner_text().startswith("Not sent:")
    assert page.locator("#missing th").all_inner_texts() == ["carol@partner.test"]
    assert "learned from a signed message" in page.locator("#missing td").inner_text()
    compose(page, demo, sender, "carol@partner.test", "Contract draft", encrypt="off")
    assert page.locator("#outcome").inner_text() == "signed, not encrypted"


def test_key_rotation_leaves_old_mail_readable_with_the_archived_key(page, demo):
    rows = devices(page, demo)
    sender, reader = pick(rows, "Exchange 1"), pick(rows, "Exchange 2")
    old = compose(page, demo, sender, reader["address"], "before the rotation")
    assert page.locator("#decrypted-with").inner_text() == "decrypted with the current key"
    page.goto(demo.url.rstrip("/").rsplit("/", 1)[0] + reader["href"])
    archived = int(page.locator("#archived").inner_text())
    page.click("#rotate")
    page.wait_for_selector("[role=status]:has-text('new encryption certificate')")
    assert int(page.locator("#archived").inner_text()) == archived + 1
    page.goto(old)
    assert page.locator("#decrypted-with").inner_text() == "decrypted with the archived key"
    assert "archived on the device after a rotation" in page.locator("#holders").inner_text()
    compose(page, demo, sender, reader["address"], "after the rotation")
    assert page.locator("#decrypted-with").inner_text() == "decrypted with the current key"


def test_hostile_user_attributes_and_mail_fields_are_inert(page, demo):
    rows = devices(page, demo)
    victim = rows[-1]
    page.goto(demo.url.rstrip("/").rsplit("/", 1)[0] + victim["href"])
    page.fill("input[name=display_name]", HOSTILE)
    page.click("#rename")
    page.wait_for_selector("[role=status]")
    assert page.locator("#display-name").inner_text() == HOSTILE
    page.fill("input[name=to_other]", "x@acme.test")
    page.fill("input[name=subject]", HOSTILE)
    page.fill("textarea[name=text]", HOSTILE)
    page.click("#send")
    page.wait_for_url("**/message/*")
    assert HOSTILE in page.locator("h1").inner_text()
    page.goto(demo.url)
    assert page.evaluate("window.__xss") is None
    assert page.locator("script").count() == 1 and page.locator("img").count() == 0


def test_the_load_dashboard_updates_live_from_a_real_run(page, tmp_path):
    report = tmp_path / "run.html"
    run = start_live_command(["load", "--web", "--devices", "6", "--ramp", "2s", "--duration", "12s",
                              "--checkin-interval", "0.5s", "--memory", "--rollout", "exchange",
                              "--html", str(report)],
                             tmp_path / "load.log")
    try:
        page.goto(run.url)
        # Our own listener beside the page's: every event's server time, and when this browser got it.
        page.evaluate("""() => { window.seen = []; const s = new EventSource("events");
            s.addEventListener("status", m => { const e = JSON.parse(m.data);
                window.seen.push({sent: e.sent_at, got: Date.now() / 1000, requests: e.requests});
                if (e.finished) s.close(); }); }""")
        page.wait_for_function("() => Number(document.getElementById('requests').textContent) > 0")
        before = int(page.locator("#requests").inner_text())
        page.wait_for_function(f"() => Number(document.getElementById('requests').textContent) > {before}")
        page.wait_for_function("() => document.querySelectorAll('#messages tbody tr').length > 0")
        page.wait_for_selector("#rollout:has-text('6/6')")  # every device acknowledged the pushed profile
        assert "InstallProfile" in page.locator("#messages").inner_text()
        page.wait_for_selector("#state:has-text('run finished: exit 0')", timeout=120_000)
        seen = page.evaluate("window.seen")  # the whole run, the workers' start-up and final reports included
        assert len(seen) >= 6 and seen[-1]["requests"] > seen[0]["requests"]
        sent = [event["sent"] for event in seen]
        assert all(0 < later - earlier <= 1.0 for earlier, later in pairwise(sent)), sent
        assert all(event["got"] - event["sent"] < 1.0 for event in seen), seen  # within a second of publishing
        assert run.process.wait(timeout=60) == 0
        assert report.exists()  # the HTML report stays, written before the dashboard closed
    finally:
        run.stop()


def test_the_fleet_dashboard_shows_enrollments(page, tmp_path):
    server = start_server(tmp_path / "data")
    try:
        token = json.loads((server.data_dir / "server.json").read_text())["enroll_token"]
        run = start_live_command(["fleet", "--web", "--enroll-url", f"{server.url}/mdm/enroll?token={token}",
                                  "--push-link", "none", "--devices", "3", "--ramp", "1s", "--duration", "20s"],
                                 tmp_path / "fleet.log")
        try:
            page.goto(run.url)
            page.wait_for_selector("#enrolled:has-text('3/3')")
            page.wait_for_function("() => document.querySelectorAll('#messages tbody tr').length > 0")
        finally:
            run.stop()
    finally:
        server.stop()
