"""Fixtures for the remediation tests: a real Slurm cluster on loopback (tests/slurm_support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from slurm_support import SlurmCluster, SlurmFactory, slurm_clusters, slurm_missing_reason


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    """munged + slurmctld + `slurmd -N gpu001`, shared by a module's tests: gpu001-gpu100 idle.
    Tests that change nodes use nodes of their own; one that stops slurmctld uses `slurm_factory`."""
    reason = slurm_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    factory = SlurmFactory()
    try:
        yield factory.start()
    finally:
        factory.stop_all()


@pytest.fixture
def slurm_factory() -> Iterator[SlurmFactory]:
    """Starts clusters of the test's own (`.start()`); all stopped after the test."""
    reason = slurm_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    yield from slurm_clusters()
