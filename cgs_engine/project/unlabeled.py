"""The unlabeled scans of a project: referenced in ``unlabeled/scans.json``, not copied.

They can be large, and they are only read when a retrain builds its training store; a cheap
fingerprint tells whether a scan changed since it was added.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cgs_engine.errors import CGSError, first_line
from cgs_engine.io import is_supported_path, label_map_problem, read_volume
from cgs_engine.normalize import Normalization
from cgs_engine.project.versions import ProjectError, now_iso, read_json, write_json_atomically
from cgs_engine.scope import check_scope
from cgs_engine.volume import Volume

FINGERPRINT_BYTES = 1 << 20
# Of each file of a DICOM folder: its header (patient, UIDs) and the end of its pixels. Names and
# sizes alone missed another patient's series copied over the folder (same names, same sizes): the
# worklist showed the old patient's score, and the scan was not said to have changed.
FOLDER_FILE_BYTES = 1 << 16
FOLDER_FINGERPRINT_VERSION = 2


@dataclass(frozen=True)
class UnlabeledScan:
    path: Path
    added: str
    fingerprint: dict[str, Any]

    def problem(self) -> str | None:
        """None when the scan is usable as added; else what is wrong, in a few words."""
        if not self.path.exists():
            return "missing"
        try:
            if not same_scan(self.path, self.fingerprint):
                return "changed since it was added"
        except OSError as error:
            return f"unreadable ({error.strerror or error})"
        return None


def scan_fingerprint(path: Path) -> dict[str, Any]:
    """Size plus a hash of the first and last MiB (a file), or of each file's name, size, first and
    last 64 KiB (a DICOM folder)."""
    if path.is_dir():
        digest = hashlib.sha256()
        files = sorted(p for p in path.iterdir() if p.is_file())
        for file in files:
            size = file.stat().st_size
            digest.update(json.dumps([file.name, size]).encode())
            digest.update(_ends_digest(file, size, FOLDER_FILE_BYTES))
        return {
            "kind": "folder",
            "version": FOLDER_FINGERPRINT_VERSION,
            "files": len(files),
            "sha256": digest.hexdigest(),
        }
    size = path.stat().st_size
    return {"kind": "file", "size": size, "sha256": _ends_digest(path, size, FINGERPRINT_BYTES).hex()}


def same_scan(path: Path, recorded: Mapping[str, Any]) -> bool:
    """Whether the scan at ``path`` is the one ``recorded`` fingerprinted. A folder recorded before
    version 2 is compared as it was then (names and sizes), not said to have changed."""
    if recorded.get("kind") == "folder" and recorded.get("version") is None and path.is_dir():
        files = sorted((p.name, p.stat().st_size) for p in path.iterdir() if p.is_file())
        digest = hashlib.sha256(json.dumps(files).encode()).hexdigest()
        return {"kind": "folder", "files": len(files), "sha256": digest} == dict(recorded)
    return scan_fingerprint(path) == dict(recorded)


def _ends_digest(path: Path, size: int, count: int) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        digest.update(stream.read(count))
        if size > count:
            stream.seek(max(count, size - count))
            digest.update(stream.read(count))
    return digest.digest()


class UnlabeledRecords:
    """The unlabeled-scan methods of :class:`~cgs_engine.project.project.Project`."""

    unlabeled_file: Path
    normalization: Normalization

    def add_unlabeled(
        self,
        paths: Sequence[str | os.PathLike],
        scope: Mapping[str, Any] | None = None,
        warn: Callable[[str], None] | None = None,
        listed: Collection[str | os.PathLike] = (),
    ) -> list[UnlabeledScan]:
        """Reference unlabeled scans (files or DICOM folders); already-listed paths are skipped (taken
        again, with a warning, where the file changed since it was listed).

        ``scope`` (the active model's training scope, ``ModelCheckpoint.scope``) and ``warn``: each
        scan unlike the model's training data (an MR for a CT model, another body region) is added
        but said so, one line each; such a scan teaches the model nothing and tops the worklist.
        A label map (a few small whole numbers in its voxels) is refused; one of ``listed`` (the
        paths found by listing a folder) is left out instead and said so through ``warn``.
        """
        checked = []
        outputs = prediction_outputs_among(paths)
        from_listing = {Path(path).expanduser().resolve() for path in listed}
        for given in paths:
            path = Path(given).expanduser().resolve()
            if not path.exists():
                raise ProjectError(f"{given}: no such unlabeled scan")
            if not is_supported_path(path):
                raise ProjectError(f"{given}: not a supported image file or DICOM folder")
            if path in outputs:
                raise ProjectError(
                    f"{given}: an output of an earlier prediction, edit or export (named by a "
                    "*_classes.json beside it), not a scan"
                )
            volume = check_unlabeled_scan(path, self.normalization)  # read now, not in a retrain later
            problem = label_map_problem(volume.array)
            if problem is not None:  # an edited map saved beside its CT, a reference segmentation
                if path not in from_listing:
                    raise ProjectError(f"{given}: {problem}; add the image it was drawn on")
                if warn is not None:
                    warn(f"{given}: {problem}; left out")
                continue
            if scope and warn is not None:
                for warning in check_scope(volume, scope):
                    warn(f"{given}: {warning}")
            checked.append(path)
        with self.state_lock():
            scans = self.unlabeled()
            known = {scan.path for scan in scans}
            added = []
            upgraded = False  # a folder recorded before version 2, fingerprinted anew (see same_scan)
            for path in checked:
                scan = UnlabeledScan(path, now_iso(), scan_fingerprint(path))
                if path in known:
                    index = next(i for i, listed in enumerate(scans) if listed.path == path)
                    if scans[index].problem() is None:
                        if scans[index].fingerprint != scan.fingerprint:  # recorded the old way: as now
                            scans[index] = UnlabeledScan(path, scans[index].added, scan.fingerprint)
                            upgraded = True
                        continue
                    # changed since it was added: every retrain left it out, and adding it again
                    # said "added 0"; it was read and checked above, so it is taken as it is now
                    scans[index] = scan
                    if warn is not None:
                        warn(f"{path}: changed since it was added; taken as it is now")
                else:
                    scans.append(scan)
                added.append(scan)
                known.add(path)
            if added or upgraded:
                self._write_unlabeled(scans)
        return added

    def remove_unlabeled(self, paths: Sequence[str | os.PathLike]) -> int:
        drop = {Path(p).expanduser().resolve() for p in paths} | {Path(p) for p in paths}
        with self.state_lock():
            scans = self.unlabeled()
            kept = [scan for scan in scans if scan.path not in drop]
            if len(kept) != len(scans):
                self._write_unlabeled(kept)
        return len(scans) - len(kept)

    def unlabeled(self) -> list[UnlabeledScan]:
        if not self.unlabeled_file.is_file():
            return []
        data = read_json(self.unlabeled_file, "unlabeled scan list")
        try:
            return [
                UnlabeledScan(Path(entry["path"]), str(entry.get("added", "")), dict(entry["fingerprint"]))
                for entry in data["scans"]
            ]
        except (KeyError, TypeError, ValueError) as error:
            raise ProjectError(
                f"{self.unlabeled_file}: damaged unlabeled scan list ({first_line(error)})"
            ) from None

    def _write_unlabeled(self, scans: list[UnlabeledScan]) -> None:
        self.unlabeled_file.parent.mkdir(exist_ok=True)
        entries = [{"path": str(s.path), "added": s.added, "fingerprint": s.fingerprint} for s in scans]
        write_json_atomically(self.unlabeled_file, {"scans": entries})


def prediction_outputs_among(paths: Sequence[str | os.PathLike]) -> set[Path]:
    """Those of ``paths`` (resolved) that an earlier `cgs predict` wrote beside a ``*_classes.json``
    naming them: label maps, specialist, disagreement and likely-wrong maps are not scans."""
    from cgs_engine.classes.files import prediction_outputs_in

    resolved = {Path(path).expanduser().resolve() for path in paths}
    outputs: set[Path] = set()
    for folder in {path.parent for path in resolved}:
        outputs |= prediction_outputs_in(folder)
    return resolved & outputs


def check_unlabeled_scan(path: Path, normalization: Normalization) -> Volume:
    """Read a scan once when it is added, so a damaged one is refused now, in one line."""
    try:
        volume = read_volume(path)
        normalization.apply(volume.array[:1])
    except CGSError as error:
        raise ProjectError(str(error)) from None
    except ValueError as error:
        raise ProjectError(f"{path}: cannot be normalised ({first_line(error)})") from None
    return volume
