"""A rollout through lossy APNs (20% of pushes dropped) while 10% of the fleet is offline for 90 minutes.

Delivery rests on the 30-minute sync policy alone; every device must have the profile two intervals after return.
"""

from statistics import median

from cryptography.hazmat.primitives.serialization import Encoding

from mdm_world import Scenario
from mdm_world import procedure as P
from mdm_world.roots import self_signed_root
from scenarios._support import device_commands

COUNT = 50
INTERVAL = 30 * 60.0  # the sync policy's interval, seconds
APPLY_AT, BACK_AT = 10 * 60.0, 100 * 60.0  # the rollout; the offline devices' return
SLACK = 120.0  # wake-ups go out at the end of the server's 60-second buckets, then APNs' delay and jitter
DEADLINE = BACK_AT + 2 * INTERVAL + SLACK
OFFLINE = range(0, COUNT, 10)  # every tenth device: 10% of the fleet

scenario = Scenario(
    name="push-drop-offline",
    purpose="APNs drops 20% of pushes and 10% of devices are offline for 90 minutes: an Apply to Label rollout "
            "still reaches every device within two sync intervals after the offline devices return",
    count=COUNT, seed=41, os_mix="16.0:1,17.5:3", kinds="iphone:3,ipad:1", duration="3h",
    apns={"drop_rate": 0.2, "delay": 0.5, "jitter": 2.0},
)


@scenario.at("0s")
def enroll_fleet(ctx):
    ctx.enroll(spread="60s")


@scenario.at("3m", "admin: filter label for every iOS device, 30-minute sync policy on it")
def sync_policy(ctx):
    P.filter_label(ctx.admin, "all-ios", "All iOS", {"platforms": ["iOS"]})
    P.sync_policy(ctx.admin, "Every 30 minutes", INTERVAL / 60, ["all-ios"])
    ctx.vars["root"] = P.certificate_setting(ctx.admin, "Branch root", _der(self_signed_root("Branch Root CA")))
    return f"{ctx.admin.get('/api/v2/labels/all-ios')['memberCount']} devices in the label"


@scenario.at("5m", "10% of devices go offline: their push link is dead without APNs knowing (pushes are lost)")
def go_offline(ctx):
    # runner.online=False: the device ignores pushes (the pessimistic case; APNs store-and-forward would
    # hold the last one). It sends nothing either, as nothing else wakes it.
    for index in OFFLINE:
        ctx.devices[index].online = False
    return f"{len(OFFLINE)} devices offline"


@scenario.at(APPLY_AT, "rollout: admin applies the root certificate setting to the label (no forced check-in)")
def rollout(ctx):
    report = P.apply(ctx.admin, "all-ios", ctx.vars["root"])
    return f"{report['installsQueued']} InstallProfile commands queued"


@scenario.at(BACK_AT - 1, "offline devices' InstallProfile, as the server sees it just before they return")
def before_return(ctx):
    statuses = [c["status"] for i in OFFLINE for c in device_commands(ctx, ctx.devices[i], "InstallProfile")]
    ctx.vars["offline_statuses"] = statuses
    ctx.vars["offline_had_it"] = sum(_installed_at(ctx, i) is not None for i in OFFLINE)
    return f"{statuses.count('Queued')}/{len(OFFLINE)} still Queued"


@scenario.at(BACK_AT, "the offline devices come back online")
def come_back(ctx):
    for index in OFFLINE:
        ctx.devices[index].online = True
    return f"{len(OFFLINE)} devices online again"


def _progress(ctx):
    have = sum(_installed_at(ctx, index) is not None for index in range(COUNT))
    offline = sum(_installed_at(ctx, index) is not None for index in OFFLINE)
    return f"{have}/{COUNT} devices have the profile ({offline}/{len(OFFLINE)} of the offline ones)"


for _minute in range(20, 180, 10):  # the convergence curve, in the timeline
    scenario.at(f"{_minute}m", "rollout progress")(_progress)


@scenario.at("2h59m", "convergence measured")
def convergence(ctx):
    online = [t - APPLY_AT for i in range(COUNT) if i not in OFFLINE if (t := _installed_at(ctx, i)) is not None]
    back = [t - BACK_AT for i in OFFLINE if (t := _installed_at(ctx, i)) is not None]
    ctx.vars["online_times"], ctx.vars["back_times"] = online, back
    return (f"online devices: median {_minutes(median(online))}, last {_minutes(max(online))} after the "
            f"apply; returning devices: median {_minutes(median(back))}, last {_minutes(max(back))} after "
            f"their return (deadline {_minutes(2 * INTERVAL)})") if online and back else "nothing installed"


def _der(certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)


def _installed_at(ctx, index: int) -> float | None:
    """When the device installed the rolled-out profile, in scenario seconds (device-side record)."""
    identifier = f"com.mdmsim.setting.{ctx.vars.get('root')}"
    installed = ctx.devices[index].machine.profiles.get(identifier)
    return None if installed is None else installed.installed_at.timestamp() - _start(ctx)


def _start(ctx) -> float:
    return ctx.world.now() - ctx.elapsed


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _metric(ctx, name: str, label: str, value: str) -> float:
    """One sample from GET /metrics (Prometheus text), 0 when absent."""
    text = ctx.world.admin_http.request("GET", "/metrics").body.decode()
    prefix = f'{name}{{{label}="{value}"}} '
    return next((float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix)), 0.0)


@scenario.expect("every device has the profile within two sync intervals after the offline devices return")
def converged(ctx):
    late = [i for i in range(COUNT) if (t := _installed_at(ctx, i)) is None or t > DEADLINE]
    return not late, f"{COUNT - len(late)}/{COUNT} by {_minutes(DEADLINE)}; late or missing: {late}"


@scenario.expect("offline devices got nothing while offline: their InstallProfile waited Queued on the server")
def offline_waited(ctx):
    statuses, had = ctx.vars["offline_statuses"], ctx.vars["offline_had_it"]
    waiting = statuses.count("Queued")
    return waiting == len(OFFLINE) and had == 0, f"{waiting}/{len(OFFLINE)} Queued, {had} installed early"


@scenario.expect("the server records every InstallProfile Acknowledged, by the deadline")
def server_agrees(ctx):
    done = 0
    for runner in ctx.devices:
        for command in device_commands(ctx, runner, "InstallProfile"):
            result_at = command["resultAt"]
            done += command["status"] == "Acknowledged" and result_at - _start(ctx) <= DEADLINE
    return done == COUNT, f"{done}/{COUNT} acknowledged in time"


@scenario.expect("APNs really dropped about 20% of the pushes, and the server saw them all as accepted")
def drops_happened(ctx):
    accepted = _metric(ctx, "mdmsim_apns_pushes_total", "event", "accepted")
    dropped = _metric(ctx, "mdmsim_apns_pushes_total", "event", "dropped")
    server = _metric(ctx, "mdmsim_pushes_total", "outcome", "accepted")
    rate = dropped / accepted if accepted else 0.0
    return 0.12 <= rate <= 0.28 and server == accepted, (
        f"{dropped:g} of {accepted:g} accepted pushes dropped ({rate:.0%}); the server counted {server:g} accepted")


@scenario.expect("drops cost time: some online devices needed more than one sync interval")
def drops_visible(ctx):
    slow = sum(1 for t in ctx.vars["online_times"] if t > INTERVAL + SLACK)
    return slow > 0, f"{slow}/{len(ctx.vars['online_times'])} online devices took over one interval"
