"""``CropScorer``: uint8 crops in, scores out, around an LQ branch: the one piece of preprocessing.

The ONNX exporter (:mod:`acfd.engine.export`) traces it and the torch backend
(:class:`acfd.engine.backends.TorchBackend`) runs it, so every backend normalises and scores crops
with the same code. It lives in its own module so that neither of those two imports the other.
Imports torch: the torch backend imports this module inside ``load()``.
"""

from __future__ import annotations

import torch
from acfd.schemas.artifact import ArtifactError, ArtifactMeta
from torch import Tensor, nn

from .signature import ATTENTION_NAME, EMBEDDING_NAME, SCORE_NAME


class CropScorer(nn.Module):
    """uint8 NHWC crops -> (score, [attention], [embedding]) around an LQ branch.

    The same wrapper is traced by the ONNX export and run by the torch backend, so preprocessing and
    scoring are one piece of code. ``compute_dtype`` is the branch's precision (the branch is cast in
    place); normalisation and score are always float32.
    """

    def __init__(
        self,
        branch: nn.Module,
        meta: ArtifactMeta,
        compute_dtype: torch.dtype = torch.float32,
        with_embedding: bool = False,
    ) -> None:
        super().__init__()
        self.branch = branch.to(compute_dtype)
        self.compute_dtype = compute_dtype
        self.score_kind = meta.score
        self.attention_size = meta.attention_size
        self.register_buffer("mean", torch.tensor(meta.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(meta.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.output_names = [SCORE_NAME]
        if meta.attention_size > 0:
            self.output_names.append(ATTENTION_NAME)
        if with_embedding:
            self.output_names.append(EMBEDDING_NAME)

    def forward(self, crops: Tensor) -> tuple[Tensor, ...]:
        # NHWC -> NCHW is a view: the tensor keeps channels_last strides, which cuDNN and TensorRT like.
        x = crops.permute(0, 3, 1, 2).float()
        # Same operations, same order as acfd.train.model.normalize (training): /255, -mean, /std.
        x = (x / 255.0 - self.mean) / self.std
        out, attention = self.branch(x.to(self.compute_dtype))
        out = out.float()
        if self.score_kind == "probability":
            score = torch.softmax(out, dim=1)[:, 1]
        else:
            # In float32: a 2048-d embedding's sum of squares overflows FP16 from a norm of 256 on.
            score = torch.linalg.vector_norm(out, dim=1)
        result = [score]
        if self.attention_size > 0:
            if attention is None:
                raise ArtifactError("the metadata announces an attention map, but the model returns none")
            result.append(attention[:, 0].float())
        if EMBEDDING_NAME in self.output_names:
            result.append(out)
        return tuple(result)
