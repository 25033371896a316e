"""`cgs train` interrupted and resumed from the command line: Ctrl+C keeps the run, --resume takes
only what may change (the device), and one budget wins."""

from __future__ import annotations

import json
import os
import signal

from synthetic import make_store
from test_train_loop import TINY

from cgs_engine.cli import verb_train
from cgs_engine.cli.main import main
from cgs_engine.train.loop import LOG_EVERY


def _config(tmp_path, **settings):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({**TINY, **settings}))
    return str(path)


def test_ctrl_c_saves_the_run_and_resume_continues_it(tmp_path, capsys, monkeypatch):
    """Ctrl+C lost every step since the last validation (up to the whole run): no state.pt, and
    --resume found nothing to resume. The first Ctrl+C now stops after the step and saves."""
    store = make_store(tmp_path / "store.h5", labeled=2, unlabeled=1, val=1)
    run = tmp_path / "run"
    printer = verb_train._printer

    def interrupted_at_the_first_logged_step(event):
        printer(event)
        if event["kind"] == "step" and event["step"] == LOG_EVERY:
            os.kill(os.getpid(), signal.SIGINT)  # as the terminal sends it

    monkeypatch.setattr(verb_train, "_printer", interrupted_at_the_first_logged_step)
    config = _config(tmp_path, iterations=4 * LOG_EVERY, val_every=100)
    argv = ["train", str(store), "-o", str(run), "--config", config, "--no-error-model"]
    handler = signal.getsignal(signal.SIGINT)  # whatever the test process has (pytest, an earlier test)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "the run's state is saved" in err and "--resume" in err
    assert (run / "state.pt").is_file()
    assert signal.getsignal(signal.SIGINT) == handler  # given back
    monkeypatch.setattr(verb_train, "_printer", printer)
    assert main(["train", str(store), "-o", str(run), "--resume"]) == 0
    assert f"done: {4 * LOG_EVERY}/{4 * LOG_EVERY} iterations" in capsys.readouterr().out


def test_resume_refuses_a_config_file_and_takes_another_device(tmp_path, capsys):
    """--config was read for nothing on --resume, in silence; --device was refused, so a run
    started on a GPU machine could not go on on a CPU."""
    store = make_store(tmp_path / "store.h5", labeled=2, unlabeled=1, val=1)
    run = tmp_path / "run"
    config = _config(tmp_path, iterations=2, val_every=2)
    assert main(["train", str(store), "-o", str(run), "--config", config, "--no-error-model"]) == 0
    capsys.readouterr()
    assert main(["train", str(store), "-o", str(run), "--resume", "--config", config]) == 2
    assert "drop --config" in capsys.readouterr().err
    assert main(["train", str(store), "-o", str(run), "--resume", "--device", "cpu"]) == 0
    assert main(["train", str(store), "-o", str(run), "--resume", "--seed", "3"]) == 2
    assert "drop --seed" in capsys.readouterr().err


def test_iterations_on_the_command_line_win_over_minutes_in_the_config_file(tmp_path):
    """The file's minutes won: the run followed wall time while its record said 20 iterations."""
    store = make_store(tmp_path / "store.h5", labeled=2, unlabeled=1, val=1)
    config = _config(tmp_path, minutes=5.0, val_every=2)
    run = tmp_path / "run"
    argv = ["train", str(store), "-o", str(run), "--config", config, "--iterations", "2", "--no-error-model"]
    assert main(argv) == 0
    record = json.loads((run / "config.json").read_text())
    assert record["total_iterations"] == 2 and record["config"]["minutes"] is None


def test_a_run_recorded_with_the_sampled_fingerprint_still_resumes(tmp_path, capsys):
    """Fingerprints now hash every image byte; a run started before (4 image slices per volume)
    must still resume on its unchanged store."""
    from cgs_engine.store import SliceStore

    store = make_store(tmp_path / "store.h5", labeled=2, unlabeled=1, val=1)
    run = tmp_path / "run"
    config = _config(tmp_path, iterations=2, val_every=2)
    assert main(["train", str(store), "-o", str(run), "--config", config, "--no-error-model"]) == 0
    record = json.loads((run / "config.json").read_text())
    with SliceStore.open(store) as opened:
        record["fingerprint"] = opened.fingerprint(sampled=True)
    (run / "config.json").write_text(json.dumps(record))
    assert main(["train", str(store), "-o", str(run), "--resume"]) == 0


def test_a_run_recorded_with_both_iterations_and_minutes_still_resumes(tmp_path, capsys):
    """Files with both are refused now; a run recorded before (it ran on its minutes) was then
    refused on --resume too, with no way out but editing its record."""
    store = make_store(tmp_path / "store.h5", labeled=2, unlabeled=1, val=1)
    run = tmp_path / "run"
    config = _config(tmp_path, iterations=2, val_every=2)
    assert main(["train", str(store), "-o", str(run), "--config", config, "--no-error-model"]) == 0
    record = json.loads((run / "config.json").read_text())
    record["config"]["minutes"] = 0.01  # as an older version recorded a file holding both
    (run / "config.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["train", str(store), "-o", str(run), "--resume"]) == 0, capsys.readouterr().err
