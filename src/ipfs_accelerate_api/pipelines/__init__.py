"""Pipelines: the main job as a Python API (the ``ipfs-accel embed`` command is a thin layer
over it).

    from ipfs_accelerate_api.pipelines import embed_file, embed_iter
    summary = embed_file("corpus.txt", "vectors.npy", backend="tei",
                         base_url="http://127.0.0.1:8080")
    for row, block in embed_iter(texts, backend=my_backend, model="m"):
        ...

See :mod:`ipfs_accelerate_api.pipelines.embed`.
"""

from __future__ import annotations

from .embed import EmbedSummary, embed_file, embed_iter
from .records import FORMATS, Record, read_records

__all__ = ["EmbedSummary", "FORMATS", "Record", "embed_file", "embed_iter", "read_records"]
