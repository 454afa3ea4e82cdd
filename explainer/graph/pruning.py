"""Dead-node elimination on an ONNX graph."""

from __future__ import annotations

import onnx


def prune(graph: onnx.GraphProto) -> None:
    """Remove nodes and initializers that no graph output depends on (in place)."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            keep.append(node)
            needed.update(node.input)
            for attr in node.attribute:  # subgraphs (If/Loop) read outer tensors
                for sub in list(attr.g.node if attr.HasField("g") else []) + \
                        [n for g in attr.graphs for n in g.node]:
                    needed.update(sub.input)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
