"""EnrollmentRamp: devices are added at their ramp slots, install what their fetch returns, and failed
downloads are kept by index; the in-memory world serves as the real server."""

from __future__ import annotations

from twisted.internet import defer

from device_sim.fleet import FleetSpec
from device_sim.fleet_ramp import EnrollmentRamp
from mdm_world.world import World


def test_the_ramp_spreads_enrollments_and_keeps_failed_downloads():
    world = World(FleetSpec(4, seed=2))
    start = world.now()
    added: list[tuple[int, float]] = []

    def fetch(runner):
        added.append((runner.machine.facts.index, world.now() - start))
        if runner.machine.facts.index == 2:
            return defer.fail(RuntimeError("HTTP 403 from the enrollment URL"))
        return defer.succeed(world.enrollment_profile(runner))

    ramp = EnrollmentRamp(world.fleet, world.observer, clock=world.clock, fetch_profile=fetch)
    ramp.start(8.0)
    world.run_for(1.0)
    assert added == [(0, 0.0)]
    world.run_for(120.0)
    assert added == [(0, 0.0), (1, 2.0), (2, 4.0), (3, 6.0)]
    assert ramp.failures == ["2: HTTP 403 from the enrollment URL"]
    assert world.observer.enrolled == 3 and not ramp.all_enrolled()
    assert ramp.progress(world.now() - start).startswith("[ 121.0s] enrolled 3/4  failed 1  sessions ")


def test_a_fleet_whose_downloads_all_succeed_is_all_enrolled():
    world = World(FleetSpec(3, seed=1))
    ramp = EnrollmentRamp(world.fleet, world.observer, clock=world.clock,
                          fetch_profile=lambda runner: defer.succeed(world.enrollment_profile(runner)))
    ramp.start(0.0)
    world.run_for(120.0)
    assert ramp.all_enrolled() and ramp.failures == []
