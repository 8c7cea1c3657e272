"""The compiled twins (built from ``cython_core/`` by setup.py). Import them only through
:mod:`ipfs_accelerate_api.core`, which chooses."""
