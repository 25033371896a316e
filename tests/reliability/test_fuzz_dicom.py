"""300 seeded random damages of a DICOM series' headers and files: each one is read correctly or
refused in one line; never a traceback, crash, hang, stray output, wrong geometry or changed file.

The cases run in one child process (``dicom_fuzz.py``) so that a crash of the process is seen as
one, and the case it happened in is named; see that module for the damages and the judging.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

FUZZER = Path(__file__).with_name("dicom_fuzz.py")
CASES, SEED = 300, 20261205
WHOLE_RUN_SECONDS = 1500  # ~30 s alone; the tests share two cores with other work


def test_random_header_damage_is_read_right_or_refused_in_one_line(tmp_path):
    results = tmp_path / "results.jsonl"
    run = subprocess.run(
        [sys.executable, str(FUZZER), "--cases", str(CASES), "--seed", str(SEED), "--out", str(results)],
        capture_output=True,
        text=True,
        timeout=WHOLE_RUN_SECONDS,
    )
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    started = [line["start"] for line in lines if "start" in line]
    rows = [line for line in lines if "verdict" in line]
    last = started[-1] if started else None
    assert run.returncode == 0 and len(rows) == CASES, (
        f"exit {run.returncode} in case {last}: {run.stderr[-2000:]}"
    )
    verdicts = collections.Counter(row["verdict"] for row in rows)
    broken = [row for row in rows if row["verdict"] not in ("ok", "refused")]
    assert not broken, f"{dict(verdicts)}; first: {broken[:3]}"
    # Not a degenerate fuzz: both valid and damaged series are met.
    assert verdicts["ok"] >= CASES // 10 and verdicts["refused"] >= CASES // 2, dict(verdicts)
