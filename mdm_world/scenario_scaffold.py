"""`mdmsim scenario new NAME`: the text of a new scenario file that runs and passes as written.

The scaffold is the first step of docs/scenarios.md's tutorial; it uses only the names that guide documents.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")

TEMPLATE = '''\
"""{title}: one line on the MDM pitfall this scenario reproduces (edit me).

Run it:  mdmsim scenario run {path}
         (add --json report.json for the timeline and the verdicts as JSON)
Every name used here is explained in the scenario guide, docs/scenarios.md.
"""

from cryptography.hazmat.primitives.serialization import Encoding

from mdm_world import Scenario
from mdm_world import procedure as P
from mdm_world.roots import self_signed_root

scenario = Scenario(
    name="{name}",
    purpose="A root certificate setting applied to a label reaches every device after a forced check-in",
    count=6, seed=1, os_mix="12.0:1,17.5:2", duration="20m",
)


@scenario.at("0s")
def enroll_fleet(ctx):
    ctx.enroll(spread="60s")


@scenario.at("5m", "admin: root certificate setting on a label of every iOS device, then a forced check-in")
def roll_out(ctx):
    root = self_signed_root("{title} Root CA")
    ctx.vars["setting"] = P.certificate_setting(ctx.admin, "{title} root", root.public_bytes(Encoding.DER))
    P.filter_label(ctx.admin, "all-ios", "All iOS", {{"platforms": ["iOS"]}})
    report = P.apply(ctx.admin, "all-ios", ctx.vars["setting"])
    P.force_check_in(ctx.admin, [runner.machine.facts.device_id for runner in ctx.enrolled()])
    return f"{{report['installsQueued']}} InstallProfile commands queued"


@scenario.expect("every device enrolled")
def all_enrolled(ctx):
    enrolled = len(ctx.enrolled())
    return enrolled == scenario.count, f"{{enrolled}}/{{scenario.count}} enrolled"


@scenario.expect("every device installed the root certificate profile (the device's own record)")
def installed(ctx):
    identifier = f"com.mdmsim.setting.{{ctx.vars.get('setting')}}"
    have = [runner for runner in ctx.devices if runner.machine.profiles.get(identifier) is not None]
    return len(have) == scenario.count, f"{{len(have)}}/{{scenario.count}} devices have {{identifier}}"


@scenario.expect("the server recorded every InstallProfile as Acknowledged")
def acknowledged(ctx):
    statuses = [command["status"] for runner in ctx.devices
                for command in P.device_commands(ctx.admin, runner.machine.facts.device_id, "InstallProfile")]
    done = statuses.count("Acknowledged")
    return done == len(statuses) == scenario.count, f"{{done}} of {{len(statuses)}} acknowledged"
'''


class ScaffoldError(Exception):
    """A name that cannot become a scenario file, or a file that already exists."""


def scenario_name(name: str) -> str:
    """The scenario's name as its file and `Scenario(name=...)` spell it: lower case, digits, '-' or '_'."""
    if not _NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ScaffoldError(f"bad scenario name {name!r}: use lower case letters, digits, '-' and '_', "
                            "starting with a letter (e.g. push-storm)")
    return name


def scaffold(name: str, path: Path) -> str:
    """The text of a runnable scenario called `name` that will live at `path`."""
    name = scenario_name(name)
    title = name.replace("_", " ").replace("-", " ").capitalize()
    return TEMPLATE.format(name=name.replace("_", "-"), title=title, path=path)


def write_scaffold(name: str, directory: Path) -> Path:
    """Write NAME.py (hyphens become underscores) in `directory`; never overwrite a file."""
    path = directory / f"{scenario_name(name).replace('-', '_')}.py"
    if path.exists():
        raise ScaffoldError(f"{path} already exists; pick another name or --dir")
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(scaffold(name, path))
    return path
