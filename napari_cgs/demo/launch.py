"""`make demo`: the whole loop on the bundled OpenKBP CT, in napari or headless.

With a display: napari opens with the sample CT and the CGS panel docked on the default model;
the pre-segmentation runs at once, then the specialist maps (hidden, stacked above the CT), the
disagreement map and the review queue on its first region appear (``_demo_viewer``).

Without a display (or with ``--headless``): the same pipeline runs through the engine and every
result goes to ``demo-output/`` (``_demo_pipeline``): label map, specialist maps, disagreement
map, organ volumes, ranked review regions and a picture of the viewer (``_demo_render``).

The model is ``napari_cgs/models/default.pt`` (see scripts/train_default_model.py);
``CGS_DEMO_MODEL`` points at another checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from napari_cgs._sample_data import BUNDLED_MODEL
from napari_cgs.demo.pipeline import DemoError, run_headless

OUTPUT = Path("demo-output")
MODEL_ENV = "CGS_DEMO_MODEL"
EXIT_NO_MODEL = 2


def default_model_path() -> Path:
    """``napari_cgs/models/default.pt``, or the checkpoint named by ``CGS_DEMO_MODEL``."""
    override = os.environ.get(MODEL_ENV)
    return Path(override) if override else BUNDLED_MODEL


def has_display() -> bool:
    if sys.platform != "linux":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def missing_model_message(model: Path) -> str:
    return (
        f"demo: no model at {model}: reinstall napari-cgs, train one (scripts/train_default_model.py "
        f"--install), or set {MODEL_ENV}=path/to/checkpoint.pt"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m napari_cgs.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--headless", action="store_true", help="write the results even with a display")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"headless output folder ({OUTPUT})")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] = ()) -> int:
    args = parse_args(argv)
    model = default_model_path()
    if not model.is_file():
        print(missing_model_message(model), file=sys.stderr)
        return EXIT_NO_MODEL
    if args.headless or not has_display():
        if not args.headless:
            print("demo: no display (DISPLAY is unset): running the whole loop headless instead.")
        try:
            run_headless(model, args.output)
        except DemoError as error:
            print(f"demo: {error}", file=sys.stderr)
            return EXIT_NO_MODEL
        return 0
    from napari_cgs.demo.viewer import run_viewer_demo  # napari and Qt load only to show a display

    return run_viewer_demo(model)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
