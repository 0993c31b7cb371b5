"""A trained model for other tools: ONNX (onnx.py) and a bioimage.io package (bioimageio.py)."""
