"""Optional profiling of the load test's child processes, for the benchmarks.

With MDMSIM_PROFILE_DIR set, a process runs its reactor under cProfile and leaves <dir>/<name>.prof.
"""

from __future__ import annotations

import os
from typing import Any


def run_profiled(run: Any, name: str) -> None:
    """Call `run()`; under MDMSIM_PROFILE_DIR, through cProfile, dumping <dir>/<name>.prof after."""
    directory = os.environ.get("MDMSIM_PROFILE_DIR")
    if not directory:
        run()
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.runcall(run)
    profiler.dump_stats(os.path.join(directory, f"{name}.prof"))
