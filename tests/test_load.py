"""`mdmsim load`: a real run (our server in its own process, two fleet workers, 200 devices over real TLS, a
rollout), the merge of statistics across workers, thresholds and their exit codes, and the reports.
"""

from __future__ import annotations

import csv
import json
import random

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL.SSL import _lib

from device_sim.effects import SendRequest
from device_sim.https_transport import HTTPSTransport
from device_sim.transport import TransportError
from mdm_server.app import MDMServer, ServerConfig
from mdm_server.ca import CertificateAuthority
from mdmsim import cli
from mdmsim.load import histograms as h
from mdmsim.load import summary
from mdmsim.load.config import Realism, WorkerConfig
from mdmsim.load.meter import error_kind
from mdmsim.load.server_watch import histogram_quantile, parse_exposition, server_figures
from mdmsim.load.thresholds import Threshold, ThresholdError, evaluate, flat_metrics

DEVICES = 200
MUST_PASS = ["errors.count==0", "enroll.enrolled>=200", "rollout.completion>=100%", "checkin.p99<10s"]
MUST_FAIL = "checkin.count<1"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One load run shared by the tests below: 200 devices in 2 workers, the built-in Exchange rollout."""
    out = tmp_path_factory.mktemp("load")
    argv = ["load", "--devices", str(DEVICES), "--processes", "2", "--ramp", "2s", "--duration", "6s",
            "--rollout", "exchange", "--memory",
            "--json", str(out / "run.json"), "--html", str(out / "run.html"), "--csv", str(out / "run")]
    for threshold in [*MUST_PASS, MUST_FAIL]:
        argv += ["--threshold", threshold]
    code = cli.main(argv)
    return code, json.loads((out / "run.json").read_text()), out


def test_a_failed_threshold_exits_99_and_the_others_pass(run):
    code, report, _ = run
    assert code == 99
    verdicts = {v["threshold"]: v for v in report["thresholds"]}
    assert [t for t, v in verdicts.items() if not v["passed"]] == [MUST_FAIL]
    assert verdicts[MUST_FAIL]["actual"] == report["checkin"]["count"] > 0


def test_every_device_enrolls_and_nothing_fails(run):
    _, report, _ = run
    enrollment = dict(report["enrollment"])
    assert 0 < enrollment.pop("completed_after") < report["elapsed"]
    assert enrollment == {"devices": DEVICES, "enrolled": DEVICES, "failed": 0, "failures": {}, "offline": 0}
    assert report["errors"] == {"by_kind": {}, "total": 0}
    assert report["commands"] == {"InstallProfile:Acknowledged": DEVICES}
    for name in ("EnrollmentProfile", "Authenticate", "TokenUpdate", "Idle", "InstallProfile"):
        stats = report["messages"][name]
        assert (stats["count"], stats["errors"]) == (DEVICES, 0), name
        latency = stats["latency"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p95"] <= latency["p99"] <= latency["max"] < 30


def test_two_workers_add_up_to_the_merged_figures(run):
    _, report, _ = run
    workers = report["fleet"]["per_worker"]
    assert len(workers) == 2
    assert [w["devices"] for w in workers] == [DEVICES // 2, DEVICES // 2]
    assert sum(w["requests"] for w in workers) == report["checkin"]["count"]
    assert report["checkin"]["count"] == sum(m["count"] for m in report["messages"].values())
    assert sum(w["enrolled"] for w in workers) == DEVICES
    low, high = sorted(w["p95"] for w in workers)
    assert low * 0.999 <= report["checkin"]["latency"]["p95"] <= high * 1.001  # a merged p95 lies in between


def test_the_rollout_is_measured_per_device(run):
    _, report, _ = run
    rollout = report["rollout"]
    assert (rollout["devices"], rollout["queued"], rollout["pushed"], rollout["acknowledged"]) == (DEVICES,) * 4
    assert rollout["method"] == "install-profile" and rollout["completion"] == 1.0
    times = rollout["time_to"]
    assert 0 < times["p50"] <= times["p95"] <= times["p99"] <= times["p100"] < 60
    for series in ("push_to_checkin", "push_to_ack", "delivery_to_checkin", "delivery_to_ack"):
        assert rollout[series]["count"] == DEVICES, series
    assert rollout["push_to_checkin"]["p99"] < rollout["push_to_ack"]["max"]
    # From the server's push is never shorter than from the push's arrival (the push link's own time is in it).
    assert rollout["push_to_ack"]["p50"] >= rollout["delivery_to_ack"]["p50"] * 0.999
    assert rollout["curve"][-1][1] == 1.0


def test_throughput_over_time_and_the_server_side(run):
    _, report, _ = run
    timeline = report["timeline"]
    assert sum(point["requests"] for point in timeline) == report["checkin"]["count"]
    assert report["checkin"]["rate"] > 0 and report["checkin"]["peak_rate"] >= report["checkin"]["rate"]
    server = report["server"]
    assert 0 < server["cpu_avg"] <= 1.5 and server["rss_max"] > 20e6 and len(server["samples"]) >= 5
    counted = server["metrics"]
    # The server's own counts agree with what the devices saw.
    assert counted["checkins"] == {"Authenticate": DEVICES, "TokenUpdate": DEVICES}
    assert counted["reports"] == {"Idle": DEVICES, "Acknowledged": DEVICES}
    assert counted["pushes"]["accepted"] >= DEVICES and counted["apns"]["delivered"] >= DEVICES
    assert counted["queue_at_end"]["Acknowledged"] == DEVICES
    assert counted["latency_estimate"]["connect"]["count"] == 2 * DEVICES


def test_html_report_is_self_contained_with_its_plots(run):
    _, _, out = run
    page = (out / "run.html").read_text()
    for plot in ("throughput", "latency", "rollout", "server"):
        assert f"id='plot-{plot}'" in page
    assert page.count("<svg") == 4 and "<script" not in page and "http://" not in page.split("<svg")[0]
    assert "server&#x27;s push → Acknowledged" in page and "push reaching the device → Acknowledged" in page


def test_csv_files_hold_the_same_figures(run):
    _, report, out = run
    with (out / "run_stats.csv").open() as handle:
        rows = {row["message"]: row for row in csv.DictReader(handle)}
    assert int(rows["all"]["count"]) == report["checkin"]["count"]
    assert float(rows["Idle"]["p99_ms"]) == pytest.approx(report["messages"]["Idle"]["latency"]["p99"] * 1000)
    with (out / "run_metrics.csv").open() as handle:
        metrics = {row["metric"]: float(row["value"]) for row in csv.DictReader(handle)}
    assert metrics["rollout.p100"] == pytest.approx(report["rollout"]["time_to"]["p100"])
    assert metrics["push_to_ack.p99"] == pytest.approx(report["rollout"]["push_to_ack"]["p99"])
    assert metrics["delivery_to_ack.p99"] == pytest.approx(report["rollout"]["delivery_to_ack"]["p99"])


@pytest.mark.parametrize(("flags", "mode"), [([], "per-session"), (["--connections", "per-request"], "per-request"),
                                             (["--keep-alive"], "keep-alive")])
def test_the_connection_mode_reaches_the_workers_realism(flags, mode):
    from mdmsim.cli_load import options_from

    parser = cli.build_parser()
    options = options_from(parser.parse_args(["load", *flags]))
    config = WorkerConfig(0, 1, 1, 1, "", None, 0.0, 1.0, options.realism)
    assert WorkerConfig.from_json(json.loads(json.dumps(config.to_json()))).realism.connection_mode.value == mode


def test_an_unknown_connection_mode_is_refused_by_name():
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["load", "--connections", "per-device"])
    assert exit_.value.code == 2
    with pytest.raises(ValueError, match="unknown connection mode 'per-device'"):
        Realism(connections="per-device")


def test_rollout_latency_is_anchored_at_the_servers_push_and_at_its_arrival():
    from twisted.internet.task import Clock

    from device_sim.fleet import FleetSpec
    from device_sim.machine import DeviceMachine
    from mdmsim.load.meter import LoadObserver, LoadRunner

    clock = Clock()
    observer = LoadObserver(clock)
    runner = LoadRunner(DeviceMachine(FleetSpec(1).facts(0), seed=1), clock=clock, transport=None, push=None,
                        observer=observer)
    clock.advance(100.0)
    observer.start_rollout(100.0)
    clock.advance(0.5)
    observer.pushed(runner, sent_at=100.2)  # the server pushed at 100.2; it reached the device at 100.5
    clock.advance(0.25)
    observer.request_done(runner, "Idle", 100.5, 200)
    clock.advance(1.0)
    observer.request_done(runner, "InstallProfile:Acknowledged", 100.75, 200)
    rollout = observer.final(clock.seconds())["rollout"]
    figures = {name: h.LatencySummary.of(h.decode(rollout[name])).max for name in
               ("push_to_checkin", "delivery_to_checkin", "push_to_ack", "delivery_to_ack")}
    assert figures == pytest.approx({"push_to_checkin": 0.55, "delivery_to_checkin": 0.25, "push_to_ack": 1.55,
                                     "delivery_to_ack": 1.25}, rel=1e-2)


def test_realism_switches_and_apply_to_label(tmp_path):
    """Apply to Label of a V2 setting with a sync policy, NotNow answers, injected network errors, offline
    devices and APNs delay: each shows up where it should, and nothing else fails."""
    setting = tmp_path / "exchange.json"
    setting.write_text(json.dumps({"kind": "exchange", "name": "Load", "host": "mail.example.com",
                                   "user_name": "load", "email_address": "load@example.com"}))
    argv = ["load", "--devices", "40", "--ramp", "1s", "--duration", "3s", "--memory", "--seed", "7",
            "--rollout", str(setting), "--rollout-timeout", "3s", "--sync-interval", "1m",
            "--not-now-rate", "30%", "--network-error-rate", "5%", "--offline-fraction", "25%",
            "--think", "10ms", "--apns-delay", "50ms", "--json", str(tmp_path / "run.json")]
    assert cli.main(argv) == 0
    report = json.loads((tmp_path / "run.json").read_text())
    config = WorkerConfig(0, 1, 40, 7, "", None, 0.0, 1.0, Realism(offline_fraction=0.25))
    offline = sum(config.offline(index) for index in range(40))
    assert report["enrollment"]["offline"] == offline > 0
    assert set(report["errors"]["by_kind"]) == {"injected"}
    rollout = report["rollout"]
    # A device whose enrollment met an injected error retries 5 s later: it may miss the label.
    assert rollout["method"] == "apply-to-label" and 30 <= rollout["devices"] <= 40
    assert rollout["queued"] == rollout["pushed"] == rollout["devices"]
    assert report["target"]["sync_policy"]
    assert report["commands"]["InstallProfile:NotNow"] > 0
    assert 0 < rollout["acknowledged"] <= 40 - offline
    assert report["commands"]["InstallProfile:Acknowledged"] >= rollout["acknowledged"]
    # From the push reaching the device to the Idle answered holds the think time (5 to 15 ms); from the
    # server's push each device's figure also holds APNs' 50 ms delay, so every percentile moves by as much.
    assert rollout["delivery_to_checkin"]["p50"] >= 0.005
    assert rollout["push_to_checkin"]["p50"] >= rollout["delivery_to_checkin"]["p50"] + 0.049
    assert report["options"]["realism"]["connections"] == "per-session"


def test_an_unreachable_target_exits_1(tmp_path):
    """It exited 2 (as a usage error) with a rollout, and 0 without one: the run failed, so 1."""
    code = cli.main(["load", "--devices", "2", "--duration", "1s", "--ramp", "0s", "--target",
                     "https://127.0.0.1:9/mdm/enroll?token=x", "--rollout", "exchange", "--rollout-at", "0s",
                     "--no-metrics"])
    assert code == 1


def test_a_dead_server_is_a_failed_run_with_its_failures_counted_by_kind(tmp_path):
    out = tmp_path / "dead.json"
    code = cli.main(["load", "--devices", "3", "--duration", "1s", "--ramp", "0s", "--no-metrics", "--target",
                     "https://127.0.0.1:9/mdm/enroll?token=x", "--push-link", "127.0.0.1:9", "--json", str(out),
                     "--csv", str(tmp_path / "dead")])
    report = json.loads(out.read_text())
    assert code == 1 and report["verdict"]["exit_code"] == 1
    assert "the target was unreachable (connections refused)" in report["verdict"]["reasons"]
    assert report["enrollment"] == {**report["enrollment"], "devices": 3, "enrolled": 0, "failed": 3}
    failures = report["failures"]
    assert failures["enrollment"] == {"refused": 3}
    assert failures["push_link"]["connected"] is False and failures["push_link"]["connect_failures"] >= 1
    assert failures["push_link"]["down_seconds"] > 0
    rows = dict(csv.reader((tmp_path / "dead_failures.csv").open()))
    assert rows["enrollment.refused"] == "3" and rows["push_link.connected"] == "False"


def test_ctrl_c_writes_every_report_marked_interrupted_and_exits_130(tmp_path, monkeypatch):
    from mdmsim.load.progress import LiveProgress

    shown = LiveProgress.__call__

    def interrupt_once_enrolled(self, status):
        shown(self, status)
        if status["enrolled"] >= 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(LiveProgress, "__call__", interrupt_once_enrolled)
    out = tmp_path / "run"
    code = cli.main(["load", "--devices", "4", "--ramp", "0s", "--duration", "5m", "--memory",
                     "--json", f"{out}.json", "--csv", str(out), "--html", f"{out}.html"])
    assert code == 130
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["interrupted"] is True and report["elapsed"] < 60
    assert report["enrollment"]["enrolled"] >= 2 and report["checkin"]["count"] > 0
    assert report["verdict"]["exit_code"] == 130
    assert "id='interrupted'" in (tmp_path / "run.html").read_text()
    assert dict(csv.reader((tmp_path / "run_failures.csv").open()))["interrupted"] == "True"


def test_push_link_none_runs_without_one(tmp_path):
    """--push-link none waited 90 s for children that had crashed."""
    out = tmp_path / "run.json"
    code = cli.main(["load", "--devices", "4", "--ramp", "0s", "--duration", "2s", "--memory", "--push-link",
                     "none", "--os-mix", "17.5:1", "--json", str(out)])
    report = json.loads(out.read_text())
    assert code == 0, report["verdict"]
    assert report["target"]["push_link"] is None and report["failures"]["push_link"] is None
    assert report["enrollment"]["enrolled"] == 4


def test_a_rollout_through_the_apns_gateway_reaches_every_device(tmp_path):
    """--apns-gateway: our server pushes over HTTP/2 to `mdmsim apns`, the fleet attaches to its push link."""
    out = tmp_path / "run.json"
    code = cli.main(["load", "--devices", "6", "--ramp", "1s", "--duration", "3s", "--memory", "--apns-gateway",
                     "--rollout", "exchange", "--os-mix", "17.5:1", "--json", str(out)])
    report = json.loads(out.read_text())
    assert code == 0, report["verdict"]
    # With a provider our server opens no push link: every push the fleet got came through the gateway.
    assert report["rollout"]["acknowledged"] == 6 and report["failures"]["pushes_received"] >= 6
    assert report["apns_gateway"]["cpu_seconds"] > 0 and report["options"]["apns_gateway"] is True


def test_an_unsimulable_os_is_a_usage_error_naming_the_simulated_versions(capsys):
    """iOS 8.0 ran 0 devices and exited 0: now the option is refused before anything runs (exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["load", "--devices", "4", "--memory", "--os-mix", "8.0:1,17.5:1"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "iOS 8.0 is below the simulated range" in error and "17.5" in error


# Merging across workers: the function itself --------------------------------------------------------------


def _final(latencies: dict[str, list[float]], **extra) -> dict:
    messages = {}
    for name, values in latencies.items():
        stats = h.MessageStats()
        for value in values:
            stats.record(value, ok=True)
        messages[name] = stats.to_wire()
    base = {"messages": messages, "error_kinds": {}, "commands": {}, "enroll_failures": {}, "sessions": 0,
            "devices": 1, "enrolled": 1, "offline": 0, "cpu": 1.0, "rss": 1, "peak_rss": 1}
    return {**base, **extra}


def test_merge_takes_percentiles_from_merged_histograms_never_averages():
    fast = _final({"Idle": [0.001] * 900}, error_kinds={"timeout": 2})
    slow = _final({"Idle": [0.100] * 100}, error_kinds={"timeout": 1, "refused": 4})
    merged = summary.merge_finals([fast, slow])
    idle = merged["messages"]["Idle"]
    assert idle["count"] == 1000
    # 10% of all requests took 100 ms: the merged p95 is 100 ms; averaging per-worker p95s would say 50.5 ms.
    assert idle["latency"]["p95"] == pytest.approx(0.100, rel=1e-3)
    assert idle["latency"]["p50"] == pytest.approx(0.001, rel=1e-3)
    assert idle["latency"]["mean"] == pytest.approx(0.0109, rel=1e-2)
    assert merged["errors"] == {"by_kind": {"refused": 4, "timeout": 3}, "total": 7}


@settings(max_examples=12, deadline=None)
@given(st.lists(st.floats(min_value=1e-5, max_value=60), min_size=1, max_size=300), st.integers(1, 5),
       st.randoms(use_true_random=False))
def test_merging_any_split_equals_one_histogram_of_everything(values, workers, rng):
    parts: list[list[float]] = [[] for _ in range(workers)]
    for value in values:
        parts[rng.randrange(workers)].append(value)
    merged = summary.merge_finals([_final({"Idle": part}) for part in parts])["messages"]["Idle"]
    whole = h.MessageStats()
    for value in values:
        whole.record(value, ok=True)
    assert merged == whole.summary()


def test_timeline_buckets_from_workers_add_up_by_second():
    def bucket(second, values):
        stats = h.MessageStats()
        for value in values:
            stats.record(value, ok=value < 1)
        return {"second": second, **stats.to_wire()}

    timeline = summary.merge_timeline([bucket(100, [0.01] * 3), bucket(101, [0.02]), bucket(100, [2.0])], 99.5)
    assert [(p["t"], p["requests"], p["errors"]) for p in timeline] == [(0.5, 4, 1), (1.5, 1, 0)]
    assert timeline[0]["max"] == pytest.approx(2.0, rel=1e-3)


def test_wire_format_refuses_garbage_with_a_clear_error():
    with pytest.raises(ValueError, match="not an encoded HdrHistogram"):
        h.MessageStats.from_wire({"count": 1, "errors": 0, "histogram": "garbage!"})


# Rollout completion -----------------------------------------------------------------------------------


def test_time_to_a_share_of_the_label_is_when_that_many_devices_acknowledged():
    acked = [1.0, 2.0, 3.0, 4.0]
    assert summary.time_to(acked, 4, 50) == 2.0
    assert summary.time_to(acked, 4, 100) == 4.0
    assert summary.time_to(acked, 5, 100) is None  # one device never acknowledged
    assert summary.time_to(acked, 5, 80) == 4.0
    assert summary.time_to([], 0, 50) is None


def test_rollout_figures_merge_devices_from_every_worker():
    def part(acked, latency):
        hist = h.new_histogram()
        for _ in acked:
            h.record(hist, latency)
        return {"rollout": {"push_to_checkin": h.encode(hist), "push_to_ack": h.encode(hist), "acked_at": acked,
                            "delivery_to_ack": h.encode(hist)}}  # no delivery_to_checkin: it merges as empty

    start = {"devices": 4, "method": "install-profile"}
    figures = summary.rollout_figures([part([0.5, 3.0], 0.2), part([1.0], 0.4)], start)
    assert figures["acknowledged"] == 3 and figures["completion"] == 0.75
    assert figures["time_to"] == {"p50": 1.0, "p95": None, "p99": None, "p100": None}
    assert figures["push_to_ack"]["count"] == figures["delivery_to_ack"]["count"] == 3
    assert figures["push_to_ack"]["max"] == pytest.approx(0.4, rel=1e-3)
    assert figures["delivery_to_checkin"]["count"] == 0


# Thresholds ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "metric", "op", "value"), [
    ("checkin.p95<200ms", "checkin.p95", "<", 0.2),
    ("errors.count == 0", "errors.count", "==", 0.0),
    ("rollout.p100<=30s", "rollout.p100", "<=", 30.0),
    ("rollout.completion>=99.5%", "rollout.completion", ">=", 0.995),
    ("server.rss_max<512MB", "server.rss_max", "<", 512e6),
    ("checkin.rate>2400/s", "checkin.rate", ">", 2400.0),
    ("Idle.p99<1m", "Idle.p99", "<", 60.0),
])
def test_thresholds_parse_with_units(text, metric, op, value):
    threshold = Threshold.parse(text)
    assert (threshold.metric, threshold.op) == (metric, op)
    assert threshold.value == pytest.approx(value)


@pytest.mark.parametrize("text", ["p95<200ms", "checkin.p95 200ms", "checkin.p95<fast", "checkin.p95<2 parsecs"])
def test_bad_thresholds_are_refused_with_a_reason(text):
    with pytest.raises(ThresholdError, match="threshold|unit"):
        Threshold.parse(text)


def test_a_threshold_on_an_unmeasured_metric_fails():
    verdicts = evaluate([Threshold.parse("rollout.p100<30s"), Threshold.parse("errors.count==0")],
                        {"errors.count": 0.0})
    assert [(v.passed, v.actual) for v in verdicts] == [(False, None), (True, 0.0)]


def test_flat_metrics_name_every_message_statistic():
    report = {"messages": {"Idle": {"count": 4, "errors": 1, "latency": {"count": 4, "p95": 0.1}}},
              "checkin": {"count": 4, "errors": 1, "latency": {"p95": 0.1}, "rate": 2.0},
              "errors": {"by_kind": {"timeout": 1}}, "server": {"cpu_avg": 0.5, "samples": []}}
    flat = flat_metrics(report)
    assert flat["Idle.error_rate"] == 0.25 and flat["checkin.rate"] == 2.0
    assert flat["errors.timeout"] == 1.0 and flat["errors.count"] == 1.0 and flat["server.cpu_avg"] == 0.5


# Server side and failure kinds ------------------------------------------------------------------------------


def test_server_figures_are_the_difference_over_the_run():
    before = parse_exposition('mdmsim_checkin_messages_total{message_type="Authenticate",code="200"} 5\n')
    after = parse_exposition(
        'mdmsim_checkin_messages_total{message_type="Authenticate",code="200"} 12\n'
        'mdmsim_checkin_messages_total{message_type="TokenUpdate",code="400"} 1\n'
        'mdmsim_request_duration_seconds_bucket{channel="connect",le="0.01"} 90\n'
        'mdmsim_request_duration_seconds_bucket{channel="connect",le="0.1"} 100\n'
        'mdmsim_request_duration_seconds_bucket{channel="connect",le="+Inf"} 100\n')
    figures = server_figures(before, after)
    assert figures["checkins"] == {"Authenticate": 7, "TokenUpdate (400)": 1}
    assert figures["latency_estimate"]["connect"]["count"] == 100
    assert figures["latency_estimate"]["connect"]["p50"] == pytest.approx(0.01 * 50 / 90)


def test_histogram_quantile_interpolates_like_promql():
    buckets = [(0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.5, []) == 0.0


@pytest.mark.parametrize(("reason", "kind"), [
    ("timed out after 30s", "timeout"), ("no response: Connection was refused by other side", "refused"),
    ("no response: Connection to the other side was lost in a non-clean fashion", "connection_lost"),
    ("injected network error: connection reset", "injected"), ("something odd", "other"),
])
def test_transport_failures_are_counted_by_kind(reason, kind):
    assert error_kind(reason) == kind


def test_histogram_values_are_kept_within_range():
    stats = h.MessageStats()
    for value in (0.0, 1e-9, 7200.0, random.Random(1).random()):
        stats.record(value, ok=True)
    latency = stats.summary()["latency"]
    assert latency["count"] == 4 and latency["max"] == pytest.approx(3600, rel=1e-3)


# The fleet's HTTPS client over real TLS on loopback --------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_https_transport_keep_alive_resumes_and_retries_a_connection_the_server_closed(tmp_path):
    from twisted.internet import reactor  # pytest-twisted's reactor: this test really uses sockets

    server = MDMServer(ServerConfig(data_dir=tmp_path / "data", listen="ssl:0:interface=127.0.0.1",
                                    push_link=None, server_names=("127.0.0.1",), in_memory=True), clock=reactor,
                       reactor=reactor)
    server.startService()
    yield server.listening()
    transport = HTTPSTransport(reactor, keep_alive=True)
    request = SendRequest(1, f"{server.url}/mdm/connect", "application/x-apple-aspen-mdm", b"not a plist",
                          "not a signature", "Idle")
    try:
        first = yield transport.send(request, (server.ca.certificate,))
        assert first.status == 400 and b"Mdm-Signature" in first.body  # refused, but answered over TLS
        (client,) = transport.policy.pooled()  # the connection waits in the pool
        client.transport.loseConnection()  # as if the server closed it just as it was reused...
        second = yield transport.send(request, (server.ca.certificate,))  # ...before the client noticed
        assert second.status == 400 and client.reused and client.closed
        (fresh,) = transport.policy.pooled()
        assert fresh is not client and not fresh.reused
        session = fresh.transport.getHandle()
        assert _lib.SSL_session_reused(session._ssl) == 1  # TLS resumed the first connection's session
        stranger = CertificateAuthority.create("another CA", now=server.now()).certificate
        refused = yield transport.send(request, (stranger,)).addCallbacks(lambda reply: reply,
                                                                          lambda failure: failure.value)
        assert isinstance(refused, TransportError) and refused.untrusted
    finally:
        transport.close()
        yield server.stopService()


def test_a_declared_rollout_is_measured_until_each_status_report_shows_it_active(tmp_path):
    """--rollout-delivery declaration: Apply to Label queues DeclarativeManagement, and a device counts once its
    DDM status report shows the account declaration active and valid (the iOS 16 devices included: declarations
    reach them too); percentiles from the kick are in the JSON, the summary and the HTML."""
    argv = ["load", "--devices", "12", "--ramp", "1s", "--duration", "2s", "--memory", "--seed", "3",
            "--os-mix", "17.5:2,16.0:1", "--rollout", "exchange", "--rollout-delivery", "declaration",
            "--rollout-timeout", "20s", "--json", str(tmp_path / "run.json"), "--html", str(tmp_path / "run.html")]
    assert cli.main(argv) == 0
    report = json.loads((tmp_path / "run.json").read_text())
    rollout = report["rollout"]
    assert rollout["declarative"] and rollout["source"] == "built-in Exchange setting, delivery declaration"
    assert (rollout["devices"], rollout["queued"], rollout["pushed"], rollout["acknowledged"]) == (12,) * 4
    assert report["commands"]["DeclarativeManagement:Acknowledged"] == 12
    assert "InstallProfile:Acknowledged" not in report["commands"]
    convergence = rollout["ddm_convergence"]
    assert convergence["from_push"]["count"] == convergence["from_rollout"]["count"] == 12
    assert 0 < convergence["from_push"]["p50"] <= convergence["from_push"]["p99"] <= rollout["time_to"]["p100"]
    assert "reported the account declaration active and valid" in (tmp_path / "run.html").read_text()


def test_a_declared_rollout_counts_the_status_report_not_an_install_acknowledgement():
    from twisted.internet.task import Clock

    from device_sim.fleet import FleetSpec
    from device_sim.machine import DeviceMachine
    from mdmsim.load.meter import LoadObserver, LoadRunner

    clock = Clock()
    observer = LoadObserver(clock)
    runner = LoadRunner(DeviceMachine(FleetSpec(1).facts(0), seed=1), clock=clock, transport=None, push=None,
                        observer=observer)
    observer.start_rollout(0.0, declarative=True)
    observer.request_done(runner, "InstallProfile:Acknowledged", 0.0, 200)
    observer.request_done(runner, "DeclarativeManagement:status", 0.0, 200)  # it holds no declaration yet
    assert observer.final(clock.seconds())["rollout"]["acked_at"] == []


def test_rollout_delivery_needs_a_setting_to_create():
    from mdmsim.load.rollout import RolloutError, RolloutPlan

    with pytest.raises(RolloutError, match="needs a setting to create"):
        RolloutPlan.parse("s3", None, "declaration")
    plan = RolloutPlan.parse("exchange", None, "auto")
    assert plan.declarative and plan.setting_body["delivery"] == "auto"
    assert not RolloutPlan.parse("exchange", None, "profile").declarative
