"""A fleet of simulated devices: who they are (OS mix, kinds, seed) and the runners that drive them.

`FleetSpec.parse_mix("9.3.3:5,17.5:95")` style mixes are spread deterministically over the device indexes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from mdm_protocol.clocks import Clock
from mdm_protocol.osversion import OSVersion

from .behaviour import Behaviour
from .facts import DeviceFacts, DeviceKind, device_rng, make_facts
from .machine import DeviceMachine
from .runner import DeviceRunner, Observer, PushRegistry
from .signer import ReusingSigner, sign_request
from .transport import Transport

DEFAULT_OS_MIX = (("9.3.3", 5), ("10.3", 10), ("12.0", 20), ("17.5", 65))
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
            OSVersion.parse(version)
        for kind, _ in self.kinds:
            DeviceKind(kind)

    def facts(self, index: int) -> DeviceFacts:
        """Device `index`'s facts, rebuilt identically every time."""
        rng = device_rng(self.seed, index, "mix")
        version = OSVersion.parse(_pick(self.os_mix, rng.random()))
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
                 reuse_signatures: bool = False) -> None:
        self.spec, self.clock, self.transport, self.push = spec, clock, transport, push
        self.observer = observer
        self.behaviour_for = behaviour_for or (lambda facts: spec.behaviour)  # per-device faults
        self.reuse_signatures = reuse_signatures  # virtual-time worlds: sign a device's Idle report once
        self.runners: list[DeviceRunner] = []

    def add(self, index: int) -> DeviceRunner:
        facts = self.spec.facts(index)
        # Off for load tests, where signing every request is part of the realism.
        signer = ReusingSigner() if self.reuse_signatures else sign_request
        machine = DeviceMachine(facts, seed=self.spec.seed, behaviour=self.behaviour_for(facts), signer=signer)
        runner = DeviceRunner(machine, clock=self.clock, transport=self.transport, push=self.push,
                              observer=self.observer)
        self.runners.append(runner)
        return runner

    def by_device_id(self) -> dict[str, DeviceRunner]:
        return {r.machine.facts.device_id: r for r in self.runners}
