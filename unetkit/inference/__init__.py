from unetkit.inference.outputs import overlay, save_png
from unetkit.inference.predictor import Predictor

__all__ = ["Predictor", "overlay", "save_png"]
