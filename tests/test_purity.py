"""The pure layers stay free of Twisted at run time: the runtime half of pyproject's import-linter contract.

lint-imports reads our import statements; this imports the same modules in a fresh interpreter, so a third party
that pulls Twisted in (which import-linter cannot follow) shows up too. The module list is the contract's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONTRACT = "the pure modules import no Twisted, directly or through our modules"
# Each module (and, for a package, every submodule) is imported in turn; a leak is charged to the first module
# whose import brought Twisted in. A fresh interpreter, so Twisted imported by other tests cannot hide a leak.
PROBE = """
import importlib, json, pkgutil, sys
{prelude}
def twisted():
    return {k for k in sys.modules if k == "twisted" or k.startswith("twisted.")}
leaks, seen = {}, []
def charge(name):
    before = twisted()
    module = importlib.import_module(name)
    seen.append(name)
    if twisted() - before:
        leaks[name] = sorted(twisted() - before)[:5]
    return module
for name in json.loads(sys.argv[1]):
    module = charge(name)
    for sub in pkgutil.walk_packages(getattr(module, "__path__", []), name + "."):
        charge(sub.name)
print(json.dumps(dict(modules=seen, leaks=leaks, twisted=sorted(twisted()))))
"""


def pure_modules() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["name"] == CONTRACT]
    assert contract["forbidden_modules"] == ["twisted"]
    return contract["source_modules"]


def probe(modules: list[str], prelude: str = "") -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.replace("{prelude}", prelude), json.dumps(modules)], cwd=REPO,
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, f"importing the pure modules failed:\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_no_pure_module_imports_twisted_at_run_time():
    modules = pure_modules()
    assert {"mdm_protocol", "device_sim.machine", "mdm_server.service", "mdm_server.admin"} <= set(modules)
    outcome = probe(modules)
    # The walk reached the submodules of the packages (mdm_protocol's codecs, admin's rules, the mail package).
    assert {"mdm_protocol.checkin", "mdm_protocol.report", "mdm_server.admin.labels",
            "mdm_server.admin.expected_readiness", "device_sim.mail.compose"} <= set(outcome["modules"])
    assert outcome["leaks"] == {}, f"pure modules pulled in Twisted: {outcome['leaks']}"
    assert outcome["twisted"] == []


def test_the_probe_sees_twisted_when_a_module_imports_it():
    # Guards the guard: a module that imports Twisted is reported, and charged to that module.
    outcome = probe(["mdm_protocol", "twisted.internet.task"])
    assert "twisted.internet.task" in outcome["leaks"]
    assert "mdm_protocol" not in outcome["leaks"]
    assert "twisted" in probe(["mdm_protocol"], "import twisted.internet.task")["twisted"]
