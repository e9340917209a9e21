"""Scenario scripts: a fleet, admin steps and device events at virtual times, and expectations.

A scenario file in scenarios/ builds a `Scenario`; `run()` replays it in an in-memory World and judges it.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from device_sim.behaviour import Behaviour
from device_sim.fleet import FleetSpec, parse_mix
from device_sim.machine import Phase
from device_sim.runner import DeviceRunner
from mdm_protocol.clocks import Reactor

from .admin_client import AdminClient
from .durations import parse_duration
from .real_world import RealWorld
from .world import World, WorldOptions


class ScenarioBroken(Exception):
    """The scenario itself is wrong (a step raised, bad options): exit code 2, not a failed expectation."""


@dataclass(frozen=True)
class Outcome:
    name: str
    passed: bool
    detail: str


@dataclass
class ScenarioResult:
    name: str
    seed: int
    timeline: list[tuple[float, str]]
    outcomes: list[Outcome]
    broken: str | None = None

    @property
    def passed(self) -> bool:
        return self.broken is None and all(o.passed for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        return 2 if self.broken else (0 if self.passed else 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.name, "seed": self.seed, "passed": self.passed, "broken": self.broken,
            "timeline": [{"t": round(t, 3), "event": text} for t, text in self.timeline],
            "expectations": [{"name": o.name, "passed": o.passed, "detail": o.detail} for o in self.outcomes],
        }


@dataclass
class _Step:
    at: float
    name: str
    action: Callable[[Context], Any]


Check = Callable[["Context"], bool | tuple[bool, str]]


@dataclass
class Scenario:
    name: str
    purpose: str
    count: int
    seed: int = 1
    os_mix: str = "17.5:1"
    kinds: str = "iphone:1"
    duration: str = "1h"
    behaviour: Behaviour = field(default_factory=Behaviour)
    behaviour_for: Callable[[Any], Behaviour] | None = None  # per-device faults, from DeviceFacts
    apns: dict[str, Any] = field(default_factory=dict)
    # The server presents a TLS certificate from a CA the enrollment profile does not carry.
    untrusted_server: bool = False
    steps: list[_Step] = field(default_factory=list)
    expectations: list[tuple[str, Check]] = field(default_factory=list)

    def at(self, when: str | float, name: str | None = None):
        """Decorator: run this step at virtual time `when` (seconds or '5m', '2h') after the start."""
        seconds = parse_duration(when) if isinstance(when, str) else float(when)

        def register(action: Callable[[Context], Any]) -> Callable[[Context], Any]:
            self.steps.append(_Step(seconds, name or action.__name__.replace("_", " "), action))
            return action

        return register

    def expect(self, name: str):
        """Decorator: an expectation judged at the end; return a bool or (bool, detail)."""

        def register(check: Check) -> Check:
            self.expectations.append((name, check))
            return check

        return register

    def run(self, *, seed: int | None = None, world_options: WorldOptions | None = None) -> ScenarioResult:
        seed = self.seed if seed is None else seed
        timeline: list[tuple[float, str]] = []
        try:
            context = self._context(seed, timeline, world_options)
        except Exception as exc:
            return ScenarioResult(self.name, seed, timeline, [], f"cannot build the world: {exc}")
        broken = context.play(self.steps, parse_duration(self.duration)) or self._unjudgeable()
        outcomes = [] if broken else [context.judge(name, check) for name, check in self.expectations]
        return ScenarioResult(self.name, seed, timeline, outcomes, broken)

    def _unjudgeable(self) -> str | None:
        """A scenario with no expectation would pass whatever happened: a check that cannot fail is broken."""
        if not self.expectations:
            return "the scenario defines no expectation (@scenario.expect): nothing would be judged"
        return None

    @defer.inlineCallbacks
    def run_real(self, reactor: Reactor, *, factor: float = 60.0, seed: int | None = None):
        """The same scenario on real sockets (loopback TLS, push link), `factor` times faster than real time."""
        seed = self.seed if seed is None else seed
        timeline: list[tuple[float, str]] = []
        world = RealWorld(self.fleet_spec(seed), self.world_options(seed), reactor, factor=factor,
                          behaviour_for=self.behaviour_for)
        yield world.start()
        try:
            context = Context(world, timeline)
            broken = (yield context.play_real(self.steps, parse_duration(self.duration))) or self._unjudgeable()
            outcomes = [] if broken else [context.judge(name, check) for name, check in self.expectations]
        finally:
            yield world.stop()
        return ScenarioResult(self.name, seed, timeline, outcomes, broken)

    def world_options(self, seed: int) -> WorldOptions:
        return WorldOptions(seed=seed, apns=dict(self.apns), untrusted_server=self.untrusted_server)

    def fleet_spec(self, seed: int) -> FleetSpec:
        return FleetSpec(self.count, seed=seed, os_mix=parse_mix(self.os_mix), kinds=parse_mix(self.kinds),
                         behaviour=self.behaviour)

    def _context(self, seed: int, timeline: list, world_options: WorldOptions | None) -> Context:
        spec = self.fleet_spec(seed)
        options = world_options or self.world_options(seed)
        return Context(World(spec, options, behaviour_for=self.behaviour_for), timeline)


class Context:
    """What steps and expectations see: the world, the admin API client, the devices, the timeline."""

    def __init__(self, world: World, timeline: list[tuple[float, str]]) -> None:
        self.world = world
        self.timeline = timeline
        server = world.server
        self.admin = AdminClient(world.admin_http, server.config.admin_user, server.admin_password)
        self._start = world.now()
        self.vars: dict[str, Any] = {}

    @property
    def elapsed(self) -> float:
        return self.world.now() - self._start

    def log(self, text: str) -> None:
        self.timeline.append((self.elapsed, text))

    def enroll(self, indexes: range | None = None, *, spread: str | float = "60s") -> list[DeviceRunner]:
        seconds = parse_duration(spread) if isinstance(spread, str) else spread
        runners = self.world.enroll(indexes, spread=seconds)
        self.log(f"{len(runners)} devices start enrolling over {seconds:g}s")
        return runners

    @property
    def devices(self) -> list[DeviceRunner]:
        return self.world.fleet.runners

    def enrolled(self) -> list[DeviceRunner]:
        return [r for r in self.devices if r.machine.phase is Phase.ENROLLED]

    def play(self, steps: list[_Step], duration: float) -> str | None:
        for step in sorted(steps, key=lambda s: s.at):
            self.world.clock.run_until(self._start + step.at)
            try:
                result = step.action(self)
            except Exception as exc:
                return f"step {step.name!r} at {step.at:g}s raised {type(exc).__name__}: {exc}\n" + (
                    traceback.format_exc(limit=4))
            self.log(step.name + (f": {result}" if result else ""))
        self.world.clock.run_until(self._start + duration)
        self.log("end")
        return None

    def play_real(self, steps: list[_Step], duration: float) -> defer.Deferred:
        """Steps at their (scaled) times on the real reactor; fires with the breakage, if any, at the end."""
        done: defer.Deferred = defer.Deferred()
        broken: list[str] = []

        def run(step: _Step) -> None:
            if broken:
                return
            try:
                result = step.action(self)
            except Exception as exc:
                broken.append(f"step {step.name!r} at {step.at:g}s raised {type(exc).__name__}: {exc}")
                return
            self.log(step.name + (f": {result}" if result else ""))

        def finish() -> None:
            self.log("end")
            done.callback(broken[0] if broken else None)

        for step in sorted(steps, key=lambda s: s.at):
            self.world.clock.callLater(max(0.0, step.at - self.elapsed), run, step)
        self.world.clock.callLater(max(0.0, duration - self.elapsed), finish)
        return done

    def judge(self, name: str, check: Check) -> Outcome:
        try:
            verdict = check(self)
        except Exception as exc:
            return Outcome(name, False, f"raised {type(exc).__name__}: {exc}")
        passed, detail = verdict if isinstance(verdict, tuple) else (bool(verdict), "")
        return Outcome(name, bool(passed), detail)
