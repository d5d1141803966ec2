"""The FGSM explorer (dlcourse.widgets.adversarial): what it computes, and that its controls move it."""
import pytest
import torch
from torch import nn

from dlcourse import adversarial as adv
from dlcourse.widgets import adversarial as wadv


def model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    g = torch.Generator().manual_seed(0)
    return model, torch.rand(6, 1, 4, 4, generator=g), torch.randint(0, 10, (6,), generator=g)


def test_attack_is_fgsm_on_one_image():
    model, x, y = model_and_data()
    a = wadv.attack(model, x, y, 2, 0.2)
    assert torch.equal(a.adversarial, adv.fgsm(model, x[2:3], y[2:3], 0.2)[0])
    assert torch.equal(a.image, x[2]) and a.label == int(y[2])
    assert torch.allclose(a.perturbation, a.adversarial - x[2])
    with torch.no_grad():
        p = model(a.adversarial[None]).softmax(-1)[0]
    assert a.after == (int(p.argmax()), pytest.approx(float(p.max())))
    t = wadv.attack(model, x, y, 2, 0.2, target=7)
    assert torch.equal(t.adversarial, adv.fgsm(model, x[2:3], torch.tensor([7]), 0.2, targeted=True)[0])
    with pytest.raises(IndexError, match="between 0 and 5"):
        wadv.attack(model, x, y, 6, 0.1)


def test_moving_the_controls_changes_the_widget():
    import matplotlib

    matplotlib.use("Agg")
    model, x, y = model_and_data()
    w = wadv.attack_explorer(model, x, y, eps=0.0)
    (index, strength, target), line, _ = w.children[0].children, w.children[1], w.children[2]
    assert "dlcourse-widget" in w._dom_classes
    assert "eps = 0.00" in line.value and "largest pixel change 0.00" in line.value
    strength.value = 0.3
    assert "eps = 0.30" in line.value and "largest pixel change 0.30" in line.value
    before = line.value
    index.value = 4
    assert line.value != before and line.value.startswith(f"true {int(y[4])}:")
    target.value = 3
    assert line.value.startswith(f"true {int(y[4])}:")
