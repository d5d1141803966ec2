"""End to end: release ps_bert_masking, grade real submissions with nbgrader, check scores.

One course, one `nbgrader autograde` call. Besides the model answer (alice) and the untouched
release (bob), each student plants at most one answer per part: a common mistake (MISTAKES), which
must cost exactly the points of its part, or a correct answer written differently (CORRECT), which
must keep them:

    carol  selects special/padding tokens | NSP IsNext 70% of the time | first [SEP] in segment 1
           scores divided by d, not sqrt(d) | count without the LayerNorms
    dave   90/5/5 instead of 80/10/10 | NSP labels swapped | attention mask 1 at padding
           causal mask lets queries see the future | count without the pooler
    erin   labels = input ids everywhere | NotNext B may come from A's own document
           causal mask hides the diagonal too | count without position embeddings  + a padded-by-slicing pair
    frank  changes input_ids in place | softmax over the queries | count without biases
           + NSP with rejection sampling
    gina   random replacements drawn from the whole vocabulary (specials included)
           + attention with einsum, -1e9 and a hand-written softmax, a count built from torch layers
    hank   15% of *all* positions (specials and padding counted) chosen among the real tokens
           + the count written as one grouped formula
    judy   + masking with a Python loop over the tokens
    kim    + masking whose random token always differs from the original (the deck's wording)
    leo    attention that scales q in place (q /= sqrt(d)): right values, the caller's q changed
           masking that draws its selection from the global generator, not `generator`
    mia    attention computed and returned in float64 for float32 inputs | NSP coin from the global generator
    ken    calls the references (dlcourse.bert, F.scaled_dot_product_attention): 0 on every part

The visible checks already name a reference call, an input changed in place, a wrong dtype and a label
put on a special token (saying which: [CLS], [SEP], ...), so a student sees them before handing in.

The random parts are graded statistically at fixed seeds, with bounds of six standard deviations, so
the correct variants (which draw their random numbers in other orders) pass, and the wrong shares
miss by many times the bound.
"""
import re

import nbformat

from nbgrader_harness import REPO
from ps_grading_harness import Answer, ProblemSet, ProblemSetTests, whole

ASSIGNMENT, NOTEBOOK = "ps_bert_masking", "bert_masking"
POINTS = {"test_mask_tokens": 3, "test_nsp_pairs": 2, "test_encode_pair": 2, "test_attention": 2,
          "test_parameter_count": 2, "test_written_key": 0}
MASK, NSP, PAIR, ATT, COUNT, _ = POINTS

# the mistakes are planted in these simplified model answers (no device handling, no docstrings)
MASK_TEMPLATE = """
def mask_tokens(input_ids, *, mask_token_id, vocab_size, special_ids, mlm_probability=0.15, generator=None):
    special = torch.tensor(sorted(set(special_ids) | {mask_token_id}))
    selected = ~torch.isin(input_ids, special)
    selected &= torch.rand(input_ids.shape, generator=generator) < mlm_probability
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
    action = torch.rand(input_ids.shape, generator=generator)
    allowed = torch.arange(vocab_size)
    allowed = allowed[~torch.isin(allowed, special)]
    random_ids = allowed[torch.randint(len(allowed), input_ids.shape, generator=generator)]
    inputs = input_ids.clone()
    inputs[selected & (action < 0.8)] = mask_token_id
    to_random = selected & (action >= 0.8) & (action < 0.9)
    inputs[to_random] = random_ids[to_random]
    return inputs, labels
"""
NSP_TEMPLATE = """
def make_nsp_pairs(documents, generator=None):
    pairs = []
    for d, doc in enumerate(documents):
        for i in range(len(doc) - 1):
            if torch.rand((), generator=generator).item() < 0.5:
                pairs.append((doc[i], doc[i + 1], 1))
            else:
                other = torch.randint(len(documents) - 1, (), generator=generator).item()
                other += other >= d
                j = torch.randint(len(documents[other]), (), generator=generator).item()
                pairs.append((doc[i], documents[other][j], 0))
    return pairs
"""
PAIR_TEMPLATE = """
def encode_pair(a_ids, b_ids, cls_id, sep_id, pad_id, max_length):
    ids = [cls_id] + list(a_ids) + [sep_id] + list(b_ids) + [sep_id]
    pad = max_length - len(ids)
    segments = [0] * (len(a_ids) + 2) + [1] * (len(b_ids) + 1) + [0] * pad
    mask = [1] * len(ids) + [0] * pad
    return torch.tensor(ids + [pad_id] * pad), torch.tensor(segments), torch.tensor(mask)
"""
ATT_TEMPLATE = """
def scaled_dot_product_attention(q, k, v, causal=False):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        allowed = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
"""
COUNT_TEMPLATE = """
def bert_parameter_count(vocab_size, hidden_size, num_layers, intermediate_size, max_position=512,
                         type_vocab_size=2, pooler=True):
    h, i = hidden_size, intermediate_size
    embeddings = (vocab_size + max_position + type_vocab_size) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    return embeddings + num_layers * layer + (h * h + h if pooler else 0)
"""
TEMPLATES = {"mask_tokens": MASK_TEMPLATE, "make_nsp_pairs": NSP_TEMPLATE, "encode_pair": PAIR_TEMPLATE,
             "scaled_dot_product_attention": ATT_TEMPLATE, "bert_parameter_count": COUNT_TEMPLATE}


def on_template(cell: str, pairs: list[tuple[str, str]], part: str) -> Answer:
    """The template of `cell` with each (old, new) of `pairs` applied, costing `part`."""
    source = TEMPLATES[cell]
    for old, new in pairs:
        assert old in source, f"cannot plant {old!r} in {cell}"
        source = source.replace(old, new)
    return whole(cell, source, part)


MISTAKES = {  # name -> edits of a template, or a whole cell, and the part it costs
    "masks_specials": on_template("mask_tokens", [("selected = ~torch.isin(input_ids, special)",
                                                   "selected = torch.ones_like(input_ids, dtype=torch.bool)")], MASK),
    "share_90_5_5": on_template("mask_tokens", [("(action < 0.8)", "(action < 0.9)"),
                                                ("(action >= 0.8) & (action < 0.9)", "(action >= 0.9) & (action < 0.95)")], MASK),
    "labels_everywhere": on_template("mask_tokens", [
        ("labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))",
         "labels = input_ids.clone()")], MASK),
    "modifies_input": on_template("mask_tokens", [("inputs = input_ids.clone()", "inputs = input_ids")], MASK),
    "random_includes_specials": on_template("mask_tokens", [(
        "random_ids = allowed[torch.randint(len(allowed), input_ids.shape, generator=generator)]",
        "random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)")], MASK),
    "fifteen_percent_of_all_positions": on_template("mask_tokens", [(
        "    selected = ~torch.isin(input_ids, special)\n"
        "    selected &= torch.rand(input_ids.shape, generator=generator) < mlm_probability\n",
        "    real = ~torch.isin(input_ids, special).flatten()\n"
        "    k = round(mlm_probability * input_ids.numel())          # counts specials and padding too\n"
        "    order = torch.randperm(input_ids.numel(), generator=generator)\n"
        "    chosen = order[real[order]][:k]\n"
        "    selected = torch.zeros(input_ids.numel(), dtype=torch.bool)\n"
        "    selected[chosen] = True\n"
        "    selected = selected.view(input_ids.shape)\n")], MASK),
    "nsp_70_30": on_template("make_nsp_pairs", [("< 0.5", "< 0.7")], NSP),
    "nsp_ignores_generator": on_template("make_nsp_pairs", [
        ("if torch.rand((), generator=generator).item() < 0.5:", "if torch.rand(()).item() < 0.5:")], NSP),
    "mask_ignores_generator": on_template("mask_tokens", [
        ("selected &= torch.rand(input_ids.shape, generator=generator) < mlm_probability",
         "selected &= torch.rand(input_ids.shape) < mlm_probability")], MASK),
    "nsp_labels_swapped": on_template("make_nsp_pairs", [
        ("doc[i + 1], 1)", "doc[i + 1], 0)"), ("documents[other][j], 0)", "documents[other][j], 1)")], NSP),
    "nsp_same_document": on_template("make_nsp_pairs", [
        ("torch.randint(len(documents) - 1, ", "torch.randint(len(documents), "),
        ("                other += other >= d\n", "")], NSP),
    "sep_segment_off_by_one": on_template("encode_pair", [("[0] * (len(a_ids) + 2) + [1] * (len(b_ids) + 1)",
                                                           "[0] * (len(a_ids) + 1) + [1] * (len(b_ids) + 2)")], PAIR),
    "attention_mask_inverted": on_template("encode_pair", [
        ("mask = [1] * len(ids) + [0] * pad", "mask = [0] * len(ids) + [1] * pad")], PAIR),
    "scale_by_d": on_template("scaled_dot_product_attention", [("/ math.sqrt(q.shape[-1])", "/ q.shape[-1]")], ATT),
    "causal_allows_future": on_template("scaled_dot_product_attention", [(".tril()", ".triu()")], ATT),
    "causal_hides_diagonal": on_template("scaled_dot_product_attention", [(".tril()", ".tril(-1)")], ATT),
    "softmax_over_queries": on_template("scaled_dot_product_attention", [("dim=-1", "dim=-2")], ATT),
    "att_scales_q_in_place": on_template("scaled_dot_product_attention", [
        ("    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n",
         "    q /= math.sqrt(q.shape[-1])\n    scores = q @ k.transpose(-2, -1)\n")], ATT),
    "att_float64": on_template("scaled_dot_product_attention", [
        ("    return torch.softmax(scores, dim=-1) @ v",
         "    return torch.softmax(scores.double(), dim=-1) @ v.double()")], ATT),
    "count_no_layernorm": on_template("bert_parameter_count", [
        (" * h + 2 * h\n", " * h\n"), (" + 2 * h + (h * i", " + (h * i"),
        ("(i * h + h) + 2 * h", "(i * h + h)")], COUNT),
    "count_no_pooler": on_template("bert_parameter_count", [("(h * h + h if pooler else 0)", "0")], COUNT),
    "count_no_position": on_template("bert_parameter_count", [
        ("vocab_size + max_position + type_vocab_size", "vocab_size + type_vocab_size")], COUNT),
    "count_no_biases": whole("bert_parameter_count", """
def bert_parameter_count(vocab_size, hidden_size, num_layers, intermediate_size, max_position=512,
                         type_vocab_size=2, pooler=True):
    h, i = hidden_size, intermediate_size
    embeddings = (vocab_size + max_position + type_vocab_size) * h + 2 * h
    layer = 4 * h * h + 2 * h + 2 * h * i + 2 * h
    return embeddings + num_layers * layer + (h * h if pooler else 0)
""", COUNT),
}

CORRECT = {
    "mask_python_loop": whole("mask_tokens", """
def mask_tokens(input_ids, *, mask_token_id, vocab_size, special_ids, mlm_probability=0.15, generator=None):
    special = set(special_ids) | {mask_token_id}
    allowed = [i for i in range(vocab_size) if i not in special]
    flat = input_ids.flatten().tolist()
    u = torch.rand(len(flat), generator=generator).tolist()
    w = torch.rand(len(flat), generator=generator).tolist()
    r = torch.randint(len(allowed), (len(flat),), generator=generator).tolist()
    inputs, labels = [], []
    for token, ui, wi, ri in zip(flat, u, w, r):
        if token in special or ui >= mlm_probability:
            inputs.append(token)
            labels.append(-100)
            continue
        labels.append(token)
        if wi < 0.8:
            inputs.append(mask_token_id)
        elif wi < 0.9:
            inputs.append(allowed[ri])
        else:
            inputs.append(token)
    shape = input_ids.shape
    return torch.tensor(inputs).view(shape), torch.tensor(labels).view(shape)
"""),
    "mask_random_differs_from_original": whole("mask_tokens", """
def mask_tokens(input_ids, *, mask_token_id, vocab_size, special_ids, mlm_probability=0.15, generator=None):
    special = torch.tensor(sorted(set(special_ids) | {mask_token_id}))
    allowed = torch.arange(vocab_size)[~torch.isin(torch.arange(vocab_size), special)]
    chosen = torch.bernoulli(torch.full(input_ids.shape, float(mlm_probability)), generator=generator).bool()
    chosen &= ~torch.isin(input_ids, special)
    how = torch.multinomial(torch.tensor([0.8, 0.1, 0.1]), input_ids.numel(), replacement=True,
                            generator=generator).view(input_ids.shape)
    # a random token *different from the original* (as the slides say): skip the original's index
    index = torch.randint(len(allowed) - 1, input_ids.shape, generator=generator)
    index += index >= torch.searchsorted(allowed, input_ids)
    replacement = allowed[index.clamp(max=len(allowed) - 1)]
    out = torch.where(chosen & (how == 0), torch.full_like(input_ids, mask_token_id), input_ids)
    out = torch.where(chosen & (how == 1), replacement, out)
    return out, torch.where(chosen, input_ids, -100)
"""),
    "nsp_rejection_sampling": whole("make_nsp_pairs", """
def make_nsp_pairs(documents, generator=None):
    pairs = []
    for d, doc in enumerate(documents):
        for a, following in zip(doc[:-1], doc[1:]):
            coin = torch.randint(2, (1,), generator=generator).item()
            if coin == 1:
                pairs.append((a, following, 1))
                continue
            other = d
            while other == d:
                other = torch.randint(len(documents), (1,), generator=generator).item()
            sentence = documents[other][torch.randint(len(documents[other]), (1,), generator=generator).item()]
            pairs.append((a, sentence, 0))
    return pairs
"""),
    "pair_by_slicing": whole("encode_pair", """
def encode_pair(a_ids, b_ids, cls_id, sep_id, pad_id, max_length):
    n_a, n_b = len(a_ids), len(b_ids)
    n = n_a + n_b + 3
    ids = torch.full((max_length,), pad_id, dtype=torch.long)
    ids[0], ids[n_a + 1], ids[n - 1] = cls_id, sep_id, sep_id
    ids[1:n_a + 1] = torch.tensor(a_ids, dtype=torch.long)
    ids[n_a + 2:n - 1] = torch.tensor(b_ids, dtype=torch.long)
    segments = torch.zeros(max_length, dtype=torch.long)
    segments[n_a + 2:n] = 1
    mask = (torch.arange(max_length) < n).long()
    return ids, segments, mask
"""),
    "attention_einsum_manual_softmax": whole("scaled_dot_product_attention", """
def scaled_dot_product_attention(q, k, v, causal=False):
    d = q.shape[-1]
    scores = torch.einsum("...ld,...sd->...ls", q, k) * d ** -0.5
    if causal:
        future = torch.arange(k.shape[-2])[None, :] > torch.arange(q.shape[-2])[:, None]
        scores = scores + future.to(scores.dtype) * -1e9
    scores = scores - scores.amax(dim=-1, keepdim=True)
    weights = scores.exp()
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return torch.einsum("...ls,...sd->...ld", weights, v)
"""),
    "count_from_torch_layers": whole("bert_parameter_count", """
def bert_parameter_count(vocab_size, hidden_size, num_layers, intermediate_size, max_position=512,
                         type_vocab_size=2, pooler=True):
    from torch import nn
    meta = {"device": "meta"}
    parts = [nn.Embedding(vocab_size, hidden_size, **meta), nn.Embedding(max_position, hidden_size, **meta),
             nn.Embedding(type_vocab_size, hidden_size, **meta), nn.LayerNorm(hidden_size, **meta)]
    for _ in range(num_layers):
        parts += [nn.Linear(hidden_size, 3 * hidden_size, **meta), nn.Linear(hidden_size, hidden_size, **meta),
                  nn.LayerNorm(hidden_size, **meta), nn.Linear(hidden_size, intermediate_size, **meta),
                  nn.Linear(intermediate_size, hidden_size, **meta), nn.LayerNorm(hidden_size, **meta)]
    if pooler:
        parts.append(nn.Linear(hidden_size, hidden_size, **meta))
    return sum(p.numel() for m in parts for p in m.parameters())
"""),
    "count_grouped_formula": whole("bert_parameter_count", """
def bert_parameter_count(vocab_size, hidden_size, num_layers, intermediate_size, max_position=512,
                         type_vocab_size=2, pooler=True):
    h, i, L = hidden_size, intermediate_size, num_layers
    return h * (vocab_size + max_position + type_vocab_size + 2) + L * (4 * h * h + 2 * h * i + 9 * h + i) + int(pooler) * (h * h + h)
"""),
}

REFERENCE_CALLS = {  # ken hands the work to a reference implementation
    "mask_dlcourse": whole("mask_tokens", """
def mask_tokens(input_ids, *, mask_token_id, vocab_size, special_ids, mlm_probability=0.15, generator=None):
    import dlcourse.bert
    return dlcourse.bert.mask_tokens(input_ids, mask_token_id=mask_token_id, vocab_size=vocab_size,
                                     special_ids=special_ids, mlm_probability=mlm_probability, generator=generator)
""", MASK, calls="dlcourse.bert.mask_tokens"),
    "nsp_dlcourse": whole("make_nsp_pairs", """
from dlcourse.bert import make_nsp_pairs
""", NSP, calls="dlcourse.bert.make_nsp_pairs"),
    "pair_dlcourse": whole("encode_pair", """
def encode_pair(a_ids, b_ids, cls_id, sep_id, pad_id, max_length):
    from dlcourse import bert
    return bert.encode_pair(a_ids, b_ids, cls_id=cls_id, sep_id=sep_id, pad_id=pad_id, max_length=max_length)
""", PAIR, calls="dlcourse.bert.encode_pair"),
    "attention_F_scaled_dot_product_attention": whole("scaled_dot_product_attention", """
import torch.nn.functional as F


def scaled_dot_product_attention(q, k, v, causal=False):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
""", ATT, calls="torch.nn.functional.scaled_dot_product_attention"),
    "count_dlcourse": whole("bert_parameter_count", """
from dlcourse.bert import bert_parameter_count
""", COUNT, calls="dlcourse.bert.bert_parameter_count"),
}

STUDENTS = {  # student -> planted answers, at most one per part
    "carol": ["masks_specials", "nsp_70_30", "sep_segment_off_by_one", "scale_by_d", "count_no_layernorm"],
    "dave": ["share_90_5_5", "nsp_labels_swapped", "attention_mask_inverted", "causal_allows_future",
             "count_no_pooler"],
    "erin": ["labels_everywhere", "nsp_same_document", "pair_by_slicing", "causal_hides_diagonal",
             "count_no_position"],
    "frank": ["modifies_input", "nsp_rejection_sampling", "softmax_over_queries", "count_no_biases"],
    "gina": ["random_includes_specials", "attention_einsum_manual_softmax", "count_from_torch_layers"],
    "hank": ["fifteen_percent_of_all_positions", "count_grouped_formula"],
    "judy": ["mask_python_loop"],
    "kim": ["mask_random_differs_from_original"],
    "leo": ["att_scales_q_in_place", "mask_ignores_generator"],
    "mia": ["att_float64", "nsp_ignores_generator"],
    "ken": ["mask_dlcourse", "nsp_dlcourse", "pair_dlcourse", "attention_F_scaled_dot_product_attention",
            "count_dlcourse"],
}
# the grader names what went wrong, so the feedback teaches something
VISIBLE_CHECKS_SAY = {
    ("dave", MASK): "[MASK]", ("frank", MASK): "in place", ("hank", MASK): "mlm_probability",
    ("dave", NSP): "IsNext", ("carol", PAIR): "token_type_ids", ("dave", PAIR): "attention_mask",
    ("carol", COUNT): "bert_parameter_count(10, 4, 1, 8", ("carol", MASK): "holds [CLS] (id 1), a special token",
    ("erin", MASK): "holds [CLS]", ("leo", ATT): "changed its input `q` in place",
    ("mia", ATT): "expected dtype torch.float32", ("leo", MASK): "the same generator seed gave another result",
    ("mia", NSP): "the same generator seed gave other pairs", ("carol", ATT): "divided by d_k: divide them by sqrt(d_k)",
    ("frank", ATT): "runs over the queries", ("dave", COUNT): "the count without the pooler"}
HIDDEN_TESTS_SAY = {("gina", MASK): "special id", ("erin", NSP): "own document"}

PS = ProblemSet(ASSIGNMENT, NOTEBOOK, POINTS, {"written_rule": 2}, MISTAKES, CORRECT, REFERENCE_CALLS, STUDENTS,
                VISIBLE_CHECKS_SAY, HIDDEN_TESTS_SAY, cell_timeout=120)


class TestBertMasking(ProblemSetTests):
    ps = PS

    def test_the_answer_key_was_checked_in_the_model_answers_run(self, graded):
        """alice's notebook carries the model answer, so the key's numbers were checked in her run."""
        assert "answer key of part 6 agrees" in graded.cell("alice", "test_written_key").printed


def test_written_key_text_is_in_the_release_question_only():
    """The question (with its numbers) is released; the key and rubric are not."""
    release = nbformat.read(REPO / "exercises" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    text = "\n".join(c.source for c in release.cells)
    assert "128 positions" in text and "Marking rubric" not in text and not re.search(r"15\.0 targets", text)
