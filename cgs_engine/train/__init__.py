"""Training loop building blocks: augmentation, CutMix and the EMA teacher."""
