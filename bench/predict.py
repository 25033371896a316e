"""`cgs predict --maps` on a 300 x 512 x 512 CT: wall time and peak memory of the whole process.

The CT is a real OpenKBP scan resampled (linear) to 512 x 512 x 300 voxels. Without
--checkpoint an untrained network of the default size is used: prediction time does not depend
on the weights. Targets: <= 15 s wall and <= 3 GB peak RSS on 2 cores.

    python bench/predict.py [--checkpoint MODEL.pt] [--input-size 256] [--work /tmp/cgs-bench-predict]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import shared_data

BIN = Path(sys.executable).parent


def make_large_ct(source: Path, target: Path) -> None:
    import SimpleITK as sitk

    image = sitk.ReadImage(str(source))
    size = (512, 512, 300)
    extent = [sz * sp for sz, sp in zip(image.GetSize(), image.GetSpacing(), strict=True)]
    spacing = [e / s for e, s in zip(extent, size, strict=True)]
    resampled = sitk.Resample(
        image,
        size,
        sitk.Transform(),
        sitk.sitkLinear,
        image.GetOrigin(),
        spacing,
        image.GetDirection(),
        -1000.0,
        sitk.sitkInt16,
    )
    sitk.WriteImage(resampled, str(target))


def untrained_checkpoint(path: Path, input_size: int) -> None:
    from cgs_engine.checkpoint import ModelCheckpoint, save_checkpoint
    from cgs_engine.classes.organs import openkbp_class_names
    from cgs_engine.model import ModelConfig, build_model
    from cgs_engine.normalize import Normalization

    names = openkbp_class_names()
    config = ModelConfig(num_classes=len(names))
    save_checkpoint(
        ModelCheckpoint(
            config,
            build_model(config).state_dict(),
            names,
            input_size,
            Normalization(mode="ct-window").to_dict(),
        ),
        path,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cgs-bench-predict"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    ct = args.work / "ct_300x512x512.nii.gz"
    if not ct.exists():
        make_large_ct(shared_data() / "openkbp" / "images" / "pt_222.nii.gz", ct)
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = args.work / f"untrained_{args.input_size}.pt"
        untrained_checkpoint(checkpoint, args.input_size)
    from cgs_engine.checkpoint import load_checkpoint

    input_size = load_checkpoint(checkpoint).input_size
    out = args.work / "out"
    command = [str(BIN / "cgs"), "predict", str(checkpoint), str(ct), "-o", str(out), "--maps", "--overwrite"]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    print(
        f"cgs predict --maps, 300 x 512 x 512 CT, model input {input_size}: "
        f"{wall:.1f} s wall, peak RSS {peak:.2f} GiB"
    )


if __name__ == "__main__":
    main()
