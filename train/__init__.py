"""Training stack: data (FF++ reader, synthesis, crop cache), the paper's model and losses, fit, evaluate, export."""

# Registers the engine's "torch-run" model kind (cheap: the model code is imported when a run is loaded).
from acfd.train import engine_loader as _engine_loader  # noqa: F401
