"""Test-run settings shared by the whole suite: Hypothesis profiles, chosen by HYPOTHESIS_PROFILE (default ci).

`ci` (also `make test`): no deadline, since a loaded 2-core machine ran a 200 ms default into DeadlineExceeded
flakes; derandomized, so a run replays exactly; a failing example prints its reproduce blob. `dev`: no deadline,
random examples (finds more over many local runs). A test's own @settings still override these per key.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_sessionfinish(session, exitstatus):
    """Stop the session's throwaway PostgreSQL (tests/kits/postgres.py), if a test started one."""
    from kits.postgres import SERVER

    SERVER.stop()
