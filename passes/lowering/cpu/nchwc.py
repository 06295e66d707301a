"""Lower convolutional regions to onnxruntime's NCHWc layout (``com.microsoft.nchwc``).

onnxruntime gets most of its CPU speed on CNNs from a layout transform it applies only at
ORT_ENABLE_ALL: convolutions, pooling and the element-wise ops between them run on tensors with
channels in blocks of 8 (AVX2) or 16 (AVX-512), with filters reordered once. This pass writes
that form into the model itself, so the model runs at that speed with onnxruntime's optimizer
off (ORT_DISABLE_ALL, or a session that must start fast).

The result is tied to this machine's block size (the pass asks
:func:`onnxforge.runtime.choices.nchwc_block_size`; ``block_size`` overrides it) and runs only on
onnxruntime's CPU provider on a CPU with the same SIMD width: a model lowered for 16 computes
garbage on an AVX2-only CPU. The model says so in its metadata (``onnxforge.nchwc_block_size``).

What is lowered, in one walk in topological order over the main graph:

* ``Conv`` / ``com.microsoft::FusedConv`` (float, 2-D, constant filter and bias) → ``nchwc::Conv``:
  ordinary (``group == 1``; a plain input with fewer channels than a block is read as it is),
  depthwise (``group == channels``; padding channels become zero-filter groups of their own).
  Output channels are zero-padded to the block; a reader of a padded tensor gets zero-padded
  filter columns.
* ``Add`` of a lowered Conv's only reader and another blocked tensor of the same shape → the
  Conv's ``Sum`` input; an activation right after a lowered Conv → its ``activation`` attribute.
* ``MaxPool`` / ``AveragePool`` / ``GlobalAveragePool`` / ``GlobalMaxPool`` (channels a multiple
  of the block, as onnxruntime requires), ``Resize`` nearest/asymmetric/floor with integer
  spatial scales → ``nchwc::Upsample``.
* Element-wise ops on blocked tensors stay element-wise: unary activations, binary ops with a
  scalar constant, and binary ops between blocked tensors of equal channel count: directly when
  their spatial sizes are provably equal (tracked through same-size convolutions and pooling, as
  onnxruntime does), else in the 5-D view ``[N, C/B, H, W, B]`` of the blocked memory, where
  broadcasting (a squeeze-excitation ``[N, C, 1, 1]`` scale) means what it meant on the plain
  tensors. ``Concat`` over channels when every part fills whole blocks.

Padding channels carry finite values (``f(0)`` for the ops above); only ops that keep finite
values finite are taken, so a later zero filter column never meets an infinity. Everything
else reads the plain tensor: one ``ReorderInput`` / ``ReorderOutput`` per tensor at the region's
edges, and graph outputs keep their names and layout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from onnxforge.ir import Model, Node, Value, replace_all_uses_with
from onnxforge.ir.constants import constant_value
from onnxforge.kernels.nchwc import pad_channels, reorder_filter_oihwbibo, reorder_filter_oihwbo, round_up
from onnxforge.passes.fusion.ort_fused_ops import conv_activation
from onnxforge.passmanager import Pass, PassContext, PassOptions, PassResult
from onnxforge.rules import MatchFailed
from onnxforge.runtime import choices as ort_choices
from onnxforge.runtime.choices import NCHWC_METADATA_KEY

log = logging.getLogger(__name__)

NCHWC_DOMAIN = "com.microsoft.nchwc"
MS_DOMAIN = "com.microsoft"
PROVENANCE = "lower-nchwc"

_F32 = onnx.TensorProto.FLOAT
#: Element-wise ops that map finite values to finite values (padding stays finite).
_UNARY = frozenset({"Relu", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish", "Clip", "Neg", "Abs", "Identity"})
_BINARY = frozenset({"Add", "Sub", "Mul", "Max", "Min", "Div"})
_ACTIVATIONS = frozenset({"Relu", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "Clip"})
_POOLS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"})


@dataclass(frozen=True)
class LowerNchwcOptions(PassOptions):
    #: Channel block (8 or 16); 0 asks onnxruntime on this machine.
    block_size: int = 0

    def validate(self) -> None:
        if self.block_size not in (0, 4, 8, 16, 32):
            raise ValueError(f"block_size must be 0 (this machine) or 4, 8, 16, 32, got {self.block_size}")


@dataclass
class _Blocked:
    """The blocked twin of a plain 4-D tensor."""

    value: Value
    channels: int  # logical channels; the blocked tensor has them rounded up to the block
    producer: Node  # the node that writes ``value``
    single_reader: bool  # the plain tensor had exactly one reader and is not a graph output
    #: Tensors with equal keys have equal spatial sizes: (origin value, halvings of H, of W).
    spatial: tuple[Any, ...]
    #: Tensors with equal keys have equal batch sizes: ("static", n) or (origin value,).
    batch: tuple[Any, ...]


class LowerNchwc(Pass):
    """Rewrites convolution regions into onnxruntime's NCHWc blocked layout for this CPU."""

    name = "lower-nchwc"
    summary = "Lower Conv/pool regions to onnxruntime's NCHWc layout (machine-specific; --target cpu-native)."
    lossless = True
    Options = LowerNchwcOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        opts = self.options
        assert isinstance(opts, LowerNchwcOptions)
        block = opts.block_size or ort_choices.nchwc_block_size()
        if not block:
            log.info("lower-nchwc: onnxruntime has no NCHWc kernels on this CPU; nothing lowered")
            return PassResult(False, {"block_size": 0})
        earlier = next((m.value for m in model.proto_shell.metadata_props if m.key == NCHWC_METADATA_KEY), None)
        if earlier is not None and earlier != str(block):
            # Mixing blocks in one model would leave the earlier ops reading the wrong layout.
            log.warning("lower-nchwc: the model is already lowered for a block of %s, not %d; nothing lowered", earlier, block)
            return PassResult(False, {"block_size": block})
        lowering = _Lowering(model, block)
        lowering.walk()
        if not lowering.lowered:
            return PassResult(False, {"block_size": block})
        lowering.finish()
        return PassResult(True, lowering.stats())


class _Lowering:
    def __init__(self, model: Model, block: int) -> None:
        self.model = model
        self.graph = model.graph
        self.block = block
        self.opset = model.opset("") or 1
        self.blocked: dict[Value, _Blocked] = {}
        self.reordered_inputs: dict[Value, Value] = {}
        self.filters: dict[tuple[Value, str, int], Value] = {}
        self.biases: dict[Value, Value] = {}
        self.shapes: dict[tuple[int, ...], Value] = {}
        self.lowered: list[Node] = []
        self.counts: dict[str, int] = {}

    # -- walking ---------------------------------------------------------------------------
    def walk(self) -> None:
        for node in self.graph.topological_order():
            if node.domain not in ("", "ai.onnx", MS_DOMAIN) or any(v is not None and v.elem_type() not in (_F32, None) for v in node.outputs):
                continue
            try:
                done = self._lower(node)
            except MatchFailed as e:
                log.debug("lower-nchwc: %s kept: %s", node.name, e)
                continue
            if done:
                self.lowered.append(node)
                key = node.op_type if node.domain != MS_DOMAIN else "FusedConv"
                self.counts[key] = self.counts.get(key, 0) + 1

    def _lower(self, node: Node) -> bool:
        op = node.op_type
        if (op == "Conv" and node.domain == "") or (op == "FusedConv" and node.domain == MS_DOMAIN):
            return self._conv(node)
        if node.domain != "":
            return False
        if op in _POOLS:
            return self._pool(node)
        if op == "Resize":
            return self._resize(node)
        if op == "Concat":
            return self._concat(node)
        if op in _UNARY:
            return self._unary(node)
        if op in _BINARY:
            return self._binary(node)
        return False

    # -- helpers ---------------------------------------------------------------------------
    def _shape4(self, v: Value | None) -> tuple[Any, ...]:
        s = v.shape() if v is not None else None
        if s is None or len(s) != 4 or not isinstance(s[1], int):
            raise MatchFailed("not a 4-D tensor with a known channel count")
        if v is not None and v.elem_type() not in (_F32,):
            raise MatchFailed("not float32")
        return s

    def _add(self, op: str, inputs: list[Value | None], attrs: dict[str, Any], like: Node, domain: str = NCHWC_DOMAIN) -> Node:
        return self.graph.add_node(
            op, inputs, domain=domain, attrs=attrs, name=f"{like.name}_nchwc", output_names=[f"{like.output(0).name}_nchwc"], provenance=PROVENANCE
        )

    def _mark(
        self,
        plain: Value,
        node: Node,
        channels: int,
        spatial: tuple[Any, ...] | None = None,
        batch: tuple[Any, ...] | None = None,
    ) -> None:
        single = plain.num_uses() == 1 and not plain.is_graph_output()
        if spatial is None:
            s = plain.shape()
            static = s is not None and len(s) == 4 and all(isinstance(d, int) for d in s[2:])
            spatial = ("static", s[2], s[3]) if static else (plain, 0, 0)  # type: ignore[index]
        self.blocked[plain] = _Blocked(node.output(0), channels, node, single, spatial, batch or self._batch_key(plain))

    @staticmethod
    def _batch_key(plain: Value) -> tuple[Any, ...]:
        s = plain.shape()
        return ("static", s[0]) if s is not None and len(s) == 4 and isinstance(s[0], int) else (plain,)

    def _window_spatial(self, node: Node, src: _Blocked, kernel: tuple[int, ...] | None) -> tuple[Any, ...] | None:
        """The spatial key of a convolution or pooling output: the input's, shifted by a stride
        of 2, when padding keeps the size (``pads + 1 == kernel``, or SAME); else None (new)."""
        if kernel is None or len(kernel) != 2 or src.spatial[0] == "static":
            return None
        strides = node.attr("strides") or [1, 1]
        dil = node.attr("dilations") or [1, 1]
        pads = node.attr("pads") or [0, 0, 0, 0]
        same = str(node.attr("auto_pad", "NOTSET")) in ("SAME_UPPER", "SAME_LOWER")
        if int(node.attr("ceil_mode", 0)) and any(s != 1 for s in strides):
            return None  # rounding up gives even sizes one more row than the key would say
        key = list(src.spatial)
        for i in range(2):
            if dil[i] != 1 or strides[i] not in (1, 2) or not (same or pads[i] + pads[i + 2] + 1 == kernel[i]):
                return None
            key[1 + i] += strides[i] - 1
        return tuple(key)

    def _blocked_input(self, v: Value) -> _Blocked:
        """The blocked twin of ``v``: lowered already, or a ReorderInput of a plain tensor
        whose channels fill whole blocks."""
        b = self.blocked.get(v)
        if b is not None:
            return b
        s = self._shape4(v)
        if s[1] % self.block:
            raise MatchFailed(f"{s[1]} channels do not fill whole blocks of {self.block}")
        r = self.reordered_inputs.get(v)
        if r is None:
            node = self.graph.add_node(
                "ReorderInput", [v], domain=NCHWC_DOMAIN, attrs={"channels_last": 0}, name=f"{v.name}_reorder", output_names=[f"{v.name}_nchwc"], provenance=PROVENANCE
            )
            r = node.output(0)
            self.reordered_inputs[v] = r
            self.counts["ReorderInput"] = self.counts.get("ReorderInput", 0) + 1
        spatial = ("static", s[2], s[3]) if isinstance(s[2], int) and isinstance(s[3], int) else (v, 0, 0)
        return _Blocked(r, int(s[1]), r.producer, False, spatial, self._batch_key(v))  # type: ignore[arg-type]

    def _const(self, v: Value | None) -> np.ndarray | None:
        return constant_value(v) if v is not None and v.name else None

    # -- ops -------------------------------------------------------------------------------
    def _conv(self, node: Node) -> bool:
        x, w_v = node.input(0), node.input(1)
        b_v = node.input(2) if len(node.inputs) > 2 else None
        if x is None or w_v is None or not w_v.is_constant() or len(node.inputs) > 3:
            raise MatchFailed("filter is not a constant")
        w = w_v.array()
        if w.dtype != np.float32 or w.ndim != 4:
            raise MatchFailed("not a float 2-D convolution")
        bias = self._const(b_v) if b_v is not None and b_v.name else None
        if b_v is not None and b_v.name and (bias is None or bias.shape != (w.shape[0],)):
            raise MatchFailed("bias is not a constant vector")
        out_channels, in_per_group = int(w.shape[0]), int(w.shape[1])
        group = int(node.attr("group", 1))
        bx = self.blocked.get(x)
        attrs = {k: node.attr(k) for k in node.attributes}
        if group > 1:
            if not (in_per_group == 1 and out_channels == group):
                raise MatchFailed("only depthwise grouped convolutions")
            src = self._blocked_input(x)
            if src.channels != out_channels:
                raise MatchFailed("depthwise channel count differs from its input")
            # The padding channels become groups of their own (zero filters).
            attrs["group"] = round_up(out_channels, self.block)
            layout, filt = "OIHWBo", reorder_filter_oihwbo(w, self.block)
            x_in = src.value
        elif in_per_group < self.block and bx is None:
            self._shape4(x)
            layout, filt = "OIHWBo", reorder_filter_oihwbo(w, self.block)  # reads plain NCHW
            x_in = x
        else:
            src = self._blocked_input(x)
            if src.channels != in_per_group:
                raise MatchFailed("filter input channels differ from the input's")
            padded_in = round_up(in_per_group, self.block)
            layout, filt = "OIHWBiBo", reorder_filter_oihwbibo(w, self.block, padded_in)
            x_in = src.value
        key = (w_v, layout, int(filt.shape[1]))
        wf = self.filters.get(key)
        if wf is None:
            wf = self.graph.add_initializer(f"{w_v.name}_nchwc", filt)
            self.filters[key] = wf
        bf = None
        if bias is not None:
            assert b_v is not None
            bf = self.biases.get(b_v)
            if bf is None:
                bf = b_v if out_channels % self.block == 0 else self.graph.add_initializer(f"{b_v.name}_nchwc", pad_channels(bias, self.block))
                self.biases[b_v] = bf
        new = self._add("Conv", [x_in, wf, bf], attrs, node)
        src_b = self.blocked.get(x)
        spatial = self._window_spatial(node, src_b, tuple(w.shape[2:])) if src_b is not None else None
        self._mark(node.output(0), new, out_channels, spatial, src_b.batch if src_b is not None else self._batch_key(x))
        return True

    def _pool(self, node: Node) -> bool:
        if len([o for o in node.outputs if o is not None]) != 1 or int(node.attr("storage_order", 0)) != 0:
            raise MatchFailed("pool with an index output or storage order")
        x = node.input(0)
        assert x is not None
        dil = node.attr("dilations")
        if dil is not None and any(d != 1 for d in dil):
            raise MatchFailed("dilated pooling")
        if int(node.attr("ceil_mode", 0)) and int(node.attr("count_include_pad", 0)):
            # onnxruntime's NCHWc pooling divides the windows that run past the end
            # differently; its own NCHWc transformer leaves this combination alone too.
            raise MatchFailed("average pooling with ceil_mode and count_include_pad")
        src = self._blocked_input(x)  # a plain input must fill whole blocks
        attrs = {k: node.attr(k) for k in node.attributes}
        new = self._add(node.op_type, [src.value], attrs, node)
        spatial = ("static", 1, 1) if node.op_type.startswith("Global") else self._window_spatial(node, src, tuple(node.attr("kernel_shape") or ()))
        self._mark(node.output(0), new, src.channels, spatial, src.batch)
        return True

    def _resize(self, node: Node) -> bool:
        x = node.input(0)
        if x not in self.blocked:
            raise MatchFailed("input is not blocked")
        if node.attr("mode", "nearest") != "nearest":
            raise MatchFailed("only nearest resizing")
        if self.opset >= 11:
            if node.attr("coordinate_transformation_mode", "half_pixel") != "asymmetric" or node.attr("nearest_mode", "round_prefer_floor") != "floor":
                raise MatchFailed("only asymmetric coordinates with floor rounding")
            if len(node.inputs) != 3 or node.input(2) is None:
                raise MatchFailed("sizes instead of scales")
            scales = self._const(node.input(2))
        else:
            scales = self._const(node.input(1))
        if scales is None or scales.shape != (4,):
            raise MatchFailed("scales are not 4 constants")
        ints = [int(s) for s in scales]
        if any(i <= 0 or float(i) != float(s) for i, s in zip(ints, scales)) or ints[:2] != [1, 1]:
            raise MatchFailed("scales are not whole spatial factors")
        src = self.blocked[x]  # type: ignore[index]
        new = self._add("Upsample", [src.value], {"scales": ints}, node)
        self._mark(node.output(0), new, src.channels, batch=src.batch)
        return True

    def _concat(self, node: Node) -> bool:
        axis = int(node.attr("axis", 0))
        ins = [v for v in node.inputs if v is not None]
        if axis not in (1, -3) or not ins or any(v not in self.blocked for v in ins):
            raise MatchFailed("not a channel concat of blocked tensors")
        parts = [self.blocked[v] for v in ins]
        if any(p.channels % self.block for p in parts):
            raise MatchFailed("a part does not fill whole blocks")
        new = self._add("Concat", [p.value for p in parts], {"axis": 1}, node, domain="")
        self._mark(node.output(0), new, sum(p.channels for p in parts), parts[0].spatial, parts[0].batch)
        return True

    def _unary(self, node: Node) -> bool:
        x = node.input(0)
        src = self.blocked.get(x) if x is not None else None
        if src is None:
            raise MatchFailed("input is not blocked")
        extra = list(node.inputs[1:])
        if node.op_type == "Clip" and any(v is not None and v.name and self._const(v) is None for v in extra):
            raise MatchFailed("Clip bounds are not constants")
        conv = src.producer
        if (
            node.op_type in _ACTIVATIONS
            and src.single_reader
            and conv.op_type == "Conv"
            and conv.domain == NCHWC_DOMAIN
            and conv.attr("activation") is None
        ):
            activation, params = conv_activation(node, self._const, self.opset)
            conv.set_attr("activation", activation)
            if params:
                conv.set_attr("activation_params", params)
            self._mark(node.output(0), conv, src.channels, src.spatial, src.batch)
            self.counts["fused_activations"] = self.counts.get("fused_activations", 0) + 1
            return True
        attrs = {k: node.attr(k) for k in node.attributes}
        new = self._add(node.op_type, [src.value, *extra], attrs, node, domain="")
        self._mark(node.output(0), new, src.channels, src.spatial, src.batch)
        return True

    def _binary(self, node: Node) -> bool:
        if len(node.inputs) != 2:
            raise MatchFailed("not two operands")
        a, b = node.input(0), node.input(1)
        if a is None or b is None:
            raise MatchFailed("missing operand")
        ba, bb = self.blocked.get(a), self.blocked.get(b)
        if ba is None and bb is None:
            raise MatchFailed("no operand is blocked")
        if ba is not None and bb is not None:
            if node.op_type == "Div":
                raise MatchFailed("division by a blocked tensor (its padding may be zero)")
            if ba.channels != bb.channels:
                raise MatchFailed("operands have different channel counts")
            if ba.spatial == bb.spatial:
                if node.op_type == "Add" and self._fuse_sum(node, ba, bb):
                    return True
                new = self._add(node.op_type, [ba.value, bb.value], {}, node, domain="")
                # Batch sizes may still broadcast (1 against N): then the result's is new.
                self._mark(node.output(0), new, ba.channels, ba.spatial, ba.batch if ba.batch == bb.batch else None)
                return True
            return self._split_view(node, ba, bb)
        # One blocked operand and a scalar constant.
        blocked, other = (ba, b) if ba is not None else (bb, a)
        assert blocked is not None
        c = self._const(other)
        if c is None or c.size != 1 or c.ndim > 4 or not np.isfinite(c).all():
            raise MatchFailed("the other operand is not a finite scalar constant")
        if node.op_type == "Div" and (other is a or float(c.reshape(-1)[0]) == 0.0):
            raise MatchFailed("division by a blocked tensor or by zero")
        ins = [blocked.value, other] if other is b else [other, blocked.value]
        new = self._add(node.op_type, ins, {}, node, domain="")
        self._mark(node.output(0), new, blocked.channels, blocked.spatial, blocked.batch)
        return True

    def _fuse_sum(self, node: Node, ba: _Blocked, bb: _Blocked) -> bool:
        """Add(conv, other) → the Conv's Sum input, when the Conv has no activation yet and
        this Add is its only reader and both operands have the same batch size (the Sum input is
        not broadcast)."""
        if ba.batch != bb.batch:
            return False
        for conv_side, other in ((ba, bb), (bb, ba)):
            conv = conv_side.producer
            if (
                conv_side.single_reader
                and conv.op_type == "Conv"
                and conv.domain == NCHWC_DOMAIN
                and conv.attr("activation") is None
                and len(conv.inputs) < 4
                and conv_side.value is conv.output(0)
            ):
                ins = list(conv.inputs) + [None] * (3 - len(conv.inputs))
                conv.set_inputs([*ins, other.value])
                self._mark(node.output(0), conv, conv_side.channels, conv_side.spatial, conv_side.batch)
                self.counts["fused_sums"] = self.counts.get("fused_sums", 0) + 1
                return True
        return False

    def _split_view(self, node: Node, ba: _Blocked, bb: _Blocked) -> bool:
        """Operands whose spatial sizes are not provably equal (or broadcast, as a
        squeeze-excitation ``[N, C, 1, 1]`` scale does) meet in the 5-D view
        ``[N, C/B, H, W, B]`` of the blocked memory, where numpy broadcasting over N, H and W
        means what it meant on the plain tensors."""
        groups = round_up(ba.channels, self.block) // self.block
        split = self._shape_const((0, groups, 0, 0, self.block))
        unsplit = self._shape_const((0, groups * self.block, 0, 0))
        views = [self.graph.add_node("Reshape", [t.value, split], name=f"{node.name}_split", provenance=PROVENANCE).output(0) for t in (ba, bb)]
        mid = self.graph.add_node(node.op_type, views, name=f"{node.name}_nchwc", provenance=PROVENANCE).output(0)
        new = self.graph.add_node("Reshape", [mid, unsplit], name=f"{node.name}_unsplit", output_names=[f"{node.output(0).name}_nchwc"], provenance=PROVENANCE)
        self._mark(node.output(0), new, ba.channels)
        self.counts["split_views"] = self.counts.get("split_views", 0) + 1
        return True

    def _shape_const(self, dims: tuple[int, ...]) -> Value:
        v = self.shapes.get(dims)
        if v is None:
            v = self.graph.add_initializer("nchwc_view", np.array(dims, dtype=np.int64))
            self.shapes[dims] = v
        return v

    # -- finishing -------------------------------------------------------------------------
    def finish(self) -> None:
        lowered = set(self.lowered)
        for plain, twin in self.blocked.items():
            outside = plain.is_graph_output() or any(user not in lowered for user, _ in plain.uses())
            if not outside:
                continue
            node = self.graph.add_node(
                "ReorderOutput",
                [twin.value],
                domain=NCHWC_DOMAIN,
                attrs={"channels": twin.channels, "channels_last": 0},
                name=f"{plain.name}_reorder_output",
                output_names=[f"{plain.name}_nchw"],
                provenance=PROVENANCE,
            )
            node.output(0).type = plain.type
            self.counts["ReorderOutput"] = self.counts.get("ReorderOutput", 0) + 1
            # Lowered readers are removed below; graph outputs keep their names.
            replace_all_uses_with(plain, node.output(0))
        self.graph.remove(reversed(self.lowered), safe=True)
        self.graph.toposort()
        self.model.opset_imports.setdefault(NCHWC_DOMAIN, 1)
        meta = self.model.proto_shell.metadata_props
        kept = [m for m in meta if m.key != NCHWC_METADATA_KEY]
        del meta[:]
        meta.extend(kept)
        meta.add(key=NCHWC_METADATA_KEY, value=str(self.block))

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {"block_size": self.block, "lowered_nodes": len(self.lowered)}
        out.update({k: float(v) for k, v in sorted(self.counts.items())})
        return out
