"""The live pages without a browser: the dashboard's publisher on a fake clock, its events, the secret path,
the CSP, and the demo's pages rendering hostile names as text."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from itertools import pairwise

import pytest
from twisted.internet import task
from twisted.web.test.requesthelper import DummyRequest

from device_sim.stats import FleetObserver
from mdmsim.live.dashboard import PUBLISH_EVERY, Publisher, dashboard_pages
from mdmsim.live.feed import DashboardFeed, server_sent_event
from mdmsim.live.fleet_status import fleet_status
from mdmsim.live.web import SecretRoot
from mdmsim.load.progress import LiveProgress

HOSTILE = '<img src=x onerror="window.__xss=1">"><script>window.__xss=1</script>'


def status(elapsed: float, requests: int, **extra) -> dict:
    return {"elapsed": elapsed, "duration": 60.0, "devices": 10, "enrolled": 3, "enroll_failed": 0,
            "requests": requests, "errors": 1, "requests_failed_by_kind": {"timeout": 1}, "rollout_acked": 2,
            "rollout_devices": 4, "server_cpu": 0.25, "server_rss": 80e6, **extra}


def events(request: DummyRequest) -> list[dict]:
    records = b"".join(request.written).decode().split("\n\n")
    return [json.loads(line[len("data: "):]) for record in records for line in record.splitlines()
            if line.startswith("data: ")]


class Reads:
    """The run's status as a publisher sees it; counts how often it is read."""

    def __init__(self, value) -> None:
        self.value, self.count = value, 0

    def __call__(self):
        self.count += 1
        return self.value


def test_the_publisher_reads_twice_a_second_whatever_the_number_of_pages():
    clock, reads = task.Clock(), Reads(status(1.0, 10))
    publisher = Publisher(clock, reads, DashboardFeed("run"))
    publisher.start()
    pages = [DummyRequest([b"events"]) for _ in range(5)]
    for request in pages:
        publisher.open(request)
    clock.pump([PUBLISH_EVERY] * 10)  # five seconds
    assert reads.count == 11  # at the start, then every half second: never once per page
    sent = [event["sent_at"] for event in events(pages[0])]
    assert all(0 < later - earlier <= PUBLISH_EVERY for earlier, later in pairwise(sent))
    assert all(events(request) == events(pages[0]) for request in pages)
    assert pages[0].responseHeaders.getRawHeaders(b"content-type") == [b"text/event-stream; charset=utf-8"]


def test_a_page_opening_late_gets_the_latest_event_at_once_and_finish_closes_every_stream():
    clock = task.Clock()
    publisher = Publisher(clock, lambda: status(2.0, 20), DashboardFeed("run"))
    publisher.start()
    clock.advance(PUBLISH_EVERY)
    late = DummyRequest([b"events"])
    publisher.open(late)
    assert [e["seq"] for e in events(late)] == [2]
    publisher.finish("exit 0")
    assert late.finished and events(late)[-1]["finished"] == "exit 0" and not publisher.streams
    clock.advance(10)
    assert events(late)[-1]["seq"] == 3  # nothing after the end


def test_nothing_is_published_before_the_run_has_a_status():
    clock = task.Clock()
    publisher = Publisher(clock, lambda: None, DashboardFeed("run"))
    publisher.start()
    request = DummyRequest([b"events"])
    publisher.open(request)
    clock.advance(5)
    assert events(request) == []


def test_the_rate_is_the_progress_lines_and_holds_between_two_statuses():
    feed, first, second = DashboardFeed("run"), status(1.0, 10), status(2.0, 70)
    feed.event(first, 100.0)
    event = feed.event(second, 100.5)
    assert event["rate"] == LiveProgress.rate(second, first) == 60.0
    assert feed.event(second, 101.0)["rate"] == 60.0  # the same status read again: the same rate
    assert event["rollout"] == {"acked": 2, "devices": 4, "percent": 50.0}
    assert event["server"] == {"cpu": 25.0, "rss_mb": 80.0}
    assert event["errors_by_kind"] == {"timeout": 1}


def test_latency_per_message_type_is_shown_in_milliseconds():
    messages = {"Idle": {"count": 5, "errors": 0, "latency": {"p50": 0.010, "p95": 0.020, "p99": 0.030,
                                                               "max": 0.040}}}
    event = DashboardFeed("run").event(status(1.0, 5, messages=messages,
                                              latest_second={"p50": 0.001, "p95": 0.002, "p99": 0.003}), 1.0)
    assert event["messages"] == [{"name": "Idle", "count": 5, "errors": 0, "p50": 10.0, "p95": 20.0,
                                  "p99": 30.0, "max": 40.0}]
    assert event["latency"] == {"p50": 1.0, "p95": 2.0, "p99": 3.0}


def test_an_event_is_one_server_sent_record():
    record = server_sent_event({"seq": 7, "text": "a\nb"}).decode()
    assert record.startswith("id: 7\nevent: status\ndata: ") and record.endswith("\n\n")
    assert record.count("\n") == 4  # the newline inside the value is escaped by JSON


def test_the_fleet_status_has_the_load_runs_keys():
    observer = FleetObserver()
    observer.messages["Idle"].count = 3
    observer.messages["Idle"].record(0.005)
    keys = fleet_status(observer, Counter({"tls": 2}), elapsed=3.0, duration=10.0, devices=4)
    event = DashboardFeed("fleet").event(keys, 1.0)
    assert event["requests"] == 3 and event["errors_by_kind"] == {"tls": 2}
    assert event["messages"][0]["name"] == "Idle" and event["messages"][0]["p50"] == pytest.approx(5.0, rel=0.01)


def _get(root: SecretRoot, *segments: bytes) -> DummyRequest:
    request = DummyRequest(list(segments[1:]))
    child = root.getChild(segments[0], request)
    request.postpath = list(segments[1:])
    body = child.render(request)
    request.body = body
    return request


def test_only_the_secret_path_answers_and_every_page_carries_the_csp():
    clock = task.Clock()
    root = SecretRoot(dashboard_pages("run", Publisher(clock, lambda: None, DashboardFeed("run"))))
    assert _get(root, b"guess", b"").responseCode == 404
    page = _get(root, root.token.encode(), b"")
    assert page.responseCode in (None, 200)
    csp = page.responseHeaders.getRawHeaders(b"content-security-policy")[0]
    assert b"script-src 'self'" in csp and b"unsafe-inline" not in csp
    assert b"static/dashboard.js" in page.body
    script = _get(root, root.token.encode(), b"static", b"dashboard.js")
    assert script.responseHeaders.getRawHeaders(b"content-type") == [b"text/javascript; charset=utf-8"]
    assert _get(root, root.token.encode(), b"static", b"..%2fweb.py").responseCode == 404


@pytest.fixture(scope="module")
def hostile_demo():
    from mdm_world import demo_setup
    from mdmsim.live.demo_actions import LiveDemo

    live = LiveDemo(demo_setup.build(4, 1))
    runner = live.runner(1)
    runner.machine.facts = dataclasses.replace(runner.machine.facts, device_name=HOSTILE)
    live.rename_user(runner, HOSTILE)
    live.send(runner, HOSTILE, HOSTILE, HOSTILE, "default")
    return live


@pytest.mark.parametrize("path", [b"", b"device/1", b"message/1"])
def test_hostile_device_names_and_user_attributes_render_as_text(hostile_demo, path):
    from mdmsim.live.demo_site import DemoPages

    root = SecretRoot(DemoPages(hostile_demo))
    page = _get(root, root.token.encode(), *path.split(b"/"))
    assert page.responseCode in (None, 200), page.body[:500]
    assert b"<script>window.__xss" not in page.body and b"<img src=x" not in page.body
    assert b"&lt;script&gt;window.__xss=1&lt;/script&gt;" in page.body
