"""`mdmsim apns`: a simulated APNs any MDM server can push through (Apple's HTTP/2 provider API), and
`mdmsim apns issue-cert` for the push certificate a server uploads. Fleets attach on the push link.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mdm_world.durations import parse_duration

from .cli_serve import _rate

DEFAULT_DATA_DIR = Path("mdmsim-apns")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("apns", help="run a simulated APNs (HTTP/2 provider API)", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="where the gateway's CA, TLS certificate and token registry live (default %(default)s)")
    parser.add_argument("--listen", default="ssl:2197:interface=127.0.0.1",
                        help="Twisted endpoint of the provider API; ssl: serves HTTP/2 over TLS with the gateway's "
                             "certificate (default %(default)s; 2197 is Apple's alternative port)")
    parser.add_argument("--push-link", default="tcp:2198:interface=127.0.0.1",
                        help="Twisted endpoint where fleet processes attach their devices ('none' to disable; "
                             "default %(default)s)")
    parser.add_argument("--proxy", default=None,
                        help="also run an HTTPS CONNECT proxy on this endpoint (e.g. tcp:3128:interface=127.0.0.1): "
                             "CONNECT api.push.apple.com:443 reaches this gateway, for servers that hard-code "
                             "Apple's host (set HTTPS_PROXY and trust ca.pem)")
    parser.add_argument("--environment", choices=("production", "development"), default="production",
                        help="which Apple environment this gateway plays; a certificate for the other one gets "
                             "403 BadCertificateEnvironment (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for every random draw (faults, apns-id)")
    faults = parser.add_argument_group("fault injection")
    faults.add_argument("--delay", type=parse_duration, default=0.0,
                        help="delay before a push reaches an online device, e.g. 200ms")
    faults.add_argument("--jitter", type=parse_duration, default=0.0,
                        help="plus a log-normal random delay with this median, e.g. 50ms")
    faults.add_argument("--drop-rate", type=_rate, default=0.0,
                        help="fraction of accepted pushes (200) silently never delivered, e.g. 0.01")
    faults.add_argument("--offline-fraction", type=_rate, default=0.0,
                        help="fraction of devices (by token) that never come online: their pushes are held "
                             "until apns-expiration")
    faults.add_argument("--error-rate", type=_rate, default=0.0,
                        help="fraction of pushes answered 500 InternalServerError")
    faults.add_argument("--burst", action="append", default=[], metavar="STATUS@START+DURATION",
                        help="refuse every push with STATUS (429, 503 or 500) from START seconds after start-up "
                             "for DURATION seconds, e.g. 429@60+10; repeatable")
    parser.set_defaults(func=run)
    commands = parser.add_subparsers(dest="apns_command", metavar="COMMAND")
    issue = commands.add_parser("issue-cert", help="issue a push certificate for a topic",
                                description="Issue an MDM push certificate (PEM key and certificate) from the "
                                            "gateway's CA, for a server to push through the gateway with.")
    issue.add_argument("--topic", required=True,
                       help="the push topic, com.apple.mgmt.External.<UUID> (goes into the subject UID)")
    issue.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                       help="the gateway's data directory (its CA is created there if missing)")
    issue.add_argument("--out", type=Path, default=None,
                       help="file stem to write: OUT.pem (certificate) and OUT.key (key); default "
                            "DATA_DIR/push-<topic suffix>")
    issue.add_argument("--validity", type=parse_duration, default=365 * 86400.0,
                       help="how long the certificate is valid, e.g. 365d, or 10m for one that expires soon")
    issue.add_argument("--development", action="store_true",
                       help="mark it for Apple's development (sandbox) environment instead of production")
    issue.set_defaults(func=issue_cert)


def issue_cert(args: argparse.Namespace) -> int:
    from mdm_server.ca import PkiError, write_private_file
    from mdm_world.apns_gateway import GatewayPKI

    now = datetime.now(UTC)
    try:
        pki = GatewayPKI.load_or_create(args.data_dir, now=now)
        issued = pki.issue_push_certificate(args.topic, now=now, production=not args.development,
                                            validity=timedelta(seconds=args.validity))
    except PkiError as exc:
        print(f"mdmsim apns: {exc.reason}", file=sys.stderr)
        return 2
    stem = args.out or args.data_dir / f"push-{args.topic.rsplit('.', 1)[-1]}"
    certificate, key = stem.with_name(stem.name + ".pem"), stem.with_name(stem.name + ".key")
    write_private_file(key, issued.private_key_pem)
    certificate.write_bytes(issued.certificate_pem)
    print(f"push certificate: {certificate}\nprivate key:      {key}\n"
          f"gateway CA:       {args.data_dir / 'ca.pem'} (add it to the pushing server's trust store)")
    return 0


def run(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from apns_sim.faults import FaultPlan, parse_burst
    from apns_sim.provider_api import Environment
    from mdm_world.apns_gateway import APNsGatewayServer, GatewayConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        bursts = [parse_burst(text, now=reactor.seconds()) for text in args.burst]
    except ValueError as exc:
        print(f"mdmsim apns: {exc}", file=sys.stderr)
        return 2
    faults = FaultPlan(delay=args.delay, jitter=args.jitter, drop_rate=args.drop_rate,
                       offline_fraction=args.offline_fraction, error_rate=args.error_rate, bursts=bursts,
                       seed=args.seed)
    config = GatewayConfig(data_dir=args.data_dir, listen=args.listen,
                           push_link=None if args.push_link == "none" else args.push_link, proxy=args.proxy,
                           environment=Environment(args.environment), faults=faults, seed=args.seed)
    server = APNsGatewayServer(config, clock=reactor)

    def started(_ports) -> None:
        print(f"mdmsim apns: provider API on https://localhost:{server.provider_port}/3/device/<token> "
              f"(HTTP/2; {len(server.gateway.registry.tokens)} tokens registered; data in "
              f"{config.data_dir.resolve()})")
        if config.push_link:
            print(f"  push link for fleets: 127.0.0.1:{server.link_port}")
        print(f"  CA: {config.data_dir / 'ca.pem'}  (mdmsim apns issue-cert --topic ... for a push certificate)")
        sys.stdout.flush()

    def failed(failure) -> None:
        print(f"mdmsim apns: cannot listen: {failure.getErrorMessage()}", file=sys.stderr)
        reactor.stop()

    reactor.callWhenRunning(lambda: server.listen(reactor).addCallbacks(started, failed))
    reactor.addSystemEventTrigger("before", "shutdown", server.stop)
    reactor.run()
    return 0
