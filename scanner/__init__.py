"""The archive scanner: discover -> decode -> faces -> batch -> infer -> aggregate -> store.

Never imports acfd.train: a scanning machine needs no training stack.
"""
