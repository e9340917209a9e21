"""The product brief's whole procedure done in the console by a real browser (Debian's Chromium via Playwright)
against a real `mdmsim serve`, then checked through the admin API; refusals, CSRF, hostile names, invitations.

One server and one browser for the module; each test has its own browser context. Screenshots of each step are
kept in the test's tmp dir (pytest keeps the last runs) with the last page's.
"""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization
from kits.admin_kit import PASSWORD, authority, p12_for
from kits.browser import ADMIN_PASSWORD, browser_fixture, page_fixture, start_server  # noqa: F401 (fixtures)

HOSTILE = '<img src=x onerror="window.__xss=1">"><script>window.__xss=1</script>'
DEVICE = "UDID-PROCEDURE-0001"
USER_PASSWORD = "alice's portal password"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("console") / "data", memory=False)
    try:
        assert server.authenticate(DEVICE, "Alice's iPhone", user_id="alice", token_update=True) == 200
        yield server
    finally:
        server.stop()


def admin_signs_in(page, live) -> None:
    page.goto(live.url + "/admin")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "Devices"


def alert(page) -> str:
    return page.locator("[role=alert]").inner_text()


def status(page) -> str:
    return page.locator("[role=status]").inner_text()


def new_setting(page, live, kind: str, fill: dict[str, str], *, check=(), choose=None, files=None) -> str:
    """Fill a new setting's form as a person would; returns the id the console gave it."""
    page.goto(f"{live.url}/admin/settings/new/{kind}")
    form = page.locator("#setting-form")
    for name, value in fill.items():
        form.locator(f"input[name='{name}']").fill(value)
    for name in check:
        form.locator(f"input[name='{name}']").check()
    for name, value in (choose or {}).items():
        form.locator(f"select[name='{name}']").select_option(value)
    for name, path in (files or {}).items():
        form.locator(f"input[name='{name}']").set_input_files(str(path))
    form.locator("button[type=submit]").click()
    assert status(page) == "setting saved", page.content()
    return page.url.rsplit("/", 1)[1].split("?")[0]


def test_the_whole_procedure_in_the_console(page, live, browser, tmp_path):
    shot = iter(range(1, 100))

    def screenshot(step: str) -> None:
        page.screenshot(path=str(tmp_path / f"{next(shot):02d}-{step}.png"), full_page=True, timeout=60_000)

    admin_signs_in(page, live)
    # A user, invited to set their own portal password.
    page.click("text=Users")
    page.fill("#new-user input[name=user_id]", "alice")
    page.fill("#new-user input[name=email]", "alice@example.com")
    page.click("#new-user button[type=submit]")
    assert page.locator("h1").inner_text() == "User alice"
    page.click("#invite-form button[type=submit]")
    link = page.locator("#invitation-link").inner_text()
    screenshot("invitation")
    # Certificate (root), two user-provided certificate settings, an Exchange setting using both for S/MIME.
    ca = tmp_path / "mail-ca.pem"
    ca.write_bytes(authority().certificate.public_bytes(serialization.Encoding.PEM))
    root = new_setting(page, live, "certificate", {"name": "Mail CA"}, files={"certificate": ca})
    signing = new_setting(page, live, "user_provided", {"name": "Signing", "display_name": "Mail signing"},
                          choose={"purpose": "smime_signing"})
    encryption = new_setting(page, live, "user_provided", {"name": "Encryption"},
                             choose={"purpose": "smime_encryption"})
    exchange = new_setting(
        page, live, "exchange", {"name": "Exchange 1", "host": "mail1.example.com", "user_name": "corp\\$USERID$"},
        check=("smime.signing_enabled", "smime.encryption_by_default", "smime.per_message_switch"),
        choose={"smime.signing_identity": signing, "smime.encryption_identity": encryption})
    screenshot("exchange-setting")
    # The user sets their password through the link and uploads their P12 for each configuration.
    user = browser.new_context(ignore_https_errors=True).new_page()
    try:
        user.goto(link)
        user.fill("input[name=password]", USER_PASSWORD)
        user.fill("input[name=confirm]", USER_PASSWORD)
        user.click("button[type=submit]")
        assert status(user) == "password set: sign in with it"
        user.fill("input[name=password]", USER_PASSWORD)
        user.click("button[type=submit]")
        p12 = tmp_path / "alice.p12"
        p12.write_bytes(p12_for("alice"))
        for configuration in (signing, encryption):
            form = user.locator("form[enctype='multipart/form-data']").first
            form.locator("select[name=setting]").select_option(configuration)
            form.locator("input[name=p12]").set_input_files(str(p12))
            form.locator("input[name=password]").fill(PASSWORD)
            form.locator("button[type=submit]").click()
            assert status(user) == "certificate uploaded"
        user.screenshot(path=str(tmp_path / "portal.png"), full_page=True, timeout=60_000)
    finally:
        user.context.close()
    # A label, both settings applied to it, a sync policy for it, then force check-in.
    page.click("text=Labels")
    page.fill("#new-label input[name=name]", "Pilots")
    page.fill("#new-label textarea[name=deviceUuids]", DEVICE)
    page.click("#new-label button[type=submit]")
    assert "label Pilots created with 1 devices" in status(page)
    row = page.locator("#labels tr", has_text="Pilots")
    label = row.get_attribute("data-label")
    for setting in (root, exchange):
        page.locator(f"tr[data-label='{label}'] select[name=setting]").select_option(setting)
        page.locator(f"tr[data-label='{label}'] button[value=apply]").click()
        assert f"{setting} applied to label {label}: 1 installs" in status(page)
    screenshot("applied")
    page.click("text=Sync policies")
    form = page.locator("#new-policy")
    form.locator("input[name=name]").fill("Pilots every 15 minutes")
    form.locator("input[name=priority]").fill("5")
    form.locator("input[name=syncIntervalMinutes]").fill("15")
    form.locator(f"input[name=labelIds][value='{label}']").check()
    form.locator("button[type=submit]").click()
    assert "every 15 minutes" in status(page)
    page.goto(f"{live.url}/admin/devices/{DEVICE}")
    page.click("text=Force check-in")
    screenshot("force-check-in")
    # This device never opened the push link, so the simulated APNs refuses its token: the console says so.
    assert alert(page) == "not pushed: BadDeviceToken"
    # The outcome, through the admin API: two InstallProfile commands queued, the policy's interval.
    code, commands = live.api("GET", f"/api/v1/devices/{DEVICE}/commands")
    assert code == 200
    assert [(c["requestType"], c["status"]) for c in commands["items"]] == [("InstallProfile", "Queued")] * 2
    code, devices = live.api("GET", f"/api/v2/devices?labelId={label}")
    assert [(d["uuid"], d["syncIntervalMinutes"], d["pushed"]) for d in devices["items"]] == [(DEVICE, 15, False)]
    assert live.api("GET", f"/api/v2/devices/{DEVICE}/readiness")[1]["pendingInstalls"] == 2
    # And in the server's queue: the root, and the Exchange account with alice's S/MIME identities.
    root_profile, exchange_profile = queued_profiles(live)
    assert [p["PayloadType"] for p in root_profile["PayloadContent"]] == ["com.apple.security.root"]
    account = next(p for p in exchange_profile["PayloadContent"] if p["PayloadType"] == "com.apple.eas.account")
    assert (account["Host"], account["UserName"]) == ("mail1.example.com", "corp\\alice")
    assert account["SMIMESigningEnabled"] and account["SMIMEEncryptByDefault"]
    assert account["SMIMEEnableEncryptionPerMessageSwitch"]
    kinds = sorted(p["PayloadType"] for p in exchange_profile["PayloadContent"])
    assert kinds == ["com.apple.eas.account", "com.apple.security.pkcs12", "com.apple.security.pkcs12"]


def queued_profiles(live) -> list[dict]:
    """The profiles queued for DEVICE, read from the server's own queue database and opened with its key."""
    import plistlib

    from mdm_protocol.profile_signing import unsigned
    from mdm_server.admin.secrets_at_rest import SecretBox
    from mdm_server.app import DATABASE_FILE
    from mdm_server.command_seal import CommandSeal
    from mdm_server.storage import SQLiteStorage

    storage = SQLiteStorage(live.data_dir / DATABASE_FILE)
    try:
        seal = CommandSeal(SecretBox.load_or_create(live.data_dir))
        commands = [plistlib.loads(seal.opened(c).payload) for c in storage.list_commands(DEVICE)]
    finally:
        storage.close()
    return [plistlib.loads(unsigned(command["Command"]["Payload"])) for command in commands]


def test_refusals_show_the_api_message(page, live):
    admin_signs_in(page, live)
    page.goto(f"{live.url}/admin/settings/new/exchange")
    page.fill("#setting-form input[name=name]", "No host")
    page.click("#setting-form button[type=submit]")
    _, answer = live.api("POST", "/api/v2/settings", {"kind": "exchange", "name": "No host"})
    assert alert(page) == answer["message"] and "host is required" in answer["message"]
    assert page.locator("#setting-form input[name=name]").input_value() == "No host"  # kept as typed
    page.goto(f"{live.url}/admin/tokens")
    page.fill("#new-token input[name=maxUses]", "-1")
    page.click("#new-token button[type=submit]")
    _, answer = live.api("POST", "/api/v2/enrollment-tokens", {"maxUses": -1})
    assert alert(page) == answer["message"] == "maxUses must be a positive number"


def submit(page, form: str, fields: dict[str, str] | None = None) -> None:
    for name, value in (fields or {}).items():
        page.locator(f"{form} [name='{name}']").fill(value)
    page.locator(f"{form} button[type=submit]").first.click()


def test_every_other_form_happy_and_refused(page, live):
    """The forms the procedure does not use: each refusal is the API's message, each success is stored."""
    assert live.api("POST", "/api/v2/users", {"userId": "carol"})[0] == 201
    admin_signs_in(page, live)
    # Email setting: refused (port), made, edited, deleted.
    page.goto(f"{live.url}/admin/settings/new/email")
    fields = {"name": "Mail", "incoming.host": "imap.example.com", "incoming.port": "70000",
              "outgoing.host": "smtp.example.com"}
    submit(page, "#setting-form", fields)
    assert alert(page) == live.api("POST", "/api/v2/settings", {"kind": "email", "name": "Mail", "incoming": {
        "host": "imap.example.com", "port": 70000}, "outgoing": {"host": "smtp.example.com"}})[1]["message"]
    submit(page, "#setting-form", {"incoming.port": "993"})
    assert status(page) == "setting saved"
    setting_id = page.url.rsplit("/", 1)[1].split("?")[0]
    submit(page, "#setting-form", {"account_description": "Work mail"})
    assert "version 2" in status(page)
    assert live.api("GET", f"/api/v2/settings/{setting_id}")[1]["accountDescription"] == "Work mail"
    page.goto(f"{live.url}/admin/settings")
    page.locator(f"tr[data-setting='{setting_id}'] button").click()
    assert f"setting {setting_id} deleted" in status(page)
    # A user's attributes and portal password.
    page.goto(f"{live.url}/admin/users/carol")
    submit(page, "#user-form", {"email": "not an address"})
    assert alert(page) == live.api("PUT", "/api/v2/users/carol", {"email": "not an address"})[1]["message"]
    submit(page, "#user-form", {"email": "carol@example.com", "USER_CUSTOM1": "Sales"})
    assert live.api("GET", "/api/v2/users/carol")[1]["custom"] == {"USER_CUSTOM1": "Sales"}
    submit(page, "#password-form", {"password": "short"})
    assert alert(page) == live.api("PUT", "/api/v2/users/carol/password", {"password": "short"})[1]["message"]
    submit(page, "#password-form", {"password": "carol's portal pw"})
    assert status(page) == "portal password set"
    # A sync policy: refused, made, edited, deleted.
    page.goto(f"{live.url}/admin/policies")
    submit(page, "#new-policy", {"name": "Hourly", "syncIntervalMinutes": "0"})
    assert alert(page) == live.api("POST", "/api/v2/sync-policies", {"name": "Hourly",
                                                                     "syncIntervalMinutes": 0})[1]["message"]
    submit(page, "#new-policy", {"name": "Hourly", "syncIntervalMinutes": "60"})
    policy = page.locator("#policies tr", has_text="Hourly").get_attribute("data-policy")
    submit(page, f"tr[data-policy='{policy}'] form", {"syncIntervalMinutes": "90"})
    assert live.api("GET", f"/api/v2/sync-policies/{policy}")[1]["syncIntervalMinutes"] == 90
    page.locator(f"tr[data-policy='{policy}'] form[action$='/delete'] button").click()
    assert "sync policy Hourly deleted" in status(page)
    # A label: refused, made, deleted; the conflicts view for it.
    page.goto(f"{live.url}/admin/labels")
    page.locator("#new-label select[name=type]").select_option("filter")
    submit(page, "#new-label", {"name": "Old", "osVersionMin": "not a version"})
    assert alert(page) == live.api("POST", "/api/v2/labels", {"name": "Old", "type": "filter", "criteria": {
        "osVersionMin": "not a version"}})[1]["message"]
    submit(page, "#new-label", {"name": "Old", "osVersionMin": "17.0"})  # the form reset to a manual label
    assert "label Old created" in status(page)
    label = page.locator("#labels tr", has_text="Old").get_attribute("data-label")
    page.goto(f"{live.url}/admin/conflicts?label={label}")
    assert page.locator("#conflicts").inner_text().strip().endswith("No conflicts.")
    page.goto(f"{live.url}/admin/labels")
    page.locator(f"tr[data-label='{label}'] form[action$='/delete'] button").click()
    assert f"label {label} deleted" in status(page)
    # An enrollment token: made (the secret shown once), then revoked.
    page.goto(f"{live.url}/admin/tokens")
    submit(page, "#new-token", {"name": "Pilot batch", "maxUses": "10", "expiresInSeconds": "86400"})
    secret = page.locator("#token-secret").inner_text()
    token = page.locator("#tokens tr", has_text="Pilot batch").get_attribute("data-token")
    page.reload()
    assert secret not in page.content()
    page.locator(f"tr[data-token='{token}'] button").click()
    assert live.api("GET", f"/api/v2/enrollment-tokens/{token}")[1]["status"] == "revoked"


def test_a_forged_console_form_changes_nothing(page, live):
    admin_signs_in(page, live)
    page.goto(f"{live.url}/admin/users")
    page.fill("#new-user input[name=user_id]", "forged-user")
    page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(i => i.value = 'forged')")
    page.click("#new-user button[type=submit]")
    assert "did not come from this site" in page.content()
    assert live.api("GET", "/api/v2/users/forged-user")[0] == 404


def test_hostile_names_are_rendered_inert(page, live):
    assert live.api("POST", "/api/v2/users", {"userId": "mallory", "displayName": HOSTILE,
                                              "custom": {"USER_CUSTOM1": HOSTILE}})[0] == 201
    assert live.api("POST", "/api/v2/settings", {"kind": "user_provided", "name": HOSTILE, "purpose": "vpn",
                                                 "description": HOSTILE})[0] == 201
    assert live.api("POST", "/api/v2/labels", {"name": HOSTILE, "type": "manual"})[0] == 201
    assert live.api("POST", "/api/v2/sync-policies", {"name": HOSTILE, "syncIntervalMinutes": 60})[0] == 201
    assert live.api("POST", "/api/v2/enrollment-tokens", {"name": HOSTILE})[0] == 201
    admin_signs_in(page, live)
    for path, where in (("/admin/settings", "#settings"), ("/admin/labels", "#labels"),
                        ("/admin/policies", "#policies"), ("/admin/tokens", "#tokens"),
                        ("/admin/users/mallory", "#user-form"), ("/admin/conflicts", "main form")):
        page.goto(live.url + path)
        assert page.evaluate("window.__xss") is None, path
        assert page.locator("img[src=x]").count() == 0 and page.locator("main script").count() == 0, path
        shown = page.locator(where).inner_text() + " ".join(
            page.locator(f"{where} input").evaluate_all("inputs => inputs.map(i => i.value)"))
        assert HOSTILE in shown, path  # shown as text, never run


def test_an_invitation_works_once_then_is_dead_and_an_expired_one_is_refused(page, live, browser):
    assert live.api("POST", "/api/v2/users", {"userId": "bob"})[0] == 201
    admin_signs_in(page, live)
    page.goto(f"{live.url}/admin/users/bob")
    page.fill("#invite-form input[name=hours]", "2")
    page.click("#invite-form button[type=submit]")
    link = page.locator("#invitation-link").inner_text()
    user = browser.new_context(ignore_https_errors=True).new_page()
    try:
        for attempt in range(2):
            user.goto(link)
            if attempt:
                assert "not valid" in alert(user) and user.locator("input[name=password]").count() == 0
                break
            user.fill("input[name=password]", "bob's password")
            user.fill("input[name=confirm]", "bob's password")
            user.click("button[type=submit]")
            assert status(user) == "password set: sign in with it"
        user.goto(expired_invitation(live, "bob"))
        assert "expired" in alert(user)
    finally:
        user.context.close()
    page.reload()
    assert page.locator("#invitations").inner_text().count("used") == 1


def expired_invitation(live, user_id: str) -> str:
    """An invitation the model made two days ago for one hour, in the server's own admin database."""
    from mdm_server.admin.docstore import DocumentStore
    from mdm_server.admin.invitations import Invitations
    from mdm_server.admin.portal_passwords import PortalPasswords
    from mdm_server.admin.users import UserStore

    docs = DocumentStore(live.data_dir / "admin.sqlite3")
    try:
        users = UserStore(docs)
        made_at = time.time() - 2 * 86400
        _, secret = Invitations(docs, users, PortalPasswords(docs, users), now=lambda: made_at).create(user_id, 3600)
    finally:
        docs.close()
    return f"{live.url}/user/invite/{secret}"


def test_serve_prints_the_console_and_portal_addresses_alone_on_their_lines(live):
    lines = (live.data_dir.parent / "serve.log").read_text().splitlines()
    assert f"  admin console: {live.url}/admin" in lines and f"  user portal: {live.url}/user" in lines
    enroll = next(line for line in lines if "enrollment profile:" in line)
    assert enroll.split("enrollment profile:", 1)[1].strip().startswith(f"{live.url}/mdm/enroll?token=")
    assert " " not in enroll.split("enrollment profile:", 1)[1].strip()  # the URL alone (soak_bench reads it)
