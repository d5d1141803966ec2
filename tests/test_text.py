"""dlcourse.text: the text CNN's pieces against the lecture's formulas and torch (float64, 1e-10)."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse import text
from helpers import DEVICES, assert_matches_torch


def test_local_filter_is_tanh_of_w_dot_window_plus_b():
    window = torch.tensor([[1.0, 1.0], [7.0, 3.0], [2.0, 5.0]], dtype=torch.float64)
    W = torch.tensor([[0.1, -0.2, 0.05, 0.1, -0.3, 0.2]], dtype=torch.float64)
    b = torch.tensor([0.25], dtype=torch.float64)
    by_hand = sum(w * v for w, v in zip(W[0].tolist(), [1, 1, 7, 3, 2, 5])) + 0.25
    assert text.local_filter(window, W, b).item() == pytest.approx(math.tanh(by_hand), abs=1e-12)
    with pytest.raises(ValueError, match="6 numbers"):
        text.local_filter(window, torch.ones(1, 4), b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_text_conv1d_matches_conv1d(n, device):
    g = torch.Generator().manual_seed(n)
    N, L, d, k = 3, 9, 4, 5
    x = torch.randn(N, L, d, generator=g, dtype=torch.float64).to(device)
    W = torch.randn(k, n * d, generator=g, dtype=torch.float64).to(device)
    b = torch.randn(k, generator=g, dtype=torch.float64).to(device)
    ours = text.text_conv1d(x, W, b)
    theirs = torch.tanh(F.conv1d(x.transpose(1, 2), text.conv1d_weight(W, d), b)).transpose(1, 2)
    assert_matches_torch(ours, theirs, what=f"window {n}")
    # one position by the deck's formula: o_i = tanh(W [x_i; ...; x_{i+n-1}] + b)
    assert_matches_torch(ours[1, 2], torch.tanh(W @ x[1, 2 : 2 + n].reshape(-1) + b), what="position 2")
    # the unbatched form gives the same rows
    assert_matches_torch(text.text_conv1d(x[0], W, b), ours[0], what="unbatched")


def test_windows_need_enough_positions():
    with pytest.raises(ValueError, match="pad the sentence"):
        text.windows(torch.zeros(2, 3), 3)


def test_text_cnn_pools_max_over_time_and_matches_a_manual_forward():
    torch.manual_seed(0)
    model = text.TextCNN(20, dim=3, windows=(1, 3), filters=4).double()
    ids = torch.randint(1, 20, (5, 7))
    maps = model.feature_maps(ids)
    assert [tuple(m.shape) for m in maps] == [(5, 4, 7), (5, 4, 5)]
    x = model.embedding(ids)
    for n, conv, o in zip(model.windows, model.convs, maps):
        W = conv.weight.transpose(1, 2).reshape(4, -1)   # (k, d, n) -> (k, n d)
        assert_matches_torch(o, text.text_conv1d(x, W, conv.bias).transpose(1, 2), what=f"window {n}")
    pooled = torch.cat([o.max(dim=-1).values for o in maps], dim=1)
    assert_matches_torch(model(ids), model.out(pooled), what="logits")


def test_text_cnn_pads_short_sentences_and_checks_ids():
    model = text.TextCNN(10, windows=(1, 3))
    assert model(torch.tensor([[4]])).shape == (1, 2)
    with pytest.raises(TypeError, match="torch.long"):
        model(torch.ones(2, 5))


def test_vocabulary_padding_and_unknown_words():
    vocab = text.Vocabulary.from_sentences([["the", "movie"], ["was", "awesome"]])
    assert vocab.encode("The movie was AWESOME!") == [2, 3, 4, 5]
    assert vocab.encode(["the", "zebra"]) == [2, 1]
    ids = vocab.encode_batch([["the", "movie", "was", "awesome"], ["awesome"]], pad_each_side=1)
    assert ids.tolist() == [[0, 2, 3, 4, 5, 0], [0, 5, 0, 0, 0, 0]]
    assert vocab.decode(ids[0]) == ["<pad>", "the", "movie", "was", "awesome", "<pad>"]
    assert vocab.encode_batch([["movie"]], min_len=3).tolist() == [[3, 0, 0]]
    with pytest.raises(ValueError, match="at least one token"):
        vocab.encode_batch([[]])


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_corpus_labels_follow_the_generating_rule(seed):
    for ex in text.make_sentiment_corpus(20, seed=seed):
        words = set(ex.tokens)
        positive = bool(words & set(text.POSITIVE))
        assert positive != bool(words & set(text.NEGATIVE)), ex.text  # exactly one sentiment word
        negated = "not" in words or "nobody" in words
        assert ex.label == int(positive != negated), ex.text
        assert negated == (ex.kind in ("negated", "negated_intensified", "distant_negation"))


def test_corpus_is_reproducible_and_checks_its_arguments():
    assert text.make_sentiment_corpus(50, seed=3) == text.make_sentiment_corpus(50, seed=3)
    assert text.make_sentiment_corpus(50, seed=3) != text.make_sentiment_corpus(50, seed=4)
    only = text.make_sentiment_corpus(30, seed=0, kinds=("distant_negation",))
    assert {ex.kind for ex in only} == {"distant_negation"}
    with pytest.raises(ValueError, match="subset"):
        text.make_sentiment_corpus(5, kinds=("sarcasm",))


def test_top_windows_finds_the_ngram_a_filter_was_built_for():
    vocab = text.Vocabulary.from_sentences([["not", "good", "the", "movie", "was"]])
    model = text.TextCNN(len(vocab), dim=len(vocab), windows=(2,), filters=1).double()
    with torch.no_grad():
        model.embedding.weight.copy_(torch.eye(len(vocab), dtype=torch.float64))  # one-hot words
        model.convs[0].weight.zero_()
        model.convs[0].weight[0, vocab.stoi["not"], 0] = 1.0   # "not" then "good"
        model.convs[0].weight[0, vocab.stoi["good"], 1] = 1.0
        model.convs[0].bias.fill_(-1.0)
    ids = vocab.encode_batch([["the", "movie", "was", "not", "good"], ["good", "not", "the"]])
    best = text.top_windows(model, ids, vocab, window=2, filter=0, top=2)
    assert best[0].ngram == "not good" and best[0].activation == pytest.approx(torch.tanh(torch.tensor(1.0)).item())
    assert best[0].sentence == 0 and best[1].activation < best[0].activation


def test_same_ngram_sets_give_the_same_pooled_vector():
    a = "at first it was good they said but later it was awful they said".split()
    b = "at first it was awful they said but later it was good they said".split()
    assert all(text.ngram_set(a, n) == text.ngram_set(b, n) for n in (1, 2, 3))
    assert text.ngram_set(a, 4) != text.ngram_set(b, 4)
    assert text.ngram_set(["x"], 2) == {(text.PAD, "x"), ("x", text.PAD)}
    vocab = text.Vocabulary.from_sentences([a])
    torch.manual_seed(0)
    narrow, wide = text.TextCNN(len(vocab), windows=(1, 3)), text.TextCNN(len(vocab), windows=(4,))
    ids = vocab.encode_batch([a, b], pad_each_side=1)
    with torch.no_grad():
        assert torch.allclose(narrow.pooled(ids)[0], narrow.pooled(ids)[1], atol=1e-6)
        columns = [{tuple(col.round(decimals=5).tolist()) for col in o.T} for o in wide.feature_maps(ids)[0]]
    assert columns[0] != columns[1]  # a window of 4 sees "later it was good" vs "later it was awful"


# ------------------------------------------------------------ decks 000/001: c_i = ReLU(w . x_{i:i+h-1} + b)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("h, d", [(1, 2), (3, 2), (2, 5), (4, 3)])
def test_text_cnn_feature_map_matches_conv1d(h, d, device):
    g = torch.Generator().manual_seed(10 * h + d)
    x = torch.randn(9, d, generator=g, dtype=torch.float64).to(device)
    w = torch.randn(h, d, generator=g, dtype=torch.float64).to(device)
    b = 0.3
    ours = text.text_cnn_feature_map(x, w, b)
    # channels = word dimensions: conv1d's input (1, d, L), weight (1, d, h)
    theirs = torch.relu(F.conv1d(x.T[None], w.T[None], torch.tensor([b], dtype=torch.float64, device=device)))[0, 0]
    assert_matches_torch(ours, theirs, what=f"h = {h}, d = {d}")
    by_formula = torch.stack([torch.relu((w * x[i:i + h]).sum() + b) for i in range(9 - h + 1)])
    assert_matches_torch(ours, by_formula, what="the deck's formula, window by window")


@settings(deadline=None, max_examples=30)
@given(L=st.integers(1, 12), h=st.integers(1, 6), d=st.integers(1, 4))
def test_text_cnn_feature_map_has_one_value_per_window(L, h, d):
    x, w = torch.ones(L, d), torch.ones(h, d)
    if L < h:
        with pytest.raises(ValueError, match="at least"):
            text.text_cnn_feature_map(x, w)
        return
    c = text.text_cnn_feature_map(x, w, b=-1.0)
    assert c.shape == (L - h + 1,) and (c >= 0).all()
    assert torch.equal(c, torch.full((L - h + 1,), float(h * d - 1)))


def test_text_cnn_feature_map_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match="same d"):
        text.text_cnn_feature_map(torch.ones(5, 2), torch.ones(3, 4))
