"""Durable file writes: every file the engine writes appears complete or not at all.

One recipe for all of them (checkpoints, stores, project files, sessions, JSON, DICOM): write a
hidden temp file in the target's folder, fsync it, rename it over the target (atomic on one
file system), fsync the folder. Temp files carry the writer's process id, so the leftovers of a
killed writer are recognised and removed later (``remove_stale_temp_files``). New files get the
user's usual permissions (0666 minus the umask), not mkstemp's 0600.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".partial"
# ".<name>.<pid>-<hex>.partial" (this module); older writers used ".<name>.<random>.partial" or ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.(?:(?P<pid>\d+)-)?[0-9a-zA-Z_]+\.(?:partial|tmp)$")
LEGACY_TEMP_AGE_S = 24 * 3600  # leftovers without a process id are removed once this old


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_current_umask()


def fsync_file(path: Path) -> None:
    """Flush a written file's data to disk before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be fsynced)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_path_for(target: Path) -> Path:
    """A new hidden name beside ``target`` that marks this process as its writer."""
    return target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


def write_atomically(
    target: str | os.PathLike,
    write: Callable[[Path], None],
    overwrite: bool = True,
    exists_error: Callable[[Path], Exception] | None = None,
) -> Path:
    """Call ``write(temp_path)``, then move the finished file over ``target``.

    With ``overwrite=False`` a target that appeared meanwhile is kept and ``exists_error(target)``
    (default FileExistsError) is raised. On any failure the temp file is removed.
    """
    target = Path(target)
    temp = temp_path_for(target)
    try:
        write(temp)
        os.chmod(temp, FILE_MODE)
        fsync_file(temp)
        if not overwrite and target.exists():
            raise (exists_error or _file_exists)(target)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    remove_stale_temp_files(target.parent, name=target.name)  # a killed earlier write of this file
    return target


def _file_exists(target: Path) -> Exception:
    return FileExistsError(f"{target}: already exists")


def write_bytes_atomically(target: str | os.PathLike, data: bytes, **options: Any) -> Path:
    return write_atomically(target, lambda temp: temp.write_bytes(data), **options)


def write_text_atomically(target: str | os.PathLike, text: str, **options: Any) -> Path:
    return write_atomically(target, lambda temp: temp.write_text(text, encoding="utf-8"), **options)


def write_json_atomically(target: str | os.PathLike, data: Any, **options: Any) -> Path:
    return write_text_atomically(target, json.dumps(data, indent=2) + "\n", **options)


@contextlib.contextmanager
def staging_folder(target: Path) -> Iterator[Path]:
    """A private hidden folder beside ``target`` (same file system), removed afterwards."""
    staging = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_stale_temp_files(folder: Path, recursive: bool = False, name: str | None = None) -> list[Path]:
    """Remove the temp files and folders of writers that no longer run; returns what was removed.

    A leftover whose name carries a process id is stale once that process is gone; one without
    (an older writer's) once it is a day old. Temp files of running writers are never touched.
    ``name``: only the leftovers of that file.
    """
    removed: list[Path] = []
    pattern = f".{glob.escape(name)}.*" if name else ".*"
    try:
        candidates = folder.rglob(pattern) if recursive else folder.glob(pattern)
        for path in list(candidates):
            match = _TEMP_NAME.match(path.name)
            if match is None or not _is_stale(path, match["pid"]):
                continue
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
    except OSError:
        pass  # an unreadable folder: nothing we may clean
    return removed


def _is_stale(path: Path, pid: str | None) -> bool:
    if pid is not None:
        return not process_alive(int(pid))
    try:
        return time.time() - path.stat().st_mtime > LEGACY_TEMP_AGE_S
    except OSError:
        return False


def process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody else's live process
    except OSError:
        return False
    return True
