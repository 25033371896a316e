#!/usr/bin/env bash
# `make wheel-check`: build the wheel, install it into a fresh venv outside the source tree and use it
# there as a user would: `cgs --version`, `npe2 validate`, `cgs predict` of the bundled sample CT with
# the bundled model, and the sample opened in a headless napari viewer. Every check runs with its cwd
# in a temporary folder, so the source tree cannot be imported by accident; the modules' own files
# are checked to lie in the fresh venv. Exits non-zero on the first failure.
#
# BUILD_PYTHON: a Python with setuptools and wheel (the dev venv); PYTHON: the interpreter of the
# fresh venv; TORCH: the torch requirement installed first, as `make install` does, so that the
# wheel's `torch>=2.4` is already met by the CPU build instead of resolving to the CUDA one.
set -euo pipefail
started=$SECONDS
source_tree="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_PYTHON="${BUILD_PYTHON:-$source_tree/.venv/bin/python}"
PYTHON="${PYTHON:-python3}"
TORCH="${TORCH:-torch}"
work="$(mktemp -d "${TMPDIR:-/tmp}/cgs-wheel-check.XXXXXX")"
trap 'rm -rf "$work"' EXIT

step() { printf '\n== %s (%ds)\n' "$1" $((SECONDS - started)); }
# pip names each local index folder that lacks a project; those lines are noise here
pip_quiet() {
  "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

step "build the wheel from the files git would commit"
# A copy: setuptools' build/ folder in the tree could carry files deleted since into the wheel.
mkdir "$work/src"
(cd "$source_tree" && git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  tar --null -T - -cf -) | tar -xf - -C "$work/src"
pip_quiet "$BUILD_PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" "$work/src"
wheel="$(ls "$work"/dist/napari_cgs-*.whl)"
echo "$(basename "$wheel"): $(du -h "$wheel" | cut -f1)"

step "install it into a fresh venv"
"$PYTHON" -m venv "$work/venv"
venv="$work/venv"
# --no-compile: byte-compiling torch's and napari's files took two thirds of the install's time
pip_quiet "$venv/bin/python" -m pip install -q --no-compile "$TORCH"
pip_quiet "$venv/bin/python" -m pip install -q --no-compile "$wheel[qt]"
pip_quiet "$venv/bin/python" -m pip check

mkdir "$work/cwd"
cd "$work/cwd"
unset PYTHONPATH
export PATH="$venv/bin:$PATH"

step "the modules come from the fresh venv"
python - "$venv" <<'EOF'
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path

import cgs_engine
import napari_cgs

site = Path(sysconfig.get_paths()["purelib"]).resolve()
assert site.is_relative_to(Path(sys.argv[1]).resolve()), site
for module in (cgs_engine, napari_cgs):
    where = Path(module.__file__).resolve()
    print(f"{module.__name__}: {where}")
    assert where.is_relative_to(site), f"{module.__name__} imported from {where}, not {site}"
print("napari-cgs", version("napari-cgs"))
EOF

step "cgs --version"
expected="cgs $(python -c 'from importlib.metadata import version; print(version("napari-cgs"))')"
got="$(cgs --version)"
echo "$got"
[ "$got" = "$expected" ] || { echo "expected '$expected'" >&2; exit 1; }

step "npe2 validate napari-cgs"
npe2 validate napari-cgs

step "cgs predict: the bundled sample CT with the bundled model"
paths="$(python -c 'from napari_cgs.panel.dock import BUNDLED_MODEL as m
from napari_cgs._sample_data import SAMPLE_CT as c
print(m, c)')"
read -r model ct <<<"$paths"
cgs predict "$model" "$ct" -o "$work/predicted" --device cpu
ls "$work/predicted"
python - "$work"/predicted/*_labels.nii.gz <<'EOF'
import sys

import numpy as np

from cgs_engine.io import read_volume

found = np.unique(read_volume(sys.argv[1], kind="labels").array)
print("classes in the prediction:", found.tolist())
assert len(found) > 1, "the prediction holds no organ"
EOF

step "open the sample in a headless napari viewer (sample data and reader)"
xvfb-run -a python - "$ct" <<'EOF'
import sys
from pathlib import Path

import napari

viewer = napari.Viewer(show=False)
try:
    sample = viewer.open_sample("napari-cgs", "openkbp-ct")
    opened = viewer.open(sys.argv[1], plugin="napari-cgs")
    for layer in (*sample, *opened):
        print(f"{layer.name}: {type(layer).__name__} {layer.data.shape}")
        assert layer.data.ndim == 3, layer.data.shape
    assert sample[0].data.shape == opened[0].data.shape
    import napari_cgs._reader as reader

    assert Path(reader.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), reader.__file__
finally:
    viewer.close()
EOF

step "wheel check passed"
