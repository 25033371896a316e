"""The run directory: checks before a run starts or resumes, its lock, its record and its log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cgs_engine.durable import append_line, remove_stale_temp_files, write_text_atomically
from cgs_engine.errors import CGSError
from cgs_engine.locks import exclusive


class RunError(CGSError):
    """A run directory that cannot be started or resumed; one line."""


ABANDONED_START_FILES = ("config.json", "log.jsonl")  # what a run writes before its first saved state


def prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """Check the run folder can be used (the caller holds its lock).

    A folder holding only what a run writes before its first saved state (killed or failed in its
    first steps: nothing to resume, nothing of value) is started afresh.
    """
    if resume:
        if not (run_dir / "state.pt").is_file():
            raise RunError(f"{run_dir}: nothing to resume (no state.pt); start a new run without --resume")
        return
    present = [p for p in run_dir.iterdir() if not p.name.startswith(".")] if run_dir.is_dir() else []
    if present and all(p.name in ABANDONED_START_FILES for p in present):
        for path in present:
            path.unlink()
        present = []
    if present:
        raise RunError(f"{run_dir}: run directory exists and is not empty (use --resume or another -o)")


@contextmanager
def run_dir_lock(run_dir: Path, is_main: bool) -> Iterator[None]:
    """One training run at a time per folder (two `cgs train -o SAME` would mix their files)."""
    if not is_main:
        yield
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"{run_dir}: cannot create the run folder ({error.strerror or error})") from None
    remove_stale_temp_files(run_dir)
    message = f"{run_dir}: another training run is writing to this folder; use another -o"
    with exclusive(run_dir / ".run.lock", lambda: RunError(message)):
        yield


def keep_log_until(run_dir: Path, step: int) -> None:
    """On resume: drop log records of steps after the saved state, which are run (and logged) again."""
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by the kill
        if isinstance(record, dict) and int(record.get("step", 0)) <= step:
            kept.append(line)
    write_text_atomically(path, "".join(f"{line}\n" for line in kept))


def read_run_record(path: Path) -> dict:
    """The ``config.json`` a run wrote at its start, checked: a damaged one is one line, not a KeyError."""
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: missing; this run cannot be resumed") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunError(f"{path}: not readable ({' '.join(str(error).split())}); cannot resume") from None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("config"), dict):
        raise RunError(f"{path}: holds no run record (no 'config' table); this run cannot be resumed")
    total = recorded.get("total_iterations")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 1):
        raise RunError(f"{path}: total_iterations {total!r} is not a positive whole number; cannot resume")
    store = recorded.get("store")
    if store is not None and not isinstance(store, str):
        raise RunError(f"{path}: store {store!r} is not a path; cannot resume")
    return recorded


def log(run_dir: Path, record: dict[str, Any]) -> None:
    append_line(run_dir / "log.jsonl", json.dumps(record))


def moved_with_its_folder(
    config: dict[str, Any], recorded_store: str | None, store_now: Path
) -> dict[str, Any]:
    """The recorded run settings, with a model to fine-tune from (``init_checkpoint``) that moved
    along with the run: a project folder renamed, moved or restored elsewhere records the old
    absolute path, and ``--resume`` there failed on it every time (the hours trained were lost).

    The old and new folders are read from the store's recorded and present paths (their common
    tail is what moved); a path outside the moved folder is kept. One inside it is taken from the
    new place even where the old path exists again: another project created at the old place
    lent its model to the resumed run (as the frozen pseudo-labeler), without a word."""
    source = config.get("init_checkpoint")
    if not recorded_store or not isinstance(source, str):
        return config
    # resolved as the record was: a store reached through a link is no move
    old, new = Path(recorded_store).parts, Path(store_now).resolve().parts
    shared = 0
    while shared < min(len(old), len(new)) and old[-1 - shared] == new[-1 - shared]:
        shared += 1
    if shared == 0 or old == new:
        return config
    try:
        inside = Path(source).relative_to(Path(*old[: len(old) - shared]))
    except ValueError:
        return config
    moved = Path(*new[: len(new) - shared]) / inside
    return {**config, "init_checkpoint": str(moved)} if moved.is_file() else config
