"""Durable file writes: every file the engine writes appears complete or not at all.

One recipe for all of them (checkpoints, stores, project files, sessions, JSON, DICOM): write a
hidden temp file in the target's folder, fsync it, rename it over the target (atomic on one
file system), fsync the folder. Temp files carry the writer's process id, so the leftovers of a
killed writer are recognised and removed later (``remove_stale_temp_files``). New files get the
user's usual permissions (0666 minus the umask), not mkstemp's 0600.

Before the rename, what was written is checked: the temp file exists, is not empty, and passes
the writer's own read-back (``verify``: the bytes of a JSON file, the archive of a checkpoint,
the header and data length of a volume). A library that does not report a failed write (ITK on
a full disk writes 0 bytes and says nothing) is caught there; the old file stays as it was, the
temp file is removed, and the caller gets one line naming the file (``WriteError``).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import io
import json
import os
import re
import secrets
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cgs_engine.errors import CGSError, display_path

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


class WriteError(CGSError, OSError):
    """A file could not be written completely; one line naming it. The old file, if any, is intact.

    Also an ``OSError``, so code that handles failed writes as such keeps doing so.
    """

    def __init__(self, target: str | os.PathLike, problem: str) -> None:
        self.target, self.problem = os.fspath(target), problem
        super().__init__(
            f"{display_path(self.target)}: could not be written ({problem}); nothing was replaced"
        )


# verify(temp) -> None when the written file is right, else the problem in a few words
Verifier = Callable[[Path], "str | None"]
LOW_SPACE_BYTES = 1 << 20


def describe_write_failure(error: BaseException, folder: Path) -> str:
    """What went wrong, in a few words: the system's reason, or "no space left" when the disk is
    full although the library's message does not say so (torch: "file write failed")."""
    if isinstance(error, WriteError):
        return error.problem
    if isinstance(error, OSError) and error.errno is not None and error.strerror:
        return error.strerror
    if disk_nearly_full(folder):
        return os.strerror(errno.ENOSPC)
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:200]


def disk_nearly_full(folder: Path) -> bool:
    try:
        info = os.statvfs(folder)
    except OSError:
        return False
    return info.f_bavail * info.f_frsize < LOW_SPACE_BYTES


def write_atomically(
    target: str | os.PathLike,
    write: Callable[[Path], None],
    overwrite: bool = True,
    exists_error: Callable[[Path], Exception] | None = None,
    verify: Verifier | None = None,
) -> Path:
    """Call ``write(temp_path)``, check the result, then move the finished file over ``target``.

    ``verify(temp_path)`` reads back what was written and returns None, or the problem. With
    ``overwrite=False`` a target that appeared meanwhile is kept and ``exists_error(target)``
    (default FileExistsError) is raised. On any failure the temp file is removed; failures of
    the disk (short writes, a full disk, a failed fsync) are a :class:`WriteError`.
    """
    target = Path(target)
    temp = temp_path_for(target)
    try:
        try:
            write(temp)
        except CGSError:
            raise
        except (OSError, RuntimeError, ValueError, EOFError) as error:
            raise WriteError(target, describe_write_failure(error, target.parent)) from error
        check_written(temp, target, verify)
        if not overwrite and target.exists():
            raise (exists_error or _file_exists)(target)
        try:
            os.replace(temp, target)
        except OSError as error:
            raise WriteError(target, describe_write_failure(error, target.parent)) from error
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    remove_stale_temp_files(target.parent, name=target.name)  # a killed earlier write of this file
    return target


def check_written(temp: Path, target: Path, verify: Verifier | None = None) -> None:
    """The file ``temp`` (to become ``target``) is on disk, complete and durable, or WriteError."""
    try:
        if temp.stat().st_size == 0 and verify is None:  # a verifier knows whether empty is right
            raise WriteError(target, _empty_reason(target.parent))
        os.chmod(temp, FILE_MODE)
        fsync_file(temp)
    except FileNotFoundError:
        raise WriteError(target, "the writer produced no file") from None
    except WriteError:
        raise
    except OSError as error:
        raise WriteError(target, describe_write_failure(error, target.parent)) from error
    problem = verify(temp) if verify is not None else None
    if problem:
        raise WriteError(target, os.strerror(errno.ENOSPC) if disk_nearly_full(target.parent) else problem)


def _empty_reason(folder: Path) -> str:
    return os.strerror(errno.ENOSPC) if disk_nearly_full(folder) else "the written file is empty"


def _file_exists(target: Path) -> Exception:
    return FileExistsError(f"{target}: already exists")


def write_bytes_atomically(target: str | os.PathLike, data: bytes, **options: Any) -> Path:
    return write_atomically(target, lambda temp: temp.write_bytes(data), verify=same_bytes(data), **options)


def write_text_atomically(target: str | os.PathLike, text: str, **options: Any) -> Path:
    return write_bytes_atomically(target, text.encode("utf-8"), **options)


def write_json_atomically(target: str | os.PathLike, data: Any, **options: Any) -> Path:
    return write_text_atomically(target, json.dumps(data, indent=2) + "\n", **options)


def copy_file_checked(source: Path, destination: Path, shown_as: Path | None = None) -> None:
    """Copy ``source`` to ``destination`` (a temp name; ``shown_as`` is the name users know) and
    check that every byte arrived; a refused or short copy is a WriteError."""
    shown = shown_as or destination
    try:
        shutil.copyfile(source, destination)
        copied, expected = destination.stat().st_size, source.stat().st_size
    except OSError as error:
        raise WriteError(shown, describe_write_failure(error, destination.parent)) from error
    if copied != expected:
        raise WriteError(shown, f"copied {copied:,} of {expected:,} bytes")


def append_line(target: str | os.PathLike, line: str) -> None:
    """Append one line to a log, whole or not at all: a refused write (full disk) is cut back off,
    so no half line is left for the next reader, and is a WriteError naming the file."""
    target = Path(target)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    except OSError as error:
        raise WriteError(target, describe_write_failure(error, target.parent)) from error
    try:
        size = os.fstat(fd).st_size
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError as error:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise WriteError(target, describe_write_failure(error, target.parent)) from error
    finally:
        os.close(fd)


def same_bytes(data: bytes) -> Verifier:
    """A verifier: the file holds exactly ``data`` (read back in blocks)."""

    def verify(path: Path) -> str | None:
        size = path.stat().st_size
        if size != len(data):
            return f"wrote {size:,} of {len(data):,} bytes"
        with open(path, "rb") as stream:
            for start in range(0, len(data), 1 << 22):
                if stream.read(1 << 22) != data[start : start + (1 << 22)]:
                    return "the bytes read back differ from those written"
        return None

    return verify


def zip_archive_problem(path: Path) -> str | None:
    """A verifier for zip archives (``torch.save``): the directory is there and every member's CRC
    matches, so a file cut short or written with holes is caught."""
    try:
        with zipfile.ZipFile(path) as archive:
            if not archive.namelist():
                return "the archive is empty"
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        return f"the archive does not read back ({' '.join(str(error).split())[:120]})"
    return None if bad is None else f"member {bad} does not read back (CRC mismatch)"


class GuardedFile(io.RawIOBase):
    """A read/write file for libraries that crash when a write fails (HDF5 2.0 through h5py's
    file-object driver segfaults on close after ENOSPC).

    The first failed write is remembered and later writes are dropped while the library is told
    they succeeded, so it finishes and closes normally; ``raise_if_failed`` then reports the
    failure and the caller throws the file away.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        self._position = 0
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self._position = offset
        elif whence == os.SEEK_CUR:
            self._position += offset
        else:
            self._position = os.fstat(self._fd).st_size + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer) -> int:
        data = os.pread(self._fd, len(buffer), self._position)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def write(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while self.error is None and done < len(view):
            try:
                done += os.pwrite(self._fd, view[done:], self._position + done)
            except OSError as error:
                self.error = error
        self._position += len(view)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        size = self._position if size is None else size
        try:
            os.ftruncate(self._fd, size)
        except OSError as error:
            self.error = self.error or error
        return size

    def flush(self) -> None:
        return None

    def close(self) -> None:
        if not self.closed:
            try:
                os.fsync(self._fd)
            except OSError as error:
                self.error = self.error or error
            finally:
                os.close(self._fd)
        super().close()

    def raise_if_failed(self, target: Path) -> None:
        if self.error is not None:
            raise WriteError(target, describe_write_failure(self.error, target.parent))


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
