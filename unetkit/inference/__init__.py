from unetkit.inference.outputs import overlay, save_png, save_probabilities
from unetkit.inference.predictor import InferenceOptions, Predictor
from unetkit.inference.tiling import predict_tiled, with_tta

__all__ = ["InferenceOptions", "Predictor", "overlay", "predict_tiled", "save_png", "save_probabilities", "with_tta"]
