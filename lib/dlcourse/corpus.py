"""A generated toy corpus for the transformer lecture (lecture 10): short "documents" about
people, where they live, which language they speak and what they do.

Each document tells one story in a fixed order, and consecutive sentences share a word:

    bob lives in rome .  rome is the capital of italy .  bob speaks italian .
    bob works as a baker .  a baker makes bread .

so a model can learn facts (rome -> italy -> italian, baker -> bread) by masked-word prediction,
and can tell a true next sentence from a random one (next-sentence prediction). Everything is
drawn from a `torch.Generator`, so a seed gives the same corpus on every machine. Nothing is
downloaded.

    docs = make_documents(200, generator=torch.Generator().manual_seed(0))
    vocab = Vocab.from_documents(docs)
    vocab.encode(docs[0][0])        # ids of the first sentence
"""
from dataclasses import dataclass, field

import torch

SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")
COUNTRIES = {  # country: (capital, language)
    "france": ("paris", "french"), "italy": ("rome", "italian"), "spain": ("madrid", "spanish"),
    "germany": ("berlin", "german"), "japan": ("tokyo", "japanese"), "egypt": ("cairo", "arabic"),
    "greece": ("athens", "greek"), "russia": ("moscow", "russian"),
}
JOBS = {"baker": "bread", "farmer": "cheese", "painter": "pictures", "tailor": "coats",
        "potter": "bowls", "brewer": "beer"}
NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar")


def story(name: str, country: str, job: str) -> list[list[str]]:
    """The five sentences of one document, as lists of words (each ends with '.')."""
    capital, language = COUNTRIES[country]
    return [f"{name} lives in {capital} .".split(),
            f"{capital} is the capital of {country} .".split(),
            f"{name} speaks {language} .".split(),
            f"{name} works as a {job} .".split(),
            f"a {job} makes {JOBS[job]} .".split()]


def make_documents(num_documents: int, generator: torch.Generator | None = None) -> list[list[list[str]]]:
    """`num_documents` stories with a name, a country and a job drawn uniformly at random.

    Returns documents -> sentences -> words (lists of str).
    """
    if num_documents < 1:
        raise ValueError(f"num_documents must be at least 1, got {num_documents}")
    countries, jobs = list(COUNTRIES), list(JOBS)
    picks = torch.stack([torch.randint(len(NAMES), (num_documents,), generator=generator),
                         torch.randint(len(countries), (num_documents,), generator=generator),
                         torch.randint(len(jobs), (num_documents,), generator=generator)], dim=1)
    return [story(NAMES[n], countries[c], jobs[j]) for n, c, j in picks.tolist()]


@dataclass
class Vocab:
    """Word <-> id. The special tokens come first: [PAD] = 0, [CLS] = 1, [SEP] = 2, [MASK] = 3."""

    itos: list[str]
    stoi: dict[str, int] = field(init=False)

    def __post_init__(self):
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def from_documents(cls, documents) -> "Vocab":
        """Special tokens, then every word of the documents in sorted order."""
        words = sorted({w for doc in documents for sentence in doc for w in sentence})
        return cls(list(SPECIAL_TOKENS) + [w for w in words if w not in SPECIAL_TOKENS])

    def __len__(self) -> int:
        return len(self.itos)

    def __getitem__(self, word: str) -> int:
        try:
            return self.stoi[word]
        except KeyError:
            raise KeyError(f"{word!r} is not in the vocabulary of {len(self)} words") from None

    @property
    def special_ids(self) -> list[int]:
        return [self.stoi[t] for t in SPECIAL_TOKENS]

    def encode(self, words) -> list[int]:
        """Words (a list, or a string split on spaces) -> ids."""
        words = words.split() if isinstance(words, str) else words
        return [self[w] for w in words]

    def decode(self, ids) -> str:
        """Ids (list or tensor) -> the words joined by spaces."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        return " ".join(self.itos[i] for i in ids)
