"""`--stages 1m:1000,5m:1000,1m:0`: target device counts ramped linearly stage by stage, as k6 ramps VUs.

Device `i` is active while the target is above `i`: it enrolls the first time, leaves (stops checking in and
ignores pushes) when the target falls below it, and comes back online if the target rises again.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from mdm_world.durations import parse_duration


class StagesError(ValueError):
    """Stages that cannot be understood; the message says how to write them."""


@dataclass(frozen=True)
class Stages:
    stages: tuple[tuple[float, int], ...]  # (seconds, target devices at the stage's end), from 0 devices

    @classmethod
    def parse(cls, text: str) -> Stages:
        stages = []
        for part in text.split(","):
            duration, sep, target = part.strip().partition(":")
            try:
                seconds = parse_duration(duration)
                count = int(target)
            except (ValueError, argparse.ArgumentTypeError):  # parse_duration speaks argparse
                seconds, count = -1.0, -1
            if not sep or seconds < 0 or count < 0:
                raise StagesError(f"bad stage {part.strip()!r}: write DURATION:DEVICES, e.g. "
                                  "--stages 1m:1000,5m:1000,1m:0")
            stages.append((seconds, count))
        plan = cls(tuple(stages))
        if plan.peak == 0:
            raise StagesError(f"--stages {text!r} never asks for a device")
        return plan

    @property
    def peak(self) -> int:
        return max(target for _, target in self.stages)

    @property
    def total(self) -> float:
        return sum(seconds for seconds, _ in self.stages)

    def target_at(self, t: float) -> float:
        start, before = 0.0, 0
        for seconds, target in self.stages:
            if t < start + seconds:
                return before + (target - before) * (t - start) / seconds
            start, before = start + seconds, target
        return float(before)

    def intervals(self, index: int) -> list[tuple[float, float | None]]:
        """When device `index` is active: (from, until) pairs in seconds since the start; None, to the end."""
        level, out, start, before = index + 1, [], 0.0, 0
        since: float | None = None
        for seconds, target in self.stages:
            if since is None and before < level <= target:
                since = start + _crossing(before, target, level, seconds)
            elif since is not None and target < level <= before:
                out.append((since, start + _crossing(before, target, level, seconds)))
                since = None
            start, before = start + seconds, target
        if since is not None:
            out.append((since, None))
        return out


def _crossing(before: int, after: int, level: int, seconds: float) -> float:
    """Seconds into a stage when the ramp from `before` to `after` reaches `level` (leaves it, going down)."""
    if seconds == 0:
        return 0.0
    return seconds * (level - before) / (after - before) if after > before else \
        seconds * (before - level) / (before - after)
