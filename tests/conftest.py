"""Shared test fixtures: the options a bench suite is run with, and the names data."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from microgpt_lib.bench import SuiteOptions
from microgpt_lib.config import GPTConfig
from microgpt_lib.data import CharTokenizer, load_names


@pytest.fixture
def suite_options() -> Callable[..., SuiteOptions]:
    """make(**overrides): quick SuiteOptions (the tests' default) with some fields changed."""

    def make(**overrides: Any) -> SuiteOptions:
        return SuiteOptions(**{"quick": True, **overrides})

    return make


@pytest.fixture(scope="session")
def names() -> list[str]:
    return load_names()


@pytest.fixture(scope="session")
def tokenizer(names: list[str]) -> CharTokenizer:
    return CharTokenizer.from_documents(names)


@pytest.fixture(scope="session")
def config(tokenizer: CharTokenizer) -> GPTConfig:
    return GPTConfig(vocab_size=tokenizer.vocab_size)
