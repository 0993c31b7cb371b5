"""Scores, written by hand and tested against independent references: pixels (metrics.py: Dice =
F1, IoU, per class and per image) and objects (objects.py: adapted Rand error, VI, matching, AP)."""
