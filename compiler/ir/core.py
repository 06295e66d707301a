"""The in-memory graph: values, nodes, graphs and the model that owns them.

Design (see docs/ARCHITECTURE.md):

* A :class:`Value` is an SSA name. It knows its producer (``Node``, output index) and its uses as
  ``(consumer Node, input index)`` pairs, kept in an insertion-ordered dict so that adding and
  removing a use is O(1).
* A :class:`Node` owns its input/output lists; every mutation goes through methods that keep the
  use-def links and the model's ``version`` counter in step.
* Nodes and values hash by identity and carry a stable integer ``id``.
* Everything the compiler does not model (TypeProto of a value, non-graph attributes, functions,
  training info, quantization annotations, ...) is kept as the original protobuf, so that
  load -> save is lossless even for constructs this IR has no special support for (optional and
  sequence types, custom domains, sparse initializers).
* Subgraphs (If/Loop/Scan bodies) are :class:`Graph` objects held by their node; a subgraph node
  that reads a value of an enclosing scope points at that outer :class:`Value` directly, so
  outer values see their captured uses.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxforge.ir.tracked import TrackedDict, TrackedList

if TYPE_CHECKING:
    from onnxforge.ir.tensor_data import TensorStore

_ids = itertools.count(1)

#: ``metadata_props`` key naming the rule or pass that created a node (provenance).
PROVENANCE_KEY = "onnxforge.rule"


class Value:
    """A named tensor (or optional/sequence/map value) flowing through a graph."""

    __slots__ = (
        "id",
        "_name",
        "_type",
        "doc_string",
        "metadata_props",
        "_producer",
        "index",
        "_uses",
        "_const",
        "_sparse_const",
        "graph",
        "_array_cache",
        "__weakref__",
    )

    def __init__(self, name: str, type: onnx.TypeProto | None = None) -> None:
        self.id = next(_ids)
        self.graph: Graph | None = None
        self._name = name
        self._type: onnx.TypeProto | None = type
        self.doc_string = ""
        self.metadata_props: list[onnx.StringStringEntryProto] = []
        self._producer: Node | None = None
        self.index: int = 0
        self._uses: dict[tuple[Node, int], None] = {}
        self._const: onnx.TensorProto | None = None
        self._sparse_const: onnx.SparseTensorProto | None = None
        self._array_cache: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"Value({self.name!r})"

    def _touch(self) -> None:
        g = self.graph
        if g is None and self._producer is not None:
            g = self._producer.graph
        if g is not None:
            g._touch()

    @property
    def producer(self) -> Node | None:
        """The node that computes this value (None for graph inputs and initializers).

        Read-only: it follows from ``Node`` outputs (``Node.set_outputs``, ``Graph.add_node``)."""
        return self._producer

    @property
    def const(self) -> onnx.TensorProto | None:
        """Initializer data: a TensorProto (possibly referring to external data)."""
        return self._const

    @const.setter
    def const(self, tensor: onnx.TensorProto | None) -> None:
        if tensor is not self._const:
            self._const = tensor
            self._array_cache = None
            self._touch()

    @property
    def sparse_const(self) -> onnx.SparseTensorProto | None:
        """Sparse initializer data, exported verbatim."""
        return self._sparse_const

    @sparse_const.setter
    def sparse_const(self, tensor: onnx.SparseTensorProto | None) -> None:
        if tensor is not self._sparse_const:
            self._sparse_const = tensor
            self._touch()

    # Renaming or retyping is a mutation: it bumps the model version like every other edit.
    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        if value != self._name:
            self._name = value
            self._touch()

    @property
    def type(self) -> onnx.TypeProto | None:
        """The value's type, verbatim (``None`` when unknown)."""
        return self._type

    @type.setter
    def type(self, value: onnx.TypeProto | None) -> None:
        if value is not self._type:
            self._type = value
            self._touch()

    # -- use-def ---------------------------------------------------------------------------
    def uses(self) -> list[tuple[Node, int]]:
        """The ``(consumer, input index)`` pairs that read this value, in insertion order."""
        return list(self._uses)

    def consumers(self) -> list[Node]:
        """Distinct consumer nodes (a node reading the value twice is listed once)."""
        seen: dict[Node, None] = {}
        for node, _ in self._uses:
            seen[node] = None
        return list(seen)

    def num_uses(self) -> int:
        return len(self._uses)

    def is_graph_input(self) -> bool:
        return self.graph is not None and self in self.graph._input_set

    def is_graph_output(self) -> bool:
        return self.graph is not None and self in self.graph._output_set

    def is_initializer(self) -> bool:
        return self.const is not None or self.sparse_const is not None

    def is_constant(self) -> bool:
        """True when the value has fixed data that no caller can override.

        An initializer that is also a graph input (IR version >= 4) is only a default value and
        can be fed at run time, so it is not a constant. For IR version < 4 every initializer must
        be listed as an input; we still treat those conservatively as overridable.
        """
        return self.const is not None and not self.is_graph_input()

    # -- data ------------------------------------------------------------------------------
    def array(self) -> np.ndarray:
        """The initializer's data as a numpy array (external data is memory-mapped)."""
        if self.const is None:
            raise ValueError(f"value {self.name!r} has no constant data")
        if self._array_cache is None:
            store = self.graph.model.tensor_store if self.graph is not None and self.graph.model else None
            if store is not None:
                self._array_cache = store.to_array(self.const)
            else:
                self._array_cache = numpy_helper.to_array(self.const)
        return self._array_cache

    def set_const(self, data: np.ndarray | onnx.TensorProto) -> None:
        """Make this value an initializer holding ``data``."""
        if isinstance(data, onnx.TensorProto):
            tensor = data
            self._array_cache = None
        else:
            arr = np.asarray(data)
            tensor = numpy_helper.from_array(arr, self.name)
            self._array_cache = arr
        tensor.name = self.name
        self._const = tensor
        self._touch()

    def const_nbytes(self) -> int:
        """Bytes of initializer data, without loading it."""
        if self.const is None:
            return 0
        return tensor_nbytes(self.const)

    # -- shape helpers -----------------------------------------------------------------------
    def elem_type(self) -> int | None:
        if self.const is not None:
            return self.const.data_type
        if self.type is not None and self.type.HasField("tensor_type"):
            return self.type.tensor_type.elem_type or None
        return None

    def shape(self) -> tuple[int | str | None, ...] | None:
        """The static shape: ints for known dims, strings for symbolic ones, None for unknown."""
        if self.const is not None:
            return tuple(self.const.dims)
        if self.type is None or not self.type.HasField("tensor_type"):
            return None
        tt = self.type.tensor_type
        if not tt.HasField("shape"):
            return None
        dims: list[int | str | None] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value >= 0:  # some exporters write -1 for "unknown"
                dims.append(d.dim_value)
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        return tuple(dims)

    def static_shape(self) -> tuple[int, ...] | None:
        """The shape if every dimension is a known integer, else None."""
        s = self.shape()
        if s is None or not all(isinstance(d, int) for d in s):
            return None
        return tuple(int(d) for d in s)  # type: ignore[arg-type]

    def is_tensor_typed(self) -> bool:
        return self.const is not None or (self.type is not None and self.type.HasField("tensor_type"))


def tensor_nbytes(t: onnx.TensorProto) -> int:
    n = 1
    for d in t.dims:
        n *= d
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:  # string tensors and exotic types
        itemsize = 1
    if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return (n + 1) // 2
    return n * itemsize


class Node:
    """An operator application. Inputs may contain ``None`` for omitted optional inputs; outputs
    may contain ``None`` for omitted optional outputs."""

    __slots__ = (
        "id",
        "op_type",
        "domain",
        "name",
        "overload",
        "doc_string",
        "metadata_props",
        "attributes",
        "subgraphs",
        "_inputs",
        "_outputs",
        "graph",
        "__weakref__",
    )

    def __init__(
        self,
        op_type: str,
        inputs: Sequence[Value | None] = (),
        outputs: Sequence[Value | None] = (),
        *,
        domain: str = "",
        name: str = "",
        attributes: dict[str, onnx.AttributeProto] | None = None,
    ) -> None:
        self.id = next(_ids)
        self.op_type = op_type
        self.domain = domain
        self.name = name
        self.overload = ""
        self.doc_string = ""
        self.metadata_props: list[onnx.StringStringEntryProto] = []
        #: Non-graph attributes, verbatim.
        self.attributes: dict[str, onnx.AttributeProto] = dict(attributes or {})
        #: Graph-valued attributes: name -> Graph (GRAPH) or list of Graph (GRAPHS).
        self.subgraphs: dict[str, Graph | list[Graph]] = {}
        self._inputs: list[Value | None] = []
        self._outputs: list[Value | None] = []
        self.graph: Graph | None = None
        for v in inputs:
            self._append_input(v)
        for v in outputs:
            self._append_output(v)

    def __repr__(self) -> str:
        dom = f"{self.domain}::" if self.domain else ""
        return f"Node({dom}{self.op_type}, name={self.name!r}, id={self.id})"

    # -- inputs/outputs ----------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[Value | None, ...]:
        return tuple(self._inputs)

    @property
    def outputs(self) -> tuple[Value | None, ...]:
        return tuple(self._outputs)

    def input(self, i: int) -> Value | None:
        """Input ``i`` or None if it is omitted or past the end."""
        return self._inputs[i] if i < len(self._inputs) else None

    def output(self, i: int = 0) -> Value | None:
        return self._outputs[i] if i < len(self._outputs) else None

    def _append_input(self, v: Value | None) -> None:
        idx = len(self._inputs)
        self._inputs.append(v)
        if v is not None:
            v._uses[(self, idx)] = None

    def _append_output(self, v: Value | None) -> None:
        idx = len(self._outputs)
        self._outputs.append(v)
        if v is not None:
            if v._producer is not None and v._producer is not self:
                raise ValueError(f"{v!r} is already produced by {v._producer!r}")
            v._producer = self
            v.index = idx
            if self.graph is not None:
                v.graph = self.graph

    def set_input(self, i: int, v: Value | None) -> None:
        """Replace input ``i`` (extending with omitted inputs if needed)."""
        while len(self._inputs) <= i:
            self._inputs.append(None)
        old = self._inputs[i]
        if old is v:
            return
        if old is not None:
            old._uses.pop((self, i), None)
        self._inputs[i] = v
        if v is not None:
            v._uses[(self, i)] = None
        self._touch()

    def set_inputs(self, values: Sequence[Value | None]) -> None:
        self._detach_inputs()
        for v in values:
            self._append_input(v)
        self._touch()

    def _detach_inputs(self) -> None:
        for i, v in enumerate(self._inputs):
            if v is not None:
                v._uses.pop((self, i), None)
        self._inputs = []

    def _detach_outputs(self) -> None:
        for v in self._outputs:
            if v is not None and v._producer is self:
                v._producer = None
        self._outputs = []

    def set_outputs(self, values: Sequence[Value | None]) -> None:
        self._detach_outputs()
        for v in values:
            self._append_output(v)
        self._touch()

    def _touch(self) -> None:
        if self.graph is not None:
            self.graph._touch()

    # -- attributes --------------------------------------------------------------------------
    def attr(self, name: str, default: Any = None) -> Any:
        """The python value of a non-graph attribute (ints, floats, strings, tensors, lists)."""
        a = self.attributes.get(name)
        if a is None:
            return default
        if a.ref_attr_name:
            return default
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        if isinstance(value, list) and value and isinstance(value[0], bytes):
            return [x.decode("utf-8", errors="replace") for x in value]
        return value

    def set_attr(self, name: str, value: Any) -> None:
        self.attributes[name] = helper.make_attribute(name, value)
        self._touch()

    def all_subgraphs(self) -> Iterator[Graph]:
        for g in self.subgraphs.values():
            if isinstance(g, list):
                yield from g
            else:
                yield g

    def has_subgraphs(self) -> bool:
        return bool(self.subgraphs)

    def is_standard_domain(self) -> bool:
        return self.domain in ("", "ai.onnx")


class Graph:
    """An ordered collection of nodes with inputs, outputs and initializers.

    Nodes are held in an insertion-ordered dict (O(1) add/remove). Order is kept topological by
    the passes that care; :meth:`toposort` restores it in O(N + E).
    """

    def __init__(self, name: str = "", model: Model | None = None, parent: Node | None = None) -> None:
        self.name = name
        self.doc_string = ""
        self.metadata_props: list[onnx.StringStringEntryProto] = []
        self.model = model
        #: The node whose attribute holds this graph (None for the main graph).
        self.parent = parent
        self._nodes: dict[Node, None] = {}
        self._inputs: list[Value] = []
        self._outputs: list[Value] = []
        self._input_set: set[Value] = set()
        self._output_set: set[Value] = set()
        self._initializers: TrackedDict[str, Value] = TrackedDict(on_change=self._touch)
        self._quantization_annotation: TrackedList[onnx.TensorAnnotation] = TrackedList(on_change=self._touch)
        self._extra_value_info: TrackedList[onnx.ValueInfoProto] = TrackedList(on_change=self._touch)
        self._output_info: TrackedDict[int, onnx.ValueInfoProto] = TrackedDict(on_change=self._touch)

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self._nodes)} nodes)"

    # -- bookkeeping -------------------------------------------------------------------------
    def _touch(self) -> None:
        if self.model is not None:
            self.model._touch()

    # The containers below belong to the graph: every edit bumps the model's version, and
    # assigning a new dict/list replaces the contents (and bumps) instead of the container.
    @property
    def initializers(self) -> TrackedDict[str, Value]:
        """Initializers by name (includes graph-input defaults)."""
        return self._initializers

    @initializers.setter
    def initializers(self, data: dict[str, Value]) -> None:
        self._initializers = TrackedDict(data, on_change=self._touch)
        self._touch()

    @property
    def quantization_annotation(self) -> TrackedList[onnx.TensorAnnotation]:
        """Quantization annotations, verbatim."""
        return self._quantization_annotation

    @quantization_annotation.setter
    def quantization_annotation(self, data: Iterable[onnx.TensorAnnotation]) -> None:
        self._quantization_annotation = TrackedList(data, on_change=self._touch)
        self._touch()

    @property
    def extra_value_info(self) -> TrackedList[onnx.ValueInfoProto]:
        """value_info entries for names that are not values of this graph (kept verbatim)."""
        return self._extra_value_info

    @extra_value_info.setter
    def extra_value_info(self, data: Iterable[onnx.ValueInfoProto]) -> None:
        self._extra_value_info = TrackedList(data, on_change=self._touch)
        self._touch()

    @property
    def output_info(self) -> TrackedDict[int, onnx.ValueInfoProto]:
        """Original ValueInfoProto of each graph output position, re-emitted verbatim when the
        output still refers to a value that is not defined by this graph's nodes."""
        return self._output_info

    @output_info.setter
    def output_info(self, data: dict[int, onnx.ValueInfoProto]) -> None:
        self._output_info = TrackedDict(data, on_change=self._touch)
        self._touch()

    @property
    def nodes(self) -> list[Node]:
        return list(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self._nodes))

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node: object) -> bool:
        return node in self._nodes

    @property
    def inputs(self) -> tuple[Value, ...]:
        return tuple(self._inputs)

    @property
    def outputs(self) -> tuple[Value, ...]:
        return tuple(self._outputs)

    def set_inputs(self, values: Sequence[Value]) -> None:
        self._inputs = list(values)
        self._input_set = set(values)
        for v in values:
            v.graph = self
        self._touch()

    def set_outputs(self, values: Sequence[Value]) -> None:
        self._outputs = list(values)
        self._output_set = set(values)
        self._touch()

    def replace_output(self, i: int, v: Value) -> None:
        self._outputs[i] = v
        self._output_set = set(self._outputs)
        self._touch()

    # -- nodes -------------------------------------------------------------------------------
    def append(self, node: Node) -> Node:
        """Add ``node`` at the end of the graph (use :meth:`toposort` if order matters)."""
        if node.graph is not None and node.graph is not self:
            raise ValueError(f"{node!r} already belongs to another graph")
        node.graph = self
        self._nodes[node] = None
        for v in node._outputs:
            if v is not None:
                v.graph = self
        for sg in node.all_subgraphs():
            sg.parent = node
            sg._set_model(self.model)
        self._touch()
        return node

    def add_node(
        self,
        op_type: str,
        inputs: Sequence[Value | None],
        num_outputs: int = 1,
        *,
        domain: str = "",
        name: str = "",
        attrs: dict[str, Any] | None = None,
        output_names: Sequence[str] | None = None,
        provenance: str | None = None,
    ) -> Node:
        """Create a node with fresh output values and append it. Returns the node."""
        model = self._require_model()
        outs = []
        for i in range(num_outputs):
            base = output_names[i] if output_names else f"{name or op_type.lower()}_out{i}"
            outs.append(Value(model.unique_name(base)))
        node = Node(op_type, inputs, outs, domain=domain, name=model.unique_node_name(name or op_type))
        for k, v in (attrs or {}).items():
            if v is not None:
                node.attributes[k] = helper.make_attribute(k, v)
        if provenance:
            node.metadata_props.append(onnx.StringStringEntryProto(key=PROVENANCE_KEY, value=provenance))
        return self.append(node)

    def remove(self, nodes: Node | Iterable[Node], *, safe: bool = True) -> None:
        """Remove nodes from the graph, detaching their inputs.

        With ``safe=True`` a node whose outputs are still used outside the removed set, or are
        graph outputs, raises ``ValueError``.
        """
        batch = [nodes] if isinstance(nodes, Node) else list(dict.fromkeys(nodes))
        batch_set = set(batch)
        # Every check runs before the first change, so a refused removal leaves the graph as it was.
        for n in batch:
            if n not in self._nodes:
                raise ValueError(f"{n!r} is not in {self!r}")
        if safe:
            for n in batch:
                for v in n._outputs:
                    if v is None:
                        continue
                    if v.is_graph_output():
                        raise ValueError(f"cannot remove {n!r}: {v.name!r} is a graph output")
                    for user, _ in v._uses:
                        if user not in batch_set and not _inside(user, batch_set):
                            raise ValueError(f"cannot remove {n!r}: {v.name!r} is still used by {user!r}")
        for n in batch:
            n._detach_inputs()
            _detach_captures(n)
            del self._nodes[n]
            n.graph = None
        self._touch()

    # -- values ------------------------------------------------------------------------------
    def add_initializer(self, name: str, data: np.ndarray | onnx.TensorProto) -> Value:
        """Create a new constant value with a unique name derived from ``name``."""
        model = self._require_model()
        v = Value(model.unique_name(name))
        v.graph = self
        v.set_const(data)
        self.initializers[v.name] = v
        self._touch()
        return v

    def remove_initializer(self, v: Value) -> None:
        if self._initializers.get(v.name) is v:
            del self._initializers[v.name]
        v._const = None
        v._sparse_const = None
        v._array_cache = None
        self._touch()

    def _require_model(self) -> Model:
        if self.model is None:
            raise ValueError("graph is not attached to a model")
        return self.model

    def _set_model(self, model: Model | None) -> None:
        self.model = model
        for n in self._nodes:
            for sg in n.all_subgraphs():
                sg._set_model(model)

    # -- traversal ---------------------------------------------------------------------------
    def walk(self) -> Iterator[Node]:
        """All nodes of this graph and of every nested subgraph (pre-order)."""
        stack: list[Iterator[Node]] = [iter(list(self._nodes))]
        while stack:
            try:
                n = next(stack[-1])
            except StopIteration:
                stack.pop()
                continue
            yield n
            subs = list(n.all_subgraphs())
            for sg in reversed(subs):
                stack.append(iter(list(sg._nodes)))

    def all_graphs(self) -> Iterator[Graph]:
        """This graph and every nested subgraph."""
        yield self
        for n in self.walk():
            yield from n.all_subgraphs()

    def values(self) -> Iterator[Value]:
        """Every value defined in this graph's scope (inputs, initializers, node outputs)."""
        seen: set[Value] = set()
        for v in itertools.chain(self._inputs, self.initializers.values()):
            if v not in seen:
                seen.add(v)
                yield v
        for n in self._nodes:
            for out in n._outputs:
                if out is not None and out not in seen:
                    seen.add(out)
                    yield out

    def topological_order(self) -> list[Node]:
        """The nodes in a topological order, keeping the current order wherever it is already
        valid, without reordering the graph.

        Iterative DFS over producers, O(N + E). Uses from nested subgraphs count as dependencies
        of the node that owns the subgraph. Raises ``ValueError`` on a cycle.
        """
        order: list[Node] = []
        state: dict[Node, int] = {}  # 1 = visiting, 2 = done
        nodes = self._nodes
        for root in list(nodes):
            if root in state:
                continue
            stack: list[tuple[Node, Iterator[Node]]] = [(root, _node_deps(root, self))]
            state[root] = 1
            while stack:
                node, it = stack[-1]
                advanced = False
                for dep in it:
                    if dep not in nodes:
                        continue
                    st = state.get(dep)
                    if st == 2:
                        continue
                    if st == 1:
                        raise ValueError(f"graph {self.name!r} has a cycle through {dep!r}")
                    state[dep] = 1
                    stack.append((dep, _node_deps(dep, self)))
                    advanced = True
                    break
                if not advanced:
                    stack.pop()
                    state[node] = 2
                    order.append(node)
        return order

    def toposort(self) -> bool:
        """Reorder nodes topologically (see :meth:`topological_order`); True if the order changed."""
        order = self.topological_order()
        if order != list(self._nodes):
            self._nodes = dict.fromkeys(order)
            self._touch()
            return True
        return False

    def is_topologically_sorted(self) -> bool:
        seen: set[Node] = set()
        for n in self._nodes:
            for dep in _node_deps(n, self):
                if dep in self._nodes and dep not in seen:
                    return False
            seen.add(n)
        return True


def _node_deps(node: Node, graph: Graph) -> Iterator[Node]:
    """Producers (in ``graph``) of the values ``node`` reads, subgraph captures included."""
    for v in node._inputs:
        if v is not None and v.producer is not None:
            yield v.producer
    if node.subgraphs:
        for v in captured_values(node):
            p = v.producer
            # climb to the ancestor of p that lives in `graph`
            while p is not None and p.graph is not graph:
                parent_graph = p.graph
                p = parent_graph.parent if parent_graph is not None else None
            if p is not None:
                yield p


def captured_values(node: Node) -> list[Value]:
    """Values read inside ``node``'s subgraphs that are defined outside them."""
    inner_scopes: set[Graph] = set(node.all_subgraphs())
    for sg in list(inner_scopes):
        inner_scopes.update(sg.all_graphs())
    out: dict[Value, None] = {}
    for sg in node.all_subgraphs():
        for n in sg.walk():
            for v in n._inputs:
                if v is not None and v.graph not in inner_scopes:
                    out[v] = None
        for graph in sg.all_graphs():
            for v in graph._outputs:
                if v.graph not in inner_scopes:
                    out[v] = None
    return list(out)


def _inside(node: Node, batch: set[Node]) -> bool:
    """True if ``node`` lives in a subgraph of a node in ``batch``."""
    g = node.graph
    while g is not None and g.parent is not None:
        if g.parent in batch:
            return True
        g = g.parent.graph
    return False


def _detach_captures(node: Node) -> None:
    """Drop the uses that nodes inside ``node``'s subgraphs hold on outer values."""
    if not node.subgraphs:
        return
    for sg in node.all_subgraphs():
        for n in sg.walk():
            for i, v in enumerate(n._inputs):
                if v is not None and (n, i) in v._uses and not _defined_within(v, node):
                    del v._uses[(n, i)]


def _defined_within(v: Value, node: Node) -> bool:
    g = v.graph
    while g is not None:
        if g.parent is node:
            return True
        g = g.parent.graph if g.parent is not None else None
    return False


class Model:
    """An ONNX model: the main graph plus everything around it.

    ``proto_shell`` is the original ModelProto without its graph: functions, training info,
    metadata and any field this IR does not model are exported from it unchanged.
    """

    def __init__(self, graph: Graph | None = None, *, opset_imports: dict[str, int] | None = None) -> None:
        self._version = 0
        self.proto_shell = onnx.ModelProto()
        self._opset_imports: TrackedDict[str, int] = TrackedDict(
            opset_imports if opset_imports is not None else {"": 21}, on_change=self._touch
        )
        self._ir_version: int = onnx.IR_VERSION
        self.tensor_store: TensorStore | None = None
        #: Whether exports write value_info for intermediate values. Loading sets it to whether
        #: the source model had any: types we infer stay internal unless the user's model
        #: carried them (onnxruntime's optimizer fuses differently once it can prove shapes,
        #: not always for the better).
        self.export_value_info = True
        self._names: set[str] = set()
        self._node_names: set[str] = set()
        self._counter = itertools.count()
        self.graph = graph if graph is not None else Graph("main")
        self.graph._set_model(self)

    # -- version -----------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """A counter bumped by every mutation of the model (read-only).

        Passes never change it by hand: the IR's methods and containers do. The pass context
        compares it before and after a pass, and the analysis cache keys results by it."""
        return self._version

    def _touch(self) -> None:
        self._version += 1

    def reset_version(self) -> None:
        """Start counting edits from zero (the loader calls this once a model is canonical)."""
        self._version = 0

    @property
    def opset_imports(self) -> TrackedDict[str, int]:
        """Opset version by domain (``""`` is the default domain); edits bump the version."""
        return self._opset_imports

    @opset_imports.setter
    def opset_imports(self, data: dict[str, int]) -> None:
        self._opset_imports = TrackedDict(data, on_change=self._touch)
        self._touch()

    @property
    def ir_version(self) -> int:
        return self._ir_version

    @ir_version.setter
    def ir_version(self, value: int) -> None:
        if value != self._ir_version:
            self._ir_version = value
            self._touch()

    @contextlib.contextmanager
    def edit_shell(self) -> Iterator[onnx.ModelProto]:
        """Edit ``proto_shell`` (functions, training info, metadata) in place; the version is
        bumped when the block ends, since protobuf edits cannot be observed."""
        try:
            yield self.proto_shell
        finally:
            self._touch()

    def clone(self) -> Model:
        """A deep copy with fresh node and value ids. External data stays shared (read-only);
        cached arrays are not copied."""
        memo: dict[int, Any] = {}
        if self.tensor_store is not None:
            memo[id(self.tensor_store)] = self.tensor_store
        for g in self.graph.all_graphs():
            for v in g.values():
                if v._array_cache is not None:
                    memo[id(v._array_cache)] = None
        twin: Model = copy.deepcopy(self, memo)
        for g in twin.graph.all_graphs():
            for v in g.values():
                v.id = next(_ids)
            for n in g:
                n.id = next(_ids)
        twin._version = 0
        return twin

    def replace_contents(self, other: Model) -> None:
        """Take over ``other``'s graph and everything around it (opsets, IR version, shell,
        external data store, name registry), in place: for a pass that rebuilds the model
        elsewhere (e.g. through onnx-graphsurgeon) but must mutate the model it was given.
        ``other`` must not be used afterwards. Bumps :attr:`version` past both models'."""
        self.graph = other.graph
        self.proto_shell = other.proto_shell
        self._opset_imports = TrackedDict(other.opset_imports, on_change=self._touch)
        self._ir_version = other.ir_version
        self.tensor_store = other.tensor_store
        self.export_value_info = other.export_value_info
        self._names = other._names
        self._node_names = other._node_names
        self._counter = other._counter
        self.graph._set_model(self)
        self._version = max(self._version, other._version) + 1

    @property
    def functions(self) -> list[onnx.FunctionProto]:
        return list(self.proto_shell.functions)

    def function_keys(self) -> set[tuple[str, str]]:
        return {(f.domain, f.name) for f in self.proto_shell.functions}

    def opset(self, domain: str = "") -> int | None:
        if domain == "ai.onnx":
            domain = ""
        return self.opset_imports.get(domain)

    def unique_name(self, base: str) -> str:
        """A value name not used anywhere in the model; registers it."""
        base = base or "v"
        if base not in self._names:
            self._names.add(base)
            return base
        while True:
            cand = f"{base}__{next(self._counter)}"
            if cand not in self._names:
                self._names.add(cand)
                return cand

    def unique_node_name(self, base: str) -> str:
        base = base or "node"
        if base not in self._node_names:
            self._node_names.add(base)
            return base
        while True:
            cand = f"{base}__{next(self._counter)}"
            if cand not in self._node_names:
                self._node_names.add(cand)
                return cand

    def register_names(self, values: Iterable[str], nodes: Iterable[str] = ()) -> None:
        self._names.update(values)
        self._node_names.update(nodes)

    def num_nodes(self) -> int:
        """Nodes in the main graph and every subgraph."""
        return sum(1 for _ in self.graph.walk())
