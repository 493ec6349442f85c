"""The I/O signature every exported acfd graph has, shared by the exporter and every backend.

uint8 NHWC crops in; a score, an attention map (models with an attention layer) and the embedding
(exported with ``--embedding``) out. A module of names only, so that the exporter (torch) and the
backends (loaded by the scanner without torch) agree without importing each other.
"""

from __future__ import annotations

INPUT_NAME = "crops"  # uint8 [N,S,S,3] RGB
SCORE_NAME = "score"  # float32 [N]
ATTENTION_NAME = "attention"  # float32 [N,h,w], only when the metadata's attention_size > 0
EMBEDDING_NAME = "embedding"  # float32 [N,D], only when exported with the embedding
