"""Radiotherapy DICOM: RT Structure Sets in and out, DICOM SEG out and in, the TG-263 class table.

Every function takes the image series as a :class:`DicomSeries` (:func:`read_series`), so the
label map, the contours and the segments all live on the grid that ``cgs predict`` uses.
pydicom, highdicom and scikit-image are imported only when a function needs them.
"""

from .class_table import (
    ClassEntry,
    ClassTable,
    ClassTableError,
    Code,
    checkpoint_class_table,
    derive_class_table,
    read_class_table,
)
from .ct_series import write_ct_series
from .errors import DicomError
from .rtstruct_export import RTStructExport, export_rtstruct
from .rtstruct_import import RTStructImport, import_rtstruct
from .seg import SegExport, SegImport, export_seg, import_seg
from .series import DicomSeries, read_series

__all__ = [
    "ClassEntry",
    "ClassTable",
    "ClassTableError",
    "Code",
    "DicomError",
    "DicomSeries",
    "RTStructExport",
    "RTStructImport",
    "SegExport",
    "SegImport",
    "checkpoint_class_table",
    "derive_class_table",
    "export_rtstruct",
    "export_seg",
    "import_rtstruct",
    "import_seg",
    "read_class_table",
    "read_series",
    "write_ct_series",
]
