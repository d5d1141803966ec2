"""End to end: release ps_backprop, grade real submissions with nbgrader, check scores.

One course, nine students, one `nbgrader autograde` call. Each wrong answer is the model
answer with one classic mistake planted (a string edit that must apply):

    alice  the full solution                               -> full marks
    bob    the untouched release                           -> 0
    carol  mul overwrites .grad (=) instead of adding (+=) -> 0 on add/mul (its visible test passes)
    dave   power's derivative forgets the "- 1"            -> 0 on power/exp only
    erin   sigmoid's derivative is s instead of s (1 - s)  -> 0 on activations only
    frank  backward as in micrograd: intermediate grads
           are never reset, so a 2nd call over-counts     -> 0 on backward only
    gina   numerical gradient is one-sided (f(x+e)-f(x))/e -> 0 on numerical only
    hank   graph2 uses the slide's local derivatives
           (e^x for the "*(-1)" and "+1" gates)            -> 0 on by-hand only
    ivy    "XOR" with no hidden layer (one tanh neuron)    -> 0 on XOR only

Part 7 trains with the student's own gates, so a broken `add`/`mul` may also cost the
XOR part (carol): that part is not asserted for her. Every other mistake lives in a gate
XOR does not use (power, sigmoid) or in a code path it does not reach (a second backward()
call on the same graph), so XOR must keep its points.
"""
import pytest

from nbgrader_harness import grade_id, graded_test_ids, make_course, solved, strip_solution_markers

ASSIGNMENT, NOTEBOOK = "ps_backprop", "backprop"
POINTS = {"test_add_mul": 2, "test_pow_exp": 2, "test_activations": 2, "test_backward": 3,
          "test_numerical": 2, "test_by_hand": 2, "test_xor": 2}

ONE_NEURON_XOR = """
XOR_POINTS = [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]
XOR_TARGETS = [-1.0, 1.0, 1.0, -1.0]


def train_xor(seed, steps=300, lr=0.05):
    rng = random.Random(seed)
    w = [Node(rng.uniform(-1, 1)) for _ in range(2)]
    b = Node(0.0)

    def forward(x1, x2):
        return tanh(add(add(mul(w[0], x1), mul(w[1], x2)), b))

    for _ in range(steps):
        loss = Node(0.0)
        for (x1, x2), t in zip(XOR_POINTS, XOR_TARGETS):
            diff = add(forward(x1, x2), -t)
            loss = add(loss, mul(diff, diff))
        for p in w + [b]:
            p.grad = 0.0
        backward(loss)
        for p in w + [b]:
            p.data -= lr * p.grad
    return lambda x1, x2: forward(x1, x2).data
"""
# the slide's table: d(a*x)/dx = e^x and d(c+x)/dx = e^x; every other gate as it should be
SLIDE_TABLE_GRAPH2 = """
graph1 = {"q": 3.0, "f": -12.0, "df_dq": -4.0, "df_dx": -4.0, "df_dy": -4.0, "df_dz": 3.0}
d = 2.0 * -1.0 + -3.0 * -2.0 + -3.0
e = -d
g = math.exp(e)
h = 1.0 + g
df_dd = math.exp(d) * math.exp(e) * math.exp(g) * (-1.0 / h ** 2)
graph2 = {"f": 1.0 / h, "df_dw0": -1.0 * df_dd, "df_dx0": 2.0 * df_dd, "df_dw1": -2.0 * df_dd,
          "df_dx1": -3.0 * df_dd, "df_dw2": df_dd}
"""


def planted(course, gid: str, old: str, new: str) -> str:
    """The model answer of cell `gid` with `old` replaced by `new` (which must occur)."""
    source = course.read("solutions", ASSIGNMENT, f"{NOTEBOOK}.ipynb")
    answer = next(strip_solution_markers(c.source) for c in source.cells if grade_id(c) == gid)
    assert old in answer, f"cannot plant the mistake: {old!r} is not in the model answer of {gid}"
    return answer.replace(old, new)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("course"), [ASSIGNMENT])
    mistakes = {
        "carol": {"add_mul": planted(course, "add_mul", "a.grad += b.data * out.grad", "a.grad = b.data * out.grad")},
        "dave": {"pow_exp": planted(course, "pow_exp", "k * a.data ** (k - 1)", "k * a.data ** k")},
        "erin": {"activations": planted(course, "activations", "a.grad += s * (1 - s) * out.grad", "a.grad += s * out.grad")},
        "frank": {"backward": planted(course, "backward", "        if node._prev:\n            node.grad = 0.0\n    root.grad += 1.0",
                                      "        pass\n    root.grad = 1.0")},
        "gina": {"numerical": planted(course, "numerical", "grads.append((f(*up) - f(*down)) / (2 * eps))",
                                      "grads.append((f(*up) - f(*xs)) / eps)")},
        "hank": {"by_hand": SLIDE_TABLE_GRAPH2},
        "ivy": {"xor": ONE_NEURON_XOR},
    }
    course.submit("alice", ASSIGNMENT, NOTEBOOK, solved(course, ASSIGNMENT, NOTEBOOK))
    course.submit("bob", ASSIGNMENT, NOTEBOOK, course.read("exercises", ASSIGNMENT, f"{NOTEBOOK}.ipynb"))
    for student, overrides in mistakes.items():
        course.submit(student, ASSIGNMENT, NOTEBOOK, solved(course, ASSIGNMENT, NOTEBOOK, overrides))
    autograde = course.autograde(ASSIGNMENT, cell_timeout=60)
    return course, autograde, course.scores(ASSIGNMENT, NOTEBOOK)


def parts(scores, student):
    assert scores[student]["graded"], f"{student}'s notebook was not graded"
    return {k: v for k, v in scores[student]["parts"].items() if k in POINTS}


def test_point_table_matches_the_notebook(graded):
    course, *_ = graded
    assert graded_test_ids(course, ASSIGNMENT, NOTEBOOK) == list(POINTS)
    assert len(POINTS) >= 6


def test_full_solution_gets_full_marks(graded):
    _, autograde, scores = graded
    assert parts(scores, "alice") == POINTS, autograde.stdout[-3000:] + autograde.stderr[-3000:]


def test_untouched_release_gets_zero(graded):
    *_, scores = graded
    assert parts(scores, "bob") == dict.fromkeys(POINTS, 0)


def test_overwriting_grad_fails_add_mul_only_among_the_independent_parts(graded):
    *_, scores = graded
    got = parts(scores, "carol")
    assert got["test_add_mul"] == 0
    assert {k: v for k, v in got.items() if k not in ("test_add_mul", "test_xor")} == \
        {k: v for k, v in POINTS.items() if k not in ("test_add_mul", "test_xor")}


@pytest.mark.parametrize("student,part", [("dave", "test_pow_exp"), ("erin", "test_activations"),
                                          ("frank", "test_backward"), ("gina", "test_numerical"),
                                          ("hank", "test_by_hand"), ("ivy", "test_xor")])
def test_each_mistake_loses_exactly_its_part(graded, student, part):
    *_, scores = graded
    assert parts(scores, student) == dict(POINTS, **{part: 0})


def test_planted_mistakes_pass_the_visible_checks(graded):
    """The hidden tests are the real grade: these mistakes slip past the visible checks."""
    course, *_ = graded
    for student, part in [("carol", "test_add_mul"), ("gina", "test_numerical"),
                          ("hank", "test_by_hand")]:
        nb = course.read("autograded", student, ASSIGNMENT, f"{NOTEBOOK}.ipynb")
        cell = next(c for c in nb.cells if grade_id(c) == part)
        text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        assert "visible checks passed" in text, f"{student}: {cell.outputs}"
        error = next(o for o in cell.outputs if o.output_type == "error")
        assert error.ename == "AssertionError" and error.evalue, f"{student}: a hidden test must explain the failure"
