"""The sections of `scripts/bench_fullshape.py`, one module each (each runs in its own child process)."""
