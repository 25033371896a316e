"""Training-step throughput and peak memory: our CGS step against the reference's step.

The reference step (the authors' script, with its crash fixed) does, per iteration at batch
12 labeled + 12 unlabeled, 256 x 256, fp32, NCHW: a teacher forward on the 24-image CutMix
partner batch, student forwards on 24 weak and 24 strong images, a teacher forward on 24 weak
images, and a backward through both student passes. Ours runs one teacher pass over the 12
unlabeled weak views plus their 12 partners and one student pass over the 12 labeled weak and 12
strong views (or, "ours-split", one pass for each), channels-last, bf16 autocast where supported,
and, as the trainer does from 192 px on, the full- and half-resolution layers recomputed in backward.

Each variant runs in its own process so peak RSS (the whole process: model, data, loader
thread) is measured separately. Usage:

    python bench/train_step.py [--steps 6] [--size 256] [--batch 12 12] [--precision auto fp32]

``--precision fp32`` times our step on the fp32 path, as it runs on a CPU without bf16 (the
reference is fp32 either way); give both (``auto fp32``) to compare them in one run. Results are
also saved as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

# ours: one joint student pass (the default); ours-split: two passes, less memory (student_pass="split")
VARIANTS = ("reference", "ours", "ours-split")


def _bank(count: int, size: int, classes: int, generator: torch.Generator):
    from cgs_engine.train.data import SliceBank

    images = torch.rand((count, 1, size, size), generator=generator).half()
    labels = torch.randint(0, classes, (count, size, size), generator=generator).to(torch.uint8)
    return SliceBank(images, labels, ["synthetic"])


def _models(classes: int, heads: str = "three-class"):
    from cgs_engine.model import ModelConfig, build_model

    torch.manual_seed(0)
    student = build_model(ModelConfig(num_classes=classes, heads=heads))
    teacher = build_model(ModelConfig(num_classes=classes, heads=heads))
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    return student, teacher


def run_ours(
    steps: int,
    size: int,
    batch_l: int,
    batch_u: int,
    classes: int,
    split: bool = False,
    precision: str = "auto",
) -> dict:
    from cgs_engine.method.objective import ObjectiveConfig
    from cgs_engine.runtime import resolve_runtime
    from cgs_engine.train.data import BatchSource
    from cgs_engine.train.ema import EMATeacher
    from cgs_engine.train.step import train_step

    runtime = resolve_runtime("auto", precision)
    generator = torch.Generator().manual_seed(0)
    source = BatchSource(
        _bank(400, size, classes, generator), _bank(400, size, classes, generator), batch_l, batch_u, seed=0
    )
    source.unlabeled.labels = None
    from cgs_engine.train.config import TrainConfig

    student, _ = _models(classes)
    # as the trainer does: full- and half-resolution layers recomputed in backward from 192 px on
    save_memory = TrainConfig(input_size=size).saves_memory
    student.save_memory(save_memory)
    student = student.to(memory_format=torch.channels_last)
    teacher = EMATeacher(student)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    objective = ObjectiveConfig()
    timings = []
    for step, batch in source.iterate(0, steps + 1):
        start = time.perf_counter()
        train_step(student, teacher.module, optimizer, batch, objective, 0.1, runtime, split=split)
        teacher.update(student, step)
        timings.append(time.perf_counter() - start)
    return {
        "variant": "ours-split" if split else "ours",
        "runtime": runtime.describe() + (", recompute full+half res" if save_memory else ""),
        "seconds_per_step": _steady(timings),
    }


def run_reference(steps: int, size: int, batch_l: int, batch_u: int, classes: int) -> dict:
    """What the reference computes per iteration (its losses replaced by equivalent-cost CE + Dice)."""
    from cgs_engine.method.losses import ce_dice

    torch.set_num_threads(torch.get_num_threads())
    student, teacher = _models(classes)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    total = batch_l + batch_u
    generator = torch.Generator().manual_seed(0)
    timings = []
    for _ in range(steps + 1):
        weak = torch.rand((total, 1, size, size), generator=generator)
        strong = torch.rand((total, 1, size, size), generator=generator)
        partner = torch.rand((total, 1, size, size), generator=generator)
        labels = torch.randint(0, classes, (batch_l, size, size), generator=generator)
        start = time.perf_counter()
        teacher.train()  # the reference's teacher runs in training mode
        with torch.no_grad():
            partner_out = teacher(partner)
        out_weak = student(weak)
        out_strong = student(strong)
        with torch.no_grad():
            teacher_weak = teacher(weak)
        pseudo = teacher_weak.generalist[batch_l:].argmax(1)
        mixed_pseudo = torch.where(
            torch.rand(pseudo.shape) > 0.5, pseudo, partner_out.generalist[batch_l:].argmax(1)
        )
        loss = ce_dice(out_weak.generalist[:batch_l], labels) + ce_dice(
            out_strong.generalist[batch_l:], mixed_pseudo
        )
        spec = out_weak.specialists[:batch_l]
        loss = loss + F.cross_entropy(
            spec.flatten(0, 1), labels.repeat_interleave(classes - 1, 0).clamp(max=2)
        )
        loss = loss + out_strong.specialists.float().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        timings.append(time.perf_counter() - start)
    return {
        "variant": "reference",
        "runtime": f"cpu (fp32, NCHW, {torch.get_num_threads()} threads)",
        "seconds_per_step": _steady(timings),
    }


def _steady(timings: list[float]) -> float:
    steady = timings[1:] or timings  # the first step pays for allocator and kernel warm-up
    return sum(steady) / len(steady)


def child(args) -> None:
    sizes = (args.steps, args.size, args.batch[0], args.batch[1], args.classes)
    if args.variant == "reference":
        result = run_reference(*sizes)
    else:
        result = run_ours(*sizes, split=args.variant == "ours-split", precision=args.precision[0])
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, nargs=2, default=[12, 12])
    parser.add_argument("--classes", type=int, default=4, help="C = K + 1 (ACDC: 4)")
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=("auto", "fp32", "bf16"),
        default=["auto"],
        help="our step's precision(s); fp32 = the path of a CPU without bf16",
    )
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args)
        return
    runs = [("reference", "auto")] + [(v, p) for p in args.precision for v in VARIANTS[1:]]
    results = {}
    for variant, precision in runs:
        command = [
            sys.executable,
            __file__,
            "--variant",
            variant,
            "--steps",
            str(args.steps),
            "--size",
            str(args.size),
            "--batch",
            *map(str, args.batch),
            "--classes",
            str(args.classes),
            "--precision",
            precision,
        ]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        name = variant if variant == "reference" else f"{variant} ({precision})"
        results[name] = json.loads(output.strip().splitlines()[-1])
    print(f"batch {args.batch[0]}+{args.batch[1]} at {args.size}x{args.size}, {args.steps} timed steps each")
    for name, r in results.items():
        print(
            f"  {name:18s} {1 / r['seconds_per_step']:.3f} it/s ({r['seconds_per_step']:.2f} s/step)  "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB  [{r['runtime']}]"
        )
    for name, r in results.items():
        if name != "reference":
            speedup = results["reference"]["seconds_per_step"] / r["seconds_per_step"]
            print(f"  speed-up of {name}: {speedup:.2f}x")
    from common import machine, save_results

    settings = {"steps": args.steps, "size": args.size, "batch": args.batch, "classes": args.classes}
    record = {"settings": settings, "machine": machine(), "results": results}
    print(f"results: {save_results('train_step', record)}")


if __name__ == "__main__":
    main()
