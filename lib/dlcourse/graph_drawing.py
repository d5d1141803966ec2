"""Draw a computational graph with matplotlib alone (lecture 02): no graphviz binary.

Each node of a `dlcourse.autograd.Value` graph becomes a box showing its name (a leaf's
label, or the gate that made it), its forward value (black) and its gradient (red);
arrows run from inputs to the gate that uses them. Columns are graph depth: a gate sits
one column right of its deepest input, a leaf one column left of its first user.
"""
import matplotlib.pyplot as plt

from dlcourse.autograd import topological_order


def graph_layout(root) -> dict:
    """{id(node): (column, row)} for every node of the graph ending in `root`."""
    order = topological_order(root)
    depth = {}
    for node in order:  # gates: one right of their deepest input
        if node._prev:
            depth[id(node)] = 1 + max(depth.get(id(p), 0) for p in node._prev)
    users = {}
    for node in order:
        for p in node._prev:
            users.setdefault(id(p), []).append(depth[id(node)])
    for node in order:  # leaves: one left of their first user
        if not node._prev:
            depth[id(node)] = min(users.get(id(node), [1])) - 1
    columns = {}
    for node in order:
        columns.setdefault(depth[id(node)], []).append(node)
    position = {}
    for col, nodes in columns.items():
        for row, node in enumerate(nodes):
            position[id(node)] = (col, row - (len(nodes) - 1) / 2)
    return position


def node_text(node, digits: int = 2) -> str:
    """Box text: name, then value and gradient rounded to `digits`."""
    name = node.label or node._op or f"{node.data:g}"
    if node.label and node._op:
        name = f"{node.label} = {node._op}"
    return f"{name}\n{node.data:.{digits}f}\n{node.grad:.{digits}f}"


def draw_graph(root, ax=None, digits: int = 2, figsize=None, values=None, grads=None, highlight=None,
               title: str = "value (black) and gradient (red) of every node"):
    """Draw the graph ending in `root`; returns the matplotlib Axes.

    Run `root.backward()` first to see gradients (otherwise they show as 0). `values` and
    `grads` ({id(node): number or None}) replace what is shown, None printing "?" (a pass
    half done); `highlight` is the id of a node to outline in orange.
    """
    position = graph_layout(root)
    n_cols = 1 + max(c for c, _ in position.values()) - min(c for c, _ in position.values())
    n_rows = 1 + max(r for _, r in position.values()) - min(r for _, r in position.values())
    if ax is None:
        _, ax = plt.subplots(figsize=figsize or (max(4.0, 1.15 * n_cols), max(2.0, 0.9 * n_rows + 0.6)))

    def shown(number) -> str:
        return "?" if number is None else f"{number:.{digits}f}"

    for node in topological_order(root):
        x, y = position[id(node)]
        for parent in node._prev:
            px, py = position[id(parent)]
            ax.annotate("", xy=(x - 0.33, y), xytext=(px + 0.33, py),
                        arrowprops=dict(arrowstyle="->", color="0.5", lw=0.8, shrinkA=0, shrinkB=0))
        name, value, grad = node_text(node, digits).split("\n")
        if values is not None:
            value = shown(values[id(node)])
        if grads is not None:
            grad = shown(grads[id(node)])
        style = dict(ha="center", va="center", fontsize=7)
        active = id(node) == highlight
        box = dict(boxstyle="round,pad=0.3", fc="#e8f0fe" if node._prev else "#fff5d6",
                   ec="tab:orange" if active else "0.4", lw=2.0 if active else 0.7)
        ax.text(x, y + 0.2, name, fontweight="bold", bbox=box, **style)
        ax.text(x, y - 0.05, value, color="black", **style)
        ax.text(x, y - 0.27, grad, color="tab:red", **style)
    cols = [c for c, _ in position.values()]
    rows = [r for _, r in position.values()]
    ax.set_xlim(min(cols) - 0.5, max(cols) + 0.5)
    ax.set_ylim(min(rows) - 0.55, max(rows) + 0.5)
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    return ax
