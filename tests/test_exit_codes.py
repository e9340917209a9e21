"""One set of exit codes for every command: the verdict from what a run measured, the flags that feed it, and
each command's --help carrying the table."""

from __future__ import annotations

import argparse

import pytest

from mdmsim import cli
from mdmsim.cli_fleet import fraction, push_link_address
from mdmsim.exit_codes import Exit, RunFigures, judge

GOOD = RunFigures(devices=10, enrolled=10, failed=0, requests=40, errors=0)


def test_a_clean_run_is_0():
    assert judge(GOOD) == judge(GOOD, max_error_rate=0.5)
    assert judge(GOOD).code is Exit.OK and judge(GOOD).reasons == ()


@pytest.mark.parametrize(("figures", "reason"), [
    (RunFigures(devices=0, enrolled=0, failed=0, requests=0, errors=0), "nothing ran: 0 devices"),
    (RunFigures(devices=5, enrolled=0, failed=0, requests=0, errors=0), "nothing ran"),
    (RunFigures(devices=5, enrolled=4, failed=1, requests=20, errors=0), "1 of 5 device(s) failed to enroll"),
    (RunFigures(devices=5, enrolled=5, failed=0, requests=20, errors=1), "1 of 20 requests failed"),
    (RunFigures(devices=5, enrolled=0, failed=5, requests=5, errors=5, failures={"enrollment.refused": 5}),
     "the target was unreachable"),
    (RunFigures(devices=5, enrolled=5, failed=0, requests=20, errors=0, push_link_down=True), "push link"),
])
def test_failures_are_1_with_the_reason(figures, reason):
    verdict = judge(figures, thresholds_failed=3)
    assert verdict.code is Exit.FAILED
    assert any(reason in text for text in verdict.reasons), verdict.reasons


def test_errors_within_the_tolerated_rate_pass_and_beyond_it_fail():
    figures = RunFigures(devices=5, enrolled=5, failed=0, requests=1000, errors=10)
    assert judge(figures, max_error_rate=0.01).code is Exit.OK
    assert judge(figures, max_error_rate=0.009).code is Exit.FAILED


def test_thresholds_are_99_and_interruption_is_130_first():
    assert judge(GOOD, thresholds_failed=1).code is Exit.THRESHOLD
    broken = RunFigures(devices=5, enrolled=0, failed=5, requests=5, errors=5)
    assert judge(broken, thresholds_failed=1, interrupted=True).code is Exit.INTERRUPTED


@pytest.mark.parametrize("text", ["127.0.0.1:8444", "push.example.com:1", "[::1]:8444", "none"])
def test_push_link_addresses(text):
    assert push_link_address(text) == text


@pytest.mark.parametrize("text", ["8444", "localhost", "host:", ":8444", "host:port", "host:70000", "None "])
def test_a_bad_push_link_is_refused_with_how_to_write_it(text):
    with pytest.raises(argparse.ArgumentTypeError, match=r"HOST:PORT .*'none'"):
        push_link_address(text)


def test_a_bad_push_link_flag_is_a_usage_error_naming_it(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["load", "--push-link", "localhost"])
    assert exit_.value.code == Exit.USAGE
    assert "bad push link 'localhost'" in capsys.readouterr().err


def test_fractions():
    assert fraction("5%") == 0.05 and fraction("0.1") == 0.1
    for text in ("150%", "-1", "lots"):
        with pytest.raises(argparse.ArgumentTypeError):
            fraction(text)


@pytest.mark.parametrize("argv", [["load"], ["fleet"], ["scenario", "run"], ["demo"], ["serve"],
                                  ["report", "merge"]])
def test_every_command_documents_the_exit_codes(argv, capsys):
    with pytest.raises(SystemExit):
        cli.main([*argv, "--help"])
    text = capsys.readouterr().out
    for code in ("0 ", "1 ", "2 ", "99 ", "130 "):
        assert f"\n  {code}" in text, (argv, code)
