"""What `--web`'s live dashboard costs the load run: CPU per second in a worker, the parent and the publisher.

Run: `.venv/bin/python benchmarks/dashboard_bench.py [--types 6] [--samples 20000] [--workers 4]`.
A worker's progress message with and without per-type histograms (`--web` adds them once a second), the parent's
merge of them (once a second), and one publication (twice a second, whatever the number of pages).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from twisted.internet import task

from mdmsim.live.feed import DashboardFeed, server_sent_event
from mdmsim.load import summary
from mdmsim.load.meter import LoadObserver

TYPES = ("Authenticate", "TokenUpdate", "Idle", "Acknowledged", "InstallProfile", "EnrollmentProfile", "NotNow")


def per_call(work: Callable[[], object], repeat: int) -> float:
    start = time.process_time()
    for _ in range(repeat):
        work()
    return (time.process_time() - start) / repeat


def observer(live: bool, types: int, samples: int, rng: random.Random) -> LoadObserver:
    seen = LoadObserver(task.Clock(), live_messages=live)
    for _ in range(samples):
        seen.record(TYPES[rng.randrange(types)], rng.lognormvariate(-4.5, 0.8), rng.random() > 0.001, 0.0)
    seen.timeline.clear()  # the per-second buckets are shipped either way: not the dashboard's cost
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--types", type=int, default=6, help="message types with latencies (default 6)")
    parser.add_argument("--samples", type=int, default=20_000, help="latencies recorded per worker")
    parser.add_argument("--workers", type=int, default=4, help="workers whose progress the parent merges")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(1)
    plain, live = (observer(flag, args.types, args.samples, rng) for flag in (False, True))
    without = per_call(lambda: plain.progress(0.0), args.repeat)
    with_types = per_call(lambda: live.progress(0.0), args.repeat)
    parts = [live.progress(0.0) for _ in range(args.workers)]
    merge = per_call(lambda: summary.live_messages(parts), max(10, args.repeat // 10))
    status = {"elapsed": 10.0, "duration": 60.0, "devices": 1000, "enrolled": 1000, "enroll_failed": 0,
              "requests": 50_000, "errors": 3, "requests_failed_by_kind": {"timeout": 3}, "rollout_acked": 10,
              "rollout_devices": 1000, "server_cpu": 0.5, "server_rss": 90e6,
              "messages": summary.live_messages(parts), "latest_second": {"p50": 0.01, "p95": 0.02, "p99": 0.03}}
    feed = DashboardFeed("bench")
    publish = per_call(lambda: server_sent_event(feed.event(status, 0.0)), args.repeat)
    print(f"{args.types} message types, {args.samples} latencies per worker, {args.workers} workers merged")
    print(f"  worker progress message, without --web   {without * 1e6:9.1f} µs  (once a second)")
    print(f"  worker progress message, with --web      {with_types * 1e6:9.1f} µs  "
          f"(+{(with_types - without) * 1e6:.1f} µs/s = {100 * (with_types - without):.3f}% of a core)")
    print(f"  parent: merge the workers' histograms    {merge * 1e6:9.1f} µs  (once a second, --web only)")
    print(f"  publisher: one event                     {publish * 1e6:9.1f} µs  (twice a second, "
          f"{200 * publish:.3f}% of a core)")


if __name__ == "__main__":
    main()
