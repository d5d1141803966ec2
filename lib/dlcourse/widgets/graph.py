"""Step through the forward and backward pass of a computational graph (lecture 02).

    from dlcourse.widgets.graph import graph_stepper
    graph_stepper("(x + y) z")            # or "sigmoid neuron"

`walk(root)` records what the lecture does by hand: the forward pass computes one node after
another, the backward pass starts with d out / d out = 1 and runs each gate's backward step
in reverse order, multiplying the gate's local derivative by the gradient that arrived and
adding it to the gate's inputs. Every step keeps the values and the gradients known so far,
so a drawing can show "?" for what is not computed yet. `graph_stepper` wraps it in ipywidgets:
edit the inputs, move through the steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from dlcourse.autograd import Value, topological_order

# the deck's two examples: inputs and their values on the slides
EXPRESSIONS = {
    "(x + y) z": {"x": -2.0, "y": 5.0, "z": -4.0},
    "sigmoid neuron": {"w0": 2.0, "x0": -1.0, "w1": -3.0, "x1": -2.0, "w2": -3.0},
}


def build(expression: str, values: dict[str, float]) -> tuple[Value, dict[str, Value]]:
    """The graph of one of EXPRESSIONS with the given input values: (output node, inputs)."""
    if expression not in EXPRESSIONS:
        raise ValueError(f"expression must be one of {sorted(EXPRESSIONS)}, got {expression!r}")
    missing = set(EXPRESSIONS[expression]) - set(values)
    if missing:
        raise ValueError(f"missing input values: {sorted(missing)}")
    v = {name: Value(float(values[name]), label=name) for name in EXPRESSIONS[expression]}
    if expression == "(x + y) z":
        q = v["x"] + v["y"]
        q.label = "q"
        out = q * v["z"]
    else:  # sigma(w0 x0 + w1 x1 + w2), gate by gate as on the slide: *, +, *-1, exp, +1, 1/x
        d = v["w0"] * v["x0"] + v["w1"] * v["x1"] + v["w2"]
        d.label = "d"
        out = ((d * -1).exp() + 1) ** -1
    out.label = "f"
    return out, v


@dataclass
class Step:
    """What is known after one step: values and gradients by node id (None = not yet)."""

    title: str
    values: dict[int, float | None]
    grads: dict[int, float | None]
    active: int | None = None                       # the node this step worked on
    local: dict[str, float] = field(default_factory=dict)   # input name -> local derivative


def _name(node: Value) -> str:
    return node.label or node._op or f"{node.data:g}"


def walk(root: Value) -> list[Step]:
    """The forward pass node by node, then the backward pass gate by gate (see module doc).
    Leaves whose value is a constant of the formula (like the 1 of "+1") count as known inputs.
    The gradients in the last step equal those of `root.backward()`."""
    order = topological_order(root)
    values = {id(n): (n.data if not n._prev else None) for n in order}
    grads = {id(n): None for n in order}
    steps = [Step("inputs", dict(values), dict(grads))]
    for node in order:
        if node._prev:
            values[id(node)] = node.data
            args = ", ".join(f"{_name(p)} = {p.data:.4g}" for p in node._prev)
            steps.append(Step(f"forward: {_name(node)} = {node._op}({args}) = {node.data:.4g}",
                              dict(values), dict(grads), id(node)))
    for node in order:
        node.grad = 0.0
    root.grad = 1.0
    grads[id(root)] = 1.0
    steps.append(Step(f"backward: d{_name(root)}/d{_name(root)} = 1", dict(values), dict(grads), id(root)))
    for node in reversed(order):
        if not node._prev:
            continue
        before = {id(p): p.grad for p in node._prev}
        node._backward()
        local = {}
        for p in node._prev:
            grads[id(p)] = p.grad
            if node.grad != 0:
                local[_name(p)] = (p.grad - before[id(p)]) / node.grad
        parts = ", ".join(f"local d{_name(node)}/d{k} = {v:.4g}" for k, v in local.items())
        steps.append(Step(f"backward through {node._op} at {_name(node)} (gradient {node.grad:.4g}): {parts}",
                          dict(values), dict(grads), id(node), local))
    return steps


def draw_step(root: Value, step: Step, ax=None):
    """The graph with each node's value (black) and gradient (red) as known at `step`
    ("?" where not computed yet); the node the step worked on is outlined in orange."""
    from dlcourse.graph_drawing import draw_graph

    return draw_graph(root, ax=ax, digits=3, values=step.values, grads=step.grads, highlight=step.active,
                      title="value (black) and gradient (red); ? = not computed yet")


def graph_stepper(expression: str = "(x + y) z"):
    """Pick an expression, edit its inputs, and step through forward and backward passes."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    choice = widgets.Dropdown(options=list(EXPRESSIONS), value=expression, description="graph")
    inputs_box = widgets.HBox()
    slider = widgets.IntSlider(min=0, max=1, value=0, description="step", continuous_update=False)
    back, forward = widgets.Button(description="◀ back"), widgets.Button(description="next ▶")
    line = widgets.HTML()
    picture = widgets.Output()
    state: dict = {}

    def rebuild(_change=None, keep_step: bool = False) -> None:
        values = {box.description: box.value for box in inputs_box.children}
        root, _ = build(choice.value, values)
        state["root"], state["steps"] = root, walk(root)
        old = slider.value
        slider.max = len(state["steps"]) - 1
        if keep_step and old <= slider.max:
            show(old)
        elif slider.value == 0:
            show(0)
        else:
            slider.value = 0

    def new_inputs(_change=None) -> None:
        boxes = [widgets.FloatText(value=v, description=k, layout=widgets.Layout(width="150px"),
                                   style={"description_width": "30px"}) for k, v in EXPRESSIONS[choice.value].items()]
        for box in boxes:
            box.observe(lambda change: rebuild(keep_step=True), names="value")
        inputs_box.children = boxes
        rebuild()

    def show(index: int) -> None:
        step = state["steps"][index]
        line.value = f"<b>step {index} of {len(state['steps']) - 1}</b>: {step.title}"
        with picture:
            picture.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7.5, 3.2))
            draw_step(state["root"], step, ax)
            display(fig)
            plt.close(fig)

    slider.observe(lambda change: show(change["new"]), names="value")
    back.on_click(lambda _: setattr(slider, "value", max(0, slider.value - 1)))
    forward.on_click(lambda _: setattr(slider, "value", min(slider.max, slider.value + 1)))
    choice.observe(new_inputs, names="value")
    new_inputs()
    container = widgets.VBox([widgets.HBox([choice, back, forward, slider]), inputs_box, line, picture])
    container.add_class("dlcourse-widget")
    return container

