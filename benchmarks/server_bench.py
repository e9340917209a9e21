"""Server benchmark: signed check-ins per second over TLS (keep-alive, and a new TLS connection per session)
from a separate client process, and the command queue through the service for 10,000 devices.

Run: `.venv/bin/python benchmarks/server_bench.py [--devices 1000] [--seconds 10] [--profile] [--mtls]`.
`--mtls`: each device presents its identity as the TLS client certificate and sends no Mdm-Signature
(SignMessage false); keep-alive connections then carry one device each. `--compare-mtls N`: both, alternately.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import hashlib
import io
import itertools
import json
import logging
import multiprocessing
import os
import pstats
import random
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from protocol_bench import SEED, profile_bytes
from queue_bench import machine

from device_sim.clock import HeapClock
from device_sim.memory_http import MemoryHTTP
from mdm_protocol.cms import mdm_signature
from mdm_protocol.report import CommandReport, Status, decode_server_response, encode_report
from mdm_server.app import DATABASE_FILE, MDMServer, ServerConfig
from mdm_server.ca import CertificateAuthority, private_key_pem
from mdm_server.pki import DEFAULT_SERVER_NAMES, server_tls_files
from mdm_server.service import DeviceIdentity
from mdm_server.state import ServerState
from mdm_server.storage import SQLiteStorage
from mdm_server.storage.postgres import PostgresStorage
from mdm_wire.http1 import ResponseReader, encode_request

SERVER_CPU, CLIENT_CPU = 0, 1
_SCHEMAS = itertools.count()
FACTS = {"OSVersion": "17.5.1", "BuildVersion": "21F90", "ProductName": "iPhone15,2"}


# Fleet preparation: real identities, enrolled in the server's SQLite file, Idle reports signed up front


def fresh_database(url: str | None) -> str | None:
    """A new, empty schema on the PostgreSQL server at `url` (its URL, search_path set); None: SQLite."""
    if url is None:
        return None
    import psycopg

    schema = f"bench_{os.getpid()}_{next(_SCHEMAS)}"
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


def storage_name(database: str | None) -> str:
    return "SQLite" if database is None else "PostgreSQL"


def prepare_fleet(data_dir: Path, count: int, database: str | None = None) -> list[tuple[bytes, bytes, bytes]]:
    """Enroll `count` devices with CA-issued identities; return (Idle body, certificate PEM, key PEM) each.

    The client signs every request afresh, as devices do: the server caches verified (signature, body) pairs,
    so re-sending one pre-signed request would measure that cache instead of signature verification.
    """
    now = datetime.now(UTC)
    state = ServerState.load_or_create(data_dir)
    server_tls_files(data_dir, DEFAULT_SERVER_NAMES, now=now)
    authority = CertificateAuthority.load_or_create(data_dir, now=now)
    storage = SQLiteStorage(data_dir / DATABASE_FILE) if database is None else PostgresStorage(database)
    fleet = []
    for index in range(count):
        udid = hashlib.sha1(f"bench-{index}".encode()).hexdigest()
        certificate, key = authority.issue_device_identity(f"bench device {index}", now)
        fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
        storage.authenticate(udid, {**FACTS, "UDID": udid}, state.topic, fingerprint, now=time.time())
        storage.token_update(udid, hashlib.sha256(udid.encode()).digest(), f"magic-{index}", now=time.time())
        body = encode_report(CommandReport(Status.IDLE, udid=udid))
        fleet.append((body, certificate.public_bytes(Encoding.PEM), private_key_pem(key)))
    storage.close()
    return fleet


def raw_request(body: bytes, signature: str | None) -> bytes:
    fields = [(b"Host", b"127.0.0.1"), (b"Content-Type", b"application/x-apple-aspen-mdm")]
    if signature is not None:
        fields.append((b"Mdm-Signature", signature.encode("ascii")))
    return encode_request(b"PUT", b"/mdm/connect", fields, body)


# The server: its own process, pinned to one core, listening on port 0 --------------------------------------


def serve(data_dir: Path, ready, profile_path: str | None, lean: bool = True, database: str | None = None) -> None:
    os.sched_setaffinity(0, {SERVER_CPU})
    # Sync wake-ups push the bench devices, whose tokens no APNs simulation knows: one warning each.
    logging.disable(logging.WARNING)
    from twisted.internet import reactor

    profiler = cProfile.Profile() if profile_path else None
    config = ServerConfig(data_dir=data_dir, listen="ssl:0:interface=127.0.0.1", push_link=None,
                          lean_device_http=lean, database=database)
    server = MDMServer(config, clock=reactor, reactor=reactor)
    server.startService()
    server.listening().addCallback(lambda ports: ready.send(ports[0].getHost().port))
    if profiler:
        reactor.callWhenRunning(profiler.enable)
        reactor.addSystemEventTrigger("after", "shutdown", lambda: profiler.dump_stats(profile_path))
    reactor.run()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The client: another process on the other core; threads with blocking TLS sockets --------------------------


def read_response(sock: ssl.SSLSocket, reader: ResponseReader) -> int:
    """Read one HTTP response from `sock` with the project's codec; returns its status code."""
    response = reader.feed(b"")  # one the last read already held
    while response is None:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        response = reader.feed(chunk)
    return response.status


class Load:
    """Worker threads sending signed Idle reports; `counts` grows as 200 answers arrive."""

    def __init__(self, port: int, ca_file: str, fleet: list[tuple], mode: str, threads: int,
                 mtls: bool = False) -> None:
        self.port, self.mode, self.mtls, self.ca_file = port, mode, mtls, ca_file
        self.fleet = [(body, x509.load_pem_x509_certificate(cert), load_pem_private_key(key, None))
                      for body, cert, key in fleet]
        self.pems = [cert + key for _, cert, key in fleet]
        self.context = ssl.create_default_context(cafile=ca_file)
        self.contexts: dict[int, ssl.SSLContext] = {}  # mTLS: one per device, its identity loaded
        self.sessions: dict[int, ssl.SSLSession] = {}  # mTLS: a device resumes only its own sessions
        self.counts = [0] * threads
        self.resumed = [0] * threads
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def connect(self, session=None, position: int = 0) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        context = self._device_context(position % len(self.fleet)) if self.mtls else self.context
        return context.wrap_socket(raw, server_hostname="127.0.0.1", session=session)

    def _device_context(self, device: int) -> ssl.SSLContext:
        context = self.contexts.get(device)
        if context is None:
            context = ssl.create_default_context(cafile=self.ca_file)
            with tempfile.NamedTemporaryFile(suffix=".pem") as pem:  # ssl loads identities from files only
                pem.write(self.pems[device])
                pem.flush()
                context.load_cert_chain(pem.name)
            self.contexts[device] = context
        return context

    def request(self, position: int) -> bytes:
        body, certificate, key = self.fleet[position % len(self.fleet)]
        return raw_request(body, None if self.mtls else mdm_signature(body, certificate, key))

    def _run(self, index: int) -> None:
        try:
            (self._keep_alive if self.mode == "keep-alive" else self._per_session)(index)
        except Exception as exc:  # a benchmark reports failures instead of dying silently in a thread
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _keep_alive(self, index: int) -> None:
        sock, reader, position = self.connect(position=index), ResponseReader(), index
        step = 0 if self.mtls else len(self.threads)  # a client certificate is the connection's: one device
        while not self.stop.is_set():
            sock.sendall(self.request(position))
            if read_response(sock, reader) != 200:
                raise RuntimeError("server refused an Idle report")
            self.counts[index] += 1
            position += step
        sock.close()

    def _per_session(self, index: int) -> None:
        session, position = None, index
        while not self.stop.is_set():
            device = position % len(self.fleet)
            if self.mtls:
                session = self.sessions.get(device)
            sock = self.connect(session if self.mode == "resumed" else None, position)
            sock.sendall(self.request(position))
            if read_response(sock, ResponseReader()) != 200:
                raise RuntimeError("server refused an Idle report")
            self.resumed[index] += sock.session_reused
            session = sock.session
            if self.mtls:
                self.sessions[device] = session
            sock.close()
            self.counts[index] += 1
            position += len(self.threads)


def client(port: int, ca_file: str, fleet: list[tuple], mode: str, threads: int, warmup: float,
           seconds: float, server_pid: int | list[int], results, mtls: bool = False,
           database_pids: list[int] | None = None) -> None:
    os.sched_setaffinity(0, {CLIENT_CPU})
    load = Load(port, ca_file, fleet, mode, threads, mtls)
    for thread in load.threads:
        thread.start()
    time.sleep(warmup)
    pids = [server_pid] if isinstance(server_pid, int) else list(server_pid)
    start_count, start_resumed = sum(load.counts), sum(load.resumed)
    start_each, start_db = [cpu_seconds(pid) for pid in pids], _cpu_of(database_pids)
    start_cpu, start = cpu_seconds(os.getpid()), time.monotonic()
    time.sleep(seconds)
    count, resumed = sum(load.counts) - start_count, sum(load.resumed) - start_resumed
    elapsed = time.monotonic() - start
    each = [cpu_seconds(pid) - before for pid, before in zip(pids, start_each, strict=True)]
    client_cpu, server_cpu = cpu_seconds(os.getpid()) - start_cpu, sum(each)
    database_cpu = _cpu_of(database_pids) - start_db
    load.stop.set()
    for thread in load.threads:
        thread.join(timeout=10)
    results.send({"mode": mode, "requests": count, "seconds": elapsed, "per_second": count / elapsed,
                  "server_cpu": server_cpu / elapsed, "client_cpu": client_cpu / elapsed,
                  "per_server_cpu_second": count / server_cpu if server_cpu else 0.0,
                  "resumed": resumed, "errors": load.errors[:3],
                  "worker_cpu": [cpu / elapsed for cpu in each], "database_cpu": database_cpu / elapsed})


def _cpu_of(pids: list[int] | None) -> float:
    total = 0.0
    for pid in pids or ():
        with contextlib.suppress(OSError):  # a backend that ended
            total += cpu_seconds(pid)
    return total


def database_backends(database: str | None) -> list[int]:
    """The PostgreSQL server's backend pids (the throwaway server serves only this benchmark)."""
    if database is None:
        return []
    import psycopg

    with psycopg.connect(database, autocommit=True) as db:
        return [row[0] for row in db.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
                                             "AND pid <> pg_backend_pid()").fetchall()]


class Workers:
    """`mdmsim serve --workers N` on the data directory and database, every process pinned to SERVER_CPU unless
    `spread` (then on any core); `pids` are the workers'."""

    def __init__(self, data_dir: Path, database: str, count: int, spread: bool) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        command = [sys.executable, "-m", "mdmsim.cli", "serve", "--data-dir", str(data_dir), "--database", database,
                   "--workers", str(count), "--listen", f"ssl:{self.port}:interface=127.0.0.1", "--push-link", "none"]
        pin = None if spread else (lambda: os.sched_setaffinity(0, {SERVER_CPU}))
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        preexec_fn=pin, text=True)
        self.pids: list[int] = []
        serving = 0
        deadline = time.monotonic() + 120
        while serving < count:
            line = self.process.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise SystemExit(f"serve --workers {count} did not start")
            if match := re.search(r"worker \d+ started \(pid (\d+)\)", line):
                self.pids.append(int(match.group(1)))
            serving += "serving" in line
        threading.Thread(target=self.process.stdout.read, daemon=True).start()  # keep the pipe drained

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def run_tls(args: argparse.Namespace, data_dir: Path, fleet: list[tuple]) -> list[dict]:
    if args.workers > 1:
        return run_workers(args, data_dir, fleet)
    spawn = multiprocessing.get_context("spawn")
    ready, ready_child = spawn.Pipe()
    profile_path = str(data_dir / "server.prof") if args.profile else None
    server = spawn.Process(target=serve, args=(data_dir, ready_child, profile_path, not args.web_only,
                                                          args.database))
    server.start()
    try:
        if not ready.poll(60):
            raise SystemExit("server did not start listening within 60 s")
        port = ready.recv()
        results = []
        # --compare-mtls N: N rounds, each mode signed then by mutual TLS back to back (same server, same load).
        identities = (False, True) if args.compare_mtls else (args.mtls,)
        plan = [(mode, mtls) for _ in range(args.compare_mtls or 1) for mode in args.modes for mtls in identities]
        for mode, mtls in plan:
            answer, answer_child = spawn.Pipe()
            load = spawn.Process(target=client, args=(
                port, str(data_dir / "ca.pem"), fleet, mode, args.threads, args.warmup, args.seconds,
                server.pid, answer_child, mtls, database_backends(args.database)))
            load.start()
            if not answer.poll(args.warmup + args.seconds + 60):
                raise SystemExit(f"client for {mode} did not report")
            results.append({**answer.recv(), "mtls": mtls})
            load.join(timeout=30)
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.join(timeout=30)
    if profile_path:
        print_profile(profile_path)
    return results


def run_workers(args: argparse.Namespace, data_dir: Path, fleet: list[tuple]) -> list[dict]:
    if args.database is None:
        raise SystemExit("--workers needs --database")
    spawn = multiprocessing.get_context("spawn")
    workers = Workers(data_dir, args.database, args.workers, args.spread)
    try:
        results = []
        for mode in args.modes:
            answer, answer_child = spawn.Pipe()
            load = spawn.Process(target=client, args=(
                workers.port, str(data_dir / "ca.pem"), fleet, mode, args.threads, args.warmup, args.seconds,
                workers.pids, answer_child, args.mtls, database_backends(args.database)))
            load.start()
            if not answer.poll(args.warmup + args.seconds + 60):
                raise SystemExit(f"client for {mode} did not report")
            results.append(answer.recv())
            load.join(timeout=30)
    finally:
        workers.stop()
    return results


def print_profile(path: str, top: int = 25) -> None:
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(path, stream=out).sort_stats(order).print_stats(top)
        print(f"\nserver profile (all modes together), by {order}:")
        print("\n".join(out.getvalue().splitlines()[6:]))


# The queue through the admin API and the service (in process, SQLite, no TLS) -------------------------------


def run_queue(devices: int, database: str | None = None, drain_queue: bool = True) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="server-bench-queue-") as tmp:
        config = ServerConfig(data_dir=Path(tmp), database=database)
        server = MDMServer(config, clock=HeapClock(time.time()))
        ids = [hashlib.sha1(f"queue-{i}".encode()).hexdigest() for i in range(devices)]
        for index, udid in enumerate(ids):
            cert = hashlib.sha256(udid.encode()).hexdigest()
            server.storage.authenticate(udid, FACTS, server.state.topic, cert, now=server.clock.seconds())
            token = hashlib.sha256(cert.encode()).digest()
            server.storage.token_update(udid, token, f"magic-{index}", now=server.clock.seconds())
            server.apns.register(token, server.state.topic)
        figures = {"profile_bytes": 0.0}
        payload = profile_bytes(random.Random(SEED))
        figures["profile_bytes"] = float(len(payload))
        for push in (False, True):
            backends, cpu = database_backends(database), time.process_time()
            before = _cpu_of(backends)
            figures[f"enqueue_push_{push}"] = admin_enqueue(server, ids, payload, push)
            figures[f"enqueue_push_{push}_cpu"] = time.process_time() - cpu  # this process's CPU only
            figures[f"enqueue_push_{push}_db_cpu"] = _cpu_of(backends) - before
        figures["drain"] = drain(server, ids) if drain_queue else 0.0
        server.storage.close()
    return figures


def admin_enqueue(server: MDMServer, ids: list[str], payload: bytes, push: bool) -> float:
    command = {"RequestType": "InstallProfile", "Payload": {"$data": base64.b64encode(payload).decode()}}
    body = json.dumps({"deviceIds": ids, "command": command, "push": push}).encode()
    basic = base64.b64encode(f"admin:{server.admin_password}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}", "Content-Type": "application/json"}
    start = time.perf_counter()
    response = MemoryHTTP(server.site).request("POST", "/api/v1/commands", body, headers)
    elapsed = time.perf_counter() - start
    assert response.status == 201, response.body[:300]
    return elapsed


def drain(server: MDMServer, ids: list[str]) -> float:
    """One session per device through the service: Idle, each command Acknowledged, end of session."""
    start = time.perf_counter()
    for udid in ids:
        identity = DeviceIdentity(hashlib.sha256(udid.encode()).hexdigest())
        idle = encode_report(CommandReport(Status.IDLE, udid=udid))
        answer = server.service.handle_command_report(identity, idle)
        command = decode_server_response(answer.body)
        while command is not None:
            report = CommandReport(Status.ACKNOWLEDGED, udid=udid, command_uuid=command.command_uuid)
            answer = server.service.handle_command_report(identity, encode_report(report))
            command = decode_server_response(answer.body)
    return time.perf_counter() - start


# Where one request's time goes, in process (no TLS, no sockets) ---------------------------------------------


def cost_breakdown(repeat: int = 400, database: str | None = None) -> dict[str, float]:
    """Microseconds per signed Idle report: signature check, service (storage), each HTTP path in memory."""
    with tempfile.TemporaryDirectory(prefix="server-bench-cost-") as tmp:
        config = ServerConfig(data_dir=Path(tmp), database=database)
        server = MDMServer(config, clock=HeapClock(time.time()))
        udid = "0" * 40
        certificate, key = server.ca.issue_device_identity("cost device", server.now())
        identity = DeviceIdentity(certificate.fingerprint(hashes.SHA256()).hex())
        server.storage.authenticate(udid, FACTS, server.state.topic, identity.cert_sha256, now=time.time())
        server.storage.token_update(udid, b"t" * 32, "magic", now=time.time())
        body = encode_report(CommandReport(Status.IDLE, udid=udid))
        # Distinct signatures, as devices send: a repeated one is a cache hit in the verifier.
        signatures = iter([mdm_signature(body, certificate, key) for _ in range(3 * repeat + 3)])
        lean, web = MemoryHTTP(server.http, keep_alive=True), MemoryHTTP(server.site, keep_alive=True)

        def through(http: MemoryHTTP):
            def put() -> object:
                headers = {"Content-Type": "application/x-apple-aspen-mdm", "Mdm-Signature": next(signatures)}
                return http.request("PUT", "/mdm/connect", body, headers)
            return put

        cached = mdm_signature(body, certificate, key)
        steps = {
            "verify Mdm-Signature": lambda: server.verifier.verify(next(signatures), body),
            "  (same signature again)": lambda: server.verifier.verify(cached, body),
            f"service (decode, {storage_name(database)})": lambda: server.service.handle_command_report(identity, body),
            "lean device channel (all)": through(lean),
            "twisted.web tree (all)": through(web),
        }
        figures = {}
        for name, step in steps.items():
            step()
            start = time.perf_counter()
            for _ in range(repeat):
                step()
            figures[name] = (time.perf_counter() - start) / repeat * 1e6
        server.storage.close()
    return figures


# Report ------------------------------------------------------------------------------------------


def print_tls(results: list[dict], devices: int, threads: int, storage: str = "SQLite", mtls: bool = False
              ) -> None:
    identity = ("Idle reports identified by the TLS client certificate (mutual TLS, no Mdm-Signature)" if mtls
                else "signed Idle reports (Mdm-Signature verified on every request)")
    if {r["mtls"] for r in results} == {False, True}:
        identity = "signed Idle reports and, alternately, mutual TLS ones (rows marked mTLS)"
    print(f"\nTLS check-ins: {devices} enrolled devices, {identity}, {storage}; server on CPU {SERVER_CPU}, "
          f"client ({threads} threads) on CPU {CLIENT_CPU}; load average {os.getloadavg()[0]:.2f}")
    print(f"  {'mode':<17} {'req/s':>8} {'server CPU':>11} {'client CPU':>11} {'req per server CPU-s':>21} "
          f"{'resumed':>8}")
    for r in results:
        mode = f"{r['mode']}{' mTLS' if r['mtls'] else ''}"
        print(f"  {mode:<17} {r['per_second']:8.0f} {r['server_cpu']:10.0%} {r['client_cpu']:10.0%} "
              f"{r['per_server_cpu_second']:21.0f} {r['resumed']:8d}")
        if len(r.get("worker_cpu", [])) > 1 or r.get("database_cpu"):
            per_worker = ", ".join(f"{cpu:.0%}" for cpu in r["worker_cpu"])
            print(f"    workers' CPU: {per_worker}; PostgreSQL backends' CPU: {r['database_cpu']:.0%} "
                  f"({r['per_second'] / max(r['server_cpu'] + r['database_cpu'], 1e-9):.0f} req per CPU-second "
                  "of mdmsim and PostgreSQL together)")
        for error in r["errors"]:
            print(f"    error: {error}")
    if {r["mtls"] for r in results} == {False, True}:
        print_comparison(results)


def print_comparison(results: list[dict]) -> None:
    """--compare-mtls: the median requests per server CPU-second of each mode, signed and mTLS, and the ratio."""
    print("\n  median requests per server CPU-second (rounds):")
    for mode in dict.fromkeys(r["mode"] for r in results):
        signed, mtls = ([r["per_server_cpu_second"] for r in results if r["mode"] == mode and r["mtls"] is kind]
                        for kind in (False, True))
        a, b = statistics.median(signed), statistics.median(mtls)
        print(f"  {mode:<12} signature {a:7.0f} ({', '.join(f'{v:.0f}' for v in signed)})   mTLS {b:7.0f} "
              f"({', '.join(f'{v:.0f}' for v in mtls)})   mTLS/signature {b / a:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000, help="enrolled devices sending Idle")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per mode")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each mode")
    parser.add_argument("--threads", type=int, default=32, help="client threads (connections in flight)")
    parser.add_argument("--modes", nargs="+", default=["keep-alive", "per-session", "resumed"],
                        choices=["keep-alive", "per-session", "resumed"],
                        help="keep-alive: one connection per thread; per-session: a new TLS connection per "
                             "request (full handshake); resumed: new connection with TLS session resumption")
    parser.add_argument("--queue-devices", type=int, default=10_000, help="devices for the queue benchmark")
    parser.add_argument("--skip-tls", action="store_true", help="run only the queue benchmark")
    parser.add_argument("--skip-drain", action="store_true", help="queue benchmark: enqueue only, no drain")
    parser.add_argument("--profile", action="store_true", help="cProfile the server; print where time goes")
    parser.add_argument("--web-only", action="store_true",
                        help="serve device check-ins through twisted.web, not the lean device channel (A/B)")
    parser.add_argument("--database", metavar="postgresql://...",
                        help="a PostgreSQL server for the storage (a fresh schema per part) instead of SQLite")
    parser.add_argument("--mtls", action="store_true",
                        help="devices present their identity as the TLS client certificate, unsigned bodies")
    parser.add_argument("--compare-mtls", type=int, default=0, metavar="ROUNDS",
                        help="run each mode signed and by mutual TLS, alternately, ROUNDS times against the same "
                             "server, and print the medians and their ratio")
    parser.add_argument("--tls-only", action="store_true", help="skip the in-process and queue parts")
    parser.add_argument("--workers", type=int, default=1,
                        help="serve with `mdmsim serve --workers N` (needs --database): total check-ins per second, "
                             "CPU per worker and of the PostgreSQL backends")
    parser.add_argument("--spread", action="store_true",
                        help="with --workers: let the workers run on any core (default: all on the server's core)")
    args = parser.parse_args(argv)
    url, storage = args.database, storage_name(args.database)
    print(f"{machine()}; {datetime.now(UTC):%Y-%m-%d}")
    if not args.skip_tls:
        with tempfile.TemporaryDirectory(prefix="server-bench-") as tmp:
            started = time.perf_counter()
            args.database = fresh_database(url)
            fleet = prepare_fleet(Path(tmp), args.devices, args.database)
            print(f"prepared {args.devices} enrolled devices in {time.perf_counter() - started:.1f} s")
            print_tls(run_tls(args, Path(tmp), fleet), args.devices, args.threads, storage, args.mtls)
    if args.tls_only:
        return 0
    print("\none signed Idle report in process, on one core (µs):")
    for name, micros in cost_breakdown(database=fresh_database(url)).items():
        print(f"  {name:<28} {micros:8.0f}")
    figures = run_queue(args.queue_devices, fresh_database(url), not args.skip_drain)
    n = args.queue_devices
    print(f"\nqueue through the admin API and the service: {n} devices, {storage}, InstallProfile of a "
          f"{figures['profile_bytes']:.0f}-byte profile")
    print(f"  enqueue via POST /api/v1/commands, push false  {figures['enqueue_push_False']:7.3f} s "
          f"(CPU: mdmsim {figures['enqueue_push_False_cpu']:.3f} s, "
          f"database {figures['enqueue_push_False_db_cpu']:.3f} s)")
    print(f"  enqueue via POST /api/v1/commands, push true   {figures['enqueue_push_True']:7.3f} s "
          f"({n} APNs-simulation pushes included; CPU: mdmsim {figures['enqueue_push_True_cpu']:.3f} s, "
          f"database {figures['enqueue_push_True_db_cpu']:.3f} s)")
    if figures["drain"]:
        print(f"  drain: Idle, InstallProfile, Acknowledged x2   {figures['drain']:7.3f} s "
              f"({n / figures['drain']:.0f} sessions/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
