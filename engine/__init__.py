"""Model artifacts and runtimes: ONNX export, TensorRT build, and one inference interface over backends.

Knows nothing of videos: it takes batches of face crops and returns distances and attention maps.
Which backend runs which artifact is :mod:`acfd.engine.registry` (the training stack plugs its
``torch-run`` kind in there; the engine never imports ``acfd.train``).
"""
