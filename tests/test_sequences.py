"""dlcourse.sequences: the generated tasks are what they claim, the models have the right shapes,
and the seq2seq pieces agree with each other (teacher forcing vs greedy decoding)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse import sequences as S


def test_pad_sequences_as_on_the_slides():
    # deck 000: "This is an example sentence ." -> [35, 5, 3, 134, 96, 10], pre-padded to 10 ids
    assert S.pad_sequences([[35, 5, 3, 134, 96, 10]], 10).tolist() == [[0, 0, 0, 0, 35, 5, 3, 134, 96, 10]]
    long = [52, 154, 462, 33, 89, 78, 285, 16, 145, 95, 108, 7, 4, 2]
    assert S.pad_sequences([long], 10).tolist() == [long[:10]]
    assert S.pad_sequences([long], 10, truncate="left").tolist() == [long[-10:]]
    assert S.pad_sequences([[1, 2], []], 3, side="right", value=9).tolist() == [[1, 2, 9], [9, 9, 9]]
    with pytest.raises(ValueError, match="side and truncate"):
        S.pad_sequences([[1]], 3, side="middle")


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 20), lo=st.integers(1, 6), extra=st.integers(0, 6), seed=st.integers(0, 2**16))
def test_reversal_task_targets_are_reversed_sources(n, lo, extra, seed):
    batch = S.reversal_task(n, lo, lo + extra, generator=torch.Generator().manual_seed(seed))
    assert batch.src.shape == (n, lo + extra) and batch.tgt.shape == (n, lo + extra + 1)
    for src, k, tgt in zip(batch.src, batch.lengths.tolist(), batch.tgt):
        assert lo <= k <= lo + extra
        digits = src[:k]
        assert ((digits >= S.DIGIT0) & (digits < S.VOCAB_SIZE)).all() and (src[k:] == S.PAD).all()
        assert tgt[:k].tolist() == digits.flip(0).tolist() and tgt[k] == S.EOS and (tgt[k + 1:] == S.PAD).all()


def test_long_range_task_label_is_the_first_token_only():
    x, y = S.long_range_task(2000, 7, n_classes=3, n_distractors=5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2000, 8) and y.shape == (2000,)
    assert torch.equal(x[:, 0], y + 1)
    assert ((x[:, 1:] >= 4) & (x[:, 1:] <= 8)).all()       # distractors never collide with keys
    assert set(y.tolist()) == {0, 1, 2}
    same = S.long_range_task(5, 3, generator=torch.Generator().manual_seed(4))
    again = S.long_range_task(5, 3, generator=torch.Generator().manual_seed(4))
    assert torch.equal(same[0], again[0])
    with pytest.raises(ValueError):
        S.long_range_task(5, -1)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_classifier_shapes(cell):
    torch.manual_seed(0)
    model = S.SequenceClassifier(10, 3, embed=4, hidden=6, cell=cell)
    assert model(torch.randint(0, 10, (5, 7))).shape == (5, 3)


def test_forget_bias_sets_the_f_block_only():
    torch.manual_seed(0)
    model = S.SequenceClassifier(10, 3, hidden=6, cell="lstm", forget_bias=1.0)
    total = model.rnn.bias_ih_l0 + model.rnn.bias_hh_l0
    assert torch.allclose(total[6:12], torch.ones(6))
    torch.manual_seed(0)
    plain = S.SequenceClassifier(10, 3, hidden=6, cell="lstm")
    assert torch.equal(model.rnn.bias_ih_l0[:6], plain.rnn.bias_ih_l0[:6])
    with pytest.raises(ValueError, match="LSTM only"):
        S.SequenceClassifier(10, 3, cell="rnn", forget_bias=1.0)


def test_training_reduces_the_loss_on_an_easy_task():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = S.SequenceClassifier(13, 4, embed=8, hidden=16, cell="lstm")
    test = S.long_range_task(200, 2, generator=torch.Generator().manual_seed(9))
    log = S.train_sequence_classifier(model, lambda b: S.long_range_task(b, 2, generator=g), steps=60, lr=1e-2,
                                      test=test, progress=False)
    assert sum(log.losses[-10:]) < sum(log.losses[:10]) and log.accuracy > 0.9


def test_seq2seq_greedy_decoding_follows_its_own_teacher_forced_argmax():
    # Feeding back the argmax is teacher forcing on the model's own predictions: the two must agree.
    torch.manual_seed(0)
    model = S.Seq2Seq(hidden=8).eval()
    batch = S.reversal_task(6, 2, 5, generator=torch.Generator().manual_seed(3))
    pred = model.greedy_decode(batch.src, batch.lengths, 6)
    with torch.no_grad():
        forced = model(batch.src, batch.lengths, pred).argmax(dim=-1)
    assert torch.equal(forced, pred)
    assert S.sequence_accuracy(model, batch).shape == (6,)
    loss = S.seq2seq_loss(model, batch)
    assert loss.ndim == 0 and loss.item() > 0


def test_seq2seq_encoder_ignores_padding():
    torch.manual_seed(0)
    model = S.Seq2Seq(hidden=8)
    src = torch.tensor([[5, 6, 7, 0, 0]])
    shorter = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(model.encode(src, torch.tensor([3])), model.encode(shorter, torch.tensor([3])))


def test_long_range_task_mentions_are_keys_that_do_not_change_the_label():
    x, y = S.long_range_task(4000, 10, n_classes=4, mention_prob=0.1, generator=torch.Generator().manual_seed(2))
    assert torch.equal(x[:, 0], y + 1)
    later_keys = (x[:, 1:] >= 1) & (x[:, 1:] <= 4)
    # 40000 Bernoulli(0.1) draws: the fraction lies within 6 standard deviations (0.009) of 0.1
    assert abs(later_keys.double().mean().item() - 0.1) < 6 * (0.1 * 0.9 / 40000) ** 0.5
    assert not S.long_range_task(50, 10, mention_prob=0.0, generator=torch.Generator().manual_seed(2))[0][:, 1:].le(4).any()
    with pytest.raises(ValueError, match="mention_prob"):
        S.long_range_task(5, 3, mention_prob=1.5)


# ------------------------------------------------------------ time series and error analysis (more from the decks)
@settings(deadline=None, max_examples=40)
@given(T=st.integers(2, 40), window=st.integers(1, 10), horizon=st.integers(1, 4))
def test_sliding_windows_pairs_each_window_with_the_value_after_it(T, window, horizon):
    s = torch.arange(T, dtype=torch.float64) ** 2
    if T - window - horizon + 1 < 1:
        with pytest.raises(ValueError, match="too short"):
            S.sliding_windows(s, window, horizon)
        return
    X, y = S.sliding_windows(s, window, horizon)
    assert X.shape == (T - window - horizon + 1, window) and y.shape == (X.shape[0],)
    for j in range(X.shape[0]):
        assert torch.equal(X[j], s[j:j + window]) and y[j] == s[j + window + horizon - 1]


def test_seasonal_series_is_seeded_and_has_its_period():
    a = S.seasonal_series(48, period=12, noise=0.0)
    assert torch.allclose(a[12:] - a[:-12], torch.full((36,), 12 * 0.02), atol=1e-5)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(S.seasonal_series(30, generator=g1), S.seasonal_series(30, generator=g2))
    with pytest.raises(ValueError):
        S.seasonal_series(0)


@settings(deadline=None, max_examples=60)
@given(a=st.lists(st.sampled_from("abc"), max_size=7), b=st.lists(st.sampled_from("abc"), max_size=7),
       c=st.lists(st.sampled_from("abc"), max_size=7))
def test_edit_distance_is_a_metric(a, b, c):
    d = S.edit_distance
    assert (d(a, b) == 0) == (a == b)
    assert d(a, b) == d(b, a) and abs(len(a) - len(b)) <= d(a, b) <= max(len(a), len(b))
    assert d(a, c) <= d(a, b) + d(b, c)


def test_edit_distance_on_the_decks_examples():
    assert S.edit_distance("kitten", "sitting") == 3
    assert S.edit_distance("i am staying for another few weeks .".split(), "i am going for the few days .".split()) == 3


def test_pos_tagging_task_tags_every_word_and_the_ambiguous_words_both_ways():
    data = S.pos_tagging_task(300, generator=torch.Generator().manual_seed(0))
    assert all(len(w) == len(t) for w, t in data)
    tags_of = {}
    for words, tags in data:
        for w, t in zip(words, tags):
            tags_of.setdefault(w, set()).add(t)
    assert all(tags_of[w] == {"NOUN", "VERB"} for w in S.POS_LEXICON["AMBIG"])
    assert tags_of["the"] == {"DET"} and tags_of["sees"] == {"VERB"}
