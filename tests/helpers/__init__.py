"""What the tests share besides fixtures (those live in tests/conftest.py): paths, child processes, demo data,
stand-ins and fakes. Nothing here imports zalo_music at module level: conftest sets the environment first."""

from __future__ import annotations

from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
#: The real competition descriptions (no audio); tests that read them skip where `../shared` is absent.
SHARED = PROJECT.parent / "shared" / "data" / "zalo2023"
