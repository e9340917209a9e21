"""GET /metrics: Prometheus text format 0.0.4 with check-ins by type and status, queue depth, pushes and
latency histograms, counted on the request path of the real web tree (in memory) and rendered at scrape time.
"""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from server_kit import BACKENDS, AdminClient, SignedDevice, make_server

from device_sim.memory_http import MemoryHTTP
from mdm_protocol.report import Status
from mdm_server import metrics as m

# One sample line of the 0.0.4 text format: name, optional {label="value",...}, a value.
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
SAMPLE = re.compile(rf"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{{{_LABEL}(?:,{_LABEL})*\}})? (\S+)$")


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """A strict reader of the exposition format: every line is HELP, TYPE or a well-formed sample."""
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    typed: set[str] = set()
    for line in text.split("\n")[:-1]:
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            parts = line.split(" ", 3)
            if parts[1] == "TYPE":
                assert parts[3] in ("counter", "gauge", "histogram"), line
                assert parts[2] not in typed, f"TYPE given twice for {parts[2]}"
                typed.add(parts[2])
            continue
        match = SAMPLE.match(line)
        assert match, f"not a valid sample line: {line!r}"
        name, labels, value = match.groups()
        assert any(name == t or name.startswith(t + "_") for t in typed), f"{name} has no TYPE line"
        pairs = tuple(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels or ""))
        samples.setdefault(name, {})[pairs] = math.inf if value == "+Inf" else float(value)
    return samples


def scrape(server) -> tuple[dict, str]:
    response = MemoryHTTP(server.site).request("GET", "/metrics")
    assert response.status == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.body.decode()
    return parse(text), text


@pytest.mark.parametrize("backend", BACKENDS)
def test_check_ins_reports_queue_and_pushes_are_counted(tmp_path, backend):
    server = make_server(tmp_path, backend=backend)
    devices = [SignedDevice(server, f"{i:040x}") for i in range(3)]
    for device in devices:
        device.enroll()
        device.online()
    devices[0].put(b"not a plist", "application/x-apple-aspen-mdm-checkin")  # malformed: counted, 400
    admin = AdminClient(server)
    admin.enqueue([d.udid for d in devices], "ProfileList", push=True)
    server.clock.advance(1)
    assert devices[0].session() == ["ProfileList"]
    devices[1].session(answer=lambda command: Status.NOT_NOW)

    samples, _ = scrape(server)
    checkins = samples["mdmsim_checkin_messages_total"]
    assert checkins[(("message_type", "Authenticate"), ("code", "200"))] == 3
    assert checkins[(("message_type", "TokenUpdate"), ("code", "200"))] == 3
    assert checkins[(("message_type", "malformed"), ("code", "400"))] == 1
    reports = samples["mdmsim_command_reports_total"]
    assert reports[(("status", "Idle"), ("code", "200"))] == 2
    assert reports[(("status", "Acknowledged"), ("code", "200"))] == 1
    assert reports[(("status", "NotNow"), ("code", "200"))] == 1
    queue = samples["mdmsim_commands"]
    assert queue[(("status", "Acknowledged"),)] == 1
    assert queue[(("status", "NotNow"),)] == 1
    assert queue[(("status", "Queued"),)] == 1  # device 2 never checked in
    assert samples["mdmsim_devices"][(("state", "enrolled"),)] == 3
    assert samples["mdmsim_pushes_total"][(("outcome", "accepted"),)] == 3
    assert samples["mdmsim_apns_pushes_total"][(("event", "delivered"),)] == 3
    assert samples["process_cpu_seconds_total"][()] > 0


def test_latency_histograms_are_cumulative_and_agree_with_their_count(tmp_path):
    server = make_server(tmp_path)
    device = SignedDevice(server, "ab" * 20)
    device.enroll()
    for _ in range(4):
        device.report(Status.IDLE)
    samples, _ = scrape(server)
    buckets = samples["mdmsim_request_duration_seconds_bucket"]
    for channel, requests in (("checkin", 2), ("connect", 4)):
        labelled = [(dict(k), v) for k, v in buckets.items()]
        series = sorted((float(k["le"]), v) for k, v in labelled if k["channel"] == channel)
        counts = [v for _, v in series]
        assert counts == sorted(counts), "buckets must be cumulative"
        assert series[-1] == (math.inf, requests)
        assert samples["mdmsim_request_duration_seconds_count"][(("channel", channel),)] == requests
        assert 0 < samples["mdmsim_request_duration_seconds_sum"][(("channel", channel),)] < requests * 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_refused_push_and_an_unpushable_device_are_counted_by_reason(tmp_path, backend):
    server = make_server(tmp_path, backend=backend)
    device = SignedDevice(server, "cd" * 20)
    assert device.authenticate().status == 200  # no TokenUpdate yet: not pushable
    admin = AdminClient(server)
    admin.post("/api/v1/push", {"deviceIds": [device.udid, "no-such-device"]})
    assert device.token_update().status == 200  # token never registered with APNs: BadDeviceToken
    admin.post("/api/v1/push", {"deviceIds": [device.udid]})
    samples, _ = scrape(server)
    pushes = samples["mdmsim_pushes_total"]
    assert pushes[(("outcome", "not_pushable"),)] == 1
    assert pushes[(("outcome", "unknown_device"),)] == 1
    assert pushes[(("outcome", "rejected"),)] == 1
    assert samples["mdmsim_apns_pushes_total"][(("event", "rejected"),)] == 1


def test_metrics_need_no_credentials_and_refuse_other_methods(tmp_path):
    server = make_server(tmp_path)
    assert MemoryHTTP(server.site).request("GET", "/metrics").status == 200
    assert MemoryHTTP(server.site).request("POST", "/metrics").status == 405


@given(st.lists(st.floats(min_value=0, max_value=30, allow_nan=False), max_size=50))
def test_histogram_buckets_count_each_value_once_at_its_le_bound(values):
    hist = m.Histogram()
    for value in values:
        hist.observe(value)
    cumulative = dict(hist.cumulative())
    for bound in m.LATENCY_BUCKETS:
        assert cumulative[m._number(bound)] == sum(1 for v in values if v <= bound)
    assert cumulative["+Inf"] == hist.count == len(values)


@given(st.text(max_size=20))
def test_label_values_are_escaped_so_any_text_stays_one_valid_line(value):
    family = m.counter("mdmsim_test_total", "help with \\ and\nnewline", {(value,): 1}, ("label",))
    text = m.render([family]).decode()
    samples = parse(text)
    ((pairs, count),) = samples["mdmsim_test_total"].items()
    assert count == 1
    unescaped = re.sub(r"\\(.)", lambda match: {"n": "\n"}.get(match.group(1), match.group(1)), pairs[0][1])
    assert unescaped == value
