"""Batch-independent int8 for exported graphs: the ``quantize="int8"`` of ``fewshot export`` (manifest
``quantize_scheme: "rowwise-int8-v1"``).

Every quantised input row is scaled by numbers computed from that row alone, so an input's embedding is the same
whether it is encoded alone or inside any batch (cosine ≥ 0.99999; onnxruntime's ``quantize_dynamic`` instead picks
one activation scale per batch, so a row's result moved with its neighbours — cosine 0.98 on Banking77):

- ``MatMul`` / ``Gemm`` with a constant 2-D weight (K, N): int8 weights, one scale per output column; activations
  quantised per row of the (…, K) input (one token of one text, one patch of one image): ``s = max|x_row| / 127``,
  ``q = round(x_row / s) + 128`` (uint8, zero point 128), ``y = MatMulInteger(q, Wq) · w_scale · s (+ bias)``.
  The attention products (activation × activation) stay float, as with ``quantize_dynamic``.
- ``Gather`` from a constant 2-D table of ≥ 65,536 entries (token and position embeddings): int8 rows, one scale
  per table row, dequantised after the lookup.
- ``Conv``: int8 weights, one scale per output channel, dequantised in the graph (``DequantizeLinear``); the
  convolution runs in float (onnxruntime's ``ConvInteger`` ran EfficientNet-Lite0 6x slower than fp32 here, and
  dynamic per-batch scales took its embeddings to cosine 0.34 of fp32).

Weights use 7 bits of magnitude (±63, ``WEIGHT_QMAX``): uint8 × int8 products summed pairwise then fit int16, so
CPUs without VNNI (whose int8 kernels add pairs in int16 with saturation) compute the same result as CPUs with it.
Only onnx and numpy are needed; the rewritten graph uses standard ONNX ops (opset ≥ 13) and runs on any
onnxruntime.

Chosen by measurement (MiniLM, Banking77, one thread, a 2-CPU AVX2 machine; issue 19): alone vs in random
batches cosine ≥ 0.9999999; Banking77 10-shot (3 draws, all 3,080 test texts) prototype −0.11 and logistic
regression −0.11 points vs fp32 (8-bit weights: −0.38 / −0.05); throughput equal to onnxruntime's dynamic int8
(within 5 %). Rejected: static QDQ calibrated on ``generic_sentences.txt`` (batch-independent, but −1.2 points
prototype on one draw; quantising every op let padding leak, cosine 0.37), MatMulNBits 8-bit (batch-independent,
but 0.55–0.85x of fp32's speed on this CPU), and running the dynamic graph one input at a time (0.84x).
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from fewshot.encoders.onnx import ROWWISE_INT8_SCHEME as SCHEME
from fewshot.errors import InvalidInputError

__all__ = ["SCHEME", "quantize_rowwise"]

WEIGHT_QMAX = 63   # MatMul / Gemm weights, multiplied in int8 (see above)
ACT_QMAX = 127     # activations, per row
FLOAT_QMAX = 127   # tables and Conv weights, dequantised to float before use
GATHER_MIN_SIZE = 1 << 16
_PREFIX = "fewshot_q"


def quantize_rowwise(src: str | os.PathLike, dst: str | os.PathLike) -> dict[str, int]:
    """Rewrite the float ONNX graph at ``src`` into the row-wise int8 graph at ``dst`` (see the module docstring).
    Returns how many nodes of each kind were quantised: {'matmul', 'gemm', 'gather', 'conv'}."""
    import onnx

    model = onnx.load(str(src))
    counts = _Rewriter(model).run()
    if not any(counts.values()):
        raise InvalidInputError(f"{src} has no MatMul, Gemm, Gather or Conv with constant float weights to "
                                "quantise to int8; export it without quantize")
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return counts


def _per_channel(weight: np.ndarray, axis: int, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 of ``weight`` with one scale per index of ``axis`` → (int8 weight, float32 scales)."""
    reduce = tuple(i for i in range(weight.ndim) if i != axis)
    peak = np.abs(weight).max(axis=reduce, keepdims=True)
    scale = (np.where(peak > 0, peak, 1.0) / qmax).astype(np.float32)
    q = np.clip(np.rint(weight / scale), -qmax, qmax).astype(np.int8)
    return q, scale


class _Rewriter:
    """One pass over a graph's nodes, replacing quantisable ones in place (node order is kept topological)."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.model, self.graph = model, model.graph
        self.np = numpy_helper
        self.inits = {t.name: t for t in self.graph.initializer}
        #: Identity outputs that are a constant initializer (torch's exporter shares equal initializers that way)
        self.alias: dict[str, str] = {}
        for node in self.graph.node:
            if node.op_type == "Identity" and node.input[0] in self.inits:
                self.alias[node.output[0]] = node.input[0]
        self.uses: dict[str, int] = {}
        for node in self.graph.node:
            for name in node.input:
                self.uses[name] = self.uses.get(name, 0) + 1
        for out in self.graph.output:
            self.uses[out.name] = self.uses.get(out.name, 0) + 1
        self.new_inits: list = []
        self.shared: dict[str, str] = {}
        self.n = 0
        self.counts = {"matmul": 0, "gemm": 0, "gather": 0, "conv": 0}
        self.row_scale: dict[str, tuple[str, str]] = {}  # activation → (its uint8 tensor, its per-row scale)
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if self.opset < 13:  # per-axis DequantizeLinear, QuantizeLinear with zero point, as written here
            raise InvalidInputError(f"int8 export needs ONNX opset >= 13, the graph has {self.opset}")

    # -- helpers ------------------------------------------------------------------------------------------------
    def name(self, what: str) -> str:
        self.n += 1
        return f"{_PREFIX}{self.n}_{what}"

    def const(self, array: np.ndarray, what: str) -> str:
        tensor = self.np.from_array(array, self.name(what))
        self.new_inits.append(tensor)
        return tensor.name

    def weight(self, name: str) -> np.ndarray | None:
        """The float32 array of a constant float initializer, else None."""
        from onnx import TensorProto

        tensor = self.inits.get(self.alias.get(name, name))
        if tensor is None or tensor.data_type != TensorProto.FLOAT:
            return None
        return self.np.to_array(tensor).astype(np.float32)

    def release(self, name: str) -> None:
        """One use of initializer ``name`` (or of an Identity of one) is gone; what nothing uses any more is
        dropped at the end of :meth:`run`."""
        self.uses[name] -= 1

    # -- rewrites -----------------------------------------------------------------------------------------------
    def quantized_rows(self, x: str) -> tuple[list, str, str]:
        """Nodes that quantise activation ``x`` (…, K) row by row → (nodes, uint8 tensor, (…, 1) scale). Shared by
        every MatMul reading ``x`` (e.g. the query, key and value projections)."""
        from onnx import helper

        if x in self.row_scale:
            return [], *self.row_scale[x]
        if not self.shared:
            self.shared = {"tiny": self.const(np.asarray(1e-30, np.float32), "tiny"),
                           "inv": self.const(np.asarray(1.0 / ACT_QMAX, np.float32), "inv_qmax"),
                           "one": self.const(np.asarray(1.0, np.float32), "one"),
                           "zp": self.const(np.asarray(128, np.uint8), "zero_point")}
        c = self.shared
        absx, peak, peak1, scale, ratio, q = (self.name(k) for k in ("abs", "peak", "peak1", "scale", "ratio", "q"))
        if self.opset >= 18:  # ReduceMax takes its axes as an input from opset 18
            reduce = helper.make_node("ReduceMax", [absx, self.const(np.asarray([-1], np.int64), "axes")], [peak],
                                      keepdims=1)
        else:
            reduce = helper.make_node("ReduceMax", [absx], [peak], axes=[-1], keepdims=1)
        nodes = [helper.make_node("Abs", [x], [absx]), reduce,
                 helper.make_node("Max", [peak, c["tiny"]], [peak1]),
                 helper.make_node("Mul", [peak1, c["inv"]], [scale]),
                 helper.make_node("Div", [x, scale], [ratio]),
                 helper.make_node("QuantizeLinear", [ratio, c["one"], c["zp"]], [q])]
        self.row_scale[x] = (q, scale)
        return nodes, q, scale

    def rowwise_matmul(self, x: str, weight: np.ndarray, bias: np.ndarray | None, out: str) -> list:
        """x (…, K) @ weight (K, N) (+ bias (N,)) → ``out``, int8 with per-row activation scales."""
        from onnx import TensorProto, helper

        nodes, q, scale = self.quantized_rows(x)
        wq, wscale = _per_channel(weight, axis=1, qmax=WEIGHT_QMAX)
        acc, accf, cols = self.name("acc"), self.name("accf"), self.name("cols")
        nodes += [helper.make_node("MatMulInteger", [q, self.const(wq, "w"), self.shared["zp"]], [acc]),
                  helper.make_node("Cast", [acc], [accf], to=TensorProto.FLOAT),
                  helper.make_node("Mul", [accf, self.const(wscale.reshape(-1), "w_scale")], [cols])]
        if bias is None:
            nodes.append(helper.make_node("Mul", [cols, scale], [out]))
        else:
            rows = self.name("rows")
            nodes += [helper.make_node("Mul", [cols, scale], [rows]),
                      helper.make_node("Add", [rows, self.const(bias.astype(np.float32), "bias")], [out])]
        return nodes

    def try_matmul(self, node) -> list | None:
        if len(node.input) != 2:
            return None
        w = self.weight(node.input[1])
        if w is None or w.ndim != 2:
            return None
        self.release(node.input[1])
        self.counts["matmul"] += 1
        return self.rowwise_matmul(node.input[0], w, None, node.output[0])

    def try_gemm(self, node) -> list | None:
        from onnx import helper

        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
            return None
        w = self.weight(node.input[1])
        bias = self.weight(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        has_c = len(node.input) > 2 and bool(node.input[2])
        if w is None or w.ndim != 2 or (has_c and (bias is None or bias.ndim != 1)):
            return None
        if bias is not None:
            bias = bias * float(attrs.get("beta", 1.0))
            self.release(node.input[2])
        self.release(node.input[1])
        self.counts["gemm"] += 1
        return self.rowwise_matmul(node.input[0], w.T if attrs.get("transB", 0) else w, bias, node.output[0])

    def try_gather(self, node) -> list | None:
        from onnx import TensorProto, helper

        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
        table = self.weight(node.input[0])
        if axis != 0 or table is None or table.ndim != 2 or table.size < GATHER_MIN_SIZE:
            return None
        self.release(node.input[0])
        self.counts["gather"] += 1
        tq, tscale = _per_channel(table, axis=0, qmax=FLOAT_QMAX)
        rows, scales, rowsf = self.name("rows"), self.name("row_scales"), self.name("rowsf")
        return [helper.make_node("Gather", [self.const(tq, "table"), node.input[1]], [rows], axis=0),
                helper.make_node("Gather", [self.const(tscale, "table_scale"), node.input[1]], [scales], axis=0),
                helper.make_node("Cast", [rows], [rowsf], to=TensorProto.FLOAT),
                helper.make_node("Mul", [rowsf, scales], [node.output[0]])]

    def try_conv(self, node) -> list | None:
        from onnx import helper

        if len(node.input) < 2:
            return None
        w = self.weight(node.input[1])
        if w is None or w.ndim < 3:
            return None
        self.release(node.input[1])
        self.counts["conv"] += 1
        wq, wscale = _per_channel(w, axis=0, qmax=FLOAT_QMAX)
        deq = self.name("conv_w")
        zero = np.zeros(w.shape[0], np.int8)
        dq = helper.make_node("DequantizeLinear", [self.const(wq, "conv_wq"), self.const(wscale.reshape(-1), "conv_ws"),
                                                  self.const(zero, "conv_wzp")], [deq], axis=0)
        conv = helper.make_node("Conv", [node.input[0], deq, *node.input[2:]], list(node.output), name=node.name)
        conv.attribute.extend(node.attribute)
        return [dq, conv]

    def run(self) -> dict[str, int]:
        rewrite = {"MatMul": self.try_matmul, "Gemm": self.try_gemm, "Gather": self.try_gather,
                   "Conv": self.try_conv}
        nodes = []
        for node in self.graph.node:
            fn = rewrite.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            replaced = fn(node) if fn is not None else None
            nodes.extend([node] if replaced is None else replaced)
        for node in list(nodes):  # Identities of initializers whose output nothing reads any more
            if node.op_type == "Identity" and node.output[0] in self.alias and self.uses.get(node.output[0], 0) <= 0:
                nodes.remove(node)
                self.release(node.input[0])
        keep = [t for t in self.graph.initializer if self.uses.get(t.name, 0) > 0]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep + self.new_inits)
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        return self.counts
