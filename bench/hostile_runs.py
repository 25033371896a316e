"""How a hostile input ended: the outcome of one ``cgs`` command, in this process or a child, and a
snapshot of a folder to tell whether anything that existed before was changed. Shared by
``hostile_inputs.py`` and ``hostile_dicom.py``."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path


def run_in_process(arguments: list[str]) -> tuple[str, int | None, str]:
    from cgs_engine.cli.main import main

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = main(arguments)
    except SystemExit as exit_:  # argparse refusals: usage line, exit 2
        code = exit_.code if isinstance(exit_.code, int) else 2
    except BaseException as error:  # noqa: BLE001 - this is what the benchmark counts
        return "traceback", None, f"{type(error).__name__}: {error}".splitlines()[0]
    lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
    if code == 2 and lines and ": error: " in lines[-1]:
        return "clean error", code, lines[-1]
    if code == 0:
        return "handled", code, lines[-1] if lines else ""
    return "unclear", code, lines[-1] if lines else ""


def run_child(arguments: list[bytes]) -> tuple[str, int | None, str]:
    result = subprocess.run([sys.executable.encode(), b"-m", b"cgs_engine", *arguments], capture_output=True)
    text = result.stderr.decode("utf-8", "replace")
    lines = [line for line in text.splitlines() if line.strip()]
    if result.returncode < 0:
        return "crash", result.returncode, f"signal {-result.returncode}"
    if "Traceback" in text:
        return "traceback", result.returncode, lines[-1] if lines else ""
    if result.returncode == 2 and lines and ": error: " in lines[-1]:
        return "clean error", 2, lines[-1]
    return ("handled" if result.returncode == 0 else "unclear"), result.returncode, lines[-1] if lines else ""


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
