"""Retraining in a separate, fresh Python process, and the parent's handle on it.

The GUI starts ``python -m cgs_engine.retrain.worker PROJECT ...`` (never a thread, never a fork
of a Qt process) at a raised nice level, with one core fewer than the machine has (at least 1)
so the GUI stays responsive. The worker runs :func:`cgs_engine.retrain.retrain` and
writes one JSON object per line on stdout; everything else it prints goes to a log file.

Messages: the retrain's events (``cgs_engine.train.events``), each ``to_dict()`` as one JSON
line; :meth:`RetrainProcess.poll_messages` returns them as events again. Exactly one of
finished / cancelled / failed ends a run (exit code 0, 0, 1). If the process dies without one
(kill -9, out of memory), :meth:`RetrainProcess.poll_messages` reports a ``RetrainFailed`` with
``exit_code`` itself. Cancel: the parent creates the cancel file that the worker's
``should_stop`` polls every step; SIGTERM does the same.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import traceback
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from cgs_engine.errors import CGSError
from cgs_engine.project.project import Project
from cgs_engine.project.versions import ProjectError
from cgs_engine.retrain import retrain
from cgs_engine.train.events import (
    RETRAIN_ENDINGS,
    Event,
    RetrainFailed,
    WorkerLog,
    retrain_event_from_dict,
)

DEFAULT_NICE = 10


def worker_threads() -> int:
    """Every usable core but one, left to the GUI; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


class RetrainProcess:
    """Handle on a running worker; poll it from a GUI timer, it never blocks except ``wait``."""

    def __init__(self, popen: subprocess.Popen, cancel_file: Path, log_path: Path) -> None:
        self._popen = popen
        self.cancel_file = cancel_file
        self.log_path = log_path
        self._messages: queue.Queue[Event] = queue.Queue()
        self._ended = False
        self._exit_reported = False
        self._reader = threading.Thread(target=self._read_stdout, name="retrain-worker-stdout", daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self._popen.stdout is not None
        with self._popen.stdout:
            for line in self._popen.stdout:
                text = line.strip()
                if not text:
                    continue
                try:
                    message = json.loads(text)
                except json.JSONDecodeError:
                    message = None
                self._messages.put(
                    retrain_event_from_dict(message) if isinstance(message, dict) else WorkerLog(text)
                )

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    @property
    def running(self) -> bool:
        return self._popen.poll() is None

    def poll_messages(self) -> list[Event]:
        """Events that arrived since the last call, in order (non-blocking)."""
        messages = self._drain()
        if self._ended or self._exit_reported or self._popen.poll() is None or self._reader.is_alive():
            return messages
        messages += self._drain()  # lines that arrived between the checks above
        if not self._ended:
            self._exit_reported = True
            self._remove_cancel_file()
            code = self._popen.returncode
            how = f"was killed (signal {-code})" if code < 0 else f"exited with code {code}"
            last = self._last_log_line()
            error = (
                f"retrain worker {how} without a result; the active model is unchanged, and "
                "Resume in the panel (`cgs retrain PROJECT --resume`) continues from its last saved "
                "state (a new retrain sets it aside)" + (f"; last log line: {last}" if last else "")
            )
            messages.append(RetrainFailed(error, exit_code=code))
        return messages

    def _drain(self) -> list[Event]:
        messages = []
        while True:
            try:
                message = self._messages.get_nowait()
            except queue.Empty:
                return messages
            if isinstance(message, RETRAIN_ENDINGS):
                self._ended = True
                self._remove_cancel_file()
            messages.append(message)

    def cancel(self) -> None:
        """Ask the worker to stop after the current step; it keeps the model as it is then."""
        if self.running:
            self.cancel_file.touch()

    def kill(self) -> None:
        """Stop at once (like a crash): the run stays resumable from its last saved state."""
        self._popen.kill()

    def wait(self, timeout: float | None = None) -> int:
        code = self._popen.wait(timeout)
        self._reader.join(timeout=10)
        self._remove_cancel_file()
        return code

    def _remove_cancel_file(self) -> None:
        self.cancel_file.unlink(missing_ok=True)

    def _last_log_line(self) -> str:
        try:
            lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines()]
        except OSError:
            return ""
        lines = [line for line in lines if line]
        return lines[-1][:300] if lines else ""


def start_retrain_process(
    project_folder: str | os.PathLike,
    minutes: float | None = None,
    iterations: int | None = None,
    resume: bool = False,
    settings: dict[str, Any] | None = None,
    threads: int | None = None,
    nice: int = DEFAULT_NICE,
    thorough: bool = False,
) -> RetrainProcess:
    """Start a worker retraining ``project_folder``; messages arrive via ``poll_messages``."""
    project = Project.open(project_folder)  # fail here, in one line, rather than in the worker
    if minutes is not None and iterations is not None:
        raise ProjectError("give minutes or iterations, not both")
    threads = threads or worker_threads()
    project.runs_dir.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    token = uuid.uuid4().hex[:8]
    cancel_file = project.runs_dir / f".cancel-{token}"
    log_path = project.runs_dir / f"worker-{stamp}-{token}.log"
    command = [
        sys.executable,
        "-m",
        "cgs_engine.retrain.worker",
        str(project.folder.resolve()),
        "--cancel-file",
        str(cancel_file.resolve()),
        "--threads",
        str(threads),
        "--nice",
        str(nice),
    ]
    if minutes is not None:
        command += ["--minutes", str(minutes)]
    if iterations is not None:
        command += ["--iterations", str(iterations)]
    if resume:
        command.append("--resume")
    if thorough:
        command.append("--thorough")
    if settings:
        command += ["--settings", json.dumps(settings)]
    package_root = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p),
    }
    with open(log_path, "w") as log:
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,  # a Ctrl+C or hang-up meant for napari does not reach it
        )
    return RetrainProcess(popen, cancel_file, log_path)


# ------------------------------------------------------------------------- worker side
def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cgs_engine.retrain.worker", description="retrain worker")
    parser.add_argument("project")
    parser.add_argument("--minutes", type=float)
    parser.add_argument("--thorough", action="store_true")
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--cancel-file")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--nice", type=int, default=DEFAULT_NICE)
    parser.add_argument("--settings", help="JSON object of training-setting overrides")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    protocol = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not corrupt the message stream
    parent_gone = threading.Event()

    def send(message: Event) -> None:
        """To the parent while it listens; once it is gone (napari killed), to the log only: the
        retrain carries on and its version lands in the project all the same."""
        line = json.dumps(message.to_dict(), default=str)
        if not parent_gone.is_set():
            try:
                protocol.write(line + "\n")
                protocol.flush()
                return
            except (BrokenPipeError, OSError):
                parent_gone.set()
                _silence(protocol)
                print("the parent stopped listening; retraining goes on, messages go here", file=sys.stderr)
        print(line, file=sys.stderr, flush=True)

    if args.nice > 0 and hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(args.nice)
    threads = args.threads or worker_threads()
    stop_signalled = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_signalled.set())
    cancel_file = Path(args.cancel_file) if args.cancel_file else None

    def should_stop() -> bool:
        return stop_signalled.is_set() or (cancel_file is not None and cancel_file.exists())

    try:
        torch.set_num_threads(threads)
        settings = None
        if not args.resume:  # a resumed run keeps its recorded settings
            settings = {"threads": threads, **(json.loads(args.settings) if args.settings else {})}
        retrain(
            args.project,
            minutes=args.minutes,
            iterations=args.iterations,
            on_event=send,
            should_stop=should_stop,
            settings=settings,
            resume=args.resume,
            thorough=args.thorough,
        )
    except CGSError as error:
        send(RetrainFailed(str(error)))
        return 1
    except Exception as error:  # report anything, one line; the traceback goes to the log
        traceback.print_exc()
        send(RetrainFailed(f"{type(error).__name__}: {error}".splitlines()[0]))
        return 1
    return 0


def _silence(stream) -> None:
    """Point a broken pipe at /dev/null, so flushing it at exit cannot fail the process."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
