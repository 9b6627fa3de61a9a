"""The sealed stage files of ``prune-rnn compress``: each stage's JSON marker holds the stage's record (its keys at the
top level, as readers expect) and a ``"seal"``: the settings, the SHA-256 of the files the stage wrote, the seal of
the stage before it, and a SHA-256 over the record and all of that.

A stage is reused only when its seal holds: the record and settings are unchanged, every file it names has the
recorded hash, and the stage before it is the one it followed. A stage that fails (an edited allocation, a swapped
``model.prnn``, a pickled ``finetuned.pt``, a stage of other settings) is redone with a one-line warning, and so is
every stage after it; nothing in a failed stage is loaded. The seal guards against edits and mix-ups; the report then
recomputes what it shows from the files themselves (:mod:`agents.cli.compress_report`).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The stages in order; each one's marker file.
STAGES = {"search": "search.json", "finetune": "finetune.json", "export": "export.json", "report": "report.json"}
#: What a stage marker holds in ``"format"``, and its version.
STAGE_FORMAT = "prune-rnn-gym compress stage"
STAGE_VERSION = 1


class StageError(ValueError):
    """A stage file that does not hold (the message says why)."""


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, as ``"sha256:<hex>"``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def _digest(body: Mapping[str, Any]) -> str:
    """SHA-256 over the plain-JSON form of ``body``, its seal's own ``sha256`` left out."""
    from agents.cli.common import plain

    seal = {k: v for k, v in body["seal"].items() if k != "sha256"}
    text = json.dumps(plain({**body, "seal": seal}), sort_keys=True, allow_nan=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def write_stage(out: Path, stage: str, record: Mapping[str, Any], settings: Mapping[str, Any],
                files: Sequence[str] = (), after: str | None = None) -> str:
    """Seal ``record`` with ``settings``, the hashes of ``files`` (names in ``out``) and ``after`` (the seal of the
    stage before), and write it atomically as the stage's marker; returns the seal."""
    from agents.cli.common import plain
    from agents.core.results import write_json

    if "seal" in record:
        raise ValueError("a stage record may not have a 'seal' key")
    seal = {"format": STAGE_FORMAT, "version": STAGE_VERSION, "stage": stage, "settings": dict(settings),
            "after": after, "files": {name: file_sha256(out / name) for name in files}}
    body = plain({**record, "seal": seal})
    body["seal"]["sha256"] = _digest(body)
    write_json(out / STAGES[stage], body)
    return body["seal"]["sha256"]


def read_stage(out: Path, stage: str, settings: Mapping[str, Any],
               after: str | None) -> tuple[dict[str, Any], str] | None:
    """``(record, seal)`` of a finished stage whose seal holds; ``None`` when the stage is to be (re)done: no marker,
    or one that does not hold (a one-line warning says why)."""
    path = out / STAGES[stage]
    if not path.exists():
        return None
    try:
        return check_stage(path, stage, settings, after)
    except StageError as e:
        print(f"prune-rnn: warning: {path.name}: {e}; redoing the {stage} stage", file=sys.stderr, flush=True)
        return None


def check_stage(path: Path, stage: str, settings: Mapping[str, Any], after: str | None) -> tuple[dict[str, Any], str]:
    """:func:`read_stage` without the redo: :raises StageError: naming what does not hold."""
    from agents.cli.common import plain

    try:
        body = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise StageError(f"unreadable ({type(e).__name__})") from None
    seal = body.get("seal") if isinstance(body, dict) else None
    if not isinstance(seal, dict) or seal.get("format") != STAGE_FORMAT:
        raise StageError("not a sealed stage file (written by an earlier release, or edited)")
    if seal.get("version") != STAGE_VERSION or seal.get("stage") != stage:
        raise StageError(f"a stage of version {seal.get('version')!r} for {seal.get('stage')!r}, not {stage!r}")
    if seal.get("sha256") != _digest(body):
        raise StageError("its content does not match its seal (edited)")
    if seal.get("settings") != plain(dict(settings)):
        raise StageError("written with other settings")
    if seal.get("after") != after:
        raise StageError("it followed another run of the stage before it")
    files = seal.get("files")
    if not isinstance(files, dict):
        raise StageError("no file list")
    record = {k: v for k, v in body.items() if k != "seal"}
    for name, sha in files.items():
        f = path.parent / name
        if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
            raise StageError(f"names the file {name!r} outside the run directory")
        if not f.is_file():
            raise StageError(f"{name} is missing")
        if file_sha256(f) != sha:
            raise StageError(f"{name} is not the file the stage wrote (its SHA-256 differs)")
    return record, seal["sha256"]


__all__ = ["STAGES", "STAGE_FORMAT", "STAGE_VERSION", "StageError", "check_stage", "file_sha256", "read_stage",
           "write_stage"]
