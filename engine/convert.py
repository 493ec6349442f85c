"""FP16 ONNX graph -> the same graph in FP32 (needs only ``onnx``).

The runtime uses it to run an FP16 artifact as FP32 on a CPU (no FP16 arithmetic there: the FP32 form
ran faster in bench/engine.py), and the int8 export to quantise an FP16 source.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def float32_model(model: Any) -> Any:
    """An FP32 copy of an ONNX ``ModelProto`` whose tensors are FP16 (an ``export --fp16`` graph).

    Initialisers and constants become float32 (the FP16 values exactly), ``Cast(to=float16)`` becomes
    ``Cast(to=float)`` and FP16 value types become float: the same graph computing in FP32. A graph
    without FP16 is returned as a copy, unchanged.
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    f16, f32 = TensorProto.FLOAT16, TensorProto.FLOAT

    def tensor(t: Any) -> None:
        if t.data_type != f16:
            return
        if t.raw_data:  # the common case: raw little-endian halves, converted without a Python loop
            t.raw_data = np.frombuffer(t.raw_data, dtype="<f2").astype("<f4").tobytes()
            t.data_type = f32
        else:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))

    def graph(g: Any) -> None:
        for t in g.initializer:
            tensor(t)
        for n in g.node:
            for a in n.attribute:
                if a.name == "to" and a.type == onnx.AttributeProto.INT and a.i == f16:
                    a.i = f32
                elif a.type == onnx.AttributeProto.TENSOR:
                    tensor(a.t)
                elif a.type == onnx.AttributeProto.GRAPH:
                    graph(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sub in a.graphs:
                        graph(sub)
        for v in [*g.value_info, *g.input, *g.output]:
            if v.type.tensor_type.elem_type == f16:
                v.type.tensor_type.elem_type = f32

    graph(out.graph)
    return out
