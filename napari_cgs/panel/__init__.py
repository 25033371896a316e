"""The CGS dock widget (``dock.CGSPanel``) and its sections: model and pre-segmentation, review
queue, corrections, retraining, worklist, radiotherapy DICOM. Qt code that gathers inputs, runs
engine calls in workers and shows their results."""
