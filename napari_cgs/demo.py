"""`make demo`: open napari with the plugin and the bundled CT, or run headless without a display.

Headless, it reads the sample CT and its contours through the engine, writes them to
``demo-output/`` and reads them back, checking that array and geometry survived the trip.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

OUTPUT = Path("demo-output")


def has_display() -> bool:
    if sys.platform != "linux":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def headless_round_trip(output: Path = OUTPUT) -> list[Path]:
    from cgs_engine.io import read_volume, write_volume
    from napari_cgs._sample_data import SAMPLE_CT, SAMPLE_LABELS

    output.mkdir(parents=True, exist_ok=True)
    written = []
    for source, kind in ((SAMPLE_CT, "image"), (SAMPLE_LABELS, "labels")):
        volume = read_volume(source, kind=kind)
        target = write_volume(volume, output / source.name, overwrite=True)
        back = read_volume(target, kind=kind)
        if not (np.array_equal(back.array, volume.array) and back.geometry.is_close(volume.geometry)):
            raise SystemExit(f"demo: round trip of {source.name} changed the volume")
        print(f"  {target}: {volume.shape} (z, y, x), {volume.geometry.describe()}: identical after the trip")
        written.append(target)
    return written


def open_viewer() -> None:
    import napari

    viewer = napari.Viewer(title="napari-cgs demo")
    viewer.open_sample("napari-cgs", "openkbp-ct-contours")
    napari.run()


def main() -> int:
    if not has_display():
        print("demo: no display found (DISPLAY is unset), so the viewer cannot open.")
        print("demo: running the headless read/write round trip of the bundled OpenKBP CT instead:")
        headless_round_trip()
        print(f"demo: done; files are in {OUTPUT.resolve()}")
        return 0
    open_viewer()
    return 0


if __name__ == "__main__":
    sys.exit(main())
