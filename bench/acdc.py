"""ACDC, 3 labeled patients (68 slices), the rest unlabeled; evaluated in 3D on the 20 val volumes.

Trains CGS for --cgs-minutes and the supervised and FixMatch baselines for --baseline-minutes
each (same data, same settings, same wall-time budget per baseline), then prints the per-class
tables side by side. Needs ../shared/data/acdc_ssl4mis_h5 (research-only data; never copied).

    python bench/acdc.py --cgs-minutes 60 --baseline-minutes 20 --work /tmp/cgs-bench-acdc
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import CPU_RECIPE, compare_methods, shared_data

SETTINGS = dict(**CPU_RECIPE, ramp_fraction=0.3, val_every=250)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cgs-minutes", type=float, default=60)
    parser.add_argument("--baseline-minutes", type=float, default=20)
    parser.add_argument("--labeled-patients", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cgs-bench-acdc"))
    parser.add_argument("--methods", nargs="+", default=["cgs", "supervised", "fixmatch"])
    args = parser.parse_args()
    from cgs_engine.store.importers import import_acdc

    args.work.mkdir(parents=True, exist_ok=True)
    store = args.work / f"acdc-{args.labeled_patients}.h5"
    if not store.exists():
        import_acdc(shared_data() / "acdc_ssl4mis_h5", store, args.labeled_patients)
    minutes = {"cgs": args.cgs_minutes}
    compare_methods(
        "acdc",
        store,
        args.work,
        args.methods,
        lambda m: minutes.get(m, args.baseline_minutes),
        SETTINGS,
        spacing_known=False,
        extra={"labeled_patients": args.labeled_patients},
    )


if __name__ == "__main__":
    main()
