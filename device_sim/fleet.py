"""A fleet of simulated devices: who they are (OS mix, kinds, seed) and the runners that drive them.

An OS mix ("26.1:50,27.0:50") is apportioned exactly over the fleet, then dealt to device indexes by the seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

from mdm_protocol.clocks import Clock
from mdm_protocol.osversion import OSVersion

from .behaviour import Behaviour
from .catalogue import release
from .facts import DeviceFacts, DeviceKind, device_rng, make_facts
from .machine import DeviceMachine
from .runner import DeviceRunner, Observer, PushRegistry, ScepEnroller
from .signer import ReusingSigner, sign_request
from .transport import Transport

# A fleet in late 2026: most on iOS 27 within weeks of its release, a large iOS 26 remainder, a tail on 18 and
# older, and the few iOS 9/10 devices the S/MIME switch (SPEC section 7) is about.
DEFAULT_OS_MIX = (
    ("27.0.1", 38), ("27.0", 10), ("26.2", 18), ("26.1", 8), ("26.0.1", 2), ("18.1", 9), ("17.5", 6),
    ("16.0", 3), ("12.0", 2), ("10.3", 2), ("9.3.3", 2),
)
DEFAULT_KINDS = (("iphone", 80), ("ipad", 15), ("shared-ipad", 5))


def parse_mix(text: str) -> tuple[tuple[str, int], ...]:
    """'9.3.3:5,17.5:95' → (('9.3.3', 5), ('17.5', 95)); a clear ValueError otherwise."""
    pairs = []
    for part in text.split(","):
        name, sep, weight = part.strip().partition(":")
        if not sep or not name or not weight.strip().isdigit() or int(weight) <= 0:
            raise ValueError(f"bad mix entry {part!r}: expected NAME:WEIGHT with a positive integer weight")
        pairs.append((name.strip(), int(weight)))
    if not pairs:
        raise ValueError("empty mix")
    return tuple(pairs)


def parse_os_mix(text: str) -> tuple[tuple[str, int], ...]:
    """parse_mix, then every version checked: an unknown one is a ValueError naming the simulated versions."""
    mix = parse_mix(text)
    for version, _ in mix:
        release(version)
    return mix


def apportion(weighted: tuple[tuple[str, int], ...], seats: int) -> dict[str, int]:
    """Exact counts by largest remainder (Hamilton): floor of each quota, the rest to the biggest remainders
    (ties to the earlier entry), so 26.1:50,27.0:50 over 7 devices is 4 and 3, never a random 6 and 1."""
    total = sum(weight for _, weight in weighted)
    counts = {name: 0 for name, _ in weighted}
    remainders = []
    for order, (name, weight) in enumerate(weighted):
        whole, rest = divmod(weight * seats, total)
        counts[name] += whole
        remainders.append((-rest, order, name))
    for _, _, name in sorted(remainders)[: seats - sum(counts.values())]:
        counts[name] += 1
    return counts


def _pick(weighted: tuple[tuple[str, int], ...], roll: float) -> str:
    total = sum(weight for _, weight in weighted)
    threshold = roll * total
    for name, weight in weighted:
        threshold -= weight
        if threshold < 0:
            return name
    return weighted[-1][0]


@dataclass(frozen=True)
class FleetSpec:
    count: int
    seed: int = 1
    os_mix: tuple[tuple[str, int], ...] = DEFAULT_OS_MIX
    kinds: tuple[tuple[str, int], ...] = DEFAULT_KINDS
    behaviour: Behaviour = field(default_factory=Behaviour)

    def __post_init__(self) -> None:
        for version, _ in self.os_mix:
            release(version)  # UnsupportedVersion (a ValueError) naming the simulated versions
        for kind, _ in self.kinds:
            DeviceKind(kind)

    @cached_property
    def _versions(self) -> tuple[OSVersion, ...]:
        # The exact apportionment, dealt to indexes in a seeded order: each fleet gets the mix's proportions
        # to the device, and which device runs what still depends only on the seed.
        seats = max(self.count, 1)
        dealt = [OSVersion.parse(name) for name, n in apportion(self.os_mix, seats).items() for _ in range(n)]
        random.Random(f"{self.seed}:os-mix").shuffle(dealt)
        return tuple(dealt)

    def facts(self, index: int) -> DeviceFacts:
        """Device `index`'s facts, rebuilt identically every time (an index past `count` wraps round the mix)."""
        rng = device_rng(self.seed, index, "mix")
        rng.random()  # the roll that once drew the version: kept, so each device keeps the kind it had
        version = self._versions[index % len(self._versions)]
        kind = DeviceKind(_pick(self.kinds, rng.random()))
        try:
            return make_facts(self.seed, index, version, kind)
        except ValueError:
            # No such device on that iOS (User Enrollment before 13, no iPad model): an iPhone instead.
            return make_facts(self.seed, index, version, DeviceKind.IPHONE)

    def all_facts(self) -> Iterator[DeviceFacts]:
        return (self.facts(index) for index in range(self.count))


class Fleet:
    """The runners of a fleet; devices are built lazily so 50,000 idle ones stay cheap."""

    def __init__(self, spec: FleetSpec, *, clock: Clock, transport: Transport, push: PushRegistry,
                 observer: Observer | None = None,
                 behaviour_for: Callable[[DeviceFacts], Behaviour] | None = None,
                 reuse_signatures: bool = False, scep: ScepEnroller | None = None) -> None:
        self.spec, self.clock, self.transport, self.push = spec, clock, transport, push
        self.scep = scep  # how devices enroll SCEP payloads (scep_agent.ScepAgent); None: they cannot
        self.observer = observer
        self.behaviour_for = behaviour_for or (lambda facts: spec.behaviour)  # per-device faults
        self.reuse_signatures = reuse_signatures  # virtual-time worlds: sign a device's Idle report once
        self.runners: list[DeviceRunner] = []

    def add(self, index: int, facts: DeviceFacts | None = None) -> DeviceRunner:
        """Device `index`'s runner; `facts`: as it was saved (a resumed device keeps its iOS version and kind)."""
        facts = facts or self.spec.facts(index)
        # Off for load tests, where signing every request is part of the realism.
        signer = ReusingSigner() if self.reuse_signatures else sign_request
        machine = DeviceMachine(facts, seed=self.spec.seed, behaviour=self.behaviour_for(facts), signer=signer)
        runner = DeviceRunner(machine, clock=self.clock, transport=self.transport, push=self.push,
                              observer=self.observer, scep=self.scep)
        self.runners.append(runner)
        return runner

    def by_device_id(self) -> dict[str, DeviceRunner]:
        return {r.machine.facts.device_id: r for r in self.runners}
