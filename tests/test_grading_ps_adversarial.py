"""End to end: release ps_adversarial, grade real submissions with nbgrader, check scores.

One course, one `nbgrader autograde` call. Besides the model answer (alice) and the
untouched release (bob), each student plants at most one mistake per solution cell. A
mistake must score 0 on the part(s) it belongs to and nothing else: `fgsm` is graded by two
cells (untargeted, targeted), so a mistake in the code both branches share costs both, a
mistake in one branch costs that branch only; part 3's hidden tests run the student's loop
with the reference FGSM, so an FGSM mistake is not charged twice. The mistakes are string edits
of the model answer itself, not of a copy that could drift.

Correct answers written differently keep full marks; ken calls the reference implementations
(dlcourse, scikit-learn's roc_auc_score and PCA, SciPy's subspace_angles) and scores 0 on
exactly those parts, and the visible check of each part already names the call (a student sees it
before handing in). leo breaks the visible checks' other rules: his accuracy_under_attack calls
dlcourse's, and his outlier_scores leaves the autoencoder in eval mode.
"""
import re

import nbformat

from nbgrader_harness import REPO, grade_id
from ps_grading_harness import ProblemSet, ProblemSetTests, edit, whole

ASSIGNMENT, NOTEBOOK = "ps_adversarial", "adversarial"
POINTS = {"test_fgsm": 2, "test_fgsm_targeted": 1, "test_accuracy_under_attack": 2, "test_outlier_scores": 2,
          "test_roc_auc": 2, "test_principal_angles": 2, "test_pca_directions": 1}
FG, FT, ACC, OUT, AUC, ANG, PCA = POINTS

MISTAKES = {  # name -> string edits of the model answer and the parts they cost
    "fgsm_wrong_sign": edit("fgsm", [("if targeted else x.detach() + step", "if targeted else x.detach() - step")], FG),
    "fgsm_no_clamp": edit("fgsm", [("return x_adv.clamp(0.0, 1.0)", "return x_adv")], FG, FT),
    "fgsm_grad_left_on_input": edit("fgsm", [(
        "        x_ = x.detach().clone().requires_grad_(True)\n        loss = F.cross_entropy(model(x_), y)\n"
        "        (grad,) = torch.autograd.grad(loss, x_)\n",
        "        x.requires_grad_(True)\n        loss = F.cross_entropy(model(x), y)\n        loss.backward()\n"
        "        grad = x.grad\n"), ("x_adv = x.detach() - step if targeted else x.detach() + step",
                                "x_adv = x.detach() - step if targeted else x.detach() + step\n    x_adv = x_adv.detach()")], FG, FT),
    "fgsm_training_mode": edit("fgsm", [("    model.eval()\n", "")], FG, FT),
    "fgsm_mode_not_restored": edit("fgsm", [("        model.train(was_training)\n", "        pass\n")], FG, FT),
    "fgsm_gradient_not_sign": edit("fgsm", [("step = eps * grad.sign()", "step = eps * grad")], FG, FT),
    "fgsm_targeted_untargeted_sign": edit("fgsm", [
        ("x.detach() - step if targeted", "x.detach() + step if targeted")], FT),
    "acc_on_clean_inputs": edit("accuracy_under_attack", [("(model(x_adv).argmax", "(model(x).argmax")], ACC),
    "acc_eps_list_off_by_one": edit("accuracy_under_attack", [
        ("for eps in eps_list:", "for eps in eps_list[1:]:")], ACC),
    "acc_model_in_training_mode": edit("accuracy_under_attack", [("    model.eval()\n", "")], ACC),
    "acc_counts_not_fractions": edit("accuracy_under_attack", [
        (".double().mean().item()", ".sum().item() * 1.0")], ACC),
    "out_sum_over_features": edit("outlier_scores", [(".mean(dim=1)", ".sum(dim=1)")], OUT),
    "out_mean_over_batch": edit("outlier_scores", [(".mean(dim=1)", ".mean()")], OUT),
    "out_global_autoencoder": edit("outlier_scores", [
        ("((autoencoder(x) - x)", "((globals()['autoencoder'](x) - x)")], OUT),
    "out_keeps_the_graph": edit("outlier_scores", [
        ("        with torch.no_grad():\n            return", "        if True:\n            return")], OUT),
    "out_per_feature": edit("outlier_scores", [(".mean(dim=1)", ".mean(dim=0)")], OUT),
    "auc_labels_flipped": edit("roc_auc", [
        ("positive = labels.flatten() == 1", "positive = labels.flatten() == 0")], AUC),
    "auc_ties_as_wins": edit("roc_auc", [("(pos[:, None] > neg[None, :])", "(pos[:, None] >= neg[None, :])"),
                              (" + 0.5 * (pos[:, None] == neg[None, :]).double()", "")], AUC),
    "auc_over_all_pairs": edit("roc_auc", [
        ("return wins.mean().item()", "return wins.sum().item() / len(scores) ** 2")], AUC),
    "auc_no_value_error": edit("roc_auc", [
        ('        raise ValueError("need at least one outlier and one normal point")\n',
         "        return float('nan')\n")], AUC),
    "ang_degrees": edit("principal_angles", [
        ("torch.arccos(cosines).sort().values", "torch.rad2deg(torch.arccos(cosines)).sort().values")], ANG),
    "ang_cosines": edit("principal_angles", [
        ("torch.arccos(cosines).sort().values", "cosines.sort(descending=True).values")], ANG),
    "ang_not_orthonormalised": edit("principal_angles", [
        ("torch.linalg.svdvals(qa.T @ qb)", "torch.linalg.svdvals(a.T @ b.to(a.dtype))")], ANG),
    "ang_no_clamp": edit("principal_angles", [(".clamp(-1.0, 1.0)", "")], ANG),
    "ang_descending": edit("principal_angles", [
        ("torch.arccos(cosines).sort().values", "torch.arccos(cosines).sort(descending=True).values")], ANG),
    "pca_not_centred": edit("pca_directions", [("torch.linalg.svd(x - x.mean(dim=0)", "torch.linalg.svd(x")], PCA),
    "pca_rows": edit("pca_directions", [("return vh[:k].T", "return vh[:k]")], PCA),
    "pca_smallest_first": edit("pca_directions", [("return vh[:k].T", "return vh[-k:].flip(0).T")], PCA),
    "out_mode_not_restored": edit("outlier_scores", [("        autoencoder.train(was_training)", "        pass")], OUT),
}

CORRECT = {
    "fgsm_backward_on_a_clone": whole("fgsm", """
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
    "fgsm_log_softmax_and_modules": whole("fgsm", """
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
    "acc_loop_and_count": whole("accuracy_under_attack", """
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
    "out_loop_per_row": whole("outlier_scores", """
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
    "auc_ranks_scipy": whole("roc_auc", """
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
    "auc_python_loops": whole("roc_auc", """
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
    "ang_projection_eigh": whole("principal_angles", """
def principal_angles(a, b):
    # cos^2 of the angles: the largest eigenvalues of Pa Pb Pa, with P the orthogonal projections
    qa = torch.linalg.svd(a, full_matrices=False)[0]
    qb = torch.linalg.svd(b.to(a.dtype), full_matrices=False)[0]
    m = min(a.shape[1], b.shape[1])
    k = qa.T @ qb
    cos2 = torch.linalg.eigvalsh(k @ k.T if a.shape[1] <= b.shape[1] else k.T @ k).flip(0)[:m]
    return torch.arccos(cos2.clamp(0, 1).sqrt()).sort().values
"""),
    "pca_eigh_of_covariance": whole("pca_directions", """
def pca_directions(x, k):
    centred = x - x.mean(0, keepdim=True)
    values, vectors = torch.linalg.eigh(centred.T @ centred / (len(x) - 1))
    return vectors[:, torch.argsort(values, descending=True)[:k]]
"""),
}

REFERENCE_CALLS = {  # ken hands the work to a reference implementation
    "fgsm_dlcourse": whole("fgsm", """
def fgsm(model, x, y, eps, targeted=False):
    from dlcourse.adversarial import fgsm as reference
    return reference(model, x, y, eps, targeted=targeted)
""", FG, FT, calls="dlcourse.adversarial.fgsm"),
    "outlier_scores_dlcourse": whole("outlier_scores", """
def outlier_scores(autoencoder, x):
    import dlcourse.autoencoder
    return dlcourse.autoencoder.reconstruction_errors(autoencoder, x)
""", OUT, calls="dlcourse.autoencoder.reconstruction_errors"),
    "roc_auc_sklearn": whole("roc_auc", """
def roc_auc(scores, labels):
    from sklearn.metrics import roc_auc_score
    if labels.min() == labels.max():
        raise ValueError("one class only")
    return float(roc_auc_score(labels.numpy(), scores.numpy()))
""", AUC, calls="sklearn.metrics.roc_auc_score"),
    "principal_angles_scipy": whole("principal_angles", """
def principal_angles(a, b):
    import scipy.linalg
    return torch.tensor(sorted(scipy.linalg.subspace_angles(a.numpy(), b.numpy())), dtype=a.dtype)
""", ANG, calls="scipy.linalg.subspace_angles"),
    "pca_directions_sklearn": whole("pca_directions", """
def pca_directions(x, k):
    from sklearn.decomposition import PCA
    return torch.tensor(PCA(k).fit(x.numpy()).components_.T, dtype=x.dtype)
""", PCA, calls="sklearn.decomposition.PCA"),
    # leo: the visible checks' other rules
    "acc_dlcourse": whole("accuracy_under_attack", """
def accuracy_under_attack(model, x, y, eps_list):
    from dlcourse.adversarial import accuracy_under_attack as reference
    return reference(model, x, y, eps_list)
""", ACC, calls="dlcourse.adversarial.accuracy_under_attack"),
}

STUDENTS = {  # student -> planted answers (at most one per solution cell)
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
    "leo": ["acc_dlcourse", "out_mode_not_restored"],
    "ivy": ["fgsm_backward_on_a_clone", "acc_loop_and_count", "out_loop_per_row", "auc_ranks_scipy",
            "ang_projection_eigh", "pca_eigh_of_covariance"],
    "judy": ["fgsm_log_softmax_and_modules", "auc_python_loops"],
    "ken": ["fgsm_dlcourse", "outlier_scores_dlcourse", "roc_auc_sklearn", "principal_angles_scipy",
            "pca_directions_sklearn"],
}
VISIBLE_CHECKS_SAY = {  # the release's own checks tell a student what is wrong before they submit
    ("carol", FG): "wrong sign", ("dave", FG): "clamp", ("iris", FT): "AGAINST the gradient",
    ("carol", OUT): "SUM over the features", ("carol", AUC): "1 - AUC", ("dave", AUC): "ties counted as wins",
    ("carol", ANG): "degrees", ("dave", ANG): "cosines", ("carol", PCA): "centre", ("erin", FG): "must not change x",
    ("erin", ACC): "starts in training mode", ("leo", OUT): "must be left so"}
HIDDEN_TESTS_SAY = {("frank", ANG): "clamp the cosines"}

PS = ProblemSet(ASSIGNMENT, NOTEBOOK, POINTS, {"written_fgsm": 2}, MISTAKES, CORRECT, REFERENCE_CALLS, STUDENTS,
                VISIBLE_CHECKS_SAY, HIDDEN_TESTS_SAY, cell_timeout=120)


class TestAdversarial(ProblemSetTests):
    ps = PS

    def test_every_function_has_a_reference_to_call(self):
        assert {cell for answer in REFERENCE_CALLS.values() for cell in answer.cells} == {
            cell for answer in CORRECT.values() for cell in answer.cells}

    def test_accuracy_warns_when_it_does_not_move(self, graded):
        printed = graded.cell("carol", ACC).printed
        assert "WARNING" in printed and "ATTACKED inputs" in printed


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
