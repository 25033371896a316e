"""The training run on tiny synthetic data: run directory, every method, resume, bad settings."""

from __future__ import annotations

import json

import pytest
import torch
from synthetic import CLASS_NAMES, make_store

from cgs_engine.checkpoint import load_checkpoint, load_payload
from cgs_engine.train.config import ConfigError, TrainConfig
from cgs_engine.train.loop import train
from cgs_engine.train.run_dir import RunError

TINY = dict(
    input_size=32,
    batch_labeled=2,
    batch_unlabeled=2,
    widths=(4, 8, 16),
    dropouts=(0.0, 0.1, 0.2),
    precision="fp32",
    val_every=3,
    seed=1,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("data") / "store.h5")


@pytest.mark.parametrize("method", ["cgs", "supervised", "fixmatch", "binary-heads", "no-cross", "no-ihed"])
def test_every_method_trains_and_writes_its_run(store, tmp_path, method):
    events = []
    result = train(
        store, tmp_path / "run", TrainConfig(method=method, iterations=4, **TINY), on_event=events.append
    )
    assert result.steps_done == 4 and not result.stopped_early
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["config"]["method"] == method and recorded["total_iterations"] == 4
    assert recorded["class_names"] == CLASS_NAMES
    model = load_checkpoint(result.best_checkpoint)
    assert model.method == method and model.class_names == CLASS_NAMES and model.data_fingerprint
    assert (model.model_config.heads == "none") == (method in ("supervised", "fixmatch"))
    assert {"start", "val", "done"} <= {e["kind"] for e in events}
    assert (tmp_path / "run" / "final.pt").is_file()


def test_resume_continues_exactly(store, tmp_path):
    config = TrainConfig(iterations=6, **TINY)
    straight = train(store, tmp_path / "straight", config)
    calls = {"n": 0}

    def stop_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    interrupted = train(store, tmp_path / "resumed", config, should_stop=stop_after_three)
    assert interrupted.stopped_early and interrupted.steps_done == 3
    assert load_payload(tmp_path / "resumed" / "state.pt")["step"] == 3
    resumed = train(store, tmp_path / "resumed", resume=True)
    assert resumed.steps_done == 6
    a = load_payload(tmp_path / "straight" / "state.pt")
    b = load_payload(tmp_path / "resumed" / "state.pt")
    for name, tensor in a["student"].items():
        assert torch.allclose(tensor.float(), b["student"][name].float(), atol=1e-6), name
    assert straight.best_dice == pytest.approx(resumed.best_dice, abs=1e-6)


def test_run_dir_is_never_overwritten(store, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not empty"):
        train(store, tmp_path / "run", TrainConfig(iterations=1, **TINY))
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    with pytest.raises(RunError, match="nothing to resume"):
        train(store, tmp_path / "other", resume=True)


def test_minutes_budget_follows_wall_time(store, tmp_path):
    events = []
    result = train(store, tmp_path / "run", TrainConfig(minutes=0.05, **TINY), on_event=events.append)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["total_iterations"] is None and recorded["config"]["minutes"] == 0.05
    assert result.steps_done >= 1 and result.total_steps == result.steps_done and not result.stopped_early
    steps = [e for e in events if e["kind"] == "step"]
    assert all(0 <= e["progress"] <= 1 for e in steps)
    assert [e for e in events if e["kind"] == "val"][-1]["step"] == result.steps_done  # final teacher judged


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"method": "magic"}, "method must be one of"),
        ({"input_size": 30}, "multiple of"),
        ({"tau": 1.5}, "tau"),
        ({"teacher_mode": "sleepy"}, "teacher_mode"),
        ({"method": "cgs", "batch_unlabeled": 0}, "needs batch_unlabeled"),
        ({"pseudo_labeler": "oracle"}, "pseudo_labeler must be one of"),
        ({"pseudo_labeler": "initial"}, "pseudo_labeler initial needs init_checkpoint"),
        ({"unlabeled_start": 1.0}, "unlabeled_start must be in"),
        ({"unlabeled_start": -0.1}, "unlabeled_start must be in"),
    ],
)
def test_bad_settings(settings, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**settings)


def test_config_file_errors(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="config.json: not valid JSON"):
        TrainConfig.from_file(path)
    path.write_text(json.dumps({"lr": 0.01, "colour": "blue"}))
    with pytest.raises(ConfigError, match="unknown setting"):
        TrainConfig.from_file(path)
    path.write_text(json.dumps({"lr": 0.02}))
    assert TrainConfig.from_file(path, {"seed": 3}).lr == 0.02


def test_fine_tune_starts_from_a_checkpoint(store, tmp_path):
    first = train(store, tmp_path / "first", TrainConfig(iterations=2, **TINY))
    settings = {**TINY, "widths": (8, 16, 32)}  # ignored: the checkpoint's architecture wins
    tuned = train(
        store,
        tmp_path / "tuned",
        TrainConfig(iterations=2, init_checkpoint=str(first.final_checkpoint), **settings),
    )
    assert load_checkpoint(tuned.final_checkpoint).model_config.widths == (4, 8, 16)
    with pytest.raises(RunError, match="heads .* do not suit method supervised"):
        train(
            store,
            tmp_path / "bad",
            TrainConfig(
                method="supervised", iterations=1, init_checkpoint=str(first.final_checkpoint), **TINY
            ),
        )


@pytest.mark.parametrize("start", [0.0, 0.5])
def test_unlabeled_terms_start_once_the_ramp_reaches_their_share(store, tmp_path, monkeypatch, start):
    import cgs_engine.train.loop as loop
    from cgs_engine.method.objective import lambda_schedule

    calls = []
    real_step = loop.train_step

    def spying_step(*args, **kwargs):
        terms = real_step(*args, **kwargs)
        calls.append((args[5], kwargs["unlabeled"], terms["unsup"]))
        return terms

    monkeypatch.setattr(loop, "train_step", spying_step)
    config = TrainConfig(iterations=10, lambda_max=0.1, ramp_fraction=1.0, unlabeled_start=start, **TINY)
    train(store, tmp_path / "run", config)
    lams = [lambda_schedule(i / 10, 1.0, 0.1) for i in range(10)]
    assert [lam for lam, _, _ in calls] == pytest.approx(lams)
    expected = [lam >= start * 0.1 for lam in lams]
    assert [used for _, used, _ in calls] == expected
    # the 0.5 share starts at step 7 (t = 0.7: exp(-5 * 0.09) = 0.64), the reference from the first
    assert expected == ([True] * 10 if start == 0 else [False] * 7 + [True] * 3)
    # skipped steps weigh nothing unlabeled; computed ones do (unless the teacher trusts no pixel)
    assert all(unsup == 0 for _, used, unsup in calls if not used)
    assert any(unsup != 0 for _, used, unsup in calls if used)


@pytest.mark.parametrize("labeler", ["ema", "initial"])
def test_pseudo_labels_come_from_the_ema_teacher_or_the_frozen_initial_model(
    store, tmp_path, monkeypatch, labeler
):
    import cgs_engine.train.loop as loop

    start = train(store, tmp_path / "start", TrainConfig(iterations=2, **TINY))
    initial = load_checkpoint(start.final_checkpoint).state_dict
    seen = []
    real_step = loop.train_step

    def spying_step(student, teacher, *args, **kwargs):
        seen.append({k: v.detach().clone() for k, v in teacher.state_dict().items()})
        return real_step(student, teacher, *args, **kwargs)

    monkeypatch.setattr(loop, "train_step", spying_step)
    config = TrainConfig(
        iterations=4, init_checkpoint=str(start.final_checkpoint), pseudo_labeler=labeler, **TINY
    )
    tuned = train(store, tmp_path / "tuned", config)
    same_as_initial = [all(torch.equal(s[k].float(), initial[k].float()) for k in initial) for s in seen]
    assert same_as_initial == ([True] * 4 if labeler == "initial" else [True, False, False, False])
    kept = load_checkpoint(tuned.final_checkpoint).state_dict  # the EMA teacher is still what is kept
    assert not all(torch.equal(kept[k].float(), initial[k].float()) for k in initial)


def test_a_wall_time_run_stops_at_max_iterations_when_that_comes_first(store, tmp_path):
    events = []
    config = TrainConfig(minutes=30, max_iterations=20, **TINY)
    result = train(store, tmp_path / "run", config, on_event=events.append)
    assert result.steps_done == 20 and not result.stopped_early
    steps = {e["step"]: e for e in events if e["kind"] == "step"}
    assert sorted(steps) == [10, 20]
    # the schedule followed the iterations, not the 30 minutes: half-way at 10, near 0 at the end
    assert steps[10]["progress"] == pytest.approx(9 / 20) and steps[20]["lr"] < 0.2 * steps[10]["lr"]
    assert [e for e in events if e["kind"] == "val"][-1]["step"] == 20  # the final teacher judged
    with pytest.raises(ConfigError, match="max_iterations must be positive"):
        TrainConfig(max_iterations=0)


def test_snapshots_keep_teacher_and_student_every_n_steps(store, tmp_path):
    result = train(store, tmp_path / "run", TrainConfig(iterations=5, snapshot_every=2, **TINY))
    folder = tmp_path / "run" / "snapshots"
    assert sorted(p.name for p in folder.iterdir()) == [
        "student-000002.pt",
        "student-000004.pt",
        "teacher-000002.pt",
        "teacher-000004.pt",
    ]
    teacher, student = (load_checkpoint(folder / f"{role}-000004.pt") for role in ("teacher", "student"))
    assert teacher.metrics["step"] == 4 and teacher.class_names == CLASS_NAMES
    differs = [not torch.equal(student.state_dict[k], teacher.state_dict[k]) for k in teacher.state_dict]
    assert any(differs)  # the student is not the EMA teacher
    final = load_checkpoint(result.final_checkpoint)
    assert set(final.state_dict) == set(student.state_dict)
    assert not (tmp_path / "off").exists()
    train(store, tmp_path / "off", TrainConfig(iterations=2, **TINY))
    assert not (tmp_path / "off" / "snapshots").exists()
    with pytest.raises(ConfigError, match="snapshot_every must be 0"):
        TrainConfig(snapshot_every=-1)


def test_snapshots_by_minutes_record_their_time(store, tmp_path, monkeypatch):
    import cgs_engine.train.loop as loop_module

    clock = iter(range(0, 10_000, 20))  # every call of the run's clock moves it by 20 s
    monkeypatch.setattr(loop_module.time, "perf_counter", lambda: float(next(clock)))
    train(store, tmp_path / "run", TrainConfig(iterations=6, snapshot_minutes=1.0, **TINY))
    teachers = sorted((tmp_path / "run" / "snapshots").glob("teacher-*.pt"))
    assert teachers, "a 1-minute snapshot is due after a minute of the run"
    metrics = [load_checkpoint(path).metrics for path in teachers]
    elapsed = [m["elapsed_s"] for m in metrics]
    assert elapsed == sorted(elapsed) and all(e >= 60 * (i + 1) for i, e in enumerate(elapsed[:-1]))
    assert all(m["cpu_s"] > 0 and m["step"] >= 1 for m in metrics)
    assert metrics[-1]["step"] == 6  # the curve ends where the run ended
    with pytest.raises(ConfigError, match="snapshot_minutes must be 0"):
        TrainConfig(snapshot_minutes=-1)
