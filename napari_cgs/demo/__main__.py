"""``python -m napari_cgs.demo``."""

import sys

from napari_cgs.demo.launch import main

raise SystemExit(main(sys.argv[1:]))
