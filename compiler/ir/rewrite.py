"""Use-def edits shared by every pass: replacing uses, renaming, and graph-output bookkeeping."""

from __future__ import annotations

from onnxforge.ir.core import Graph, Node, Value


def replace_all_uses_with(old: Value, new: Value) -> None:
    """Make every reader of ``old`` read ``new`` instead, graph outputs included.

    Graph outputs keep their names and declared types: when ``old`` is an output of its graph,
    either ``new`` takes over the name (when ``new`` is a plain intermediate value of the same
    graph) or an ``Identity`` node is inserted that produces a value with the output's name.
    """
    if old is new:
        return
    for node, idx in list(old._uses):
        node.set_input(idx, new)
    graph = old.graph
    if graph is not None and old in graph._output_set:
        _retarget_outputs(graph, old, new)


def _retarget_outputs(graph: Graph, old: Value, new: Value) -> None:
    model = graph._require_model()
    can_rename = (
        new.graph is graph
        and new.producer is not None
        and new.producer.graph is graph
        and new not in graph._output_set
        and new not in graph._input_set
        and new.const is None
    )
    out_name = old.name
    old_type, old_doc, old_meta = old.type, old.doc_string, old.metadata_props
    # Free the output's name: the old value is about to become dead.
    old.name = model.unique_name(f"{out_name}__replaced")
    if can_rename:
        new.name = out_name
        target = new
    else:
        ident = graph.add_node("Identity", [new], output_names=[out_name + "__tmp"], name=f"{out_name}_keep")
        target = ident._outputs[0]
        assert target is not None
        target.name = out_name
    if old_type is not None:
        target.type = old_type
    target.doc_string = old_doc
    target.metadata_props = list(old_meta)
    for i, v in enumerate(graph._outputs):
        if v is old:
            graph._outputs[i] = target
            graph.output_info.pop(i, None)
    graph._output_set = set(graph._outputs)
    graph._touch()


def bypass(node: Node, input_index: int = 0, output_index: int = 0) -> None:
    """Replace ``node``'s output by one of its inputs and remove the node (for no-ops)."""
    src = node.input(input_index)
    out = node.output(output_index)
    if src is None or out is None:
        raise ValueError(f"cannot bypass {node!r}: missing input or output")
    graph = node.graph
    replace_all_uses_with(out, src)
    if graph is not None and all(v is None or (not v._uses and not v.is_graph_output()) for v in node._outputs):
        graph.remove(node)
