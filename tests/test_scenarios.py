"""Every scenario in the library passes in virtual time, replays byte for byte, and breakage is exit 2."""

from __future__ import annotations

import json

import pytest

from mdm_world.scenario import Scenario
from mdmsim.cli import main
from mdmsim.cli_scenario import library, load

SCENARIOS = library()


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_passes(path):
    result = load(path).run()
    failed = [f"{o.name}: {o.detail}" for o in result.outcomes if not o.passed]
    assert result.broken is None, result.broken
    assert not failed, failed
    assert result.outcomes, "a scenario without expectations proves nothing"


def test_same_seed_same_json_byte_for_byte(tmp_path):
    path = next(p for p in SCENARIOS if p.stem == "not_now_storm")
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["scenario", "run", str(path), "--json", str(first)]) == 0
    assert main(["scenario", "run", str(path), "--json", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()
    assert json.loads(first.read_bytes())["passed"] is True


def test_a_failing_expectation_exits_1_and_a_broken_step_exits_2():
    failing = Scenario(name="failing", purpose="expects the impossible", count=1, duration="1m")
    failing.expect("two plus two is five")(lambda ctx: (False, "it is four"))
    assert failing.run().exit_code == 1

    broken = Scenario(name="broken", purpose="a step that raises", count=1, duration="1m")
    broken.at("10s")(lambda ctx: 1 / 0)
    result = broken.run()
    assert result.exit_code == 2 and "ZeroDivisionError" in result.broken


def test_missing_scenario_file_is_exit_2(tmp_path):
    assert main(["scenario", "run", str(tmp_path / "nope.py")]) == 2


def test_a_scenario_with_no_expectation_is_broken_not_passed():
    """It passed whatever happened: a scenario that judges nothing is broken (exit 2)."""
    empty = Scenario(name="empty", purpose="expects nothing", count=1, duration="1m")
    empty.at("10s")(lambda ctx: None)
    result = empty.run()
    assert result.exit_code == 2 and "defines no expectation" in result.broken


def test_ctrl_c_during_a_scenario_exits_130_without_a_traceback(monkeypatch, capsys):
    def interrupt(self, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Scenario, "run", interrupt)
    assert main(["scenario", "run", str(SCENARIOS[0])]) == 130
    captured = capsys.readouterr()
    assert "interrupted" in captured.err and "Traceback" not in captured.out + captured.err
