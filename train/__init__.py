"""Training stack: data (FF++ reader, synthesis, crop cache), the paper's model and losses, fit, evaluate, export."""
