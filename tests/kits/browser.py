"""Browser-test kit: one real `mdmsim serve` over TLS on a free port, and Debian's Chromium driven by Playwright.

Without /usr/bin/chromium (or the playwright package) the tests skip with the reason, except under CI=1, where
they fail: CI must never pass by skipping the browser. Playwright never downloads a browser here.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import warnings
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("MDMSIM_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ADMIN_PASSWORD = "browser-test admin password"
_START_TIMEOUT = 60.0


def missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI=1: browser tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


def sync_playwright():
    try:
        from playwright.sync_api import sync_playwright as start
    except ImportError:
        missing("the playwright package is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        missing(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    return start


# Test modules import these two by their function names; tests ask for them as `browser` and `page`.
@pytest.fixture(scope="module", name="browser")
def browser_fixture():
    """One Chromium for a test module (each test gets its own context: its own cookies)."""
    start = sync_playwright()
    with start() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(name="page")
def page_fixture(browser, tmp_path):
    """A fresh context's page; any script dialog fails the test; the last page is kept as a screenshot."""
    from playwright.sync_api import Error as PlaywrightError  # loaded: the browser fixture ran

    context = browser.new_context(ignore_https_errors=True)  # the server's own CA is not Chromium's
    page = context.new_page()
    page.on("dialog", lambda dialog: pytest.fail(f"a script ran: {dialog.message}"))
    yield page
    try:  # the artefact, kept with pytest's tmp dirs; a loaded machine failing to take it is not the test's failure
        page.screenshot(path=str(tmp_path / "last-page.png"), timeout=60_000)
    except PlaywrightError as exc:
        warnings.warn(f"no last-page screenshot: {exc}", stacklevel=1)
    finally:
        context.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LiveServer:
    """`mdmsim serve --memory` in a child process; `api` calls its admin API with the CA it wrote."""

    process: subprocess.Popen
    url: str
    context: ssl.SSLContext
    data_dir: Path

    def api(self, method: str, path: str, value=None) -> tuple[int, object]:
        body = None if value is None else json.dumps(value).encode()
        request = urllib.request.Request(self.url + path, data=body, method=method)
        request.add_header("Authorization", "Basic " + b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode())
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=10) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read() or b"null")

    def authenticate(self, udid: str, device_name: str, *, user_id: str | None = None,
                     token_update: bool = False) -> int:
        """A device's signed Authenticate check-in (then TokenUpdate, if asked), with an identity from the
        server's own CA (in its data dir) naming `user_id` as a per-user enrollment's does."""
        from datetime import UTC, datetime

        from mdm_protocol.checkin import Authenticate, TokenUpdate, encode_checkin
        from mdm_protocol.cms import mdm_signature
        from mdm_server.ca import CertificateAuthority

        ca = CertificateAuthority.load_or_create(self.data_dir, now=datetime.now(UTC))
        certificate, key = ca.issue_device_identity(f"device {udid[:8]}", datetime.now(UTC), user_id=user_id)
        topic = json.loads((self.data_dir / "server.json").read_text())["topic"]
        messages = [Authenticate(topic=topic, udid=udid, os_version="17.5", product_name="iPhone15,2",
                                 serial_number="F2LX0000", device_name=device_name)]
        if token_update:
            messages.append(TokenUpdate(topic=topic, udid=udid, token=udid.encode().ljust(32, b"\0")[:32],
                                        push_magic=f"magic-{udid[:8]}"))
        for message in messages:
            body = encode_checkin(message)
            request = urllib.request.Request(self.url + "/mdm/checkin", data=body, method="PUT")
            request.add_header("Content-Type", "application/x-apple-aspen-mdm-checkin")
            request.add_header("Mdm-Signature", mdm_signature(body, certificate, key))
            with urllib.request.urlopen(request, context=self.context, timeout=10) as answer:
                status = answer.status
        return status

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(data_dir: Path, *, memory: bool = True) -> LiveServer:
    """`memory=False` keeps the admin documents in data_dir/admin.sqlite3, where a test may add to them."""
    port = _free_port()
    command = [sys.executable, "-m", "mdmsim.cli", "serve", *(["--memory"] if memory else []),
               "--data-dir", str(data_dir), "--listen", f"ssl:{port}:interface=127.0.0.1", "--push-link", "none",
               "--admin-password", ADMIN_PASSWORD]
    log = open(data_dir.parent / "serve.log", "wb")  # noqa: SIM115 - the child writes it until stopped
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mdmsim serve exited {process.returncode}: "
                               f"{(data_dir.parent / 'serve.log').read_text()[-2000:]}")
        ca = data_dir / "ca.pem"
        if ca.exists():
            context = ssl.create_default_context(cafile=str(ca))
            server = LiveServer(process, f"https://localhost:{port}", context, data_dir)
            try:
                if server.api("GET", "/api/v2/ping")[0] == 200:
                    return server
            except (OSError, ssl.SSLError):
                pass
        time.sleep(0.2)  # a child process's start-up: real time, not a test's clock
    process.kill()
    raise RuntimeError("mdmsim serve did not answer within 60 s")


@dataclass
class LiveCommand:
    """An mdmsim command that serves a live page (`demo --web`, `load --web`): its process and printed URL."""

    process: subprocess.Popen
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_live_command(arguments: list[str], log: Path, *, timeout: float = _START_TIMEOUT) -> LiveCommand:
    """Run `mdmsim ARGUMENTS` with its output in `log`; return once it printed its page's URL."""
    import re

    with open(log, "wb") as out:  # the child keeps its own descriptor
        process = subprocess.Popen([sys.executable, "-m", "mdmsim.cli", *arguments], stdout=out,
                                   stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"http://127\.0\.0\.1:\d+/[A-Za-z0-9_-]+/", log.read_text(errors="replace"))
        if found:
            return LiveCommand(process, found[0], log)
        if process.poll() is not None:
            raise RuntimeError(f"mdmsim {arguments[0]} exited {process.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.1)  # a child process's start-up: real time, not a test's clock
    process.kill()
    raise RuntimeError(f"mdmsim {arguments[0]} printed no URL within {timeout:g} s")
