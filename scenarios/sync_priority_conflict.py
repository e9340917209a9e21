"""Overlapping labels with different sync policies: each device syncs at its highest-priority policy's interval.

Counted on the devices (check-in sessions per device over whole intervals) and read back from the admin API.
"""

from collections import defaultdict

from device_sim import effects as fx
from mdm_world import Scenario
from mdm_world import procedure as P
from scenarios._support import ids_of

COUNT = 20
VIP, FIELD = range(0, 10), range(5, 15)  # manual labels; 5..9 are in both, 15..19 in neither
WINDOW = 120 * 60.0  # a whole number of every interval below
FIRST, SECOND = (10 * 60.0, 10 * 60.0 + WINDOW), (140 * 60.0, 140 * 60.0 + WINDOW)
POLICIES = (  # (id, name, minutes, labels, priority)
    ("hourly", "Hourly (everyone)", 60, ["all-ios"], 1),
    ("vip", "VIP every 15 minutes", 15, ["vip"], 5),
    ("field", "Field staff every 30 minutes", 30, ["field"], 10),  # outranks VIP though it syncs less often
)

scenario = Scenario(
    name="sync-priority-conflict",
    purpose="Two labels carry different sync policies on overlapping devices: the higher-priority policy's "
            "interval wins (not the shorter one); deactivating it hands the devices to the next policy",
    count=COUNT, seed=51, os_mix="15.0:1,17.5:2", kinds="iphone:3,ipad:1", duration="4h30m",
)


class CheckInCounter:
    """Wraps a runner's observer: counts the device's check-in sessions by end time, forwards everything."""

    def __init__(self, inner, times: list[float]) -> None:
        self.inner, self.times = inner, times

    def request_done(self, runner, message, sent_at, status) -> None:
        self.inner.request_done(runner, message, sent_at, status)

    def effect(self, runner, effect) -> None:
        if isinstance(effect, fx.SessionEnded):
            self.times.append(runner.now())
        self.inner.effect(runner, effect)


@scenario.at("0s")
def enroll_fleet(ctx):
    ctx.enroll(spread="60s")


@scenario.at("3m", "admin: labels all-ios (filter), vip and field (manual, overlapping), three sync policies")
def policies(ctx):
    admin = ctx.admin
    P.filter_label(admin, "all-ios", "All iOS", {"platforms": ["iOS"]})
    P.manual_label(admin, "vip", "VIP", ids_of(ctx.devices[i] for i in VIP))
    P.manual_label(admin, "field", "Field staff", ids_of(ctx.devices[i] for i in FIELD))
    for policy_id, name, minutes, labels, priority in POLICIES:
        admin.post("/api/v2/sync-policies", {"id": policy_id, "name": name, "syncIntervalMinutes": minutes,
                                             "labelIds": labels, "priority": priority})
    ctx.vars["api_first"] = _api_view(ctx)
    return f"{len(POLICIES)} policies"


@scenario.at("5m", "devices' check-in sessions counted from here on (device side)")
def count_check_ins(ctx):
    ctx.vars["sessions"] = sessions = defaultdict(list)
    for runner in ctx.devices:
        runner.observer = CheckInCounter(runner.observer, sessions[runner.machine.facts.index])


@scenario.at(FIRST[1] + 5 * 60, "admin deactivates the field policy")
def deactivate_field(ctx):
    policy = ctx.admin.get("/api/v2/sync-policies/field")
    body = {key: policy[key] for key in ("name", "syncIntervalMinutes", "labelIds", "priority")}
    ctx.admin.put("/api/v2/sync-policies/field", {**body, "status": "inactive"})
    ctx.vars["api_second"] = _api_view(ctx)
    return "devices in both labels fall back to VIP, field-only devices to hourly"


@scenario.at("4h29m", "check-ins per device, per window")
def summary(ctx):
    parts = []
    for label, window in (("first", FIRST), ("second", SECOND)):
        counts = [_in_window(ctx, index, window) for index in range(COUNT)]
        spread = ", ".join(f"{counts.count(n)}×{n}" for n in sorted(set(counts), reverse=True))
        parts.append(f"{label} 2 h: {spread}")
    return "; ".join(parts)


def _start(ctx) -> float:
    return ctx.world.now() - ctx.elapsed


def _in_window(ctx, index: int, window: tuple[float, float]) -> int:
    start = _start(ctx)
    return sum(1 for t in ctx.vars["sessions"][index] if window[0] <= t - start < window[1])


def _api_view(ctx) -> dict[str, tuple[str, float]]:
    devices = ctx.admin.get("/api/v2/devices?limit=1000")["items"]
    return {d["uuid"]: (d["syncPolicyId"], d["syncIntervalMinutes"]) for d in devices}


def _expected(index: int, *, field_active: bool) -> tuple[str, float]:
    if field_active and index in FIELD:
        return "field", 30
    if index in VIP:
        return "vip", 15
    return "hourly", 60


def _compare_counts(ctx, window, field_active: bool):
    wrong = []
    for index in range(COUNT):
        minutes = _expected(index, field_active=field_active)[1]
        want, got = int(WINDOW / 60 / minutes), _in_window(ctx, index, window)
        if got != want:
            wrong.append(f"device {index}: {got} check-ins, expected {want}")
    return not wrong, f"{COUNT - len(wrong)}/{COUNT} exact" + (f"; {wrong[:3]}" if wrong else "")


def _compare_api(ctx, view, field_active: bool):
    wrong = [index for index, runner in enumerate(ctx.devices)
             if view.get(runner.machine.facts.device_id) != _expected(index, field_active=field_active)]
    return not wrong, f"{COUNT - len(wrong)}/{COUNT} as expected; wrong: {wrong}"


@scenario.expect("the admin API gives each device its highest-priority policy (field beats VIP beats hourly)")
def api_first(ctx):
    return _compare_api(ctx, ctx.vars["api_first"], field_active=True)


@scenario.expect("devices check in exactly once per effective interval: 8 (VIP), 4 (field, incl. VIP+field), "
                 "2 (hourly) in 2 hours")
def counts_first(ctx):
    return _compare_counts(ctx, FIRST, field_active=True)


@scenario.expect("devices in both labels sync every 30 minutes, not every 15: priority wins, not the interval")
def overlap_follows_priority(ctx):
    both = [i for i in VIP if i in FIELD]
    counts = [_in_window(ctx, i, FIRST) for i in both]
    return counts == [4] * len(both), f"check-ins in 2 h for the {len(both)} devices in both labels: {counts}"


@scenario.expect("with the field policy inactive, the API moves its devices to VIP or hourly")
def api_second(ctx):
    return _compare_api(ctx, ctx.vars["api_second"], field_active=False)


@scenario.expect("and the devices follow: 8 check-ins (VIP, incl. former field+VIP), 2 (hourly) in 2 hours")
def counts_second(ctx):
    return _compare_counts(ctx, SECOND, field_active=False)
