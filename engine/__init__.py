"""Model artifacts and runtimes: ONNX export, TensorRT build, and one inference interface over backends.

Knows nothing of videos: it takes batches of face crops and returns distances and attention maps.
"""
