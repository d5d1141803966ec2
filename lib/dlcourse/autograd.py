"""A scalar automatic-differentiation engine (lecture 02, "Backprop on computational graphs").

Every `Value` remembers the values it was computed from (`_prev`) and how to pass a
gradient back to them (`_backward`, the chain rule for one gate):

    out = a * b          forward:  out.data = a.data * b.data
                         backward: a.grad += b.data * out.grad,  b.grad += a.data * out.grad

`out.backward()` visits the graph in reverse topological order, so a node sends its
gradient on only after every node that uses it has added its share ("+=": a node used
twice collects two contributions). Leaf gradients accumulate across calls, as
`torch.Tensor.grad` does: call `zero_grad()` between training steps.

Beside the reverse mode (`Value`) sits the forward mode (`Dual`, one pass per input),
a numerical gradient check, and a tiny MLP trained on XOR. Same spirit as
micrograd; the tests compare every operation with `torch.autograd` in float64.
"""
import math
import numbers
import random


def _number(x, what: str) -> float:
    """x as a Python float: ints, floats and NumPy scalars (np.float32, np.int64, ...) are
    real numbers (`numbers.Real`), as in micrograd; bools, strings and tensors are not."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{what} must be a real number, got {type(x).__name__}")
    return float(x)


class _DerivedOps:
    """-a, a - b, a / b and the reflected forms, written with the gates +, * and ** only,
    so `Value` (reverse mode) and `Dual` (forward mode) share them and need no extra rules."""

    def __neg__(self):
        return self * -1

    def __sub__(self, other):
        return self + (-self._lift(other))

    def __truediv__(self, other):
        return self * self._lift(other) ** -1

    def __radd__(self, other):
        return self + other

    def __rmul__(self, other):
        return self * other

    def __rsub__(self, other):
        return self._lift(other) - self

    def __rtruediv__(self, other):
        return self._lift(other) / self


class Value(_DerivedOps):
    """A scalar node of a computational graph: `.data` (forward value), `.grad` (d out / d self).

    >>> x, y, z = Value(-2.0), Value(5.0), Value(-4.0)
    >>> f = (x + y) * z
    >>> f.backward()
    >>> f.data, x.grad, y.grad, z.grad
    (-12.0, -4.0, -4.0, 3.0)
    """

    def __init__(self, data, _prev=(), _op: str = "", label: str = ""):
        if isinstance(data, Value):
            raise TypeError("Value(data) needs a number; use the Value itself instead of wrapping it")
        self.data = _number(data, "Value(data)")
        self.grad = 0.0
        self._prev = tuple(_prev)
        self._op = _op
        self._backward = lambda: None
        self.label = label

    # ---------------------------------------------------------------- binary gates
    @staticmethod
    def _lift(other) -> "Value":
        return other if isinstance(other, Value) else Value(_number(other, "operand"))

    def __add__(self, other) -> "Value":
        """a + b; local derivatives d/da = 1, d/db = 1 (the gate copies the gradient)."""
        other = self._lift(other)
        out = Value(self.data + other.data, (self, other), "+")

        def _backward():
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    def __mul__(self, other) -> "Value":
        """a * b; local derivatives d/da = b, d/db = a (the gate swaps its inputs)."""
        other = self._lift(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward():
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    def __pow__(self, k) -> "Value":
        """a ** k for a constant number k; d/da = k * a ** (k - 1). k = -1 is the 1/x gate."""
        if isinstance(k, Value):
            raise TypeError("the exponent must be a number; for a ** b with b a Value use (b * a.log()).exp()")
        k = _number(k, "exponent")
        try:
            result = self.data ** k
        except ZeroDivisionError:
            raise ValueError(f"{self.data} ** {k:g} is undefined (division by zero)") from None
        if isinstance(result, complex):
            raise ValueError(f"{self.data} ** {k:g} is not a real number")
        out = Value(result, (self,), f"**{k:g}")

        def _backward():
            self.grad += k * self.data ** (k - 1) * out.grad

        out._backward = _backward
        return out

    # ----------------------------------------------------------------- unary gates
    def _unary(self, data: float, local_grad: float, op: str) -> "Value":
        out = Value(data, (self,), op)

        def _backward():
            self.grad += local_grad * out.grad

        out._backward = _backward
        return out

    def exp(self) -> "Value":
        """e^a; d/da = e^a."""
        e = math.exp(self.data)
        return self._unary(e, e, "exp")

    def log(self) -> "Value":
        """Natural log; d/da = 1 / a. Needs a > 0."""
        if self.data <= 0:
            raise ValueError(f"log needs a positive input, got {self.data}")
        return self._unary(math.log(self.data), 1.0 / self.data, "log")

    def tanh(self) -> "Value":
        """tanh(a); d/da = 1 - tanh(a)^2."""
        t = math.tanh(self.data)
        return self._unary(t, 1.0 - t * t, "tanh")

    def sigmoid(self) -> "Value":
        """sigma(a) = 1 / (1 + e^-a); d/da = sigma(a) (1 - sigma(a))."""
        s = sigmoid(self.data)
        return self._unary(s, s * (1.0 - s), "sigmoid")

    def relu(self) -> "Value":
        """max(0, a); d/da = 1 if a > 0 else 0 (torch's choice at a = 0, too)."""
        return self._unary(max(0.0, self.data), 1.0 if self.data > 0 else 0.0, "relu")

    # -------------------------------------------------------------------- backward
    def backward(self) -> None:
        """Fill `.grad` of every node of the graph with d self / d node (reverse mode).

        Intermediate nodes are reset first, so their gradients are this call's;
        leaves accumulate (a second call adds the same gradients again, as torch does).
        """
        order = topological_order(self)
        for node in order:
            if node._prev:
                node.grad = 0.0
        self.grad += 1.0
        for node in reversed(order):
            node._backward()

    def zero_grad(self) -> None:
        """Set `.grad = 0` on every node of the graph that ends in this one."""
        for node in topological_order(self):
            node.grad = 0.0

    def __repr__(self) -> str:
        name = f"{self.label}: " if self.label else ""
        return f"Value({name}data={self.data:.4g}, grad={self.grad:.4g})"


def sigmoid(x: float) -> float:
    """1 / (1 + e^-x), computed without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def topological_order(root) -> list:
    """Every node of the graph ending in `root`, once each, every node after its inputs.

    Works on anything with a `_prev` tuple (a `Value`, or the exercise's `Node`).
    Iterative depth-first search, so deep graphs do not hit Python's recursion limit.
    """
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for parent in reversed(node._prev):
            if id(parent) not in seen:
                stack.append((parent, False))
    return order


def numerical_gradient(f, inputs, eps: float = 1e-6) -> list[float]:
    """Central differences: df/dx_i ~ (f(..., x_i + eps, ...) - f(..., x_i - eps, ...)) / (2 eps).

    f is called as f(*values) with one `Value` per input and returns a `Value` or a number;
    inputs: numbers. Costs 2n evaluations of f for n inputs; error O(eps^2).
    """
    eps = _number(eps, "eps")
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    xs = [_number(x, "each input") for x in inputs]

    def evaluate(values):
        out = f(*[Value(v) for v in values])
        return out.data if isinstance(out, Value) else _number(out, "f's result")

    grads = []
    for i in range(len(xs)):
        up, down = list(xs), list(xs)
        up[i] += eps
        down[i] -= eps
        grads.append((evaluate(up) - evaluate(down)) / (2 * eps))
    return grads


# ------------------------------------------------------------------- forward mode
class Dual(_DerivedOps):
    """A dual number a + a' eps (eps^2 = 0): carries one directional derivative forward.

    Forward-mode differentiation: seed x_i' = 1 and every other input' = 0, run the
    function once, read df/dx_i from the result's `.tangent`. Same methods as `Value`,
    so a function written for one runs on the other.
    """

    def __init__(self, value, tangent=0.0):
        self.value = _number(value, "Dual value")
        self.tangent = _number(tangent, "Dual tangent")

    @staticmethod
    def _lift(other) -> "Dual":
        return other if isinstance(other, Dual) else Dual(other)

    def __add__(self, other):
        other = self._lift(other)
        return Dual(self.value + other.value, self.tangent + other.tangent)

    def __mul__(self, other):
        other = self._lift(other)
        return Dual(self.value * other.value, self.tangent * other.value + self.value * other.tangent)

    def __pow__(self, k):
        k = _number(k, "exponent")
        return Dual(self.value ** k, k * self.value ** (k - 1) * self.tangent)

    def exp(self):
        e = math.exp(self.value)
        return Dual(e, e * self.tangent)

    def log(self):
        if self.value <= 0:
            raise ValueError(f"log needs a positive input, got {self.value}")
        return Dual(math.log(self.value), self.tangent / self.value)

    def tanh(self):
        t = math.tanh(self.value)
        return Dual(t, (1 - t * t) * self.tangent)

    def sigmoid(self):
        s = sigmoid(self.value)
        return Dual(s, s * (1 - s) * self.tangent)

    def relu(self):
        return Dual(max(0.0, self.value), self.tangent if self.value > 0 else 0.0)

    def __repr__(self) -> str:
        return f"Dual(value={self.value:.4g}, tangent={self.tangent:.4g})"


def forward_mode_gradient(f, inputs) -> list[float]:
    """All n partial derivatives of a scalar f by forward mode: n passes, one per input."""
    xs = [_number(x, "each input") for x in inputs]
    grads = []
    for i in range(len(xs)):
        out = f(*[Dual(x, 1.0 if j == i else 0.0) for j, x in enumerate(xs)])
        grads.append(out.tangent if isinstance(out, Dual) else 0.0)
    return grads


# --------------------------------------------------------------- a tiny MLP on Values
class Neuron:
    """act(sum_i w_i x_i + b) with weights drawn uniformly from [-1, 1] by `rng`."""

    def __init__(self, n_inputs: int, rng: random.Random, activation: str = "tanh"):
        if activation not in ("tanh", "sigmoid", "relu", "linear"):
            raise ValueError(f"activation must be 'tanh', 'sigmoid', 'relu' or 'linear', got {activation!r}")
        self.w = [Value(rng.uniform(-1, 1)) for _ in range(n_inputs)]
        self.b = Value(0.0)
        self.activation = activation

    def __call__(self, x):
        if len(x) != len(self.w):
            raise ValueError(f"neuron expects {len(self.w)} inputs, got {len(x)}")
        z = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
        return z if self.activation == "linear" else getattr(z, self.activation)()

    def parameters(self) -> list[Value]:
        return self.w + [self.b]


class MLP:
    """Fully connected layers of `Neuron`s: sizes (n_in, h_1, ..., n_out).

    Hidden units use `activation` ("tanh", "relu", "sigmoid" or "linear"), the output layer
    `out_activation`. `MLP([2, 4, 1], seed=0)` maps 2 inputs through 4 tanh units to 1 tanh output.
    """

    def __init__(self, sizes, seed: int = 0, out_activation: str = "tanh", activation: str = "tanh"):
        if len(sizes) < 2 or any(int(s) != s or s < 1 for s in sizes):
            raise ValueError(f"sizes must list at least two positive ints, got {sizes!r}")
        rng = random.Random(seed)
        self.layers = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            act = out_activation if i == len(sizes) - 2 else activation
            self.layers.append([Neuron(n_in, rng, act) for _ in range(n_out)])

    def __call__(self, x):
        for layer in self.layers:
            x = [neuron(x) for neuron in layer]
        return x[0] if len(x) == 1 else x

    def parameters(self) -> list[Value]:
        return [p for layer in self.layers for neuron in layer for p in neuron.parameters()]

    def zero_grad(self) -> None:
        """Set every parameter's `.grad` to 0 (gradients accumulate across `backward` calls)."""
        for p in self.parameters():
            p.grad = 0.0


def train_mlp(model: MLP, xs, ys, steps: int = 100, lr: float = 0.1) -> list[float]:
    """Full-batch gradient descent on the square loss sum_i (model(x_i) - y_i)^2; returns the losses.

    Each step: forward, `model.zero_grad()`, `backward`, then p <- p - lr * p.grad.
    """
    if steps < 1 or lr <= 0:
        raise ValueError(f"steps must be >= 1 and lr > 0, got steps={steps}, lr={lr}")
    params = model.parameters()
    losses = []
    for _ in range(steps):
        loss = sum(((model(x) - y) ** 2 for x, y in zip(xs, ys)), Value(0.0))
        model.zero_grad()
        loss.backward()
        for p in params:
            p.data -= lr * p.grad
        losses.append(loss.data)
    return losses
