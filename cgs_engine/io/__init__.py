"""Volume I/O: NIfTI, MetaImage, NRRD files and DICOM series folders, with exact geometry.

Every failure is a :class:`VolumeIOError` whose message is one line naming the file.
"""

from .dicom_folder import series_identity
from .errors import VolumeIOError
from .formats import SUPPORTED_EXTENSIONS, is_supported_path
from .readers import check_volume_file, read_volume
from .validate import check_label_map, check_same_grid, label_map_problem
from .writers import write_volume

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "VolumeIOError",
    "check_volume_file",
    "check_label_map",
    "check_same_grid",
    "is_supported_path",
    "label_map_problem",
    "read_volume",
    "series_identity",
    "write_volume",
]
