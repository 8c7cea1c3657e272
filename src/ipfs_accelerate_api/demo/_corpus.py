"""The bundled corpus (made by :mod:`._make_corpus`)."""

from __future__ import annotations

import gzip
from importlib import resources

__all__ = ["CORPUS", "corpus_lines"]

#: The bundled corpus: a file of this package, gzip-compressed UTF-8, one text a line.
CORPUS = "corpus.txt.gz"


def corpus_lines(n: int | None = None) -> list[str]:
    """The first ``n`` lines of the bundled corpus (all 20,000 when ``None``)."""
    data = resources.files(__package__ or "ipfs_accelerate_api.demo").joinpath(CORPUS).read_bytes()
    lines = gzip.decompress(data).decode("utf-8").splitlines()
    return lines if n is None else lines[:n]
