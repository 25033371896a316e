"""Qt-free engine of napari-cgs: volume I/O, data store, CGS model, training, inference, evaluation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-cgs")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
