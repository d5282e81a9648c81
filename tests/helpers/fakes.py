"""Stand-ins for a loaded model, for the tests of what surrounds generation."""

from __future__ import annotations

import torch


class FakeMusicGen:
    """Stands in for a MusicGen: random audio from torch's global RNG, like real sampling."""

    sample_rate = 32000

    def __init__(self) -> None:
        self.params: dict = {}

    def set_generation_params(self, **kwargs) -> None:
        self.params = kwargs

    # the two stages `zalo_music.generate.generate_batch` calls (audiocraft's BaseGenModel API)
    def _prepare_tokens_and_attributes(self, texts: list[str], prompt: None) -> tuple[list[str], None]:
        return list(texts), None

    def _generate_tokens(self, attributes: list[str], prompt_tokens: None, progress: bool = False) -> torch.Tensor:
        n = int(self.params["duration"] * self.sample_rate)
        return torch.randn(len(attributes), 1, n)  # "tokens" that are already audio

    def generate_audio(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.clone()
