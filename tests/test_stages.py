"""--stages: the target device count ramps linearly per stage, like k6's VUs; each device is active while the
target is above its index."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mdmsim.load.config import WorkerConfig
from mdmsim.load.stages import Stages, StagesError


def test_the_k6_example():
    plan = Stages.parse("1m:1000,5m:1000,1m:0")
    assert plan.stages == ((60.0, 1000), (300.0, 1000), (60.0, 0))
    assert (plan.peak, plan.total) == (1000, 420.0)
    assert [plan.target_at(t) for t in (0, 30, 60, 200, 360, 390, 420, 500)] == [
        0, 500, 1000, 1000, 1000, 500, 0, 0]
    assert plan.intervals(0) == [(0.06, 419.94)]
    assert plan.intervals(499) == [(30.0, 390.0)]
    assert plan.intervals(999) == [(60.0, 360.0)]


def test_a_device_leaves_and_comes_back_as_the_target_moves():
    plan = Stages.parse("10s:4,10s:2,10s:4")
    assert plan.intervals(2) == [(7.5, 15.0), (25.0, None)]  # the third device: active while the target is > 2
    assert plan.intervals(1) == [(5.0, None)]


@pytest.mark.parametrize("text", ["1m", "1m:x", "fast:10", "1m:-1", "1m:0,2m:0", ""])
def test_bad_stages_say_how_to_write_them(text):
    with pytest.raises(StagesError):
        Stages.parse(text)


@given(st.lists(st.tuples(st.integers(1, 100), st.integers(0, 50)), min_size=1, max_size=5),
       st.floats(0, 600))
def test_active_devices_follow_the_target(stages, t):
    plan = Stages(tuple((float(s), n) for s, n in stages))
    if plan.peak == 0:
        return
    active = sum(any(since <= t and (until is None or t < until) for since, until in plan.intervals(i))
                 for i in range(plan.peak))
    assert abs(active - int(plan.target_at(t))) <= 1  # a device at its exact crossing instant may be either


def test_stages_reach_the_workers():
    config = WorkerConfig(0, 1, 10, 1, "https://x/mdm/enroll", None, 0.0, 0.0, stages=((60.0, 10), (60.0, 0)))
    assert WorkerConfig.from_json(config.to_json()) == config
