"""Fleet benchmark (issue 5): memory per enrolled idle device, enrollment rate against `mdmsim serve` over real
TLS with the push link, and Idle check-ins per second the fleet drives from one core.

Run: `.venv/bin/python benchmarks/fleet_bench.py [--memory-sizes 5000,20000] [--devices 1000] [--json out.json]`.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import ctypes
import gc
import io
import json
import os
import platform
import pstats
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from types import BuiltinFunctionType, FunctionType, MethodType, ModuleType
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from device_sim import effects as fx  # noqa: E402
from device_sim.fleet import FleetSpec  # noqa: E402
from device_sim.machine import DeviceMachine, Phase  # noqa: E402

SERVER_CPU, FLEET_CPU = 0, 1
TOPIC = "com.apple.mgmt.External.00000000-0000-4000-8000-000000000000"
SERVER_URL = "https://127.0.0.1:8443"
WARM_DEVICES = 40
BATCH = 200  # profiles built per pool round trip; two batches at most are held at once


# Small measurements --------------------------------------------------------------------------------------------


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runqueue_wait(pid: int | str = "self") -> float:
    """Seconds a process's threads spent runnable but waiting for a CPU (/proc/<pid>/schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


NETSTAT_COUNTERS = ("ListenOverflows", "TCPSynRetrans")


def tcp_counters() -> dict[str, int]:
    """Machine-wide TCP counters that reveal a full listen queue (SYNs dropped, retried after 1 s)."""
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines() if line.startswith("TcpExt")]
    values = dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))
    return {name: values.get(name, 0) for name in NETSTAT_COUNTERS}


class Usage:
    """Wall time, CPU and run-queue wait of this process and the server since creation (shares of wall time)."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.start, self.tcp = self._now(), tcp_counters()

    def _now(self) -> tuple[float, ...]:
        pid = self.server_pid
        return (time.perf_counter(), own_cpu(), runqueue_wait(), cpu_seconds(pid), runqueue_wait(pid))

    def tcp_since(self) -> dict[str, int]:
        return {name: value - self.tcp[name] for name, value in tcp_counters().items()}

    def since(self, *, fleet_cpu_excluded: float = 0.0) -> dict[str, float]:
        now = self._now()
        wall, fleet, fleet_wait, server, server_wait = (b - a for a, b in zip(self.start, now, strict=True))
        return {"wall": wall, "fleet_cpu": fleet - fleet_cpu_excluded, "fleet_runqueue_wait": fleet_wait,
                "server_cpu": server, "server_runqueue_wait": server_wait}


def shares(usage: dict[str, float], wall: float) -> dict[str, float]:
    return {f"{key}_share": round(value / wall, 3) for key, value in usage.items() if key != "wall"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine_info() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d"), "load_average": os.getloadavg()}


# (a) Memory per enrolled idle device: a dedicated child process ------------------------------------------------

_AUTHORITY: Any = None


def _load_authority(data_dir: str) -> None:
    global _AUTHORITY
    from mdm_server.ca import CertificateAuthority

    _AUTHORITY = CertificateAuthority.load_or_create(Path(data_dir), now=datetime.now(UTC))


def _build_profile(user_id: str) -> bytes:
    """A real enrollment profile with a fresh EC identity, as the server builds it (in the pool, so its CPU is
    not counted as the devices')."""
    from mdm_server.enrollment import build_enrollment

    return build_enrollment(_AUTHORITY, server_url=SERVER_URL, topic=TOPIC, now=datetime.now(UTC),
                            user_id=user_id).profile


def enroll_machine(spec: FleetSpec, index: int, profile: bytes, now: float) -> DeviceMachine:
    """Install the profile, then answer Authenticate and TokenUpdate with 200 as the server would."""
    machine = DeviceMachine(spec.facts(index), seed=spec.seed, behaviour=spec.behaviour)
    effects = machine.install_enrollment(profile, now)
    for _ in range(2):
        request = next(e for e in effects if isinstance(e, fx.SendRequest))
        effects = machine.response(request.request_id, 200, b"", now)
    if machine.phase is not Phase.ENROLLED:
        raise RuntimeError(f"device {index} ended {machine.phase.value}, not enrolled")
    return machine


def enroll_many(spec: FleetSpec, indexes: range, pool: Any) -> tuple[list[DeviceMachine], float]:
    """Machines for `indexes`, profiles built in the pool one batch ahead; returns them and this process's CPU."""
    batches = [indexes[start:start + BATCH] for start in range(0, len(indexes), BATCH)]
    users = [[spec.facts(i).user.user_id for i in batch] for batch in batches]
    pending = pool.map_async(_build_profile, users[0]) if batches else None
    machines, cpu, now = [], 0.0, time.time()
    for number, batch in enumerate(batches):
        profiles = pending.get(timeout=900)
        if number + 1 < len(batches):
            pending = pool.map_async(_build_profile, users[number + 1])
        started = time.process_time()
        machines += [enroll_machine(spec, i, p, now) for i, p in zip(batch, profiles, strict=True)]
        cpu += time.process_time() - started
        del profiles
    return machines, cpu


def memory_child(count: int, traced: bool, generators: int) -> dict[str, Any]:
    import multiprocessing

    from twisted.internet import reactor  # noqa: F401  a fleet process has the reactor and transport loaded

    import device_sim.https_transport  # noqa: F401
    import device_sim.push_link_client  # noqa: F401

    data_dir = tempfile.mkdtemp(prefix="fleet-bench-ca-")
    _load_authority(data_dir)
    spec = FleetSpec(count + WARM_DEVICES, seed=5)
    base = rss_bytes()
    with multiprocessing.get_context("fork").Pool(generators, _load_authority, (data_dir,)) as pool:
        warm, _ = enroll_many(spec, range(count, count + WARM_DEVICES), pool)
        gc.collect()
        if traced:
            tracemalloc.start(1)
        before, malloc_before, started = rss_bytes(), malloc_in_use(), time.perf_counter()
        machines, cpu = enroll_many(spec, range(count), pool)
        seconds = time.perf_counter() - started
        gc.collect()
        after, malloc_after = rss_bytes(), malloc_in_use()
    result = {
        "devices": count, "base_rss": base, "rss_before": before, "rss_after": after,
        "bytes_per_device": round((after - before) / count),
        "c_heap_bytes_per_device": round((malloc_after - malloc_before) / count), "seconds": round(seconds, 1),
        "device_cpu_ms_per_enrollment": round(1000 * cpu / count, 2),
        "os_mix": dict(Counter(str(m.facts.os_version) for m in machines)),
    }
    if traced:
        result.update(traced_breakdown(machines, count))
    del warm
    return result


def traced_breakdown(machines: list[DeviceMachine], count: int) -> dict[str, Any]:
    """Where the memory goes: tracemalloc by line, Python objects by component, cryptography objects by RSS."""
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    stats = snapshot.statistics("lineno")
    traced = sum(stat.size for stat in stats)
    top = [{"where": f"{_short(stat.traceback[0].filename)}:{stat.traceback[0].lineno}",
            "bytes_per_device": round(stat.size / count), "blocks_per_device": round(stat.count / count, 2)}
           for stat in stats[:18]]
    return {
        "traced_bytes_per_device": round(traced / count),
        "tracemalloc_top_lines": top,
        "components": components(machines),
        "native_objects": native_object_costs(machines[0]),
        "runner_overhead": runner_overhead(machines),
    }


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


_OPAQUE = (type, ModuleType, FunctionType, BuiltinFunctionType, MethodType)


def reachable(root: Any, excluded: set[int]) -> dict[int, Any]:
    seen: dict[int, Any] = {}
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or id(obj) in excluded or isinstance(obj, _OPAQUE):
            continue
        seen[id(obj)] = obj
        stack.extend(gc.get_referents(obj))
    return seen


def components(machines: list[DeviceMachine], sample: int = 6) -> dict[str, Any]:
    """Python-visible bytes per device by what holds them (objects shared with other devices left out).

    Sizes are sys.getsizeof: cryptography's certificates and keys count only their small Python headers here.
    """
    others: set[int] = set()
    for machine in machines[1:sample]:
        others |= reachable(machine, set()).keys()
    machine = machines[0]
    mine = reachable(machine, set())
    shared = {key for key in mine if key in others}
    parts = [("keychain (identity, CA certificate, path cache)", machine.profiles.keychain),
             ("installed profile (payload dictionaries, PKCS#12 and CA bytes)", machine.profiles._profiles),
             ("facts (hardware, names, ids)", machine.facts),
             ("behaviour rng (random.Random)", _rng_if_made(machine)),
             ("readiness and user choices", (machine.readiness, machine.choices)),
             ("enrollment (URLs, topic)", machine.enrollment),
             ("push token and magic", (machine.push_token, machine.push_magic)),
             ("last request (pending body and signature)", machine._pending)]
    counted, out = set(shared), {}
    for label, value in parts:
        found = reachable(value, counted)
        counted |= found.keys()
        out[label] = sum(sys.getsizeof(obj) for obj in found.values())
    rest = reachable(machine, counted)
    out["machine, profiles and keychain objects themselves (instance dicts, empty containers)"] = sum(
        sys.getsizeof(obj) for obj in rest.values())
    out["raw payload bytes kept (PayloadContent, Password)"] = raw_payload_bytes(machine)
    return out


def _rng_if_made(machine: DeviceMachine) -> Any:
    """The machine's behaviour RNG without creating it (newer machines make it on first use)."""
    return machine.__dict__.get("_random", machine.__dict__.get("_rng"))


def raw_payload_bytes(machine: DeviceMachine) -> int:
    """Bytes of PKCS#12, certificate DER and passwords kept in the installed payloads (also parsed elsewhere)."""
    total = 0
    for profile in machine.profiles:
        for payload in profile.payloads:
            for key in ("PayloadContent", "Password"):
                value = payload.get(key)
                if isinstance(value, bytes | str):
                    total += sys.getsizeof(value)
    return total


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def malloc_in_use() -> int:
    """Bytes the C allocator has handed out (glibc mallinfo2): OpenSSL, Rust and Python blocks over 512 bytes."""
    mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return info.uordblks + info.hblkhd


def native_object_costs(machine: DeviceMachine, copies: int = 3000) -> dict[str, int]:
    """C-heap bytes per extra copy of the cryptography objects a device holds (Rust/OpenSSL: not traced)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization as ser

    identity = machine.profiles.keychain.identity(machine.enrollment.identity_uuid)
    root = machine.profiles.keychain.trusted_roots()[0]
    key_der = identity.private_key.private_bytes(ser.Encoding.DER, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    makers = {
        "ca_certificate": lambda: x509.load_der_x509_certificate(root.public_bytes(ser.Encoding.DER)),
        "device_certificate": lambda: x509.load_der_x509_certificate(
            identity.certificate.public_bytes(ser.Encoding.DER)),
        "ec_p256_private_key": lambda: ser.load_der_private_key(key_der, None),
        "ca_certificate_after_subject_and_issuer": lambda: _named(
            x509.load_der_x509_certificate(root.public_bytes(ser.Encoding.DER))),
    }
    out = {"ca_certificate_der_bytes": len(root.public_bytes(ser.Encoding.DER)),
           "device_certificate_der_bytes": len(identity.certificate.public_bytes(ser.Encoding.DER))}
    for name, make in makers.items():
        gc.collect()
        tracemalloc.start(1)
        before = malloc_in_use()
        held = [make() for _ in range(copies)]
        python = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        out[f"{name}_c_heap_bytes"] = round((malloc_in_use() - before) / copies)
        out[f"{name}_python_bytes"] = round(python / copies)
        del held
    return out


def _named(certificate: Any) -> Any:
    certificate.issuer != certificate.subject  # noqa: B015  what keychain.is_self_signed does to each root
    return certificate


def runner_overhead(machines: list[DeviceMachine]) -> dict[str, int]:
    """What the Twisted side adds per device: a DeviceRunner, its push registration and its observer record."""
    from twisted.internet import reactor

    from device_sim.push_link_client import PushLinkClient
    from device_sim.runner import DeviceRunner
    from device_sim.stats import FleetObserver

    push, observer, runners = PushLinkClient(), FleetObserver(), []
    gc.collect()
    tracemalloc.start(1)
    before = rss_bytes()
    for machine in machines:
        runner = DeviceRunner(machine, clock=reactor, transport=None, push=push, observer=observer)
        push.register(machine.push_token, TOPIC, runner.on_push)
        observer.request_done(runner, "Authenticate", reactor.seconds(), 200)
        observer.request_done(runner, "TokenUpdate", reactor.seconds(), 200)
        observer.effect(runner, fx.Enrolled(machine.facts.device_id))
        runners.append(runner)
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {"traced_bytes_per_device": round(traced / len(machines)),
            "rss_bytes_per_device": round((rss_bytes() - before) / len(machines))}


def run_memory_child(count: int, traced: bool, generators: int, timeout: float) -> dict[str, Any]:
    command = [sys.executable, __file__, "--memory-child", str(count), "--generators", str(generators)]
    if traced:
        command.append("--traced")
    done = subprocess.run(command, capture_output=True, timeout=timeout, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"memory child ({count}) failed: {done.stderr.decode()[-2000:]}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


# (b) and (c): `mdmsim serve` in a subprocess, the fleet in this process over real TLS ---------------------------


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: the server goes when this script goes, however it ends.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class ServerProcess:
    """`mdmsim serve` on loopback ports, optionally under `py-spy record`; SIGTERM stops it cleanly."""

    started: list[ServerProcess] = []  # every one this process started: stopped again however the run ends

    def __init__(self, data_dir: Path, ports: tuple[int, int], *, profile_to: Path | None = None,
                 pin: bool = True, backlog: int | None = None, identity: str = "pkcs12",
                 extra: tuple[str, ...] = (), public_url: str | None = None) -> None:
        """`extra`: more `mdmsim serve` options; `public_url`: devices reach the server there (a TLS proxy in
        front of a plain-HTTP listener), which makes the listener tcp:."""
        self.data_dir, self.ports, self.profile_to, self.pin = data_dir, ports, profile_to, pin
        self.backlog, self.identity, self.extra, self.public_url = backlog, identity, extra, public_url
        self.process: subprocess.Popen | None = None
        self.pid = 0
        self.log = data_dir.parent / f"{data_dir.name}-{ports[0]}.log"

    def start(self, timeout: float = 90.0) -> dict[str, Any]:
        listen, link = self.ports
        backlog = f"backlog={self.backlog}:" if self.backlog else ""
        scheme = "tcp" if self.public_url else "ssl"
        command = [sys.executable, "-m", "mdmsim.cli", "serve", "--data-dir", str(self.data_dir),
                   "--listen", f"{scheme}:{listen}:{backlog}interface=127.0.0.1",
                   "--push-link", f"tcp:{link}:interface=127.0.0.1",
                   "--public-url", self.public_url or f"https://127.0.0.1:{listen}",
                   "--enrollment-identity", self.identity, *self.extra]
        if self.profile_to is not None:
            spy = str(Path(sys.executable).parent / "py-spy")
            command = [spy, "record", "--rate", "200", "--nonblocking", "--full-filenames", "--format", "raw",
                       "--output", str(self.profile_to), "--", *command]
        ServerProcess.started.append(self)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.log.read_text(errors="replace")
            urls = [line.split(": ", 1)[1] for line in text.splitlines() if "enrollment profile:" in line]
            if urls and self._find_pid():
                break
            if self.process.poll() is not None:
                raise RuntimeError(f"mdmsim serve exited: {text[-2000:]}")
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"mdmsim serve did not start in {timeout:g}s")
        if self.pin:
            os.sched_setaffinity(self.pid, {SERVER_CPU})
        password = json.loads((self.data_dir / "server.json").read_text())["admin_password"]
        return {"enroll_url": urls[0].strip(), "url": f"{'http' if self.public_url else 'https'}://127.0.0.1:{listen}",
                "push_port": link,
                "password": password, "ca_file": str(self.data_dir / "ca.pem")}

    def log_tail(self, lines: int = 8) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _find_pid(self) -> bool:
        if self.profile_to is None:
            self.pid = self.process.pid
            return True
        for task in Path(f"/proc/{self.process.pid}/task").glob("*"):  # the server is py-spy's child
            with contextlib.suppress(OSError):
                children = (task / "children").read_text().split()
                if children:
                    self.pid = int(children[0])
                    return True
        return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid or self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.process.kill()
            self.process.wait(timeout=30)


class Settling:
    """A FleetObserver whose Deferreds fire when a device settles (enrolled or failed) or sessions reach a count."""

    def __init__(self, clock: Any) -> None:
        from device_sim.stats import FleetObserver

        self.inner, self.clock = FleetObserver(), clock
        self.waiting: dict[int, Any] = {}
        self.sessions_target: tuple[int, Any] | None = None
        self.last_enrolled = 0.0
        self.enrolled = self.failed = 0

    def request_done(self, runner: Any, message: str, sent_at: float, status: int | None) -> None:
        self.inner.request_done(runner, message, sent_at, status)

    def effect(self, runner: Any, effect: fx.Effect) -> None:
        if isinstance(effect, fx.Enrolled | fx.EnrollmentFailed):
            if isinstance(effect, fx.Enrolled):
                self.enrolled, self.last_enrolled = self.enrolled + 1, time.perf_counter()
            else:
                self.failed += 1
            waiter = self.waiting.pop(runner.machine.facts.index, None)
            if waiter is not None:
                waiter.callback(isinstance(effect, fx.Enrolled))
        elif isinstance(effect, fx.SessionEnded):
            self.inner.sessions += 1
            target = self.sessions_target
            if target is not None and self.inner.sessions >= target[0]:
                self.sessions_target = None
                target[1].callback(self.inner.sessions)

    def settled(self, index: int) -> Any:
        from twisted.internet import defer

        self.waiting[index] = defer.Deferred()
        return self.waiting[index]

    def sessions_reach(self, count: int) -> Any:
        from twisted.internet import defer

        d = defer.Deferred()
        if self.inner.sessions >= count:
            d.callback(self.inner.sessions)
        else:
            self.sessions_target = (count, d)
        return d


def keys_for(count: int, path: Path | None) -> Any:
    """`count` RSA keys: from `path` when it holds enough (made once, kept there, as `mdmsim fleet --state-dir`
    keeps its pool), else made now (and saved to `path` if given)."""
    from device_sim.scep_agent import RSAKeyPool

    if not count:
        return RSAKeyPool()
    if path is not None and path.exists():
        kept = RSAKeyPool.load(path)
        if len(kept) >= count:
            return RSAKeyPool(kept.take(2048) for _ in range(count))
    keys = RSAKeyPool()
    keys.fill(count)
    if path is not None:
        keys.save(path)
    return keys


class FleetRun:
    """One fleet in this process against one server: enroll through the real endpoints, then push rounds."""

    def __init__(self, reactor: Any, server: ServerProcess, info: dict[str, Any], count: int, seed: int,
                 key_pool: int = 0, key_pool_file: Path | None = None) -> None:
        from device_sim.fleet import Fleet
        from device_sim.https_transport import HTTPSTransport, TLSSessionCache
        from device_sim.push_link_client import PushLinkClient
        from device_sim.scep_agent import ScepAgent, WebScepHttp
        from mdmsim.load.admin_http import AdminHTTP

        # SCEP profiles: devices make 2048-bit RSA keys (~50 ms each); a pool made once, before the clock
        # starts, takes that out of the enrollment rate (what --state-dir would keep between runs).
        started = time.perf_counter()
        self.keys = keys_for(key_pool, key_pool_file)
        self.key_pool_size = key_pool
        self.key_pool_seconds = time.perf_counter() - started
        self.scep_http = WebScepHttp(reactor)
        scep = ScepAgent(self.scep_http, reactor, self.keys)

        self.reactor, self.server, self.info, self.count = reactor, server, info, count
        self.observer = Settling(reactor)
        self.push = PushLinkClient()
        self.link = reactor.connectTCP("127.0.0.1", info["push_port"], self.push)
        self.tls_sessions = TLSSessionCache()  # the check-in rounds' transports resume the enrollment's sessions
        self.transport = HTTPSTransport(reactor, tls_sessions=self.tls_sessions)
        self.fleet = Fleet(FleetSpec(count, seed=seed), clock=reactor, transport=self.transport, push=self.push,
                           observer=self.observer, scep=scep)
        self.admin = AdminHTTP(info["url"], "admin", info["password"], info["ca_file"])

    def enroll(self, window: int, timeout: float) -> Any:
        from twisted.internet import defer

        semaphore = defer.DeferredSemaphore(window)
        downloads: list[float] = []
        started, usage = time.perf_counter(), Usage(self.server.pid)

        @defer.inlineCallbacks
        def one(index: int):
            runner = self.fleet.add(index)
            user = runner.machine.facts.user.user_id
            asked = time.perf_counter()
            profile = yield _fetch(self.reactor, f"{self.info['enroll_url']}&{urlencode({'user': user})}")
            downloads.append(time.perf_counter() - asked)
            settled = self.observer.settled(index)
            runner.install_enrollment(profile)
            yield settled.addTimeout(120, self.reactor)

        jobs = [semaphore.run(one, index) for index in range(self.count)]
        done = defer.DeferredList(jobs, consumeErrors=True).addTimeout(timeout, self.reactor)

        def figures(results: list) -> dict[str, Any]:
            wall, spent = self.observer.last_enrolled - started, usage.since()
            errors = Counter(str(r[1].value)[:120] for r in results if not r[0])
            return {
                "identity": self.server.identity, "key_pool": self.key_pool_size,
                "key_pool_seconds": round(self.key_pool_seconds, 2), "keys_made_during_run": self.keys.made,
                "devices": self.count, "enrolled": self.observer.enrolled, "failed": self.observer.failed,
                "errors": dict(errors), "window": window, "seconds": round(wall, 2),
                "devices_per_second": round(self.observer.enrolled / wall, 1),
                **shares(spent, wall), "tcp": usage.tcp_since(),
                "server_cpu_ms_per_device": round(1000 * spent["server_cpu"] / self.observer.enrolled, 2),
                "fleet_cpu_ms_per_device": round(1000 * spent["fleet_cpu"] / self.observer.enrolled, 2),
                "devices_per_cpu_second": round(self.observer.enrolled / (spent["server_cpu"] + spent["fleet_cpu"]),
                                                1),
                "download_p50_ms": round(1000 * sorted(downloads)[len(downloads) // 2], 1) if downloads else None,
                "checkin_p50_ms": {name: round(1000 * self.observer.inner.messages[name].percentile(0.5), 1)
                                   for name in ("Authenticate", "TokenUpdate")},
            }

        return done.addCallback(figures)

    def checkins(self, rounds: int, round_timeout: float, keep_alive: bool) -> Any:
        from twisted.internet import defer, threads

        from device_sim.https_transport import HTTPSTransport

        transport = HTTPSTransport(self.reactor, keep_alive=keep_alive, tls_sessions=self.tls_sessions)
        for runner in self.fleet.runners:
            runner.transport = transport
        ids = [r.machine.facts.device_id for r in self.fleet.runners if r.machine.phase is Phase.ENROLLED]

        def push_all() -> tuple[Any, float]:
            started = time.thread_time()
            answer = self.admin.call("POST", "/api/v1/push", {"deviceIds": ids})
            return answer, time.thread_time() - started

        @defer.inlineCallbacks
        def run():
            totals = Counter()
            for _ in range(rounds):
                target = self.observer.inner.sessions + len(ids)
                usage = Usage(self.server.pid)
                reached = self.observer.sessions_reach(target)
                answer, admin_cpu = yield threads.deferToThread(push_all)
                totals["pushed"] += sum(1 for v in answer["results"].values() if v.get("pushed"))
                yield reached.addTimeout(round_timeout, self.reactor).addErrback(self._stalled, target)
                totals.update(usage.since(fleet_cpu_excluded=admin_cpu))
                totals.update(usage.tcp_since())
                totals["sessions"] += len(ids)
            transport.close()
            return _checkin_figures(totals, rounds, keep_alive)

        return run()

    def _stalled(self, failure: Any, target: int) -> None:
        messages = {name: (stats.count, stats.errors) for name, stats in self.observer.inner.messages.items()}
        raise RuntimeError(f"push round stalled: {self.observer.inner.sessions} of {target} sessions; requests "
                           f"(count, errors) {messages}; pushes delivered {self.push.delivered}; "
                           f"{failure.getErrorMessage()}; server log ends: {self.server.log_tail()}")

    def close(self) -> None:
        self.link.disconnect()
        self.transport.close()
        self.scep_http.close()


def _checkin_figures(totals: Counter, rounds: int, keep_alive: bool) -> dict[str, Any]:
    sessions = totals["sessions"]
    return {
        "connection": "keep-alive" if keep_alive else "new TLS connection per session (resumed)",
        "rounds": rounds, "sessions": sessions, "pushed": totals["pushed"],
        "seconds": round(totals["wall"], 2), "sessions_per_wall_second": round(sessions / totals["wall"], 1),
        "sessions_per_fleet_cpu_second": round(sessions / totals["fleet_cpu"], 1),
        **shares({k: v for k, v in totals.items() if k not in ("pushed", "sessions", *NETSTAT_COUNTERS)},
                 totals["wall"]),
        "tcp": {name: totals[name] for name in NETSTAT_COUNTERS},
        "server_cpu_ms_per_session": round(1000 * totals["server_cpu"] / sessions, 3),
        "fleet_cpu_ms_per_session": round(1000 * totals["fleet_cpu"] / sessions, 3),
    }


def _fetch(reactor: Any, url: str) -> Any:
    from device_sim.enroll_fetch import fetch_enrollment

    return fetch_enrollment(reactor, url).addTimeout(60, reactor)


# Where the time goes: py-spy samples of the server, cProfile of the fleet ---------------------------------------

# Who a sample of the server works for, judged from the root of its stack down (first match wins).
OWNERS = (
    ("GET /mdm/enroll: build the enrollment profile", "web/enroll.py"),
    ("SCEP /scep: GetCACert, GetCACaps, PKIOperation", "web/scep.py"),
    ("PUT check-in and connect: device endpoint", "web/device.py"),
    ("admin API (push, lists)", "web/admin"),
    ("push link and APNs simulation", "mdm_server/push/"),
    ("TLS outside request handling (handshakes, record layer)", "OpenSSL/SSL.py"),
    ("HTTP parsing, reactor and other plumbing", ""),
)


def _function(frame: str) -> str:
    name, _, where = frame.partition(" (")
    path = _short(where.rsplit(":", 1)[0])
    return f"{name} ({path})"


def spy_summary(path: Path, top: int = 18) -> dict[str, Any]:
    """Share of the server's busy samples by owner, by function (inclusive, Twisted's own frames left out: they
    are the reactor and HTTP chain every request runs under) and by leaf (self)."""
    owners, inclusive, leaves = Counter(), Counter(), Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit() or "mainLoop (" not in stack:
            continue  # start-up (imports, CA loading) is not part of the workload
        frames, count = stack.split(";"), int(count_text)
        total += count
        owner = next(label for label, marker in OWNERS if marker in stack)
        owners[owner] += count
        for function in {_function(frame) for frame in frames if "twisted/" not in frame}:
            inclusive[function] += count
        leaves[_function(frames[-1])] += count

    def shares(counter: Counter, limit: int, cap: float = 1.0) -> dict[str, float]:
        items = [(k, v / total) for k, v in counter.most_common() if v / total <= cap]
        return {k: round(100 * share, 1) for k, share in items[:limit]}

    return {"samples": total, "by_owner_percent": shares(owners, len(OWNERS)),
            "inclusive_percent": shares(inclusive, top, cap=0.9), "self_percent": shares(leaves, top)}


def cprofile_summary(profiler: cProfile.Profile, top: int = 15) -> dict[str, Any]:
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = []
    for (filename, line, name), (_, calls, own, cumulative, _) in stats.stats.items():
        rows.append((own, cumulative, calls, f"{name} ({_short(filename)}:{line})"))
    total = sum(row[0] for row in rows)
    by_self = sorted(rows, reverse=True)[:top]
    by_cumulative = sorted((row for row in rows if row[1] <= 0.9 * total), key=lambda row: -row[1])[:top]
    ours = sorted((row for row in rows if "device_sim/" in row[3] or "mdm_protocol/" in row[3]),
                  key=lambda row: -row[1])[:top]
    return {"profiled_cpu_seconds": round(total, 2),
            "self_percent": {row[3]: round(100 * row[0] / total, 1) for row in by_self},
            "cumulative_percent": {row[3]: round(100 * row[1] / total, 1) for row in by_cumulative},
            "device_code_cumulative_percent": {row[3]: round(100 * row[1] / total, 1) for row in ours}}


# The run -------------------------------------------------------------------------------------------------------


def server_runs(reactor: Any, args: argparse.Namespace, workdir: Path) -> Any:
    """The measured runs (one per listen backlog), then the profiled one."""
    from twisted.internet import defer

    @defer.inlineCallbacks
    def both():
        out = {"measured": []}
        for backlog in args.backlogs:
            for pool in args.key_pools:  # e.g. 400,0: a key pool made before the clock, then cold
                out["measured"].append((yield measured_run(reactor, args, workdir, backlog, pool)))
        if args.profile_devices:
            out["profile"] = yield profiled_run(reactor, args, workdir)
        return out

    return both()


def measured_run(reactor: Any, args: argparse.Namespace, workdir: Path, backlog: int | None, key_pool: int) -> Any:
    """Enroll the fleet, then push rounds with a new TLS connection per session and with keep-alive."""
    from twisted.internet import defer

    @defer.inlineCallbacks
    def run_it():
        name = f"measured-{backlog or 'default'}-{key_pool}"
        server = ServerProcess(workdir / name, (free_port(), free_port()), pin=args.pin, backlog=backlog,
                               identity=args.enrollment_identity)
        run = FleetRun(reactor, server, server.start(), args.devices, seed=3, key_pool=key_pool,
                       key_pool_file=args.key_pool_file)
        try:
            yield _link_up(reactor, run)
            enrollment = yield run.enroll(args.window, args.timeout)
            checkins = []
            if "checkins" not in args.skipped:
                checkins.append((yield run.checkins(args.rounds, args.round_timeout, keep_alive=False)))
                checkins.append((yield run.checkins(args.rounds, args.round_timeout, keep_alive=True)))
        finally:
            run.close()
            server.stop()
        return {"listen_backlog": backlog or "Twisted default (50)", "enrollment": enrollment,
                "checkins": checkins}

    return run_it()


def profiled_run(reactor: Any, args: argparse.Namespace, workdir: Path) -> Any:
    """Enrollment with the server under py-spy and the fleet under cProfile; then, on a second server process
    with the same data and ports (also under py-spy), push rounds with the fleet under cProfile: each phase gets
    its own server profile."""
    from twisted.internet import defer

    @defer.inlineCallbacks
    def run_it():
        data_dir, ports, backlog = workdir / "profiled", (free_port(), free_port()), args.backlogs[-1]
        server = ServerProcess(data_dir, ports, profile_to=workdir / "spy-enroll.txt", pin=args.pin, backlog=backlog,
                               identity=args.enrollment_identity)
        run = FleetRun(reactor, server, server.start(), args.profile_devices, seed=11,
                       key_pool=args.key_pools[0] and args.profile_devices, key_pool_file=args.key_pool_file)
        enrolling = cProfile.Profile(time.process_time)
        try:
            yield _link_up(reactor, run)
            enrolling.enable()
            yield run.enroll(args.window, args.timeout)
            enrolling.disable()
        finally:
            run.link.disconnect()
            yield _until(reactor, lambda: run.push._link is None, "the push link did not close")
            server.stop()
        out = {"server_enrollment": spy_summary(workdir / "spy-enroll.txt"),
               "fleet_enrollment_cprofile": cprofile_summary(enrolling)}
        if "checkins" in args.skipped:
            run.close()
            return out
        server = run.server = ServerProcess(data_dir, ports, profile_to=workdir / "spy-checkin.txt", pin=args.pin,
                                            backlog=backlog)
        run.info, previous = server.start(), run.push._link
        run.link = reactor.connectTCP("127.0.0.1", ports[1], run.push)  # re-attaches every device
        profiler = cProfile.Profile(time.process_time)  # CPU, not wall: waiting in epoll is not work
        try:
            yield _link_up(reactor, run, previous=previous)
            profiler.enable()
            yield run.checkins(args.profile_rounds, args.round_timeout, keep_alive=False)
            profiler.disable()
        finally:
            run.close()
            server.stop()
        return {**out, "server_checkins": spy_summary(workdir / "spy-checkin.txt"),
                "fleet_checkins_cprofile": cprofile_summary(profiler)}

    return run_it()


def _link_up(reactor: Any, run: FleetRun, *, previous: Any = None) -> Any:
    """Fires once a push link other than `previous` is connected, plus a moment for the server to read the
    Attach lines sent on connect: a push to a token the server has not seen yet is refused as BadDeviceToken."""
    from twisted.internet import task

    def connected() -> bool:
        return run.push._link is not None and run.push._link is not previous

    d = _until(reactor, connected, "the push link did not connect")
    return d.addCallback(lambda _: task.deferLater(reactor, 0.5, lambda: None))


def _until(reactor: Any, condition: Any, failure: str, timeout: float = 30.0) -> Any:
    from twisted.internet import defer, task

    @defer.inlineCallbacks
    def wait():
        deadline = time.time() + timeout
        while not condition():
            if time.time() > deadline:
                raise RuntimeError(failure)
            yield task.deferLater(reactor, 0.05, lambda: None)

    return wait()


def run_servers(args: argparse.Namespace) -> dict[str, Any]:
    from twisted.internet import reactor

    if args.pin:
        os.sched_setaffinity(0, {FLEET_CPU})
    outcome: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as workdir:
        def finish(value: Any) -> None:
            outcome["value"] = value
            reactor.stop()

        reactor.callWhenRunning(lambda: server_runs(reactor, args, Path(workdir)).addBoth(finish))
        try:
            reactor.run()  # Ctrl-C or SIGTERM stop it too
        finally:
            for server in ServerProcess.started:
                server.stop()
    if "value" not in outcome:
        raise RuntimeError("interrupted before the server runs finished")
    value = outcome["value"]
    if hasattr(value, "getTraceback"):
        raise RuntimeError(value.getTraceback())
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memory-sizes", default="5000,20000", help="fleet sizes for (a), comma-separated")
    parser.add_argument("--traced-devices", type=int, default=2000, help="devices in the tracemalloc run")
    parser.add_argument("--generators", type=int, default=2, help="processes building enrollment profiles")
    parser.add_argument("--devices", type=int, default=1000, help="devices enrolled against the real server")
    parser.add_argument("--window", type=int, default=64, help="devices enrolling at once")
    parser.add_argument("--enrollment-identity", choices=("pkcs12", "scep"), default="pkcs12",
                        help="the server's enrollment profiles: a PKCS#12 identity (default) or SCEP at /scep")
    parser.add_argument("--key-pool", dest="key_pools", default=[0],
                        type=lambda text: [int(n) for n in text.split(",")],
                        help="RSA keys the fleet makes before enrolling (SCEP; 0: every device makes its own, "
                             "the cold figure); comma-separated for a run each, e.g. 400,0 (the profiled run "
                             "takes the first)")
    parser.add_argument("--key-pool-file", type=Path,
                        help="keep the pool's keys in this file: made once, reused by later runs (keys of "
                             "simulated devices only)")
    parser.add_argument("--rounds", type=int, default=6, help="push rounds per connection mode")
    parser.add_argument("--profile-devices", type=int, default=400, help="devices in the profiled run (0: none)")
    parser.add_argument("--profile-rounds", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600.0, help="bound on one enrollment run, seconds")
    parser.add_argument("--round-timeout", type=float, default=120.0, help="bound on one push round, seconds")
    parser.add_argument("--backlogs", default="1024", type=lambda text: [int(n) or None for n in text.split(",")],
                        help="server listen backlogs to measure, comma-separated (0: Twisted's own default of 50, "
                             "which a push to a whole fleet overflows)")
    parser.add_argument("--pin", action="store_true",
                        help="pin the server to CPU 0 and the fleet to CPU 1 (on a shared machine, other load on "
                             "a pinned core then stalls it)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: memory, server, checkins (the "
                        "push rounds after enrollment)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.traced, args.generators)))
        return 0
    skip = args.skipped = set(filter(None, args.skip.split(",")))
    report: dict[str, Any] = {"machine": machine_info(), "command": " ".join(sys.argv)}
    if "memory" not in skip:
        sizes = [int(n) for n in args.memory_sizes.split(",") if n]
        report["memory"] = [run_memory_child(n, False, args.generators, 1800) for n in sizes]
        if args.traced_devices:
            report["memory_traced"] = run_memory_child(args.traced_devices, True, args.generators, 900)
        report["memory_projection"] = projection(report["memory"])
        print(json.dumps(report["memory"]), file=sys.stderr)
    if "server" not in skip:
        report["server"] = run_servers(args)
    report["fleet_peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


def projection(runs: list[dict[str, Any]], devices: int = 50_000) -> dict[str, Any]:
    """RSS of one fleet process with `devices` idle devices, from the largest measured run."""
    largest = max(runs, key=lambda run: run["devices"])
    total = largest["rss_before"] + devices * largest["bytes_per_device"]
    return {"devices": devices, "from_run": largest["devices"], "rss_bytes": total,
            "rss_mib": round(total / 2**20), "within_1_gib": total <= 2**30}


if __name__ == "__main__":
    sys.exit(main())
