"""`mdmsim fleet --state-dir`: each enrolled device kept on disk, so the next run resumes it without enrolling.

One plist per device (devices/NNNNNN.plist, `device_snapshot`) and fleet.plist naming the format, version and
seed; every write is a temporary file renamed into place, mode 0600. Unreadable files are a FleetStateError
naming the file.
"""

from __future__ import annotations

import os
import plistlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import effects as fx
from .device_snapshot import SavedDevice, SnapshotError, restore, snapshot
from .machine import DeviceMachine, Phase
from .runner import DeviceRunner

FORMAT = "mdmsim fleet state"
VERSION = 1
KEY_POOL = "key-pool.pem"  # RSA keys made for SCEP and not handed out yet (scep_agent.RSAKeyPool)


class FleetStateError(Exception):
    """A state directory or file that cannot be used; the message names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path` (0600), then rename it over `path`: a reader sees the old
    file or the new one, never half of one. No fsync: a simulator's state is not worth a disk flush per device."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _read_plist(path: Path) -> dict[str, Any]:
    try:
        document = plistlib.loads(path.read_bytes())
    except OSError as exc:
        raise FleetStateError(path, f"cannot be read ({exc.strerror or exc})") from None
    except Exception as exc:  # plistlib raises InvalidFileException, ValueError, xml errors, ...
        raise FleetStateError(path, f"is not a plist ({type(exc).__name__}); corrupt, or not written by "
                                    "mdmsim fleet") from None
    if not isinstance(document, dict):
        raise FleetStateError(path, "is not a dictionary plist: not written by mdmsim fleet")
    return document


def _check_header(path: Path, document: dict[str, Any], kind: str) -> None:
    if document.get("Format") != FORMAT or document.get("Kind") != kind:
        raise FleetStateError(path, f"is not an mdmsim fleet {kind} file (Format {document.get('Format')!r})")
    if document.get("Version") != VERSION:
        raise FleetStateError(path, f"has format version {document.get('Version')!r}; this mdmsim reads "
                                    f"version {VERSION}")


class FleetStateDir:
    """A fleet's state directory: `load` the saved devices, `save` or `forget` one."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root, self.seed = root, seed
        self.devices = root / "devices"
        self.key_pool = root / KEY_POOL

    @classmethod
    def open(cls, root: Path | str, seed: int) -> FleetStateDir:
        """Create the directory (0700) or check the one there: same format, version and fleet seed."""
        state = cls(Path(root), seed)
        header = state.root / "fleet.plist"
        try:
            state.devices.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise FleetStateError(state.devices, f"cannot be created ({exc.strerror or exc})") from None
        if not header.exists():
            if any(state.devices.iterdir()):
                raise FleetStateError(header, "is missing beside saved devices: not a state directory of "
                                              "mdmsim fleet")
            write_atomically(header, plistlib.dumps({"Format": FORMAT, "Kind": "fleet", "Version": VERSION,
                                                     "Seed": seed}, fmt=plistlib.FMT_XML))
            return state
        document = _read_plist(header)
        _check_header(header, document, "fleet")
        if document.get("Seed") != seed:
            raise FleetStateError(header, f"was made by a fleet with --seed {document.get('Seed')}, not {seed}: "
                                          "its devices are other devices")
        return state

    def path(self, index: int) -> Path:
        return self.devices / f"{index:06d}.plist"

    def load(self, count: int) -> dict[int, SavedDevice]:
        """The saved devices with an index below `count`, read and checked now (before any of them runs)."""
        saved = {}
        for index in range(count):
            path = self.path(index)
            if not path.exists():
                continue
            document = _read_plist(path)
            _check_header(path, document, "device")
            try:
                device = restore(document, seed=self.seed)
            except SnapshotError as exc:
                raise FleetStateError(path, exc.reason) from None
            if device.facts.index != index:
                raise FleetStateError(path, f"holds device {device.facts.index}, not {index}")
            saved[index] = device
        return saved

    def save(self, machine: DeviceMachine) -> None:
        document = {"Format": FORMAT, "Kind": "device", "Version": VERSION, **snapshot(machine)}
        write_atomically(self.path(machine.facts.index), plistlib.dumps(document, fmt=plistlib.FMT_BINARY))

    def forget(self, index: int) -> None:
        self.path(index).unlink(missing_ok=True)


class StateKeeper:
    """Watches a fleet's effects while a state directory is kept (a FleetObserver listener): saves a device when
    it enrolls and after each session in which it ran commands (its profiles and keychain may have changed); a
    device erased or unenrolled is forgotten. A write that fails is kept in `write_errors`; the run goes on."""

    def __init__(self, state: FleetStateDir) -> None:
        self.state = state
        self.saved = 0
        self.write_errors: list[str] = []
        self._dirty: set[int] = set()

    def saw(self, runner: DeviceRunner, effect: fx.Effect) -> None:
        if isinstance(effect, fx.Enrolled) and not effect.resumed:
            self.keep(runner.machine)
        elif isinstance(effect, fx.CommandHandled):
            self._dirty.add(runner.machine.facts.index)
        elif isinstance(effect, fx.SessionEnded) and runner.machine.facts.index in self._dirty:
            self.keep(runner.machine)

    def keep(self, machine: DeviceMachine) -> None:
        index = machine.facts.index
        self._dirty.discard(index)
        try:
            if machine.phase is Phase.ENROLLED:
                self.state.save(machine)
                self.saved += 1
            else:  # erased (EraseDevice) or unenrolled: the next run enrolls it afresh
                self.state.forget(index)
        except (OSError, TypeError, OverflowError) as exc:  # TypeError, OverflowError: a value plists cannot hold
            self.write_errors.append(f"{self.state.path(index)}: {exc}")

    def flush(self, runners: Iterable[DeviceRunner]) -> None:
        """At the end of the run: save the devices changed since their last save (a session still open)."""
        for runner in runners:
            if runner.machine.facts.index in self._dirty:
                self.keep(runner.machine)
