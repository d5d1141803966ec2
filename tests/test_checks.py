"""dlcourse.checks: the messages students read, and the guard that keeps reference
implementations out of graded answers."""
import pytest
import torch
import torch.nn.functional as F

from dlcourse.checks import ReferenceUsedError, check_close, references_forbidden


def test_check_close_names_the_first_wrong_entry():
    with pytest.raises(AssertionError, match=r"first at index \(1,\): expected 2.5, got 2.0"):
        check_close([1.0, 2.0], [1.0, 2.5], name="x")


def student_via_module(x, w):
    return F.conv2d(x, w)


def student_via_dlcourse(x, w):
    from dlcourse.conv import conv2d
    return conv2d(x, w)


def student_swallows(x, w):
    try:
        return F.conv2d(x, w)
    except Exception:
        return torch.zeros(1)


def student_honest(x, w):
    return (x[..., :2, :2] * w).sum().reshape(1)


X, W = torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2)


@pytest.mark.parametrize("student", [student_via_module, student_via_dlcourse, student_swallows])
def test_a_forbidden_reference_is_caught_however_it_is_reached(student):
    with pytest.raises(ReferenceUsedError, match="conv2d: your code calls .*conv2d"):
        with references_forbidden("torch.nn.functional.conv2d", "torch.conv2d", "dlcourse",
                                  namespace=globals(), part="conv2d"):
            student(X, W)


def test_a_name_imported_into_the_notebook_is_blocked_and_restored():
    namespace = {"my_conv": F.conv2d}
    exec("def student(x, w):\n    return my_conv(x, w)\n", namespace)
    with pytest.raises(ReferenceUsedError):
        with references_forbidden("torch.nn.functional.conv2d", namespace=namespace):
            namespace["student"](X, W)
    assert namespace["my_conv"] is F.conv2d
    assert F.conv2d(X, W).item() == 4.0


def test_honest_code_runs_and_nothing_stays_patched():
    import dlcourse.conv
    before = dlcourse.conv.conv2d
    with references_forbidden("torch.nn.functional.conv2d", "torch.optim", "dlcourse", namespace=globals()):
        assert student_honest(X, W).item() == 4.0
    assert dlcourse.conv.conv2d is before
    assert torch.optim.SGD.__name__ == "SGD"
    check_close([1.0], [1.0])     # dlcourse.checks itself still works


def test_whole_module_blocks_its_classes():
    p = torch.zeros(1, requires_grad=True)
    with pytest.raises(ReferenceUsedError, match="torch.optim"):
        with references_forbidden("torch.optim"):
            torch.optim.SGD([p], lr=0.1)


# ------------------------------------------- check_tensor, check_dtype_like, inputs_unchanged
import numpy as np  # noqa: E402

from dlcourse.checks import InputModifiedError, check_dtype_like, check_tensor, inputs_unchanged  # noqa: E402


@pytest.mark.parametrize("value, message", [
    (np.zeros(3), "out: expected a torch.Tensor, got numpy.ndarray"),
    ([1.0, 2.0], "out: expected a torch.Tensor, got list"),
    (None, r"got None \(did the function forget to `return`\?\)"),
    (torch.zeros(3, dtype=torch.float64), r"expected dtype torch.bool, got torch.float64: use a comparison"),
    (torch.zeros(2, dtype=torch.bool), r"out: expected shape \(3,\), got \(2,\)"),
])
def test_check_tensor_reports_type_then_dtype_then_shape(value, message):
    with pytest.raises(AssertionError, match=message):
        check_tensor(value, dtype=torch.bool, shape=(3,), name="out", hint="use a comparison")


def test_check_tensor_accepts_a_matching_tensor():
    check_tensor(torch.zeros(3, dtype=torch.bool), dtype=torch.bool, shape=(3,))
    check_tensor(torch.zeros(2, 2))


def test_check_dtype_like_names_both_dtypes_and_the_fix():
    x = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(AssertionError, match=r"conv2d\(x\): your output is torch.float32 but the input x was "
                                             r"torch.float64: create buffers with dtype=x.dtype"):
        check_dtype_like(torch.zeros(2), x, name="conv2d(x)")
    with pytest.raises(AssertionError, match="expected a torch.Tensor, got numpy.ndarray"):
        check_dtype_like(np.zeros(2), x)
    check_dtype_like(torch.ones(2, dtype=torch.float64), x)


def in_place_step(param, velocity):
    velocity.mul_(0.9).add_(1.0)
    return param - velocity, velocity


def fresh_step(param, velocity):
    velocity = 0.9 * velocity + 1.0
    new = param.clone()
    new -= velocity          # in place, but on a tensor of its own
    return new, velocity


def test_inputs_unchanged_catches_an_in_place_update_and_names_the_input():
    w, v = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    with pytest.raises(InputModifiedError, match=r"sgd: your code changed its input `velocity` in place "
                                                  r"\(4 of 4 entries\).*scores 0"):
        with inputs_unchanged("sgd", param=w, velocity=v, lr=0.1):
            in_place_step(w, v)


def test_inputs_unchanged_accepts_new_tensors_and_nan_inputs():
    w = torch.tensor([0.0, float("nan")], dtype=torch.float64)
    v = torch.ones(2, dtype=torch.float64)
    with inputs_unchanged("sgd", param=w, velocity=v):
        new_w, new_v = fresh_step(w, v)
    assert torch.equal(v, torch.ones(2, dtype=torch.float64)) and new_v[0].item() == 1.9


def test_inputs_unchanged_lets_the_blocks_own_error_through():
    with pytest.raises(ZeroDivisionError):
        with inputs_unchanged("f", x=torch.zeros(1)):
            1 / 0


def test_check_not_mistake_names_the_mistake_only_when_it_is_made():
    from dlcourse.checks import check_not_mistake

    flipped = [1.0, 4.0, -1.0]
    with pytest.raises(AssertionError, match=r"corr1d: flips the kernel \(got \[1.0, 4.0, -1.0\]\)"):
        check_not_mistake(torch.tensor(flipped, dtype=torch.float64), flipped, "flips the kernel", name="corr1d")
    check_not_mistake([-3.5, -4.25, -4.0], flipped, "flips the kernel")      # another (wrong or right) answer
    check_not_mistake([1.0, 4.0], flipped, "flips the kernel")               # another shape


def test_a_forbidden_module_leaves_what_it_merely_imports_usable():
    # torch.optim imports Tensor from torch: forbidding torch.optim must not break isinstance checks
    from torch import Tensor

    def student(x):
        return isinstance(x, Tensor)

    with references_forbidden("torch.optim", namespace={"Tensor": Tensor}):
        assert student(torch.zeros(1))
        assert torch.Tensor is Tensor


# ------------------------------------------- a package's submodules, imported before or inside the block
@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package `refpkg` on sys.path with two submodules, neither imported yet; `late` calls a
    function of `early` while it is being imported."""
    import sys
    (tmp_path / "refpkg").mkdir()
    (tmp_path / "refpkg" / "__init__.py").write_text("")
    (tmp_path / "refpkg" / "early.py").write_text("def reference(x):\n    return 2 * x\n")
    (tmp_path / "refpkg" / "late.py").write_text(
        "from refpkg.early import reference\nTABLE = [reference(i) for i in range(3)]\n"
        "def other(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "refpkg"
    for name in [n for n in sys.modules if n == "refpkg" or n.startswith("refpkg.")]:
        del sys.modules[name]


def test_a_submodule_first_imported_inside_the_block_is_blocked_too(package):
    import sys
    finders = list(sys.meta_path)
    with pytest.raises(ReferenceUsedError, match="refpkg.early.reference"):
        with references_forbidden(package):
            assert "refpkg.early" not in sys.modules      # nothing of the package is imported ahead
            from refpkg import early
            early.reference(1)
    assert early.reference(1) == 2                        # restored after the block
    assert sys.meta_path == finders                       # and the import hook is gone


def test_a_module_imported_inside_the_block_runs_its_own_top_level_code(package):
    import refpkg.early  # noqa: F401 -- blocked from the start of the block
    with pytest.raises(ReferenceUsedError, match="refpkg.late.other"):
        with references_forbidden(package):
            from refpkg import late                       # its import calls early.reference: allowed
            assert late.TABLE == [0, 2, 4]
            late.other(1)                                 # a call by the student's code: blocked


def test_forbidding_dlcourse_imports_none_of_its_modules():
    import subprocess
    import sys
    code = ("import sys\nfrom dlcourse.checks import references_forbidden\n"
            "with references_forbidden('dlcourse'):\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('dlcourse.')), 'nbformat' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['dlcourse.checks'] False", out


# Every door to a forbidden torch reference that a red team tried: each must raise with the
# friendly message, and the allowed look-alikes (Tensor.unfold, matmul, exp/sum/log) must not.
def _conv_default(x, w, conv=torch.nn.functional.conv2d):   # bound before the block opens
    return conv(x, w)


_X, _W = torch.randn(1, 1, 5, 5), torch.randn(1, 1, 3, 3)
DOORS = {
    "torch.ops.aten.conv2d": lambda: torch.ops.aten.conv2d(_X, _W),
    "torch.ops.aten.convolution": lambda: torch.ops.aten.convolution(_X, _W, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1),
    "torch._C._VariableFunctions.max_pool2d": lambda: torch._C._VariableFunctions.max_pool2d(_X, 2),
    "a default argument bound to F.conv2d": lambda: _conv_default(_X, _W),
    "an nn.Conv2d made before the block": lambda: _CONV(_X),
    "F.unfold": lambda: torch.nn.functional.unfold(_X, 2),
}
_CONV = torch.nn.Conv2d(1, 1, 3)
ALLOWED = {"Tensor.unfold": lambda: _X.unfold(2, 2, 1), "matmul": lambda: _X @ _X, "mul and sum": lambda: (_X * 2).sum()}
CONV_REFERENCES = ("torch.nn.functional.conv2d", "torch.conv2d", "torch.nn.functional.max_pool2d", "torch.max_pool2d",
                   "torch.nn.functional.unfold", "torch.nn.Conv2d")


@pytest.mark.parametrize("door", list(DOORS))
def test_references_forbidden_closes_every_door_to_a_torch_reference(door):
    with pytest.raises(ReferenceUsedError, match="your code calls torch"):
        with references_forbidden(*CONV_REFERENCES, part="conv2d"):
            DOORS[door]()


@pytest.mark.parametrize("call", list(ALLOWED))
def test_references_forbidden_lets_the_allowed_look_alikes_run(call):
    with references_forbidden(*CONV_REFERENCES, part="conv2d"):
        ALLOWED[call]()


def test_a_forbidden_torch_function_is_also_closed_as_a_tensor_method():
    z = torch.randn(3, 4)
    with pytest.raises(ReferenceUsedError, match=r"torch.logsumexp \(through the Tensor method .logsumexp\)"):
        with references_forbidden("torch.logsumexp", part="log_sum_exp"):
            z.logsumexp(dim=1)
    with references_forbidden("torch.logsumexp", part="log_sum_exp"):
        m = z.max(dim=1, keepdim=True).values
        (m + (z - m).exp().sum(dim=1, keepdim=True).log()).squeeze(1)
