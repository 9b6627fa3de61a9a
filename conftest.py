"""Shared test fixtures, for tests/, the docstring examples of prune_env/ (``--doctest-modules``) and the notebooks."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_task_cache(tmp_path_factory: pytest.TempPathFactory):
    """Point the built-in tasks' model cache at a temp dir, so tests never read or write the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNE_RNN_CACHE", str(tmp_path_factory.mktemp("prune-rnn-cache")))
        yield
