"""`mdmsim serve`: run the MDM server on its data directory until Ctrl-C or SIGTERM.

On first start the directory gets a CA, a TLS certificate, a push topic and a SQLite database.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, cast

from mdm_server.app import MDMServer, ServerConfig
from mdm_server.data_lock import DataDirLock, DataDirLockedError
from mdm_server.push.apns_client import ProviderSettings
from mdm_server.retention import DEFAULT_RETAIN
from mdm_server.storage import StorageError
from mdm_server.web.client_limits import ClientLimits
from mdm_world.durations import parse_duration

from .exit_codes import Exit, epilog

_LIMITS = ClientLimits()


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate from 0 to 1")
    return value


def _database_url(text: str) -> str:
    if not text.startswith(("postgresql://", "postgres://")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a postgresql:// URL (SQLite, the default, needs no flag)")
    return text
def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _retention(text: str) -> float | None:
    seconds = parse_duration(text)
    return None if seconds == 0 else seconds


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="run the MDM server", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=epilog("For the server: 0 after SIGTERM, 130 after Ctrl-C (SIGINT), "
                                                 "1 when its storage cannot be opened (--database unreachable), "
                                                 "2 when it cannot listen."))
    parser.add_argument("--data-dir", type=Path, default=Path("mdmsim-data"),
                        help="where the CA, TLS files, server.json and the SQLite database live")
    parser.add_argument("--listen", default="ssl:8443:interface=127.0.0.1:backlog=1024",
                        help="Twisted endpoint for devices and the admin API; ssl: uses our CA-issued "
                             "certificate, tcp: serves plain HTTP behind a TLS proxy")
    parser.add_argument("--push-link", default="tcp:8444:interface=127.0.0.1:backlog=1024",
                        help="Twisted endpoint where fleet processes connect for pushes ('none' to disable)")
    parser.add_argument("--public-url", help="base URL devices are told to use (default https://localhost:PORT)")
    parser.add_argument("--admin-user", default="admin", help="admin API user name")
    parser.add_argument("--admin-password", default=os.environ.get("MDMSIM_ADMIN_PASSWORD"),
                        help="admin API password (env MDMSIM_ADMIN_PASSWORD; default: generated into "
                             "server.json on first start)")
    parser.add_argument("--body-limit", type=int, default=1024 * 1024, help="largest request body in bytes")
    parser.add_argument("--memory", action="store_true", help="keep state in memory instead of SQLite")
    parser.add_argument("--database", type=_database_url, metavar="postgresql://...",
                        help="keep devices and command queues in this PostgreSQL database instead of the SQLite "
                             "file in --data-dir (the schema is created or migrated on start); default: SQLite")
    parser.add_argument("--workers", type=_positive, default=1, metavar="N",
                        help="serve from N worker processes sharing one listening socket and the --database "
                             "PostgreSQL (needed for N > 1; one leader pushes and wakes devices); a worker that "
                             "dies is restarted (see docs/deployment.md)")
    parser.add_argument("--worker-fds", help=argparse.SUPPRESS)  # set by the supervisor for its workers
    parser.add_argument("--worker-number", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--retain", type=_retention, default=DEFAULT_RETAIN, metavar="DURATION",
                        help="how long finished commands and their results are kept, e.g. 7d (default), 12h; "
                             "0 keeps them forever (the database then grows without bound)")
    limits = parser.add_argument_group("slow and greedy clients")
    limits.add_argument("--header-timeout", type=parse_duration, default=_LIMITS.header_timeout,
                        metavar="DURATION", help="time for a request's head from its first byte (default 10s)")
    limits.add_argument("--body-timeout", type=parse_duration, default=_LIMITS.body_timeout,
                        metavar="DURATION", help="time for a request's body after its head (default 30s)")
    limits.add_argument("--max-client-connections", type=int, default=_LIMITS.per_client, metavar="N",
                        help="open connections per client address, more are dropped (default 512; 0: no cap; "
                             "loopback is never capped: a local fleet opens one per device)")
    parser.add_argument("--key-type", choices=("ec", "rsa"), default="ec",
                        help="key type of a new CA and the TLS certificate: EC P-256 (default) or RSA-2048")
    parser.add_argument("--enrollment-identity", choices=("pkcs12", "scep"), default="pkcs12",
                        help="how enrollment profiles give devices their identity: a PKCS#12 made by the server "
                             "(default, fastest for load tests) or a SCEP payload with a one-time challenge, "
                             "the device making its own RSA key and enrolling at /scep (RFC 8894)")
    parser.add_argument("--allow-sha1-signatures", action="store_true",
                        help="accept Mdm-Signature and SCEP requests whose CMS digest is SHA-1 (mdmb's default); "
                             "refused with a clear error otherwise")
    parser.add_argument("--open-enrollment", action="store_true",
                        help="anyone may fetch an enrollment profile, for any ?user=, and a new identity may "
                             "re-enroll any known device (load tests only); default: enrollment tokens")
    parser.add_argument("--no-sign-profiles", dest="sign_profiles", action="store_false",
                        help="send enrollment profiles and InstallProfile payloads as plain plists; by default "
                             "they are CMS-signed by the server's profile-signing identity (made in --data-dir, "
                             "issued by its CA), as Fleet, Zentral and MicroMDM send them")
    parser.add_argument("--sign-message", type=_boolean, default=True, metavar="true|false",
                        help="the enrollment profile's SignMessage: true (default) devices sign every body "
                             "(Mdm-Signature); false, they identify by their TLS client certificate alone")
    parser.add_argument("--client-cert-header", metavar="NAME",
                        help="read the device's client certificate from this header set by a TLS proxy: "
                             "RFC 9440 Client-Cert (:base64 DER:) or nginx's X-SSL-Client-Cert (URL-encoded "
                             "PEM); believed only from --trusted-proxy addresses")
    parser.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDRESS",
                        help="a TLS proxy's address whose --client-cert-header is believed (repeatable)")
    apns = parser.add_argument_group("APNs simulation (load testing)")
    apns.add_argument("--apns-delay", type=parse_duration, default=0.0,
                      help="delay before a push reaches the device, e.g. 200ms")
    apns.add_argument("--apns-jitter", type=parse_duration, default=0.0,
                      help="extra random delay, uniform from 0 to this, e.g. 1s")
    apns.add_argument("--apns-drop-rate", type=_rate, default=0.0,
                      help="fraction of pushes APNs silently drops, e.g. 0.01")
    external = parser.add_argument_group("external APNs (Apple's HTTP/2 provider API, or `mdmsim apns`)")
    external.add_argument("--apns-url", default=None,
                          help="push through this provider API instead of the in-process simulation, e.g. "
                               "https://localhost:2197 (then fleets attach to the gateway's push link, and "
                               "this server opens none)")
    external.add_argument("--apns-cert", type=Path, default=None,
                          help="PEM push certificate (from `mdmsim apns issue-cert`); its topic becomes the "
                               "server's push topic")
    external.add_argument("--apns-key", type=Path, default=None, help="PEM private key of --apns-cert")
    external.add_argument("--apns-ca", type=Path, default=None,
                          help="PEM CA to trust for the provider API's TLS certificate (the gateway's ca.pem); "
                               "default: the system's trust store")
    parser.set_defaults(func=run)


def _boolean(text: str) -> bool:
    value = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    if args.worker_fds:  # a worker of `--workers N`: its supervisor holds the data directory's lock
        return _serve(args)
    if args.workers > 1 and not args.database:
        print("mdmsim serve: --workers above 1 needs --database postgresql://... (the SQLite file serves one "
              "process: several would each keep their own leader, caches and pushes)", file=sys.stderr)
        return Exit.USAGE
    lock = DataDirLock(args.data_dir)
    try:
        lock.acquire()  # before anything is read or written in the directory
    except DataDirLockedError as exc:
        print(f"mdmsim serve: {exc}", file=sys.stderr)
        return Exit.USAGE  # a setup error: 2
    try:
        if args.workers > 1:
            from .cli_workers import supervise

            return supervise(args, config_from(args))
        return _serve(args)
    finally:
        lock.release()


def config_from(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        data_dir=args.data_dir, listen=args.listen,
        push_link=None if args.push_link == "none" else args.push_link, public_url=args.public_url,
        admin_user=args.admin_user, admin_password=args.admin_password, body_limit=args.body_limit,
        in_memory=args.memory, database=args.database, key_type=args.key_type,
        enrollment_identity=args.enrollment_identity, allow_sha1_signatures=args.allow_sha1_signatures,
        retain=args.retain,
        client_limits=ClientLimits(args.header_timeout, args.body_timeout, args.max_client_connections),
        open_enrollment=args.open_enrollment,
        sign_profiles=args.sign_profiles,
        sign_message=args.sign_message, client_cert_header=args.client_cert_header,
        trusted_proxies=tuple(args.trusted_proxy),
        apns={"delay": args.apns_delay, "jitter": args.apns_jitter, "drop_rate": args.apns_drop_rate},
    )


def check_config(args: argparse.Namespace, config: ServerConfig) -> int | None:
    """A usage error's exit code (the reason printed), else None; fills in the external APNs settings."""
    if bool(args.client_cert_header) != bool(args.trusted_proxy):
        print("mdmsim: --client-cert-header and --trusted-proxy go together (a header believed from no one, "
              "or proxies with no header)", file=sys.stderr)
        return Exit.USAGE
    if args.memory and args.database:
        print("mdmsim: --memory and --database are two different storages; choose one", file=sys.stderr)
        return Exit.USAGE
    if args.apns_url:
        if not (args.apns_cert and args.apns_key):
            print("mdmsim serve: --apns-url needs --apns-cert and --apns-key", file=sys.stderr)
            return Exit.USAGE
        config.apns_provider = ProviderSettings.from_files(args.apns_url, args.apns_cert, args.apns_key,
                                                           args.apns_ca)
    return None


def _serve(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from(args)
    usage = check_config(args, config)
    if usage is not None:
        return usage
    worker = None
    if args.worker_fds:
        from .cli_workers import WorkerSide

        worker = WorkerSide(args, reactor)
        worker.configure(config)
    try:
        server = MDMServer(config, clock=reactor, reactor=reactor)
    except StorageError as exc:  # e.g. PostgreSQL unreachable, or a schema written by a newer mdmsim
        print(f"mdmsim: cannot open storage: {exc.reason}", file=sys.stderr)
        return Exit.FAILED

    outcome = {"code": Exit.OK}

    def lost(why: str) -> None:  # the coordination connection: a restart (by the supervisor, or by hand) rejoins
        print(f"mdmsim: lost the PostgreSQL coordination connection ({why}); stopping", file=sys.stderr)
        outcome["code"] = Exit.FAILED
        reactor.stop()

    if server.coordination is not None:
        server.coordination.on_lost = lost
    if worker is not None:
        worker.attach(server)

    def started(_ports):
        if worker is not None:
            worker.started(server)
        else:
            print_banner(server, config, args, server.url)

    def failed(failure):
        print(f"mdmsim: cannot listen: {failure.getErrorMessage()}", file=sys.stderr)
        outcome["code"] = Exit.USAGE
        reactor.stop()

    def on_sigint(signum, frame) -> None:
        outcome["code"] = Exit.INTERRUPTED
        cast(Any, reactor).callFromThread(reactor.stop)  # the signal-safe way into the reactor

    def start() -> None:
        server.startService()
        server.listening().addCallbacks(started, failed)

    reactor.callWhenRunning(start)
    if worker is None:
        reactor.callWhenRunning(signal.signal, signal.SIGINT, on_sigint)  # after Twisted's own handler
    reactor.addSystemEventTrigger("before", "shutdown", server.stopService)
    reactor.run()
    return outcome["code"]


def print_banner(server: MDMServer, config: ServerConfig, args: argparse.Namespace, url: str) -> None:
    print(f"mdmsim server listening on {url} (data in {config.data_dir.resolve()})")
    # The URL alone on its line: scripts (soak_bench, fleet_bench) and people copy it whole.
    print(f"  enrollment profile: {url}/mdm/enroll?token={server.state.enroll_token}")
    print("  (the default batch token; per-user tokens: POST /api/v2/enrollment-tokens)")
    if config.open_enrollment:
        print("  OPEN ENROLLMENT: no token needed, any new identity may re-enroll any device")
    print(f"  CA SHA-256 fingerprint: {server.ca.fingerprint}")
    if server.scep is not None:
        print(f"  SCEP: {url}/scep (identities by SCEP; challenges expire after "
              f"{server.scep.challenge_lifetime:g} s)")
    print(f"  push topic: {server.state.topic}")
    if config.database:
        from mdm_server.storage.postgres_schema import redacted  # psycopg loads only for PostgreSQL

        print(f"  storage: PostgreSQL {redacted(config.database)}")
    print(f"  admin API: {url}/api/v1/devices (user {config.admin_user!r}, password in "
          f"{'--admin-password' if args.admin_password else config.data_dir / 'server.json'})")
    # Each URL alone on its line, like the enrollment URL: people and scripts copy them whole.
    print(f"  admin console: {url}/admin")
    print(f"  user portal: {url}/user")
    sys.stdout.flush()
