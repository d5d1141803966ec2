"""dlcourse: the reference implementations, data and checks behind the course notebooks.

One module per topic, named after the lecture that introduces it:

    dlcourse.conv       convolution, padding, stride and pooling (lecture 04)
    dlcourse.rnn        recurrent cells (RNN, LSTM, GRU) in PyTorch's layout (lectures 07-08)
    dlcourse.embeddings word2vec (skip-gram, CBOW), nearest neighbours, analogies (lecture 09)
    dlcourse.word_corpus the generated corpus with known analogies and tags (lecture 09)
    dlcourse.elmo       a bidirectional LSTM language model and ELMo's layer mix (lecture 09)
    dlcourse.attention  scaled dot-product and multi-head attention, transformer block, tiny GPT (lecture 10)
    dlcourse.bert       BERT's masking, next-sentence pairs, parameter count, a tiny BERT (lecture 10)
    dlcourse.corpus     generated stories for the transformer lecture (lecture 10)
    dlcourse.data       small data sets that ship with the course or a package (no downloads)
    dlcourse.device     where tensors live: CUDA when present, else the CPU
    dlcourse.seeding    reproducible random numbers
    dlcourse.training   a small training loop with a progress bar
    dlcourse.checks     the comparisons that exercise tests use to explain a wrong answer
    dlcourse.grading    nbgrader plug-ins for instructors

Importing the package does no work: no seeding, no global options, no device probing.
"""

__version__ = "0.1.0"
