"""`make demo` (``python -m napari_cgs.demo``): the whole loop on the bundled OpenKBP CT, in napari
or headless (``launch``: which of the two; ``viewer``, ``pipeline``, ``render``, ``screenshot``)."""
