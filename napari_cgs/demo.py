"""`make demo`: the whole loop on the bundled OpenKBP CT, in napari or headless.

With a display: napari opens with the sample CT and the CGS panel docked on the default model;
the pre-segmentation runs at once, then the specialist maps (hidden, stacked above the CT), the
disagreement map and the review queue on its first region appear (``_demo_viewer``).

Without a display (or with ``--headless``): the same pipeline runs through the engine and every
result goes to ``demo-output/`` (``_demo_pipeline``): label map, specialist maps, disagreement
map, organ volumes, ranked review regions and a picture of the viewer (``_demo_render``).

The model is ``napari_cgs/models/default.pt``; ``CGS_DEMO_MODEL`` points at another checkpoint.
Until a default model ships, the demo shows the sample CT with its clinical contours instead
(headless: an exact read/write round trip of both into ``demo-output/``) and says so.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

OUTPUT = Path("demo-output")
MODEL_ENV = "CGS_DEMO_MODEL"
EXIT_NO_MODEL = 2


def default_model_path() -> Path:
    """``napari_cgs/models/default.pt``, or the checkpoint named by ``CGS_DEMO_MODEL``."""
    override = os.environ.get(MODEL_ENV)
    return Path(override) if override else Path(__file__).parent / "models" / "default.pt"


def has_display() -> bool:
    if sys.platform != "linux":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def missing_model_message(model: Path) -> str:
    return (
        f"demo: no model at {model}: train one (scripts/train_default_model.py, or `cgs train`) "
        f"and put it there, or set {MODEL_ENV}=path/to/checkpoint.pt"
    )


def no_bundled_model_message(model: Path) -> str:
    return (
        f"demo: no default model ships yet ({model} is absent): showing the sample CT and its "
        f"clinical contours only; set {MODEL_ENV}=path/to/checkpoint.pt for the whole loop"
    )


def sample_round_trip(output: Path) -> list[Path]:
    """Read the bundled CT and contours, write them to ``output`` and check they come back equal."""
    import numpy as np

    from cgs_engine.io import read_volume, write_volume
    from napari_cgs._sample_data import SAMPLE_CT, SAMPLE_LABELS

    output.mkdir(parents=True, exist_ok=True)
    written = []
    for source, kind in ((SAMPLE_CT, "image"), (SAMPLE_LABELS, "labels")):
        volume = read_volume(source, kind=kind)
        target = write_volume(volume, output / source.name, overwrite=True)
        back = read_volume(target, kind=kind)
        if not (np.array_equal(back.array, volume.array) and back.geometry.is_close(volume.geometry)):
            raise SystemExit(f"demo: the round trip of {source.name} changed the volume")
        print(f"  {target.resolve()}: {volume.shape} (z, y, x), {volume.geometry.describe()}, unchanged")
        written.append(target)
    return written


def show_sample_only() -> int:
    import napari

    from napari_cgs._panel import CGSPanel

    viewer = napari.Viewer(title="napari-cgs demo (no default model yet)")
    viewer.open_sample("napari-cgs", "openkbp-ct-contours")
    viewer.window.add_dock_widget(CGSPanel(viewer), name="CGS", area="right")
    napari.run()
    return 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m napari_cgs.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--headless", action="store_true", help="write the results even with a display")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"headless output folder ({OUTPUT})")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] = ()) -> int:
    args = parse_args(argv)
    model = default_model_path()
    if not model.is_file() and os.environ.get(MODEL_ENV):
        print(missing_model_message(model), file=sys.stderr)
        return EXIT_NO_MODEL
    if not model.is_file():
        print(no_bundled_model_message(model))
        if args.headless or not has_display():
            sample_round_trip(args.output)
            print(f"demo: done; files are in {args.output.resolve()}")
            return 0
        return show_sample_only()
    if args.headless or not has_display():
        from napari_cgs._demo_pipeline import DemoError, run_headless

        if not args.headless:
            print("demo: no display (DISPLAY is unset): running the whole loop headless instead.")
        try:
            run_headless(model, args.output)
        except DemoError as error:
            print(f"demo: {error}", file=sys.stderr)
            return EXIT_NO_MODEL
        return 0
    from napari_cgs._demo_viewer import run_viewer_demo

    return run_viewer_demo(model)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
