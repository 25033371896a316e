"""The retrain section's progress line: which held-out Dice it shows and how it states the budget."""

from __future__ import annotations

from napari_cgs._retrain_text import RetrainProgress


def _progress(keep: str) -> RetrainProgress:
    progress = RetrainProgress()
    progress.update({"kind": "start", "total": None, "minutes": 20, "heldout": ["a"], "keep": keep})
    for step, dice in [(50, 0.72), (100, 0.70)]:
        progress.update({"kind": "step", "step": step, "progress": step / 300, "loss_total": 0.5})
        progress.update({"kind": "val", "step": step, "dice_mean": dice})
    return progress


def test_the_kept_final_model_shows_the_latest_held_out_dice():
    text = _progress("final").text()
    assert "held-out Dice 70.0 (iteration 100)" in text and "best" not in text
    assert "33% done (at most 20 min)" in text  # 300 iterations may end the run before 20 minutes


def test_keeping_the_best_shows_the_best_so_far():
    assert "best held-out Dice 72.0 (iteration 50)" in _progress("best").text()
