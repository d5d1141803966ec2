"""End to end: release ps_bert_masking, grade real submissions with nbgrader, check scores.

One course, one `nbgrader autograde` call. Besides the model answer (alice) and the untouched
release (bob), each student plants at most one answer per part: a common mistake (WRONG), which
must cost exactly the points of its part, or a correct answer written differently (RIGHT), which
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
import pytest

from nbgrader_harness import grade_id, graded_test_ids, make_course, part_scores, REPO, submit_class

ASSIGNMENT, NOTEBOOK = "ps_bert_masking", "bert_masking"
POINTS = {"test_mask_tokens": 3, "test_nsp_pairs": 2, "test_encode_pair": 2, "test_attention": 2,
          "test_parameter_count": 2, "test_written_key": 0}
MASK, NSP, PAIR, ATT, COUNT, _ = POINTS

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
TEMPLATES = {MASK: ("mask_tokens", MASK_TEMPLATE), NSP: ("make_nsp_pairs", NSP_TEMPLATE),
             PAIR: ("encode_pair", PAIR_TEMPLATE), ATT: ("scaled_dot_product_attention", ATT_TEMPLATE),
             COUNT: ("bert_parameter_count", COUNT_TEMPLATE)}


def edit(part, *edits):
    """(part, (cell, source)): the model answer of `part` with string edits (each must apply)."""
    cell, source = TEMPLATES[part]
    for old, new in edits:
        assert old in source, f"cannot plant {old!r}"
        source = source.replace(old, new)
    return part, (cell, source)


def whole(part, source):
    return part, (TEMPLATES[part][0], source)


WRONG = {  # name -> (the part it must cost, (cell grade_id, source))
    "masks_specials": edit(MASK, ("selected = ~torch.isin(input_ids, special)",
                                  "selected = torch.ones_like(input_ids, dtype=torch.bool)")),
    "share_90_5_5": edit(MASK, ("(action < 0.8)", "(action < 0.9)"),
                         ("(action >= 0.8) & (action < 0.9)", "(action >= 0.9) & (action < 0.95)")),
    "labels_everywhere": edit(MASK, ("labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))",
                                     "labels = input_ids.clone()")),
    "modifies_input": edit(MASK, ("inputs = input_ids.clone()", "inputs = input_ids")),
    "random_includes_specials": edit(MASK, (
        "random_ids = allowed[torch.randint(len(allowed), input_ids.shape, generator=generator)]",
        "random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)")),
    "fifteen_percent_of_all_positions": edit(MASK, (
        "    selected = ~torch.isin(input_ids, special)\n"
        "    selected &= torch.rand(input_ids.shape, generator=generator) < mlm_probability\n",
        "    real = ~torch.isin(input_ids, special).flatten()\n"
        "    k = round(mlm_probability * input_ids.numel())          # counts specials and padding too\n"
        "    order = torch.randperm(input_ids.numel(), generator=generator)\n"
        "    chosen = order[real[order]][:k]\n"
        "    selected = torch.zeros(input_ids.numel(), dtype=torch.bool)\n"
        "    selected[chosen] = True\n"
        "    selected = selected.view(input_ids.shape)\n")),
    "nsp_70_30": edit(NSP, ("< 0.5", "< 0.7")),
    "nsp_ignores_generator": edit(NSP, ("if torch.rand((), generator=generator).item() < 0.5:", "if torch.rand(()).item() < 0.5:")),
    "mask_ignores_generator": edit(MASK, ("selected &= torch.rand(input_ids.shape, generator=generator) < mlm_probability",
                                          "selected &= torch.rand(input_ids.shape) < mlm_probability")),
    "nsp_labels_swapped": edit(NSP, ("doc[i + 1], 1)", "doc[i + 1], 0)"), ("documents[other][j], 0)", "documents[other][j], 1)")),
    "nsp_same_document": edit(NSP, ("torch.randint(len(documents) - 1, ", "torch.randint(len(documents), "),
                              ("                other += other >= d\n", "")),
    "sep_segment_off_by_one": edit(PAIR, ("[0] * (len(a_ids) + 2) + [1] * (len(b_ids) + 1)",
                                          "[0] * (len(a_ids) + 1) + [1] * (len(b_ids) + 2)")),
    "attention_mask_inverted": edit(PAIR, ("mask = [1] * len(ids) + [0] * pad", "mask = [0] * len(ids) + [1] * pad")),
    "scale_by_d": edit(ATT, ("/ math.sqrt(q.shape[-1])", "/ q.shape[-1]")),
    "causal_allows_future": edit(ATT, (".tril()", ".triu()")),
    "causal_hides_diagonal": edit(ATT, (".tril()", ".tril(-1)")),
    "softmax_over_queries": edit(ATT, ("dim=-1", "dim=-2")),
    "att_scales_q_in_place": edit(ATT, ("    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n",
                                        "    q /= math.sqrt(q.shape[-1])\n    scores = q @ k.transpose(-2, -1)\n")),
    "att_float64": edit(ATT, ("    return torch.softmax(scores, dim=-1) @ v", "    return torch.softmax(scores.double(), dim=-1) @ v.double()")),
    "count_no_layernorm": edit(COUNT, (" * h + 2 * h\n", " * h\n"), (" + 2 * h + (h * i", " + (h * i"),
                               ("(i * h + h) + 2 * h", "(i * h + h)")),
    "count_no_pooler": edit(COUNT, ("(h * h + h if pooler else 0)", "0")),
    "count_no_position": edit(COUNT, ("vocab_size + max_position + type_vocab_size", "vocab_size + type_vocab_size")),
    "count_no_biases": whole(COUNT, """
def bert_parameter_count(vocab_size, hidden_size, num_layers, intermediate_size, max_position=512,
                         type_vocab_size=2, pooler=True):
    h, i = hidden_size, intermediate_size
    embeddings = (vocab_size + max_position + type_vocab_size) * h + 2 * h
    layer = 4 * h * h + 2 * h + 2 * h * i + 2 * h
    return embeddings + num_layers * layer + (h * h if pooler else 0)
"""),
}

RIGHT = {  # correct answers written differently
    "mask_python_loop": whole(MASK, """
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
    "mask_random_differs_from_original": whole(MASK, """
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
    "nsp_rejection_sampling": whole(NSP, """
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
    "pair_by_slicing": whole(PAIR, """
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
    "attention_einsum_manual_softmax": whole(ATT, """
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
    "count_from_torch_layers": whole(COUNT, """
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
    "count_grouped_formula": whole(COUNT, """
def bert_parameter_count(vocab_size, hidden_size, num_layers, intermediate_size, max_position=512,
                         type_vocab_size=2, pooler=True):
    h, i, L = hidden_size, intermediate_size, num_layers
    return h * (vocab_size + max_position + type_vocab_size + 2) + L * (4 * h * h + 2 * h * i + 9 * h + i) + int(pooler) * (h * h + h)
"""),
}

CALLS_REFERENCE = {  # ken: each answer hands the work to a reference implementation
    MASK: whole(MASK, """
def mask_tokens(input_ids, *, mask_token_id, vocab_size, special_ids, mlm_probability=0.15, generator=None):
    import dlcourse.bert
    return dlcourse.bert.mask_tokens(input_ids, mask_token_id=mask_token_id, vocab_size=vocab_size,
                                     special_ids=special_ids, mlm_probability=mlm_probability, generator=generator)
""")[1],
    NSP: whole(NSP, """
from dlcourse.bert import make_nsp_pairs
""")[1],
    PAIR: whole(PAIR, """
def encode_pair(a_ids, b_ids, cls_id, sep_id, pad_id, max_length):
    from dlcourse import bert
    return bert.encode_pair(a_ids, b_ids, cls_id=cls_id, sep_id=sep_id, pad_id=pad_id, max_length=max_length)
""")[1],
    ATT: whole(ATT, """
import torch.nn.functional as F


def scaled_dot_product_attention(q, k, v, causal=False):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
""")[1],
    COUNT: whole(COUNT, """
from dlcourse.bert import bert_parameter_count
""")[1],
}

STUDENTS = {  # student -> planted answers, at most one per part (names from WRONG or RIGHT)
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
}


def planted(name):
    return WRONG[name] if name in WRONG else RIGHT[name]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("course"), [ASSIGNMENT])
    class_ = {"ken": dict(CALLS_REFERENCE.values())}
    for student, names in STUDENTS.items():
        class_[student] = dict(planted(name)[1] for name in names)
        assert len(class_[student]) == len(names), f"{student}: two answers for one cell"
    submit_class(course, ASSIGNMENT, NOTEBOOK, class_)
    autograde = course.autograde(ASSIGNMENT, cell_timeout=120)
    return course, autograde, course.scores(ASSIGNMENT, NOTEBOOK)


def parts(scores, student):
    return part_scores(scores, student, POINTS)


def test_tables_are_complete():
    used = [name for names in STUDENTS.values() for name in names]
    assert sorted(used) == sorted([*WRONG, *RIGHT]), "every mistake and variant is planted exactly once"
    assert len(WRONG) >= 10 and len(RIGHT) >= 4
    for student, names in STUDENTS.items():
        cells = [planted(name)[1][0] for name in names]
        assert len(set(cells)) == len(cells), f"{student} plants two answers in one part"


def test_point_table_matches_the_notebook(graded):
    course, *_ = graded
    assert graded_test_ids(course, ASSIGNMENT, NOTEBOOK) == list(POINTS)


def test_full_solution_gets_full_marks(graded):
    course, autograde, scores = graded
    assert parts(scores, "alice") == POINTS, autograde.stdout[-3000:] + autograde.stderr[-3000:]
    assert scores["alice"]["max"]["written_rule"] == 2
    # the answer key's numbers were checked in alice's run (her notebook carries the model answer)
    nb = course.read("autograded", "alice", ASSIGNMENT, f"{NOTEBOOK}.ipynb")
    key_cell = next(c for c in nb.cells if grade_id(c) == "test_written_key")
    assert any("answer key of part 6 agrees" in o.get("text", "") for o in key_cell.outputs)


def test_untouched_release_gets_zero(graded):
    *_, scores = graded
    assert parts(scores, "bob") == dict(dict.fromkeys(POINTS, 0))


@pytest.mark.parametrize("student", sorted(STUDENTS))
def test_each_answer_costs_exactly_its_part(graded, student):
    *_, scores = graded
    zeroed = {WRONG[name][0] for name in STUDENTS[student] if name in WRONG}
    expected = {part: 0 if part in zeroed else pts for part, pts in POINTS.items()}
    assert parts(scores, student) == expected, f"{student} ({', '.join(STUDENTS[student])})"


def test_calling_the_reference_scores_zero_with_a_reason(graded):
    course, _, scores = graded
    assert parts(scores, "ken") == dict(POINTS, **dict.fromkeys(CALLS_REFERENCE, 0))
    nb = course.read("autograded", "ken", ASSIGNMENT, f"{NOTEBOOK}.ipynb")
    errors = {grade_id(c): next((o for o in c.get("outputs", []) if o.output_type == "error"), None) for c in nb.cells}
    for part, reference in [(MASK, "dlcourse.bert.mask_tokens"), (NSP, "make_nsp_pairs"),
                            (PAIR, "dlcourse.bert.encode_pair"), (ATT, "scaled_dot_product_attention"),
                            (COUNT, "bert_parameter_count")]:
        error = errors[part]
        assert error is not None and reference in error.evalue and "reference implementation" in error.evalue, (
            part, error)
        printed = "".join(o.get("text", "") for c in nb.cells if grade_id(c) == part for o in c.get("outputs", []))
        assert "visible tests passed" not in printed, f"{part}: the visible check should already name the call"


def test_mistakes_fail_with_a_message_about_them(graded):
    """The hidden tests name what went wrong, so the feedback teaches something."""
    course, *_ = graded
    expected = {("dave", MASK): "[MASK]",
                ("frank", MASK): "in place", ("gina", MASK): "special id", ("hank", MASK): "mlm_probability",
                ("dave", NSP): "IsNext", ("erin", NSP): "own document", ("carol", PAIR): "token_type_ids",
                ("dave", PAIR): "attention_mask", ("carol", COUNT): "bert_parameter_count(10, 4, 1, 8",
                ("carol", MASK): "holds [CLS] (id 1), a special token", ("erin", MASK): "holds [CLS]",
                ("leo", ATT): "changed its input `q` in place", ("mia", ATT): "expected dtype torch.float32",
                ("leo", MASK): "the same generator seed gave another result",
                ("mia", NSP): "the same generator seed gave other pairs",
                ("carol", ATT): "divided by d_k: divide them by sqrt(d_k)", ("frank", ATT): "runs over the queries",
                ("dave", COUNT): "the count without the pooler"}
    for (student, part), words in expected.items():
        nb = course.read("autograded", student, ASSIGNMENT, f"{NOTEBOOK}.ipynb")
        cell = next(c for c in nb.cells if grade_id(c) == part)
        error = next(o for o in cell.outputs if o.output_type == "error")
        assert words in error.evalue, (student, part, error.evalue)


def test_written_key_text_is_in_the_release_question_only():
    """The question (with its numbers) is released; the key and rubric are not."""
    release = nbformat.read(REPO / "exercises" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    text = "\n".join(c.source for c in release.cells)
    assert "128 positions" in text and "Marking rubric" not in text and not re.search(r"15\.0 targets", text)
