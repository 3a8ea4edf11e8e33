"""Fixtures of the decoupleq tests: these import only decoupleq and its dependencies (no seed_asr)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny matrices run far faster on one thread than on an oversubscribed shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
