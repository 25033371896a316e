"""`cgs --help`, `cgs --version` and argument errors load no heavy library: the verbs import their
engine stages inside their run functions (torch alone takes seconds to import)."""

from __future__ import annotations

import json
import subprocess
import sys

# Libraries that only running a verb may load. SimpleITK (cgs_engine.io) and scipy (the edit tool
# table that `cgs edit --help` lists) are still loaded by the parser.
HEAVY = ("torch", "h5py", "pydicom", "highdicom", "skimage", "itk", "matplotlib")

PROBE = """
import json, sys
heavy = {heavy!r}
loaded = {{}}
import cgs_engine.cli.main as cli
loaded["import"] = [name for name in heavy if name in sys.modules]
parser = cli.build_parser()
parser.parse_args(["predict", "model.pt", "scan.nii.gz", "-o", "out"])
loaded["parser"] = [name for name in heavy if name in sys.modules]
for argv in (["--version"], ["--help"], ["edit", "--help"], ["predict"], ["no-such-verb"]):
    try:
        cli.main(argv)
    except SystemExit:
        pass
loaded["main"] = [name for name in heavy if name in sys.modules]
print(json.dumps(loaded))
"""


def test_cli_parser_loads_no_heavy_library():
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {"import": [], "parser": [], "main": []}
