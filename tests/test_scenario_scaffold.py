"""`mdmsim scenario new NAME`: the scaffold runs and passes as written, its checks can fail, bad names are refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mdm_world.scenario_scaffold import ScaffoldError, scaffold, scenario_name
from mdmsim.cli import main
from mdmsim.cli_scenario import load


def test_the_scaffold_runs_and_passes(tmp_path, capsys):
    assert main(["scenario", "new", "push-storm", "--dir", str(tmp_path)]) == 0
    path = tmp_path / "push_storm.py"
    assert f"mdmsim scenario run {path}" in capsys.readouterr().out.replace("\n", "")
    assert main(["scenario", "run", str(path), "--json", str(tmp_path / "report.json")]) == 0
    report = (tmp_path / "report.json").read_text()
    assert '"passed": true' in report and '"scenario": "push-storm"' in report
    # Style: the file a user starts from is clean by the project's own linter.
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--line-length", "120", str(path)],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_the_scaffolds_checks_can_fail(tmp_path):
    assert main(["scenario", "new", "no_rollout", "--dir", str(tmp_path)]) == 0
    scenario = load(tmp_path / "no_rollout.py")
    scenario.count = 4
    scenario.steps = [step for step in scenario.steps if step.name == "enroll fleet"]  # never roll out
    result = scenario.run()
    assert result.exit_code == 1
    verdicts = {outcome.name: (outcome.passed, outcome.detail) for outcome in result.outcomes}
    assert verdicts["every device enrolled"] == (True, "4/4 enrolled")
    passed, detail = verdicts["every device installed the root certificate profile (the device's own record)"]
    assert not passed and detail.startswith("0/4 devices have")
    assert verdicts["the server recorded every InstallProfile as Acknowledged"] == (False, "0 of 0 acknowledged")


def test_an_existing_file_is_never_overwritten(tmp_path):
    (tmp_path / "mine.py").write_text("# my work\n")
    assert main(["scenario", "new", "mine", "--dir", str(tmp_path)]) == 2
    assert (tmp_path / "mine.py").read_text() == "# my work\n"


@pytest.mark.parametrize("name", ["", "Push", "9lives", "a b", "../up", "class", "x" * 64])
def test_bad_names_are_refused(name):
    with pytest.raises(ScaffoldError):
        scenario_name(name)


def test_a_name_becomes_the_scenario_name_and_file(tmp_path):
    text = scaffold("key_rotation", tmp_path / "key_rotation.py")
    assert 'name="key-rotation"' in text and "Key rotation" in text
