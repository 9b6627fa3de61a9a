"""``prune-rnn validate`` on every filed agent table: each row re-scored from its ``replay`` record.

For every results folder whose ``results.json`` holds result rows with replay records (the ``bench`` kind of the
runner), ``python -m agents.cli validate FOLDER`` runs in a process of its own; its exit code and summary line are
filed. A dense model that is not cached is trained only with ``--train-missing`` (minutes for pydoc-char); training
depends on the CPU's floating-point results, so a table filed on another CPU model reports a different dense model.

    python -m benchmarks validate                       # every filed agent table
    python -m benchmarks.validate_all --only agents_digits agents_gru --out DIR
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from benchmarks._meta import RESULTS, ROOT, default_out, provenance, run_meta, write_results


def replay_folders() -> list[str]:
    """The filed results folders whose rows carry replay records."""
    out = []
    for path in sorted(RESULTS.glob("*/results.json")):
        try:
            rows = json.loads(path.read_text()).get("runs")
        except (ValueError, AttributeError):
            continue
        if isinstance(rows, list) and rows and all(isinstance(r, dict) and "replay" in r for r in rows):
            out.append(path.parent.name)
    return out


def validate(name: str, train_missing: bool = False) -> dict:
    """One folder: exit code, summary line, the filed run's CPU and this machine's, seconds."""
    from agents.core.results import cpu_model

    meta = json.loads((RESULTS / name / "results.json").read_text())["meta"]
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "agents.cli", "validate", str((RESULTS / name).relative_to(ROOT))]
    proc = subprocess.run(cmd + (["--train-missing"] if train_missing else []), cwd=ROOT, capture_output=True,
                          text=True)
    lines = [x for x in (proc.stdout + proc.stderr).splitlines() if x.strip()]
    summary = next((x for x in reversed(lines) if x.startswith("validate")), lines[-1] if lines else "")
    return {"folder": name, "exit_code": proc.returncode, "summary": summary.strip(),
            "filed_cpu": (meta.get("machine") or {}).get("cpu"), "this_cpu": cpu_model(),
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="these folders only")
    p.add_argument("--train-missing", action="store_true", help="let validate train a dense model the cache lacks")
    p.add_argument("--out", default=default_out("validate"), help="results folder")
    args = p.parse_args(argv)
    meta = run_meta()
    names = args.only or replay_folders()
    rows = []
    for name in names:
        rows.append(validate(name, args.train_missing))
        print(json.dumps(rows[-1]), flush=True)
    passed = sum(r["exit_code"] == 0 for r in rows)
    md = ["# prune-rnn validate on the filed agent tables", "", provenance(meta), "",
          f"**{passed} of {len(rows)} folders pass.**", "",
          "| folder | exit code | summary | CPU of the filed run | s |", "|---|---|---|---|---|"]
    md += [f"| `{r['folder']}` | {r['exit_code']} | {r['summary']} | {r['filed_cpu']} | {r['seconds']:.0f} |"
           for r in rows]
    write_results(args.out, {"meta": meta, "folders": rows, "passed": passed}, "\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
