"""Radiotherapy DICOM: RT Structure Sets in and out, DICOM SEG out and in.

Every function takes the image series as a :class:`DicomSeries` (:func:`read_series`), so the
label map, the contours and the segments all live on the grid that ``cgs predict`` uses.
pydicom, which every function needs, is imported with the package; highdicom (SEG only) and
scikit-image (RT contours only) are imported only when a function needs them.
"""

from .ct_series import write_ct_series
from .errors import DicomError
from .rtstruct_export import RTStructExport, export_rtstruct
from .rtstruct_import import RTStructImport, import_rtstruct
from .seg import SegExport, SegImport, export_seg, import_seg
from .series import DicomSeries, read_series

__all__ = [
    "DicomError",
    "DicomSeries",
    "RTStructExport",
    "RTStructImport",
    "SegExport",
    "SegImport",
    "export_rtstruct",
    "export_seg",
    "import_rtstruct",
    "import_seg",
    "read_series",
    "write_ct_series",
]
