"""The protocol package stays pure: importing every module of mdm_protocol must not import Twisted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Runs in a fresh interpreter so modules other tests imported (Twisted among them) cannot hide a leak.
PROBE = """
import importlib, json, pkgutil, sys
{prelude}
import mdm_protocol
names = [m.name for m in pkgutil.walk_packages(mdm_protocol.__path__, "mdm_protocol.")]
for name in names:
    importlib.import_module(name)
leaked = sorted(k for k in sys.modules if k == "twisted" or k.startswith("twisted."))
print(json.dumps(dict(modules=names, twisted=leaked)))
"""


def probe(prelude: str = "") -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.replace("{prelude}", prelude)], cwd=REPO, capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert result.returncode == 0, f"importing mdm_protocol failed:\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_no_mdm_protocol_module_imports_twisted():
    outcome = probe()
    assert {"mdm_protocol.checkin", "mdm_protocol.report", "mdm_protocol.commands"} <= set(outcome["modules"])
    assert outcome["twisted"] == [], f"mdm_protocol pulled in Twisted: {outcome['twisted'][:5]}"


def test_the_probe_sees_twisted_when_it_is_imported():
    # Guards the guard: if Twisted were imported, the probe above would report it.
    assert "twisted" in probe("import twisted.internet.task")["twisted"]
