"""End to end: release ps_gan, grade real submissions with nbgrader, check scores.

One course, one `nbgrader autograde` call. Besides the model answer (alice) and the
untouched release (bob), each student plants at most one mistake per part; the parts
with a mistake must score 0 and every other part must keep its points (the hidden tests
of train_step and train_gan_1d run the student's code with the reference losses / step,
so an earlier mistake is not counted twice):

    carol  D loss labels swapped           | non-saturating G loss is the saturating one
           saturating loss with the wrong sign | D* inverted p_g / (p_data + p_g)
           no detach in D's step (retain_graph=True, G's grads zeroed later: the final
           weights are right, the gradients still reached G)
           G's Adam built on D's parameters
    dave   D loss as log(sigmoid(.))      | G loss as -log(sigmoid(.))
           saturating loss as log(1 - sigmoid(.))  | D* = 0/0 = nan outside both supports
           G's step also steps D's optimizer        | uniform noise z = torch.rand(...)
    erin   D loss sums instead of averaging | G loss with label 0 (BCE(fake, 0))
           G step before D step             | real data and noise swapped in train_step
    frank  D loss on the real logits only   | D's gradients never zeroed
    gina   D loss averaged over all N + M logits together | G's step uses the saturating loss
    hank   D loss with a clamped probability (finite, but 16.1 instead of 200)

    leo    D loss in float64 for float32 logits | D* computed by dividing p_data in place

Correct answers written differently (ivy, judy) keep full marks; ken calls the reference
implementations and scores 0 on exactly those parts. The visible check of each part already names a
reference call, an input changed in place and a loss of the wrong dtype (a student sees it before
handing in).
"""
import re

import nbformat
import pytest
import torch

from nbgrader_harness import REPO, grade_id, strip_solution_markers
from ps_grading_harness import ProblemSet, ProblemSetTests, edit, whole

ASSIGNMENT, NOTEBOOK = "ps_gan", "gan"
POINTS = {"test_discriminator_loss": 2, "test_generator_loss_non_saturating": 2, "test_generator_loss_saturating": 1,
          "test_optimal_discriminator": 1, "test_train_step": 3, "test_train_gan_1d": 2}
D, NS, SAT, OPT, STEP, LOOP = POINTS

GEN_LOSS = """
def generator_loss(fake_logits, saturating=False):
    if saturating:
        return {sat}
    return {ns}
"""
CORRECT_NS, CORRECT_SAT = "F.softplus(-fake_logits).mean()", "-F.softplus(fake_logits).mean()"


def gen_loss(*costs, ns=CORRECT_NS, sat=CORRECT_SAT):
    return whole("generator_loss", GEN_LOSS.format(ns=ns, sat=sat), *costs)


def d_loss(body, *costs, calls=""):
    return whole("discriminator_loss", f"def discriminator_loss(real_logits, fake_logits):\n    {body}\n", *costs,
                 calls=calls)


def opt(body, *costs):
    return whole("optimal_discriminator", f"def optimal_discriminator(p_data, p_g):\n    {body}\n", *costs)


MISTAKES = {  # name -> a whole cell, or string edits of the model answer, and the part it costs
    "d_labels_swapped": d_loss("return F.softplus(real_logits).mean() + F.softplus(-fake_logits).mean()", D),
    "d_sigmoid_then_log": d_loss("return -torch.log(torch.sigmoid(real_logits)).mean() "
                                 "- torch.log(1 - torch.sigmoid(fake_logits)).mean()", D),
    "d_sum_not_mean": d_loss("return F.softplus(-real_logits).sum() + F.softplus(fake_logits).sum()", D),
    "d_real_only": d_loss("return F.softplus(-real_logits).mean()", D),
    "d_mean_over_all": d_loss("return torch.cat([F.softplus(-real_logits), F.softplus(fake_logits)]).mean()", D),
    "d_clamped": d_loss("d_real = torch.sigmoid(real_logits).clamp(1e-7, 1 - 1e-7)\n"
                        "    d_fake = torch.sigmoid(fake_logits).clamp(1e-7, 1 - 1e-7)\n"
                        "    return -torch.log(d_real).mean() - torch.log(1 - d_fake).mean()", D),
    "ns_is_saturating": gen_loss(NS, ns="-F.softplus(fake_logits).mean()"),
    "ns_label_zero": gen_loss(NS, ns="F.softplus(fake_logits).mean()"),
    "ns_sigmoid_then_log": gen_loss(NS, ns="-torch.log(torch.sigmoid(fake_logits)).mean()"),
    "sat_wrong_sign": gen_loss(SAT, sat="F.softplus(fake_logits).mean()"),
    "sat_sigmoid_then_log": gen_loss(SAT, sat="torch.log(1 - torch.sigmoid(fake_logits)).mean()"),
    "opt_inverted": opt("return p_g / (p_data + p_g)", OPT),
    "opt_nan_outside_supports": opt("return p_data / (p_data + p_g)", OPT),
    "opt_divides_in_place": opt("total = p_data + p_g\n"
                                "    p_data.div_(torch.where(total > 0, total, torch.ones_like(total)))\n"
                                "    return torch.where(total > 0, p_data, torch.full_like(total, 0.5))", OPT),
    "d_returns_float64": d_loss("return F.softplus(-real_logits.double()).mean() + F.softplus(fake_logits.double()).mean()", D),
    "step_no_detach": edit("train_step", [("d_net(fake.detach())", "d_net(fake)"),
                                          ("d_loss.backward()", "d_loss.backward(retain_graph=True)")], STEP),
    "step_g_also_steps_d": edit("train_step", [("    opt_g.step()\n", "    opt_g.step()\n    opt_d.step()\n")], STEP),
    "step_g_first": whole("train_step", """
def train_step(g_net, d_net, real, z, opt_g, opt_d):
    fake = g_net(z)
    g_loss = generator_loss(d_net(fake))
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    d_loss = discriminator_loss(d_net(real), d_net(fake.detach()))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    return d_loss.item(), g_loss.item()
""", STEP),
    "step_d_grads_never_zeroed": edit("train_step", [("    opt_d.zero_grad()\n", "")], STEP),
    "step_saturating_g": edit("train_step", [("generator_loss(d_net(fake))", "generator_loss(d_net(fake), saturating=True)")], STEP),
    "loop_g_optimizer_on_d": edit("train_gan_1d", [("torch.optim.Adam(g_net.parameters()", "torch.optim.Adam(d_net.parameters()")], LOOP),
    "loop_uniform_noise": edit("train_gan_1d", [("z = torch.randn(batch_size, 1, generator=gen)",
                                                 "z = torch.rand(batch_size, 1, generator=gen)")], LOOP),
    "loop_real_and_noise_swapped": edit("train_gan_1d", [("train_step(g_net, d_net, real, z, opt_g, opt_d)",
                                                          "train_step(g_net, d_net, z, real, opt_g, opt_d)")], LOOP),
}

CORRECT = {
    "d_logaddexp": d_loss("zero = torch.zeros((), dtype=real_logits.dtype)\n"
                          "    return torch.logaddexp(zero, -real_logits).mean() + torch.logaddexp(zero, fake_logits).mean()"),
    "d_logsigmoid": d_loss("return -F.logsigmoid(real_logits).mean() - F.logsigmoid(-fake_logits).mean()"),
    "d_stable_by_hand_loop": whole("discriminator_loss", """
def discriminator_loss(real_logits, fake_logits):
    def bce(logits, label):  # max(x, 0) - x y + log(1 + exp(-|x|)), one term at a time
        total = torch.zeros((), dtype=logits.dtype)
        for x in logits:
            total = total + x.clamp(min=0) - x * label + torch.log1p(torch.exp(-x.abs()))
        return total / len(logits)
    return bce(real_logits, 1.0) + bce(fake_logits, 0.0)
"""),
    "g_logaddexp": gen_loss(ns="torch.logaddexp(torch.zeros((), dtype=fake_logits.dtype), -fake_logits).mean()",
                            sat="-torch.logaddexp(torch.zeros((), dtype=fake_logits.dtype), fake_logits).mean()"),
    "g_logsigmoid": gen_loss(ns="-F.logsigmoid(fake_logits).mean()", sat="F.logsigmoid(-fake_logits).mean()"),
    "opt_nan_to_num": opt("return (p_data / (p_data + p_g)).nan_to_num(nan=0.5)"),
    "opt_masked": whole("optimal_discriminator", """
def optimal_discriminator(p_data, p_g):
    out = torch.full_like(p_data, 0.5)
    seen = (p_data + p_g) > 0
    out[seen] = p_data[seen] / (p_data[seen] + p_g[seen])
    return out
"""),
    "step_no_grad_and_frozen_d": whole("train_step", """
def train_step(g_net, d_net, real, z, opt_g, opt_d):
    opt_d.zero_grad()
    with torch.no_grad():
        fake = g_net(z)
    d_loss = discriminator_loss(d_net(real), d_net(fake))
    d_loss.backward()
    opt_d.step()
    for p in d_net.parameters():
        p.requires_grad_(False)
    try:
        opt_g.zero_grad()
        g_loss = generator_loss(d_net(g_net(z)), saturating=False)
        g_loss.backward()
        opt_g.step()
    finally:
        for p in d_net.parameters():
            p.requires_grad_(True)
    return float(d_loss), float(g_loss)
"""),
    "step_zero_both_first": whole("train_step", """
def train_step(g_net, d_net, real, z, opt_g, opt_d):
    opt_g.zero_grad()
    opt_d.zero_grad()
    fake = g_net(z)
    d_loss = discriminator_loss(d_net(real), d_net(fake.detach()))
    d_loss.backward()
    opt_d.step()
    g_loss = generator_loss(d_net(fake))
    g_loss.backward()
    opt_g.step()
    opt_d.zero_grad()
    return d_loss.item(), g_loss.item()
"""),
    "loop_noise_first": edit("train_gan_1d", [(
        "        real = sample_target(batch_size, gen)\n        z = torch.randn(batch_size, 1, generator=gen)\n",
        "        z = torch.randn(batch_size, 1, generator=gen)\n        real = sample_target(batch_size, gen)\n")]),
}

REFERENCE_CALLS = {  # ken hands the work to a reference implementation
    "d_F_binary_cross_entropy_with_logits": d_loss(
        "return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))\n"
        "            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))",
        D, calls="torch.nn.functional.binary_cross_entropy_with_logits"),
    "g_nn_BCEWithLogitsLoss": whole("generator_loss", """
def generator_loss(fake_logits, saturating=False):
    bce = torch.nn.BCEWithLogitsLoss()
    if saturating:
        return -bce(fake_logits, torch.zeros_like(fake_logits))
    return bce(fake_logits, torch.ones_like(fake_logits))
""", NS, SAT, calls="torch.nn.BCEWithLogitsLoss"),
    "step_dlcourse": whole("train_step", """
def train_step(g_net, d_net, real, z, opt_g, opt_d):
    import dlcourse.gan
    return dlcourse.gan.train_step(g_net, d_net, real, z, opt_g, opt_d)
""", STEP, calls="dlcourse.gan.train_step"),
}

STUDENTS = {  # student -> planted answers (at most one per graded cell)
    "carol": ["d_labels_swapped", "ns_is_saturating", "opt_inverted", "step_no_detach", "loop_g_optimizer_on_d"],
    "dave": ["d_sigmoid_then_log", "ns_sigmoid_then_log", "opt_nan_outside_supports", "step_g_also_steps_d",
             "loop_uniform_noise"],
    "erin": ["d_sum_not_mean", "ns_label_zero", "step_g_first", "loop_real_and_noise_swapped"],
    "frank": ["d_real_only", "sat_wrong_sign", "step_d_grads_never_zeroed"],
    "gina": ["d_mean_over_all", "sat_sigmoid_then_log", "step_saturating_g"],
    "hank": ["d_clamped"],
    "leo": ["d_returns_float64", "opt_divides_in_place"],
    "ivy": ["d_logaddexp", "g_logaddexp", "opt_nan_to_num", "step_no_grad_and_frozen_d", "loop_noise_first"],
    "judy": ["d_stable_by_hand_loop", "g_logsigmoid", "opt_masked", "step_zero_both_first"],
    "kim": ["d_logsigmoid"],
    "ken": ["d_F_binary_cross_entropy_with_logits", "g_nn_BCEWithLogitsLoss", "step_dlcourse"],
}
VISIBLE_CHECKS_SAY = {
    ("carol", D): "the labels are swapped", ("erin", D): "summed over the batch", ("gina", D): "averaged together",
    ("frank", D): "term is missing", ("carol", NS): "that is the saturating loss",
    ("erin", NS): "the cross-entropy with label 0", ("frank", SAT): "the sign is wrong",
    ("carol", OPT): "the probability that x is FAKE",
    # the rules: a loss of the wrong dtype, an input changed in place
    ("leo", D): "expected dtype torch.float32, got torch.float64", ("leo", OPT): "changed its input `p_data` in place",
    # carol's step gives the right weights (G's stray gradients are zeroed before G's step): only the
    # check that no gradient reaches G during D's step catches it
    ("carol", STEP): "detach"}
HIDDEN_TESTS_SAY = {("frank", STEP): "D's loss before D's update"}

PS = ProblemSet(ASSIGNMENT, NOTEBOOK, POINTS, {"written_saturation": 2}, MISTAKES, CORRECT, REFERENCE_CALLS, STUDENTS,
                VISIBLE_CHECKS_SAY, HIDDEN_TESTS_SAY, cell_timeout=120)


class TestGan(ProblemSetTests):
    ps = PS


# ------------------------------------------------------------------ the rubric's numbers
def test_written_rubric_numbers_are_the_computed_ones():
    """Every number of the model answer / rubric is one the hidden test recomputes (or one the
    question gives), and every recomputed number appears in the text."""
    nb = nbformat.read(REPO / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    cells = {grade_id(c): c.source for c in nb.cells}
    answer = cells["written_saturation"]
    hidden = cells["test_generator_loss_saturating"]
    computed = set(re.findall(r'"(-?[\d.]+)"', hidden.split("_WRITTEN = {")[1].split("}")[0]))
    in_text = set(re.findall(r"-?\d+\.\d+|(?<![\d.])\d{3,}(?![\d.])", answer))
    given = {"0.001", "0.999"}  # the question's D(G(z)) = 0.001 and 1 - 0.001
    assert computed <= in_text, f"computed but missing from the text: {computed - in_text}"
    assert in_text <= computed | given, f"numbers in the text that no test computes: {in_text - computed - given}"


# ------------------------------------------------- the training part's tolerances hold
def _namespace_with_model_answers(train_gan_source: str):
    """Run the notebook's given code and model answers (train_step from dlcourse.gan) in a dict."""
    from dlcourse import gan

    nb = nbformat.read(REPO / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    ns = {"__name__": "ps_gan_check"}
    exec(next(c.source for c in nb.cells if grade_id(c) == "imports"), ns)
    exec(next(c.source for c in nb.cells if grade_id(c) == "part6_given"), ns)
    ns["train_step"] = gan.train_step
    exec(train_gan_source, ns)
    return ns


@pytest.mark.parametrize("loop_source", ["model", "loop_noise_first"])  # ivy's loop
def test_training_tolerances_hold_for_every_allowed_seed(loop_source):
    nb = nbformat.read(REPO / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    source = (strip_solution_markers(next(c.source for c in nb.cells if grade_id(c) == "train_gan_1d"))
              if loop_source == "model" else PS.planted("ivy")["train_gan_1d"])
    ns = _namespace_with_model_answers(source)
    z = torch.randn(20000, 1, generator=torch.Generator().manual_seed(1000))
    stats = []
    for seed in ns["ALLOWED_SEEDS"]:
        g_net = ns["train_gan_1d"](seed)
        with torch.no_grad():
            x = g_net(z).flatten().double()
        mean, std = x.mean().item(), x.std().item()
        assert abs(mean - ns["TARGET_MEAN"]) < ns["MEAN_TOLERANCE"], (seed, mean)
        low, high = ns["STD_RANGE"]
        assert low < std < high, (seed, std)
        stats.append((seed, round(mean, 3), round(std, 3)))
    print(loop_source, stats)

