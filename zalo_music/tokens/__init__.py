"""Precomputed compression-model tokens: `zalo-music tokenize` and training from the token cache.

- `key`: the cache key (codec identity, rates, n_q, segment policy) and the stale-cache refusal.
- `store`: int16 memory-mapped shards + JSON indexes, written atomically, resumable.
- `encode`: the `tokenize` job (config composed like `dora run`).
- `dataset`: audiocraft-compatible dataset over cached codes (same file/segment sampling and conditioning).
- `cli`: the `tokenize` sub-command.
The solver side lives in `zalo_music.solvers.tokens.TokenDataMixin`.
"""
