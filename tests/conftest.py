"""Fixtures shared by the whole suite."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from fedguard.crypto.keys import (
    PrivateKey,
    generate_private_key,
    unsafe_small_keys_for_tests,
)

REPOSITORY = Path(__file__).resolve().parents[1]
SHARED_DATA = REPOSITORY.parent / "shared" / "data"

# Small moduli make property tests of the arithmetic fast; they are never used
# where security matters and need the explicit test-only switch.
SMALL_KEY_BITS = 512


@pytest.fixture(scope="session")
def private_key_2048() -> PrivateKey:
    """One real-size key for the whole session: generating one costs ~0.1-1 s."""
    return generate_private_key(2048)


@pytest.fixture(scope="session")
def small_private_key() -> PrivateKey:
    with unsafe_small_keys_for_tests():
        return generate_private_key(SMALL_KEY_BITS)


@pytest.fixture
def small_keys_allowed() -> Iterator[None]:
    with unsafe_small_keys_for_tests():
        yield
