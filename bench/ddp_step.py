"""Step time of `cgs train` in 1 process and under torchrun with 2 gloo processes on this CPU.

Per-rank batch is the same in both, so 2 processes do twice the work per step (global batch
doubles). On a 2-core machine expect no speed-up: the point of DDP here is correctness.

    python bench/ddp_step.py STORE.h5 [--iterations 20] [--size 128]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent


def seconds_per_step(run_dir: Path) -> float:
    steps = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    steps = [s for s in steps if s["kind"] == "step"]
    last = steps[-1]  # steps are logged every 10 iterations
    if len(steps) == 1:
        return last["elapsed_s"] / last["step"]
    first = steps[0]  # measuring from the first logged step leaves warm-up out
    return (last["elapsed_s"] - first["elapsed_s"]) / (last["step"] - first["step"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cgs-ddp-bench-"))
    common = ["train", str(args.store), "--iterations", str(args.iterations), "--size", str(args.size)]
    common += ["--val-every", str(10 * args.iterations)]
    runs = {
        "1 process": [str(BIN / "cgs"), *common, "-o", str(work / "one")],
        "2 processes (torchrun, gloo)": [
            str(BIN / "torchrun"),
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "cgs_engine",
            *common,
            "-o",
            str(work / "two"),
        ],
    }
    for (name, command), folder in zip(runs.items(), ("one", "two"), strict=True):
        subprocess.run(command, check=True, capture_output=True)
        print(f"{name:30s} {seconds_per_step(work / folder):6.2f} s/step", flush=True)


if __name__ == "__main__":
    main()
