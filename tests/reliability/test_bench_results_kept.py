"""Benchmark results are never overwritten, even by two runs finishing in the same minute."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import common  # noqa: E402


def test_same_minute_results_get_their_own_files(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(common.time, "strftime", lambda _format: "20261204-2359")
    paths = [common.save_results("retrain", {"run": i}) for i in range(3)]
    assert len(set(paths)) == 3
    assert [json.loads(p.read_text())["run"] for p in paths] == [0, 1, 2]
    assert paths[0].name == "retrain-20261204-2359.json"
    assert paths[1].name == "retrain-20261204-2359-2.json"
