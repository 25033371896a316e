"""Record the bundled model's training scope (cgs_engine.scope) in napari_cgs/models/default.pt.

The scope is measured on the raw CTs of the model's training patients shipped beside it
(napari_cgs/models/default.prior/, listed in prior.json), with body region "head and neck" and
modality CT. Only the checkpoint's "scope" key is added or replaced; every other key, the
weights and their weights_sha256 included, is written back unchanged.

    python scripts/record_default_scope.py [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from cgs_engine.checkpoint import atomic_torch_save, load_checkpoint
from cgs_engine.io import read_volume
from cgs_engine.scope import measure_scope

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "napari_cgs" / "models" / "default.pt"
PRIOR = MODEL.with_name("default.prior")
BODY_REGION = "head and neck"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the scope, write nothing")
    args = parser.parse_args(argv)
    manifest = json.loads((PRIOR / "prior.json").read_text())
    images = [PRIOR / case["image"] for case in manifest["cases"] if case.get("split") == "train"]
    scope = measure_scope((read_volume(path) for path in images), body_region=BODY_REGION, modality="CT")
    summary = {key: value for key, value in scope.to_dict().items() if key != "body_slices"}
    print(json.dumps(summary, indent=1), f"\n{len(scope.body_slices)} body-slice bins", file=sys.stderr)
    if args.dry_run:
        return 0
    payload = torch.load(MODEL, map_location="cpu", weights_only=True)
    payload["scope"] = scope.to_dict()
    atomic_torch_save(payload, MODEL)
    load_checkpoint(MODEL)  # still loads: its weights match their checksum
    print(f"wrote the scope of {len(images)} training CTs into {MODEL}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
