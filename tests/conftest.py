"""Shared fixtures. Integration fixtures start a real broker (Tansu) and Redis on loopback."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MIRAGE_SHARED_DATA", REPO.parent / "shared" / "data"))
PTBXL = SHARED_DATA / "ptbxl-sample"


@pytest.fixture(scope="session")
def ptbxl_dir() -> Path:
    """The shared PTB-XL sample; tests using it skip with a reason where it is absent."""
    if not (PTBXL / "ptbxl_database.csv").exists():
        pytest.skip(f"PTB-XL sample not found at {PTBXL} (set MIRAGE_SHARED_DATA)")
    return PTBXL


@pytest.fixture(scope="session")
def services():
    """A real embedded broker and Redis for the whole test session."""
    from deploy.services import EmbeddedServices

    with EmbeddedServices() as svc:
        yield svc


@pytest.fixture
def unique() -> str:
    """A unique suffix for topic names / consumer groups, one per test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def shipped_checkpoint():
    """The shipped checkpoint (``engine/checkpoints/mirage-default.pt``), loaded once; skips where absent."""
    from engine.checkpoint import default_checkpoint_path, load_checkpoint

    if not Path(default_checkpoint_path()).is_file():
        pytest.skip(f"no shipped checkpoint at {default_checkpoint_path()}")
    return load_checkpoint(None)
