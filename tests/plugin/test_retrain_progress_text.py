"""The retrain section's progress line: which held-out Dice it shows and how it states the budget."""

from __future__ import annotations

from napari_cgs.panel.retrain_text import RetrainProgress, outcome_headline


def _progress(keep: str, max_iterations: int | None = 300) -> RetrainProgress:
    progress = RetrainProgress()
    start = {"kind": "start", "total": None, "minutes": 20, "max_iterations": max_iterations}
    progress.update({**start, "heldout": ["a"], "keep": keep})
    for step, dice in [(50, 0.72), (100, 0.70)]:
        progress.update({"kind": "step", "step": step, "progress": step / 300, "loss_total": 0.5})
        progress.update({"kind": "val", "step": step, "dice_mean": dice})
    return progress


def test_the_kept_final_model_shows_the_latest_held_out_dice():
    text = _progress("final").text()
    assert "held-out Dice 70.0 (iteration 100)" in text and "best" not in text
    # 300 iterations may end the run before 20 minutes: the line says so (it said "at most 20 min")
    assert "33% done (ends at 20 min or 300 iterations, whichever comes first)" in text
    assert "33% done (ends at 20 min)" in _progress("final", max_iterations=None).text()


def test_keeping_the_best_shows_the_best_so_far():
    assert "best held-out Dice 72.0 (iteration 50)" in _progress("best").text()


def test_the_notification_says_the_outcome_in_its_first_line():
    message = {
        "kind": "finished",
        "version": "v0002",
        "activated": False,
        "reason": "held-out Dice 0.61 < 0.62",
    }
    assert outcome_headline(message) == "Retrain finished: v0002 kept inactive"
    assert outcome_headline({"kind": "cancelled", "version": None}) == "Retrain cancelled: no version kept"
