"""End to end: release ps_adversarial, grade real submissions with nbgrader, check scores.

One course, one `nbgrader autograde` call. Besides the model answer (alice) and the
untouched release (bob), each student plants at most one mistake per solution cell. A
mistake must score 0 on the part(s) it belongs to and nothing else: `fgsm` is graded by two
cells (untargeted, targeted), so a mistake in the code both branches share costs both, a
mistake in one branch costs that branch only; part 3's hidden tests run the student's loop
with the reference FGSM, so an FGSM mistake is not charged twice.

Correct answers written differently keep full marks; ken calls the reference implementations
(dlcourse, scikit-learn's roc_auc_score and PCA, SciPy's subspace_angles) and scores 0 on
exactly those parts, and the visible check of each part already names the call (a student sees it
before handing in). leo breaks the visible checks' other rules: his accuracy_under_attack calls
dlcourse's, and his outlier_scores leaves the autoencoder in eval mode.
"""
import re

import nbformat
import pytest

from nbgrader_harness import REPO, grade_id, graded_test_ids, make_course, part_scores, submit_class

ASSIGNMENT, NOTEBOOK = "ps_adversarial", "adversarial"
POINTS = {"test_fgsm": 2, "test_fgsm_targeted": 1, "test_accuracy_under_attack": 2, "test_outlier_scores": 2,
          "test_roc_auc": 2, "test_principal_angles": 2, "test_pca_directions": 1}
FG, FT, ACC, OUT, AUC, ANG, PCA = POINTS
BOTH = (FG, FT)

FGSM = """
def fgsm(model, x, y, eps, targeted=False):
    was_training = model.training
    model.eval()
    try:
        x_ = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(x_), y)
        (grad,) = torch.autograd.grad(loss, x_)
    finally:
        model.train(was_training)
    step = eps * grad.sign()
    x_adv = x.detach() - step if targeted else x.detach() + step
    return x_adv.clamp(0.0, 1.0)
"""
ACCURACY = """
def accuracy_under_attack(model, x, y, eps_list):
    was_training = model.training
    model.eval()
    try:
        accuracies = []
        for eps in eps_list:
            x_adv = fgsm(model, x, y, eps)
            with torch.no_grad():
                accuracies.append((model(x_adv).argmax(dim=1) == y).double().mean().item())
    finally:
        model.train(was_training)
    return accuracies
"""
OUTLIERS = """
def outlier_scores(autoencoder, x):
    was_training = autoencoder.training
    autoencoder.eval()
    try:
        with torch.no_grad():
            return ((autoencoder(x) - x) ** 2).mean(dim=1)
    finally:
        autoencoder.train(was_training)
"""
AUC_SOURCE = """
def roc_auc(scores, labels):
    scores = scores.detach().double().flatten()
    positive = labels.flatten() == 1
    if positive.all() or not positive.any():
        raise ValueError("need at least one outlier and one normal point")
    pos, neg = scores[positive], scores[~positive]
    wins = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
    return wins.mean().item()
"""
ANGLES = """
def principal_angles(a, b):
    qa, _ = torch.linalg.qr(a)
    qb, _ = torch.linalg.qr(b.to(a.dtype))
    cosines = torch.linalg.svdvals(qa.T @ qb).clamp(-1.0, 1.0)
    return torch.arccos(cosines).sort().values
"""
PCA_SOURCE = """
def pca_directions(x, k):
    _, _, vh = torch.linalg.svd(x - x.mean(dim=0), full_matrices=False)
    return vh[:k].T
"""
TEMPLATES = {"fgsm": FGSM, "accuracy_under_attack": ACCURACY, "outlier_scores": OUTLIERS, "roc_auc": AUC_SOURCE,
             "principal_angles": ANGLES, "pca_directions": PCA_SOURCE}


def edit(cell, *edits):
    """The model answer of `cell` with string edits (each must apply)."""
    source = TEMPLATES[cell]
    for old, new in edits:
        assert old in source, f"cannot plant {old!r} in {cell}"
        source = source.replace(old, new)
    return (cell, source)


WRONG = {  # name -> (the parts it must cost, (cell grade_id, source))
    "fgsm_wrong_sign": ((FG,), edit("fgsm", ("if targeted else x.detach() + step", "if targeted else x.detach() - step"))),
    "fgsm_no_clamp": (BOTH, edit("fgsm", ("return x_adv.clamp(0.0, 1.0)", "return x_adv"))),
    "fgsm_grad_left_on_input": (BOTH, edit("fgsm", (
        "        x_ = x.detach().clone().requires_grad_(True)\n        loss = F.cross_entropy(model(x_), y)\n"
        "        (grad,) = torch.autograd.grad(loss, x_)\n",
        "        x.requires_grad_(True)\n        loss = F.cross_entropy(model(x), y)\n        loss.backward()\n"
        "        grad = x.grad\n"), ("x_adv = x.detach() - step if targeted else x.detach() + step",
                                    "x_adv = x.detach() - step if targeted else x.detach() + step\n    x_adv = x_adv.detach()"))),
    "fgsm_training_mode": (BOTH, edit("fgsm", ("    model.eval()\n", ""))),
    "fgsm_mode_not_restored": (BOTH, edit("fgsm", ("        model.train(was_training)\n", "        pass\n"))),
    "fgsm_gradient_not_sign": (BOTH, edit("fgsm", ("step = eps * grad.sign()", "step = eps * grad"))),
    "fgsm_targeted_untargeted_sign": ((FT,), edit("fgsm", ("x.detach() - step if targeted", "x.detach() + step if targeted"))),
    "acc_on_clean_inputs": ((ACC,), edit("accuracy_under_attack", ("(model(x_adv).argmax", "(model(x).argmax"))),
    "acc_eps_list_off_by_one": ((ACC,), edit("accuracy_under_attack", ("for eps in eps_list:", "for eps in eps_list[1:]:"))),
    "acc_model_in_training_mode": ((ACC,), edit("accuracy_under_attack", ("    model.eval()\n", ""))),
    "acc_counts_not_fractions": ((ACC,), edit("accuracy_under_attack", (".double().mean().item()", ".sum().item() * 1.0"))),
    "out_sum_over_features": ((OUT,), edit("outlier_scores", (".mean(dim=1)", ".sum(dim=1)"))),
    "out_mean_over_batch": ((OUT,), edit("outlier_scores", (".mean(dim=1)", ".mean()"))),
    "out_global_autoencoder": ((OUT,), edit("outlier_scores", ("((autoencoder(x) - x)", "((globals()['autoencoder'](x) - x)"))),
    "out_keeps_the_graph": ((OUT,), edit("outlier_scores", ("        with torch.no_grad():\n            return", "        if True:\n            return"))),
    "out_per_feature": ((OUT,), edit("outlier_scores", (".mean(dim=1)", ".mean(dim=0)"))),
    "auc_labels_flipped": ((AUC,), edit("roc_auc", ("positive = labels.flatten() == 1", "positive = labels.flatten() == 0"))),
    "auc_ties_as_wins": ((AUC,), edit("roc_auc", ("(pos[:, None] > neg[None, :])", "(pos[:, None] >= neg[None, :])"),
                                      (" + 0.5 * (pos[:, None] == neg[None, :]).double()", ""))),
    "auc_over_all_pairs": ((AUC,), edit("roc_auc", ("return wins.mean().item()", "return wins.sum().item() / len(scores) ** 2"))),
    "auc_no_value_error": ((AUC,), edit("roc_auc", ('        raise ValueError("need at least one outlier and one normal point")\n',
                                                    "        return float('nan')\n"))),
    "ang_degrees": ((ANG,), edit("principal_angles", ("torch.arccos(cosines).sort().values", "torch.rad2deg(torch.arccos(cosines)).sort().values"))),
    "ang_cosines": ((ANG,), edit("principal_angles", ("torch.arccos(cosines).sort().values", "cosines.sort(descending=True).values"))),
    "ang_not_orthonormalised": ((ANG,), edit("principal_angles", ("torch.linalg.svdvals(qa.T @ qb)", "torch.linalg.svdvals(a.T @ b.to(a.dtype))"))),
    "ang_no_clamp": ((ANG,), edit("principal_angles", (".clamp(-1.0, 1.0)", ""))),
    "ang_descending": ((ANG,), edit("principal_angles", ("torch.arccos(cosines).sort().values", "torch.arccos(cosines).sort(descending=True).values"))),
    "pca_not_centred": ((PCA,), edit("pca_directions", ("torch.linalg.svd(x - x.mean(dim=0)", "torch.linalg.svd(x"))),
    "pca_rows": ((PCA,), edit("pca_directions", ("return vh[:k].T", "return vh[:k]"))),
    "pca_smallest_first": ((PCA,), edit("pca_directions", ("return vh[:k].T", "return vh[-k:].flip(0).T"))),
    "out_mode_not_restored": ((OUT,), edit("outlier_scores", ("        autoencoder.train(was_training)\n", "        pass\n"))),
    "acc_calls_reference": ((ACC,), ("accuracy_under_attack", """
def accuracy_under_attack(model, x, y, eps_list):
    from dlcourse.adversarial import accuracy_under_attack as reference
    return reference(model, x, y, eps_list)
""")),
}

RIGHT = {  # correct answers written differently: each must keep full marks
    "fgsm_backward_on_a_clone": ("fgsm", """
def fgsm(model, x, y, eps, targeted=False):
    mode = model.training
    model.eval()
    x_ = x.clone().detach()
    x_.requires_grad = True
    F.cross_entropy(model(x_), y, reduction="sum").backward()   # sign() ignores the scale
    model.train(mode)
    direction = -1.0 if targeted else 1.0
    return torch.clamp(x + direction * eps * torch.sign(x_.grad), min=0, max=1).detach()
"""),
    "fgsm_log_softmax_and_modules": ("fgsm", """
def fgsm(model, x, y, eps, targeted=False):
    modes = {m: m.training for m in model.modules()}
    model.eval()
    with torch.enable_grad():
        x_ = x.detach().requires_grad_()
        logp = torch.log_softmax(model(x_), dim=1)
        loss = -logp[torch.arange(len(y)), y].mean()
        grad = torch.autograd.grad(loss, [x_])[0]
    for m, training in modes.items():
        m.training = training
    if targeted:
        grad = -grad
    out = x.detach() + eps * torch.sign(grad)
    return torch.minimum(torch.maximum(out, torch.zeros_like(out)), torch.ones_like(out))
"""),
    "acc_loop_and_count": ("accuracy_under_attack", """
def accuracy_under_attack(model, x, y, eps_list):
    before = model.training
    model.eval()
    result = []
    for eps in eps_list:
        attacked = fgsm(model, x, y, float(eps))
        with torch.no_grad():
            predictions = model(attacked).argmax(1)
        correct = sum(int(p == t) for p, t in zip(predictions.tolist(), y.tolist()))
        result.append(correct / len(y))
    model.train(before)
    return result
"""),
    "out_loop_per_row": ("outlier_scores", """
def outlier_scores(autoencoder, x):
    mode = autoencoder.training
    autoencoder.eval()
    rows = []
    for row in x:
        with torch.no_grad():
            rec = autoencoder(row.unsqueeze(0))[0]
        rows.append(((rec - row) ** 2).sum() / row.numel())
    autoencoder.train(mode)
    return torch.stack(rows).detach()
"""),
    "auc_ranks_scipy": ("roc_auc", """
def roc_auc(scores, labels):
    from scipy.stats import rankdata
    s = scores.detach().cpu().numpy().ravel()
    l = labels.detach().cpu().numpy().ravel()
    n1, n0 = int((l == 1).sum()), int((l == 0).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("one class only")
    ranks = rankdata(s)            # ties get their average rank
    return float((ranks[l == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
"""),
    "auc_python_loops": ("roc_auc", """
def roc_auc(scores, labels):
    pos = [s for s, l in zip(scores.tolist(), labels.tolist()) if l == 1]
    neg = [s for s, l in zip(scores.tolist(), labels.tolist()) if l == 0]
    if not pos or not neg:
        raise ValueError("need both classes")
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))
"""),
    "ang_projection_eigh": ("principal_angles", """
def principal_angles(a, b):
    # cos^2 of the angles: the largest eigenvalues of Pa Pb Pa, with P the orthogonal projections
    qa = torch.linalg.svd(a, full_matrices=False)[0]
    qb = torch.linalg.svd(b.to(a.dtype), full_matrices=False)[0]
    m = min(a.shape[1], b.shape[1])
    k = qa.T @ qb
    cos2 = torch.linalg.eigvalsh(k @ k.T if a.shape[1] <= b.shape[1] else k.T @ k).flip(0)[:m]
    return torch.arccos(cos2.clamp(0, 1).sqrt()).sort().values
"""),
    "pca_eigh_of_covariance": ("pca_directions", """
def pca_directions(x, k):
    centred = x - x.mean(0, keepdim=True)
    values, vectors = torch.linalg.eigh(centred.T @ centred / (len(x) - 1))
    return vectors[:, torch.argsort(values, descending=True)[:k]]
"""),
}

CALLS_REFERENCE = {  # ken: each answer hands the work to a reference implementation
    "fgsm": """
def fgsm(model, x, y, eps, targeted=False):
    from dlcourse.adversarial import fgsm as reference
    return reference(model, x, y, eps, targeted=targeted)
""",
    "outlier_scores": """
def outlier_scores(autoencoder, x):
    import dlcourse.autoencoder
    return dlcourse.autoencoder.reconstruction_errors(autoencoder, x)
""",
    "roc_auc": """
def roc_auc(scores, labels):
    from sklearn.metrics import roc_auc_score
    if labels.min() == labels.max():
        raise ValueError("one class only")
    return float(roc_auc_score(labels.numpy(), scores.numpy()))
""",
    "principal_angles": """
def principal_angles(a, b):
    import scipy.linalg
    return torch.tensor(sorted(scipy.linalg.subspace_angles(a.numpy(), b.numpy())), dtype=a.dtype)
""",
    "pca_directions": """
def pca_directions(x, k):
    from sklearn.decomposition import PCA
    return torch.tensor(PCA(k).fit(x.numpy()).components_.T, dtype=x.dtype)
""",
}
KEN_ZERO = ("test_fgsm", "test_fgsm_targeted", "test_outlier_scores", "test_roc_auc", "test_principal_angles",
            "test_pca_directions")

STUDENTS = {  # student -> planted mistakes (at most one per solution cell)
    "carol": ["fgsm_wrong_sign", "acc_on_clean_inputs", "out_sum_over_features", "auc_labels_flipped", "ang_degrees",
              "pca_not_centred"],
    "dave": ["fgsm_no_clamp", "acc_eps_list_off_by_one", "out_mean_over_batch", "auc_ties_as_wins", "ang_cosines",
             "pca_rows"],
    "erin": ["fgsm_grad_left_on_input", "acc_model_in_training_mode", "out_global_autoencoder", "auc_over_all_pairs",
             "ang_not_orthonormalised", "pca_smallest_first"],
    "frank": ["fgsm_training_mode", "acc_counts_not_fractions", "out_keeps_the_graph", "auc_no_value_error",
              "ang_no_clamp"],
    "gina": ["fgsm_mode_not_restored", "out_per_feature", "ang_descending"],
    "hank": ["fgsm_gradient_not_sign"],
    "iris": ["fgsm_targeted_untargeted_sign"],
    "leo": ["acc_calls_reference", "out_mode_not_restored"],
}
VARIANTS = {
    "ivy": ["fgsm_backward_on_a_clone", "acc_loop_and_count", "out_loop_per_row", "auc_ranks_scipy",
            "ang_projection_eigh", "pca_eigh_of_covariance"],
    "judy": ["fgsm_log_softmax_and_modules", "auc_python_loops"],
}


def overrides_for(names, table):
    cells = {}
    for name in names:
        entry = table[name]
        gid, source = entry[1] if isinstance(entry[0], tuple) else entry
        assert gid not in cells, f"two answers for cell {gid}"
        cells[gid] = source
    return cells


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("course"), [ASSIGNMENT])
    class_ = {student: overrides_for(mistakes, WRONG) for student, mistakes in STUDENTS.items()}
    class_.update({student: overrides_for(variants, RIGHT) for student, variants in VARIANTS.items()})
    class_["ken"] = dict(CALLS_REFERENCE)
    submit_class(course, ASSIGNMENT, NOTEBOOK, class_)
    autograde = course.autograde(ASSIGNMENT, cell_timeout=120)
    return course, autograde, course.scores(ASSIGNMENT, NOTEBOOK)


def parts(scores, student):
    return part_scores(scores, student, POINTS)


def test_tables_are_complete():
    planted = [m for mistakes in STUDENTS.values() for m in mistakes]
    assert sorted(planted) == sorted(WRONG) and len(WRONG) >= 10
    used = [v for variants in VARIANTS.values() for v in variants]
    assert sorted(used) == sorted(RIGHT) and len(RIGHT) >= 4
    assert {gid for gid, _ in RIGHT.values()} == set(TEMPLATES) == set(CALLS_REFERENCE) | {"accuracy_under_attack"}


def test_point_table_matches_the_notebook(graded):
    course, *_ = graded
    assert graded_test_ids(course, ASSIGNMENT, NOTEBOOK) == list(POINTS)


def test_templates_are_the_model_answers():
    """The mistakes are planted in the model answer itself, not in a copy that could drift."""
    from nbgrader_harness import strip_solution_markers

    nb = nbformat.read(REPO / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    for cell in nb.cells:
        if grade_id(cell) in TEMPLATES:
            body = strip_solution_markers(cell.source)
            body = "\n".join(line for line in body.split("\n") if '"""' not in line)
            assert body.strip() == TEMPLATES[grade_id(cell)].strip(), grade_id(cell)


def test_full_solution_gets_full_marks(graded):
    _, autograde, scores = graded
    assert parts(scores, "alice") == POINTS, autograde.stdout[-3000:] + autograde.stderr[-3000:]
    assert scores["alice"]["max"]["written_fgsm"] == 2


def test_untouched_release_gets_zero(graded):
    *_, scores = graded
    assert parts(scores, "bob") == dict.fromkeys(POINTS, 0)


@pytest.mark.parametrize("student", sorted(STUDENTS))
def test_each_mistake_costs_exactly_its_parts(graded, student):
    *_, scores = graded
    zeroed = {part for m in STUDENTS[student] for part in WRONG[m][0]}
    expected = {part: 0 if part in zeroed else pts for part, pts in POINTS.items()}
    assert parts(scores, student) == expected, f"{student} ({', '.join(STUDENTS[student])})"


@pytest.mark.parametrize("student", sorted(VARIANTS))
def test_correct_variants_keep_full_marks(graded, student):
    *_, scores = graded
    assert parts(scores, student) == POINTS, f"{student} ({', '.join(VARIANTS[student])})"


def test_calling_the_reference_scores_zero_on_those_parts_with_a_reason(graded):
    course, _, scores = graded
    assert parts(scores, "ken") == dict(POINTS, **dict.fromkeys(KEN_ZERO, 0))
    nb = course.read("autograded", "ken", ASSIGNMENT, f"{NOTEBOOK}.ipynb")
    errors = {grade_id(c): next((o for o in c.get("outputs", []) if o.output_type == "error"), None) for c in nb.cells}
    for part, reference in [("test_fgsm", "dlcourse.adversarial"), ("test_outlier_scores", "dlcourse.autoencoder"),
                            ("test_roc_auc", "roc_auc_score"), ("test_principal_angles", "subspace_angles"),
                            ("test_pca_directions", "PCA")]:
        error = errors[part]
        assert error is not None and reference in error.evalue and "reference implementation" in error.evalue, (part, error)
        visible = next(c for c in nb.cells if grade_id(c) == part)
        printed = "".join(o.get("text", "") for o in visible.get("outputs", []))
        assert "visible tests passed" not in printed, f"{part}: the visible check should already name the call"


def test_visible_checks_name_the_common_mistakes(graded):
    """The release's own checks tell a student what is wrong before they submit."""
    course, *_ = graded
    expected = {("carol", "test_fgsm"): "wrong sign", ("dave", "test_fgsm"): "clamp",
                ("iris", "test_fgsm_targeted"): "AGAINST the gradient", ("carol", "test_outlier_scores"): "SUM over the features",
                ("carol", "test_roc_auc"): "1 - AUC", ("dave", "test_roc_auc"): "ties counted as wins",
                ("carol", "test_principal_angles"): "degrees", ("dave", "test_principal_angles"): "cosines",
                ("frank", "test_principal_angles"): "clamp the cosines", ("carol", "test_pca_directions"): "centre",
                ("erin", "test_fgsm"): "must not change x",
                ("erin", "test_accuracy_under_attack"): "starts in training mode",
                ("leo", "test_accuracy_under_attack"): "dlcourse.adversarial.accuracy_under_attack",
                ("leo", "test_outlier_scores"): "must be left so"}
    for (student, part), phrase in expected.items():
        nb = course.read("autograded", student, ASSIGNMENT, f"{NOTEBOOK}.ipynb")
        cell = next(c for c in nb.cells if grade_id(c) == part)
        error = next((o for o in cell.outputs if o.output_type == "error"), None)
        assert error is not None and phrase in error.evalue, (student, part, error and error.evalue)


def test_accuracy_warns_when_it_does_not_move(graded):
    course, *_ = graded
    nb = course.read("autograded", "carol", ASSIGNMENT, f"{NOTEBOOK}.ipynb")
    cell = next(c for c in nb.cells if grade_id(c) == "test_accuracy_under_attack")
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    assert "WARNING" in text and "ATTACKED inputs" in text


def test_written_rubric_numbers_are_the_computed_ones():
    """Every number of the model answer / rubric is one the hidden test recomputes (or one the
    question gives), and every recomputed number appears in the text."""
    nb = nbformat.read(REPO / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    cells = {grade_id(c): c.source for c in nb.cells}
    answer = cells["written_fgsm"]
    hidden = cells["test_accuracy_under_attack"]
    computed = set(re.findall(r'"(-?[\d.]+)"', hidden.split("_WRITTEN = {")[1].split("}")[0]))
    in_text = set(re.findall(r"\d+\.\d+", answer))
    given = {"0.1", "0.5"}  # the question's eps = 0.1 and the rubric's half points
    assert computed <= in_text, f"computed but missing from the text: {computed - in_text}"
    assert in_text <= computed | given, f"numbers in the text that no test computes: {in_text - computed - given}"
