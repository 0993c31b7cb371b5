"""Whole-slide prediction out of core (large_tiff.py): a large TIFF read a band of tile rows at a
time, with its outputs written band by band (band_outputs.py: mask and probabilities;
band_objects.py: objects) and a scaled model's logits resized row by row (row_resample.py)."""
