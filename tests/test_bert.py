"""dlcourse.bert: masking statistics against the rule published with BERT, next-sentence pairs,
pair encoding, and the parameter count against a model built from torch layers.

Statistical tests draw from fixed seeds, so they are deterministic; their bounds are Z = 6
standard deviations of a binomial proportion (a normal tail beyond 6 sigma has probability
2e-9), so any correct implementation passes with near certainty, while the classic mistakes
(90/5/5 instead of 80/10/10, 15% of all positions, ...) miss by many times the bound, which
`test_bounds_reject_classic_mistakes` checks.
"""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dlcourse import bert as B
from dlcourse.corpus import Vocab, make_documents
from helpers import DEVICES

Z = 6.0
# The rule of Devlin et al. (2019), section 3.1 and appendix A.1: select 15% of the tokens;
# replace a selected token by [MASK] 80% of the time, by a random token 10%, keep it 10%.
PUBLISHED = {"select": 0.15, "mask": 0.8, "random": 0.1, "keep": 0.1}
SPECIAL = [0, 1, 2, 3]          # [PAD], [CLS], [SEP], [MASK]
MASK_ID, VOCAB = 3, 50
N_ALLOWED = VOCAB - len(SPECIAL)


def halfwidth(q: float, n: int) -> float:
    """Z-sigma half-width for the fraction of n Bernoulli(q) draws."""
    return Z * math.sqrt(q * (1 - q) / n)


def big_input(device, n=300_000, seed=0):
    return torch.randint(VOCAB, (n // 100, 100), generator=torch.Generator().manual_seed(seed)).to(device)


def masked(ids, seed=1, p=0.15):
    gen = torch.Generator(device=ids.device).manual_seed(seed)
    return B.mask_tokens(ids, mask_token_id=MASK_ID, vocab_size=VOCAB, special_ids=SPECIAL,
                         mlm_probability=p, generator=gen)


def shares(ids, inputs, labels):
    """Selection rate among non-special tokens and the three shares among the selected ones."""
    candidates = ~torch.isin(ids, torch.tensor(SPECIAL, device=ids.device))
    selected = labels != -100
    n_sel = int(selected.sum())
    return {"select": n_sel / int(candidates.sum()),
            "mask": int((inputs[selected] == MASK_ID).sum()) / n_sel,
            "keep": int((inputs[selected] == ids[selected]).sum()) / n_sel,
            "random": int(((inputs[selected] != ids[selected]) & (inputs[selected] != MASK_ID)).sum()) / n_sel,
            "n_candidates": int(candidates.sum()), "n_selected": n_sel}


# -------------------------------------------------------------------- masking
@pytest.mark.parametrize("device", DEVICES)
def test_shares_match_the_rule_published_with_bert(device):
    ids = big_input(device)
    inputs, labels = masked(ids)
    got = shares(ids, inputs, labels)
    n, n_sel = got["n_candidates"], got["n_selected"]
    assert abs(got["select"] - PUBLISHED["select"]) < halfwidth(PUBLISHED["select"], n), got
    # a random replacement equals the original with probability 1 / N_ALLOWED: it then looks "kept"
    expected = {"mask": PUBLISHED["mask"], "random": PUBLISHED["random"] * (1 - 1 / N_ALLOWED),
                "keep": PUBLISHED["keep"] + PUBLISHED["random"] / N_ALLOWED}
    for share, q in expected.items():
        assert abs(got[share] - q) < halfwidth(q, n_sel), f"{share}: {got[share]:.4f}, expected {q:.4f}"


def test_bounds_reject_classic_mistakes():
    n_sel = 0.15 * 300_000 * N_ALLOWED / VOCAB        # about as many selected tokens as above
    assert abs(0.9 - 0.8) > 5 * halfwidth(0.8, n_sel)           # 90/5/5 instead of 80/10/10
    assert abs(0.05 - 0.1) > 5 * halfwidth(0.1, n_sel)
    assert abs(0.2 - 0.15) > 5 * halfwidth(0.15, n_sel / 0.15)  # 20% selected instead of 15%
    # (selecting 15% of *all* positions is caught exactly: a special token gets selected)


@pytest.mark.parametrize("device", DEVICES)
def test_specials_never_selected_and_replacements_never_special(device):
    ids = big_input(device, seed=2)
    inputs, labels = masked(ids, seed=3)
    special = torch.isin(ids, torch.tensor(SPECIAL, device=device))
    assert (labels[special] == -100).all(), "a special token was selected"
    assert torch.equal(inputs[special], ids[special]), "a special token was changed"
    changed = (inputs != ids) & (inputs != MASK_ID)
    assert not torch.isin(inputs[changed], torch.tensor(SPECIAL, device=device)).any()


def test_random_replacements_are_uniform_over_non_special_ids():
    ids = big_input("cpu", n=1_000_000, seed=4)
    inputs, labels = masked(ids, seed=5)
    replaced = inputs[(labels != -100) & (inputs != MASK_ID) & (inputs != ids)]
    counts = torch.bincount(replaced, minlength=VOCAB)[len(SPECIAL):].double()
    assert counts.min() > 0
    # Pearson's statistic; each id's count excludes its own positions (a replacement equal to the
    # original is invisible), so expected counts differ by ~2% between ids: use the expected
    # share of the selected tokens carrying each other id. chi^2 with 45 degrees of freedom has
    # mean 45 and standard deviation sqrt(90) = 9.5; 45 + 8 * 9.5 is beyond a 1e-9 tail.
    freq = torch.bincount(ids[labels != -100], minlength=VOCAB)[len(SPECIAL):].double()
    expected = (freq.sum() - freq) / (N_ALLOWED - 1) * len(replaced) / ((freq.sum() - freq).sum() / (N_ALLOWED - 1))
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 45 + 8 * math.sqrt(90), chi2


@pytest.mark.parametrize("device", DEVICES)
def test_labels_input_untouched_and_reproducible(device):
    ids = torch.randint(VOCAB, (8, 30), generator=torch.Generator().manual_seed(6)).to(device)
    before = ids.clone()
    inputs, labels = masked(ids, seed=7, p=0.5)
    assert torch.equal(ids, before), "mask_tokens modified its input"
    assert inputs.dtype == ids.dtype and labels.dtype == ids.dtype and inputs.device == ids.device
    selected = labels != -100
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(inputs[~selected], ids[~selected]), "a token that was not selected changed"
    again = masked(ids, seed=7, p=0.5)
    assert torch.equal(again[0], inputs) and torch.equal(again[1], labels)
    other = masked(ids, seed=8, p=0.5)
    assert not torch.equal(other[1], labels)


@settings(deadline=None, max_examples=30)
@given(rows=st.integers(1, 5), cols=st.integers(1, 12), p=st.floats(0.0, 1.0, allow_nan=False),
       seed=st.integers(0, 2**31 - 1))
def test_masking_invariants(rows, cols, p, seed):
    ids = torch.randint(VOCAB, (rows, cols), generator=torch.Generator().manual_seed(seed))
    inputs, labels = masked(ids, seed=seed, p=p)
    special = torch.isin(ids, torch.tensor(SPECIAL))
    assert inputs.shape == ids.shape == labels.shape
    assert (labels[special] == -100).all() and torch.equal(inputs[special], ids[special])
    sel = labels != -100
    assert torch.equal(labels[sel], ids[sel]) and torch.equal(inputs[~sel], ids[~sel])
    if p == 1.0:
        assert sel.sum() == (~special).sum()
    if p == 0.0:
        assert not sel.any()


def test_masking_errors():
    with pytest.raises(TypeError, match="integer dtype"):
        B.mask_tokens(torch.ones(3), mask_token_id=3, vocab_size=5, special_ids=[0])
    with pytest.raises(ValueError, match=r"mlm_probability must be in \[0, 1\]"):
        B.mask_tokens(torch.ones(3, dtype=torch.long), mask_token_id=3, vocab_size=5, special_ids=[0],
                      mlm_probability=1.5)
    with pytest.raises(ValueError, match="no token to draw"):
        B.mask_tokens(torch.ones(3, dtype=torch.long), mask_token_id=1, vocab_size=2, special_ids=[0])


# --------------------------------------------------------- next-sentence prediction
def test_nsp_pairs_are_half_is_next_and_not_next_comes_from_another_document():
    docs = [[(d, s) for s in range(5)] for d in range(2000)]     # sentence = (document, index)
    pairs = B.make_nsp_pairs(docs, generator=torch.Generator().manual_seed(0))
    assert len(pairs) == 2000 * 4
    is_next = [label == B.IS_NEXT for _, _, label in pairs]
    share = sum(is_next) / len(pairs)
    assert abs(share - 0.5) < halfwidth(0.5, len(pairs)), share
    for (a, b, label) in pairs:
        if label == B.IS_NEXT:
            assert b == (a[0], a[1] + 1)
        else:
            assert label == B.NOT_NEXT and b[0] != a[0]
    # the random B sentences are spread over the other documents and positions
    positions = torch.tensor([b[1] for _, b, label in pairs if label == B.NOT_NEXT])
    counts = torch.bincount(positions, minlength=5).double()
    assert ((counts / counts.sum() - 0.2).abs() < 5 * halfwidth(0.2, int(counts.sum()))).all(), counts
    again = B.make_nsp_pairs(docs, generator=torch.Generator().manual_seed(0))
    assert again == pairs
    with pytest.raises(ValueError, match="at least 2 documents"):
        B.make_nsp_pairs(docs[:1])


def test_encode_pair_segments_and_attention_mask():
    ids, segments, attention = B.encode_pair([10, 11, 12], [13, 14], cls_id=1, sep_id=2, pad_id=0, max_length=10)
    assert ids.tolist() == [1, 10, 11, 12, 2, 13, 14, 2, 0, 0]
    assert segments.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0]   # the first [SEP] belongs to A
    assert attention.tolist() == [1] * 8 + [0, 0]
    assert B.encode_pair([5], [6], cls_id=1, sep_id=2)[0].tolist() == [1, 5, 2, 6, 2]
    with pytest.raises(ValueError, match="needs 8 tokens"):
        B.encode_pair([10, 11, 12], [13, 14], cls_id=1, sep_id=2, max_length=7)


def test_pretraining_batch_and_padding_is_ignored():
    docs = make_documents(20, generator=torch.Generator().manual_seed(0))
    vocab = Vocab.from_documents(docs)
    pairs = B.make_nsp_pairs(docs, generator=torch.Generator().manual_seed(1))[:6]
    batch = B.pretraining_batch(pairs, vocab, max_length=20, generator=torch.Generator().manual_seed(2))
    assert {k: tuple(v.shape) for k, v in batch.items()} == {
        "input_ids": (6, 20), "token_type_ids": (6, 20), "attention_mask": (6, 20), "labels": (6, 20),
        "next_sentence_label": (6,)}
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    torch.manual_seed(0)
    model = B.Bert(len(vocab), hidden_size=16, num_layers=2, num_heads=2, max_position=20).eval()
    mlm, nsp = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    assert mlm.shape == (6, 20, len(vocab)) and nsp.shape == (6, 2)
    # changing what sits in the padding changes nothing at the real tokens
    other = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, vocab["rome"])
    mlm2, nsp2 = model(other, batch["token_type_ids"], batch["attention_mask"])
    real = batch["attention_mask"] == 1
    assert torch.allclose(mlm2[real], mlm[real], atol=1e-5) and torch.allclose(nsp2, nsp, atol=1e-5)


def test_tiny_bert_learns(one_thread):
    docs = make_documents(60, generator=torch.Generator().manual_seed(0))
    vocab = Vocab.from_documents(docs)
    torch.manual_seed(0)
    model = B.Bert(len(vocab), hidden_size=32, num_layers=1, num_heads=2, max_position=20)
    history = B.train_bert(model, docs, vocab, steps=80, batch_size=16, max_length=20,
                           generator=torch.Generator().manual_seed(1), progress=False)
    first, last = sum(history["mlm"][:10]) / 10, sum(history["mlm"][-10:]) / 10
    assert last < 0.7 * first, (first, last)


# ------------------------------------------------------------------ parameter count
def torch_bert(vocab_size, hidden, layers, intermediate, heads, max_position=512, type_vocab=2, pooler=True):
    """BERT's encoder from torch layers only (on the meta device: shapes without memory)."""
    meta = {"device": "meta"}
    parts = [nn.Embedding(vocab_size, hidden, **meta), nn.Embedding(max_position, hidden, **meta),
             nn.Embedding(type_vocab, hidden, **meta), nn.LayerNorm(hidden, **meta)]
    parts += [nn.TransformerEncoderLayer(hidden, heads, intermediate, activation="gelu", **meta)
              for _ in range(layers)]
    if pooler:
        parts.append(nn.Linear(hidden, hidden, **meta))
    return nn.ModuleList(parts)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@settings(deadline=None, max_examples=20)
@given(vocab=st.integers(5, 200), heads=st.integers(1, 4), per_head=st.integers(1, 8), layers=st.integers(0, 3),
       intermediate=st.integers(1, 64), max_position=st.integers(1, 64), type_vocab=st.integers(1, 3),
       pooler=st.booleans())
def test_parameter_count_matches_torch_layers(vocab, heads, per_head, layers, intermediate, max_position,
                                              type_vocab, pooler):
    hidden = heads * per_head
    ours = B.bert_parameter_count(vocab, hidden, layers, intermediate, max_position, type_vocab, pooler)
    assert ours == n_params(torch_bert(vocab, hidden, layers, intermediate, heads, max_position, type_vocab, pooler))


def test_tiny_bert_encoder_has_the_counted_parameters():
    model = B.Bert(37, hidden_size=24, num_layers=3, num_heads=4, intermediate_size=40, max_position=16)
    assert model.encoder_parameter_count() == B.bert_parameter_count(37, 24, 3, 40, max_position=16)


@pytest.mark.parametrize("name, config, deck", [
    ("BERT-base", dict(vocab_size=30522, hidden=768, layers=12, intermediate=3072, heads=12), 110e6),
    ("BERT-large", dict(vocab_size=30522, hidden=1024, layers=24, intermediate=4096, heads=16), 340e6),
])
def test_bert_base_and_large_against_the_deck(name, config, deck):
    heads = config.pop("heads")
    counted = B.bert_parameter_count(config["vocab_size"], config["hidden"], config["layers"], config["intermediate"])
    assert counted == n_params(torch_bert(**config, heads=heads))
    # the deck's (and the paper's) round numbers are within 2%: 109.5M and 335.1M
    assert abs(counted - deck) / deck < 0.02, f"{name}: {counted:,} vs {deck:,.0f}"
    assert counted < deck


def test_parameter_count_errors():
    with pytest.raises(ValueError, match="hidden_size must be a non-negative int"):
        B.bert_parameter_count(100, 7.5, 2, 10)
