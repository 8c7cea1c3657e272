"""The pure-Python twins: the typed, documented spec of the C core. Import them only through
:mod:`ipfs_accelerate_api.core`, which chooses."""
