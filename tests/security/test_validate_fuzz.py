"""Property-based: whatever a results file holds, ``validate`` and ``bench --resume`` answer with a verdict or one
typed error (a one-line exit code 2 from the CLI), never a traceback, and import nothing. Mutations of a real bench's
``results.json`` (any value replaced by any JSON value) reach past the first checks."""

from __future__ import annotations

import copy
import json
import shutil
import sys
from pathlib import Path

import pytest
from attack_tasks import SPEC
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.cli import main
from agents.cli.common import CLIError

JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False)
                    | st.text(max_size=12), lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench")
    assert main(["bench", "--task", SPEC, "--sparsity", "0.5", "--agents", "uniform", "random", "--max-evals", "2",
                 "--out", str(out), "--no-progress"]) == 0
    (run,) = out.iterdir()
    return run, json.loads((run / "results.json").read_text())


def _paths(x, prefix=()):
    yield prefix
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _paths(v, (*prefix, i))


def _mutate(data: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(data)
    if not path:
        return value
    node = out
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_validate_gives_a_verdict_or_one_line(original, tmp_path_factory, data):
    run, results = original
    paths = list(_paths(results))
    path = data.draw(st.sampled_from(paths))
    value = data.draw(JSON)
    target = tmp_path_factory.mktemp("fuzz") / "run"
    shutil.copytree(run, target)
    (target / "results.json").write_text(json.dumps(_mutate(results, path, value)))
    (target / "evil_fuzz.py").write_text("raise SystemExit('imported from the run directory')\n")
    modules = set(sys.modules)
    code = main(["validate", str(target)])  # without --task: every row's factory stays unimported
    assert code in (1, 2)
    new = [sys.modules[m] for m in set(sys.modules) - modules]
    assert not [m for m in new if str(getattr(m, "__file__", "") or "").startswith(str(target))]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_resume_reads_any_file_with_one_typed_error(original, tmp_path_factory, data):
    from agents.cli import resume as R
    from agents.cli.validate_tables import check_tables

    run, results = original
    path = data.draw(st.sampled_from(list(_paths(results))))
    mutated = _mutate(results, path, data.draw(JSON))
    target = tmp_path_factory.mktemp("fuzz") / "run"
    target.mkdir()
    (target / "results.json").write_text(json.dumps(mutated))
    try:
        meta, rows = R.read_results(str(target))
        R.recorded_args(meta)
        check_tables(target, mutated, rows)
    except (CLIError, ValueError):
        pass
