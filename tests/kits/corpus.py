"""Where the shared fixtures live (../shared beside the checkout); tests skip with a reason when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared"
CORPUS = SHARED / "corpus"
SCHEMA = CORPUS / "apple-device-management"
DEVICE_MESSAGES = CORPUS / "device-messages"


def require(path: Path) -> Path:
    """Return `path`, or skip the calling test when the shared corpus is not beside this checkout."""
    if not path.exists():
        pytest.skip(f"shared corpus not found at {path} (expected ../shared beside the checkout)")
    return path
