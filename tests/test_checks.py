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
