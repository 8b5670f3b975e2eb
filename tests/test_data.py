"""The names dataset, the document loader and the tokenizer, bad inputs included."""

import random
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microgpt_lib import data


@pytest.fixture(scope="module")
def names():
    return data.load_names()


def test_default_names_are_the_most_common_unique_lowercase_names(names):
    assert len(names) == data.DEFAULT_NAME_COUNT == 32_033
    assert len(set(names)) == len(names)
    assert all(name and set(name) <= set(string.ascii_lowercase) for name in names)
    assert names[:4] == ["james", "john", "robert", "michael"]  # most births first
    assert {"emma", "olivia", "noah", "liam", "mary"} <= set(names)


def test_names_are_deterministic_and_countable():
    assert data.load_names(10) == data.load_names()[:10]
    assert len(data.load_names(None)) > 90_000
    with pytest.raises(ValueError, match="count"):
        data.load_names(0)


def test_shuffle_and_split_are_seeded(names):
    train, val = data.train_val_split(names, val_fraction=0.1, seed=42)
    assert (train, val) == data.train_val_split(names, val_fraction=0.1, seed=42)
    assert data.train_val_split(names, seed=1) != (train, val)
    assert len(val) == round(0.1 * len(names)) and len(train) + len(val) == len(names)
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(names)
    assert data.shuffled(["a", "b", "c"], seed=0) == data.shuffled(
        ["a", "b", "c"], seed=0
    )


def test_shuffle_can_draw_from_a_generator_and_leave_it_running(names):
    rng = random.Random(42)
    assert data.shuffled(names, rng) == data.shuffled(names, 42)
    reference = random.Random(42)
    reference.shuffle(list(names))
    assert rng.getstate() == reference.getstate()  # left where a run goes on drawing
    docs = ["c", "a", "b"]
    assert data.shuffled(docs, 1) is not docs and docs == ["c", "a", "b"]  # a copy


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 2])
def test_split_rejects_bad_fractions(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        data.train_val_split(["a", "b", "c"], val_fraction=fraction)


def test_split_needs_two_documents():
    with pytest.raises(ValueError, match="at least 2"):
        data.train_val_split(["a"])


def test_load_documents_reads_one_per_line(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("hello world\n  spaced  \nlast\n")
    assert data.load_documents(path) == ["hello world", "spaced", "last"]


@pytest.mark.parametrize(
    "content, message",
    [("", "empty"), ("\n\n", "empty"), ("a\n\nb\n", "line 2: empty document")],
)
def test_load_documents_rejects_empty_files_and_documents(tmp_path, content, message):
    path = tmp_path / "docs.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        data.load_documents(path)


def test_load_documents_reports_missing_and_binary_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such data file"):
        data.load_documents(tmp_path / "missing.txt")
    path = tmp_path / "binary.txt"
    path.write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(ValueError, match="not UTF-8"):
        data.load_documents(path)


def test_tokenizer_on_names(names):
    tok = data.CharTokenizer.from_documents(names)
    assert tok.chars == string.ascii_lowercase
    assert tok.vocab_size == 27 and tok.bos == 26
    assert tok.encode("abz") == [0, 1, 25]
    assert tok.encode_document("emma") == [26, 4, 12, 12, 0, 26]
    assert tok.decode(tok.encode_document("emma")) == "emma"


@given(
    st.lists(st.text(alphabet="xyz é!", min_size=1, max_size=8), min_size=1, max_size=5)
)
def test_tokenizer_round_trips_any_documents(docs):
    tok = data.CharTokenizer.from_documents(docs)
    for doc in docs:
        assert tok.decode(tok.encode(doc)) == doc
        ids = tok.encode_document(doc)
        assert ids[0] == ids[-1] == tok.bos and len(ids) == len(doc) + 2
        assert all(0 <= i < tok.vocab_size for i in ids)


def test_tokenizer_rejects_bad_input():
    tok = data.CharTokenizer("abc")
    with pytest.raises(ValueError, match="unknown character 'z'"):
        tok.encode("abz")
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([0, 7])
    with pytest.raises(ValueError, match="empty document"):
        tok.encode_document("")
    with pytest.raises(ValueError, match="no documents"):
        data.CharTokenizer.from_documents([])
    with pytest.raises(ValueError, match="document 1 is empty"):
        data.CharTokenizer.from_documents(["ok", ""])
    with pytest.raises(ValueError, match="unique and sorted"):
        data.CharTokenizer("ba")
