"""Enrollment in every identity mode (issue 12): `mdmsim fleet` enrolls N devices into `mdmsim serve`, installs a
signed profile and answers a command; then a second `mdmsim fleet` run with the same --state-dir resumes them.

Modes: pkcs12-signature, scep-signature, scep-mtls (SignMessage false), scep-proxy (the server on plain HTTP
behind a TLS proxy that passes the client certificate in X-SSL-Client-Cert; the proxy is this script's child).
Run: `.venv/bin/python benchmarks/identity_bench.py [--devices 200] [--modes scep-mtls,...] [--json out.json]`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fleet_bench import ServerProcess, cpu_seconds, free_port, keys_for, machine_info  # noqa: E402

PROXY_HEADER = "X-SSL-Client-Cert"
MODES: dict[str, tuple[str, tuple[str, ...]]] = {
    "pkcs12-signature": ("pkcs12", ()),
    "scep-signature": ("scep", ()),
    "scep-mtls": ("scep", ("--sign-message", "false")),
    "scep-proxy": ("scep", ("--sign-message", "false", "--client-cert-header", PROXY_HEADER,
                            "--trusted-proxy", "127.0.0.1")),
}
SIGNED_PROFILE_ID = "com.example.identity-bench"


def root_profile(ca_file: str) -> bytes:
    """A small profile for InstallProfile (the server's CA as a root); the server signs what it sends."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from mdm_protocol.payloads import configuration_profile, root_certificate_payload
    from mdm_protocol.profile import encode_profile

    der = x509.load_pem_x509_certificate(Path(ca_file).read_bytes()).public_bytes(serialization.Encoding.DER)
    root = root_certificate_payload(der, identifier=f"{SIGNED_PROFILE_ID}.root")
    return encode_profile(configuration_profile([root], identifier=SIGNED_PROFILE_ID))


class Fleet:
    """`mdmsim fleet` as a user runs it, in its own process; its --json report read at the end."""

    def __init__(self, workdir: Path, info: dict[str, Any], args: argparse.Namespace, run: str,
                 duration: float, key_pool: int = 0) -> None:
        self.report = workdir / f"fleet-{run}.json"
        self.log = workdir / f"fleet-{run}.log"
        command = [sys.executable, "-m", "mdmsim.cli", "fleet", "--enroll-url", info["enroll_url"],
                   "--push-link", f"127.0.0.1:{info['push_port']}", "--devices", str(args.devices),
                   "--ramp", f"{args.ramp}s", "--duration", f"{duration}s", "--state-dir", str(workdir / "state"),
                   "--key-pool", str(key_pool), "--seed", "12", "--json", str(self.report)]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        self.started = time.perf_counter()

    def finish(self) -> dict[str, Any]:
        code = self.process.wait(timeout=900)
        cpu = _children_cpu()
        if not self.report.exists():
            raise RuntimeError(f"mdmsim fleet exited {code} without a report: {self.log.read_text()[-2000:]}")
        document = json.loads(self.report.read_text())
        return {"exit_code": code, "fleet_cpu_seconds": round(cpu, 2), "enrolled": document["enrolled"],
                "messages": {name: m["count"] for name, m in document["messages"].items()},
                "commands": document["commands"], "verdict": document["verdict"],
                "with_signed_profile": sum(SIGNED_PROFILE_ID in device["profiles"] for device in document["devices"])}


_CHILD_CPU = [0.0]


def _children_cpu() -> float:
    """CPU of the children waited for since the last call (the fleet process just ended)."""
    times = os.times()
    total = times.children_user + times.children_system
    spent, _CHILD_CPU[0] = total - _CHILD_CPU[0], total
    return spent


def wait_enrolled(admin: Any, count: int, timeout: float) -> tuple[float, float]:
    """Seconds until the server counts a first enrolled device, and until it counts `count` (polled)."""
    started, first = time.perf_counter(), None
    while time.perf_counter() - started < timeout:
        enrolled = admin.call("GET", "/api/v1/ping")["devices"].get("enrolled", 0)
        now = time.perf_counter() - started
        if enrolled and first is None:
            first = now
        if enrolled >= count:
            return first or now, now
        time.sleep(0.1)
    raise RuntimeError(f"fewer than {count} devices enrolled in {timeout:g}s")


def enrolled_ids(admin: Any) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = admin.call("GET", "/api/v1/devices?state=enrolled&limit=500" + (f"&cursor={cursor}" if cursor else ""))
        ids += [item["deviceId"] for item in page["items"]]
        cursor = page["nextCursor"]
        if not cursor:
            return ids


def queue(admin: Any, ids: list[str], command: dict[str, Any]) -> None:
    admin.call("POST", "/api/v1/commands", {"deviceIds": ids, "command": command})


def run_mode(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from mdmsim.load.admin_http import AdminHTTP

    identity, extra = MODES[name]
    ports, proxy = (free_port(), free_port()), None
    public_url = None
    if name == "scep-proxy":
        proxy_port = free_port()
        public_url = f"https://127.0.0.1:{proxy_port}"
    server = ServerProcess(workdir / "data", ports, pin=False, identity=identity, extra=extra,
                           public_url=public_url)
    info = server.start()
    try:
        if public_url is not None:
            proxy = start_proxy(workdir, proxy_port, ports[0])
        admin = AdminHTTP(info["url"], "admin", info["password"], info["ca_file"])
        if identity == "scep" and args.key_pool:
            # The pool made once (and kept in the file) is put in the state dir, as a second run of
            # `mdmsim fleet --state-dir` would find it: no key is made on the clock.
            (workdir / "state").mkdir(mode=0o700)
            keys_for(args.key_pool, args.key_pool_file).save(workdir / "state" / "key-pool.pem")
        server_cpu = cpu_seconds(server.pid)
        first = Fleet(workdir, info, args, "first", args.duration, args.key_pool if identity == "scep" else 0)
        first_enrolled, enrolled_after = wait_enrolled(admin, args.devices, args.duration)
        enrolled_cpu = cpu_seconds(server.pid) - server_cpu
        ids = enrolled_ids(admin)
        queue(admin, ids, {"RequestType": "InstallProfile",
                           "Payload": {"$data": base64.b64encode(root_profile(info["ca_file"])).decode()}})
        queue(admin, ids, {"RequestType": "DeviceInformation", "Queries": ["UDID", "DeviceName"]})
        outcome = {"first": first.finish()}
        queue(admin, ids, {"RequestType": "DeviceInformation", "Queries": ["OSVersion"]})  # held for the resume
        second = Fleet(workdir, info, args, "second", args.resume_duration)
        outcome["resumed"] = second.finish()
        spread = max(enrolled_after - first_enrolled, 0.1)  # first to last enrolled, the fleet's start-up left out
        outcome.update(mode=name, devices=args.devices, enrolled_seconds=round(enrolled_after, 2),
                       first_to_last_enrolled_seconds=round(spread, 2),
                       devices_per_second=round((args.devices - 1) / spread, 1),
                       server_cpu_ms_per_device_enrolling=round(1000 * enrolled_cpu / args.devices, 2),
                       server_cpu_seconds=round(cpu_seconds(server.pid) - server_cpu, 2))
        outcome["checks"] = checks(outcome, args.devices)
        return outcome
    finally:
        if proxy is not None:
            proxy.send_signal(signal.SIGTERM)
            proxy.wait(timeout=30)
        server.stop()


def checks(outcome: dict[str, Any], devices: int) -> dict[str, bool]:
    first, resumed = outcome["first"], outcome["resumed"]
    return {
        "first run exit 0": first["exit_code"] == 0,
        "all enrolled": first["enrolled"] == devices,
        "signed profile installed by all": first["commands"].get("InstallProfile:Acknowledged") == devices,
        "command answered by all": first["commands"].get("DeviceInformation:Acknowledged") == devices,
        "resumed run exit 0": resumed["exit_code"] == 0,
        "resumed: the signed profile still installed on all": resumed["with_signed_profile"] == devices,
        "resumed: no Authenticate, TokenUpdate or SCEP": not {"Authenticate", "TokenUpdate", "SCEP"}
        & set(resumed["messages"]),
        "resumed: queued command answered by all": resumed["commands"].get("DeviceInformation:Acknowledged")
        == devices,
    }


# The TLS proxy of scep-proxy: terminates TLS, asks for (does not require) a client certificate, passes it on --


def start_proxy(workdir: Path, port: int, backend: int) -> subprocess.Popen:
    log = open(workdir / "proxy.log", "wb")  # noqa: SIM115  closed with the process
    process = subprocess.Popen([sys.executable, __file__, "--proxy-child", str(port), str(backend),
                                str(workdir / "data")], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while time.time() < deadline:
        if "listening" in (workdir / "proxy.log").read_text():
            return process
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"the TLS proxy did not start: {(workdir / 'proxy.log').read_text()[-1000:]}")


def proxy_child(port: int, backend: int, data_dir: str) -> int:
    from datetime import UTC, datetime
    from urllib.parse import quote

    from cryptography.hazmat.primitives import serialization
    from OpenSSL import crypto
    from twisted.internet import reactor, ssl
    from twisted.web import proxy, resource, server

    from mdm_server.ca import CertificateAuthority, private_key_pem

    authority = CertificateAuthority.load_or_create(data_dir, now=datetime.now(UTC))
    certificate, key = authority.issue_server_certificate(["127.0.0.1"], datetime.now(UTC))
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    tls = ssl.PrivateCertificate.loadPEM(pem + private_key_pem(key))
    ca = ssl.Certificate.loadPEM((Path(data_dir) / "ca.pem").read_bytes())
    options = ssl.CertificateOptions(privateKey=tls.privateKey.original, certificate=tls.original,
                                     verify=True, caCerts=[ca.original], requireCertificate=False)

    class Forward(resource.Resource):
        isLeaf = True

        def render(self, request: Any) -> Any:
            request.requestHeaders.removeHeader(PROXY_HEADER)  # a client's own header is never passed on
            peer = request.channel.transport.getPeerCertificate()
            if peer is not None:
                text = crypto.dump_certificate(crypto.FILETYPE_PEM, peer).decode()
                request.requestHeaders.setRawHeaders(PROXY_HEADER, [quote(text, safe="")])
            return proxy.ReverseProxyResource("127.0.0.1", backend, request.path).render(request)

    reactor.listenSSL(port, server.Site(Forward()), options, interface="127.0.0.1", backlog=1024)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
    print("listening", flush=True)
    reactor.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, from " + ", ".join(MODES))
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds over which the first run enrolls")
    parser.add_argument("--duration", type=float, default=90.0, help="seconds the first fleet run lasts")
    parser.add_argument("--resume-duration", type=float, default=15.0, help="seconds the resumed run lasts")
    parser.add_argument("--key-pool", type=int, default=0, help="RSA keys made once (kept in the state dir)")
    parser.add_argument("--key-pool-file", type=Path, default=Path(tempfile.gettempdir()) / "identity-bench-keys.pem",
                        help="where the pool's keys are kept between runs of this script")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--proxy-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.proxy_child:
        port, backend, data_dir = args.proxy_child
        return proxy_child(int(port), int(backend), data_dir)
    report: dict[str, Any] = {"machine": machine_info(), "command": " ".join(sys.argv), "modes": []}
    for name in filter(None, args.modes.split(",")):
        with tempfile.TemporaryDirectory(prefix=f"identity-bench-{name}-") as workdir:
            report["modes"].append(run_mode(name, args, Path(workdir)))
        print(json.dumps(report["modes"][-1]), file=sys.stderr)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if all(all(mode["checks"].values()) for mode in report["modes"]) else 1


if __name__ == "__main__":
    sys.exit(main())
