"""The text CNN explorer (dlcourse.widgets.text): what it computes, and that typing changes it."""
import pytest
import torch

from dlcourse import text
from dlcourse.widgets import text as wtext


def model_and_vocab():
    vocab = text.Vocabulary.from_sentences([t.split() for t in ("the movie was not very good", "awful")])
    torch.manual_seed(0)
    return text.TextCNN(len(vocab), dim=4, windows=(1, 3), filters=3), vocab


def test_sentence_activations_match_the_model():
    model, vocab = model_and_vocab()
    model.train()
    act = wtext.sentence_activations(model, vocab, "The movie was GOOD, zebra")
    assert act.words == ["the", "movie", "was", "good", "<unk>"]  # punctuation dropped, unknown word
    assert act.maps[1].shape == (3, 5) and act.maps[3].shape == (3, 3)
    ids = vocab.encode_batch([act.words])
    with torch.no_grad():
        model.eval()
        assert torch.allclose(act.pooled, model.pooled(ids)[0])
        assert torch.allclose(act.probabilities, model(ids)[0].softmax(-1))
    model.train()
    wtext.sentence_activations(model, vocab, "awful")
    assert model.training  # mode restored
    n, filt, ngram, value = wtext.strongest(act)
    assert value == act.pooled.max().item() and ngram in " ".join(act.words)
    assert value == act.maps[n][filt].max().item() and len(ngram.split()) == n
    assert wtext.summary(act).startswith("prediction: ") and f"'{ngram}'" in wtext.summary(act)
    with pytest.raises(ValueError, match="at least one word"):
        wtext.sentence_activations(model, vocab, "?!")


def test_typing_a_sentence_changes_the_widget():
    import matplotlib

    matplotlib.use("Agg")
    model, vocab = model_and_vocab()
    with torch.no_grad():
        model.out.bias.copy_(torch.tensor([0.0, 0.0]))
    w = wtext.filter_explorer(model, vocab, "the movie was good")
    box, line, picture = w.children
    assert "dlcourse-widget" in w._dom_classes
    first_line = line.value
    box.value = "awful awful awful"
    assert line.value.startswith("prediction") and line.value != first_line
    acts = [wtext.sentence_activations(model, vocab, s) for s in ("the movie was good", "awful awful awful")]
    assert not torch.equal(acts[0].pooled, acts[1].pooled)
    box.value = "..."
    assert "at least one word" in line.value
