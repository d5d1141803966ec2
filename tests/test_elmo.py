"""dlcourse.elmo: the biLM's two directions against nn.LSTM run on each sentence alone (so padding
cannot leak), its loss against a direct cross-entropy, ScalarMix against ELMo's formula, and the
same trained weights through dlcourse.rnn.lstm.

float64 throughout; ATOL = RTOL = 1e-10 (helpers.py), except where noted.
"""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse import elmo, rnn
from helpers import DEVICES, assert_matches_torch

SENTENCES = [[0, 1, 2, 3], [4, 2], [5, 5, 1, 0, 3, 2], [1]]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(device="cpu", seed=0, vocab_size=6, dim=5, num_layers=2):
    torch.manual_seed(seed)
    return elmo.BiLM(vocab_size, dim=dim, num_layers=num_layers).double().to(device)


def test_batch_sentences():
    ids, lengths = elmo.batch_sentences([[0, 1], [2]], vocab_size=3)
    # <s> = 3, </s> = 4, padding = 5
    assert ids.T.tolist() == [[3, 0, 1, 4], [3, 2, 4, 5]]
    assert lengths.tolist() == [4, 3]
    with pytest.raises(ValueError, match=r"sentence 0 has an id outside \[0, 3\)"):
        elmo.batch_sentences([[3]], vocab_size=3)


@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=5), width=st.integers(1, 3))
@settings(max_examples=30, deadline=None)
def test_reverse_padded(lengths, width):
    t_max = max(lengths) + 1
    x = torch.arange(t_max * len(lengths) * width, dtype=torch.float64).view(t_max, len(lengths), width)
    lens = torch.tensor(lengths)
    out = elmo.reverse_padded(x, lens)
    for n, length in enumerate(lengths):
        assert torch.equal(out[:length, n], x[:length, n].flip(0))
        assert torch.equal(out[length:, n], x[length:, n])  # padding stays in place
    assert torch.equal(elmo.reverse_padded(out, lens), x)


def test_reverse_padded_errors():
    with pytest.raises(ValueError, match="lengths must be"):
        elmo.reverse_padded(torch.zeros(3, 2), torch.tensor([4, 1]))


@pytest.mark.parametrize("device", DEVICES)
def test_directions_match_nn_lstm_on_each_sentence_alone(device):
    model = make_model(device)
    ids, lengths = elmo.batch_sentences(SENTENCES, 6)
    ids, lengths = ids.to(device), lengths.to(device)
    with torch.no_grad():
        reps = model.representations(ids, lengths)
        assert reps.shape == (3, ids.shape[0], len(SENTENCES), 10)
        for n, length in enumerate(lengths.tolist()):
            x = model.embedding(ids[:length, n])                        # (T, dim), no padding at all
            f, b = x, x.flip(0)
            for j, (lf, lb) in enumerate(zip(model.forward_layers, model.backward_layers), start=1):
                f, b = lf(f)[0], lb(b)[0]
                expected = torch.cat([f, b.flip(0)], dim=-1)
                assert_matches_torch(reps[j, :length, n], expected, what=f"layer {j}, sentence {n}")
            assert_matches_torch(reps[0, :length, n], torch.cat([x, x], dim=-1), what="layer 0")


@pytest.mark.parametrize("device", DEVICES)
def test_loss_matches_direct_cross_entropy(device):
    model = make_model(device, seed=1)
    ids, lengths = elmo.batch_sentences(SENTENCES, 6)
    loss_f, loss_b = model.loss(ids.to(device), lengths.to(device))
    terms_f, terms_b = [], []
    for n, length in enumerate(lengths.tolist()):
        seq = ids[:length, n].to(device)
        _, forward, backward = model.directions(seq.unsqueeze(1), torch.tensor([length], device=device))
        logits_f = model.softmax(forward[-1][:, 0])     # (T, V + 3): position t predicts t + 1
        logits_b = model.softmax(backward[-1][:, 0])    # position t predicts t - 1
        for t in range(length - 1):
            terms_f.append(-F.log_softmax(logits_f[t], dim=-1)[seq[t + 1]])
            terms_b.append(-F.log_softmax(logits_b[t + 1], dim=-1)[seq[t]])
    assert_matches_torch(loss_f, torch.stack(terms_f).mean(), what="forward LM loss")
    assert_matches_torch(loss_b, torch.stack(terms_b).mean(), what="backward LM loss")


@pytest.mark.parametrize("device", DEVICES)
def test_dlcourse_rnn_lstm_gives_the_same_representations(device):
    model = make_model(device, seed=2, num_layers=3)
    ids, lengths = elmo.batch_sentences(SENTENCES, 6)
    with torch.no_grad():
        ours = model.representations(ids.to(device), lengths.to(device), lstm=rnn.lstm)
        theirs = model.representations(ids.to(device), lengths.to(device))
    assert_matches_torch(ours, theirs, what="representations through dlcourse.rnn.lstm")


def test_training_lowers_the_loss_reproducibly():
    sentences = [[0, 1, 2, 3], [4, 1, 2, 5], [0, 1, 2, 3], [4, 1, 2, 5]] * 8
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = elmo.BiLM(6, dim=8)
        runs.append(elmo.train_bilm(model, sentences, epochs=4, batch_size=8, lr=0.02,
                                    generator=torch.Generator().manual_seed(1), progress=False))
    assert runs[0] == runs[1]
    assert runs[0][-1] < runs[0][0]


@given(num_layers=st.integers(1, 4), seed=st.integers(0, 2**16))
@settings(max_examples=20, deadline=None)
def test_scalar_mix_is_elmos_formula(num_layers, seed):
    g = torch.Generator().manual_seed(seed)
    layers = torch.randn(num_layers, 3, 2, 4, generator=g, dtype=torch.float64)
    mix = elmo.ScalarMix(num_layers).double()
    assert_matches_torch(mix(layers), layers.mean(dim=0), what="initial mix = plain average")
    with torch.no_grad():
        mix.w.copy_(torch.randn(num_layers, generator=g, dtype=torch.float64))
        mix.gamma.fill_(1.7)
    s = torch.exp(mix.w) / torch.exp(mix.w).sum()
    expected = 1.7 * sum(s[j] * layers[j] for j in range(num_layers))
    assert_matches_torch(mix(layers), expected)
    s_learned = mix.s.detach()
    assert abs(float(s_learned.sum()) - 1.0) < 1e-12 and bool((s_learned > 0).all())
    with pytest.raises(ValueError, match=f"expected {num_layers} layers on axis 0"):
        mix(layers[:1].expand(num_layers + 1, -1, -1, -1))


def test_tagger_learns_a_tag_that_needs_context():
    """Word 2 is tagged 0 after word 0 and 1 after word 1: layer 0 (no context) cannot be right
    on both, a mix with the LSTM layers can."""
    sentences = [[0, 2], [1, 2]] * 16
    torch.manual_seed(0)
    model = elmo.BiLM(3, dim=8)
    elmo.train_bilm(model, sentences, epochs=30, batch_size=32, lr=0.03, progress=False)
    ids, lengths = elmo.batch_sentences(sentences, 3)
    with torch.no_grad():
        reps = model.representations(ids, lengths)
    tags = torch.full(ids.shape, -100)
    tags[1] = 2  # the first word has its own tag
    tags[2] = torch.tensor([0, 1] * 16)
    scores = {}
    for layer in (0, None):
        torch.manual_seed(0)
        tagger = elmo.ElmoTagger(3, 16, 3, layer=layer)
        elmo.train_tagger(tagger, reps, tags, epochs=150, progress=False)
        with torch.no_grad():
            pred = tagger(reps).argmax(-1)
        scores[layer] = float((pred[2] == tags[2]).float().mean())
    assert scores[0] == 0.5 and scores[None] == 1.0
    with pytest.raises(ValueError, match=r"layer must be in \[0, 3\)"):
        elmo.ElmoTagger(3, 16, 3, layer=3)


def test_word_in_context():
    ids, lengths = elmo.batch_sentences(SENTENCES, 6)
    reps = torch.arange(3 * ids.numel() * 2, dtype=torch.float64).view(3, *ids.shape, 2)
    vectors, positions = elmo.word_in_context(reps, ids, 2)
    assert positions == [(3, 0), (2, 1), (6, 2)]  # <s> shifts every word by one
    assert torch.equal(vectors[:, 1], reps[:, 2, 1])
    with pytest.raises(ValueError, match="word id 9 does not occur"):
        elmo.word_in_context(reps, ids, 9)
