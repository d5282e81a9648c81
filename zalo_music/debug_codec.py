"""audiocraft's random debug EnCodec with codebooks fitted to music, written once as an exported checkpoint.

`solver=zalo/tiny` names this file (`compression_model_checkpoint: //pretrained/<reference dir>/debug_codec/...`),
so the solver, `zalo-music tokenize`, `export` and the tests load the same weights through audiocraft's own
loader (`CompressionModel.get_pretrained` on a path). audiocraft's `//pretrained/debug_compression_model` is
drawn anew at every build (from whatever the RNG holds, with a k-means init that costs seconds); each consumer
would have to replay the solver's RNG to get the codec the LM was trained with.

audiocraft fits the debug codec's quantizer (k-means) to standard-normal noise, not to what its random encoder
outputs for audio, in a training-mode pass whose EMA update, right after the k-means, rescales the centroids
(`EuclideanCodebook.forward` treats the means `init_embed_` stored as sums): every frame of every demo clip then
falls in one or two codes (0.003 nats of entropy in the first codebook), so an LM trained on them has nothing to
learn and no text to follow. `write` re-runs audiocraft's own k-means initialisation on the encoder's latents of
rendered demo music, in eval mode (no EMA step after it); the encoder and decoder keep their random weights.
Only files named `STEM_*` are fitted: a config naming the earlier `debug_encodec_<k>khz.th` gets that codec.
"""

from __future__ import annotations

from pathlib import Path

from . import env

#: The RNG seed the persisted codec is drawn from (any fixed value: the weights are random either way).
SEED = 0
FOLDER = "debug_codec"
#: File-name stem: `fitted` tells this codec from one written by the earlier, noise-fitted, version.
STEM = "debug_encodec_fitted"
#: Demo clips (seeded apart from any dataset's) whose latents fit the codebooks: 16 x 250 frames for 400 bins.
FIT_CLIPS = 16
FIT_SEED = 12345


def default_path(sample_rate: int = 32000) -> Path:
    """Where the debug codec of `sample_rate` lives: `<reference dir>/debug_codec/debug_encodec_<k>khz.th`.

    Args:
        sample_rate: 32000 (MusicGen's) or 16000, the rates audiocraft's debug codec supports.
    """
    return env.reference_dir() / FOLDER / f"{STEM}_{sample_rate // 1000}khz.th"


def config(sample_rate: int = 32000) -> dict:
    """Config from which audiocraft's `builders.get_compression_model` rebuilds its debug EnCodec
    (`audiocraft/models/builders.py:get_debug_compression_model`, which has no config of its own).

    Args:
        sample_rate: 32000 or 16000.
    """
    ratios = {16000: [10, 8, 8], 32000: [10, 8, 16]}[sample_rate]
    return {
        "compression_model": "encodec", "device": "cpu", "sample_rate": sample_rate, "channels": 1,
        "encodec": {"autoencoder": "seanet", "quantizer": "rvq", "sample_rate": sample_rate, "channels": 1},
        "seanet": {"n_filters": 4, "n_residual_layers": 1, "dimension": 32, "ratios": ratios,
                   "encoder": {}, "decoder": {}},
        "rvq": {"n_q": 4, "bins": 400},
    }


def write(path: str | Path, sample_rate: int = 32000, seed: int = SEED) -> Path:
    """Draw audiocraft's debug codec from `seed` and save it at `path` in audiocraft's exported format.

    Written atomically: a reader sees the old file or the whole new one.

    Args:
        path: destination `.th` file.
        sample_rate: 32000 or 16000.
        seed: torch seed of the random weights (the caller's RNG state is left alone).
    Returns:
        `path`.
    """
    import torch
    from audiocraft import __version__
    from audiocraft.models.builders import get_debug_compression_model
    from omegaconf import OmegaConf

    from .fileio import atomic_path

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        codec = get_debug_compression_model("cpu", sample_rate=sample_rate)
        if Path(path).name.startswith(STEM + "_"):
            fit_codebooks(codec, sample_rate)
    pkg = {"best_state": codec.state_dict(), "xp.cfg": OmegaConf.to_yaml(config(sample_rate)),
           "version": __version__, "exported": True}
    with atomic_path(path) as tmp:
        torch.save(pkg, tmp)
    return Path(path)


def fit_codebooks(codec, sample_rate: int, clips: int = FIT_CLIPS) -> None:
    """Re-initialise the codec's residual codebooks by audiocraft's k-means on its latents of demo music.

    Upstream: `audiocraft/models/builders.py:get_debug_compression_model` initialises them on `torch.randn`.
    Each `EuclideanCodebook` is marked uninitialised, then one eval-mode pass of the quantizer over the latents
    runs its own `init_embed_` (k-means on the first layer's input, then on the residual each fitted layer
    leaves); eval mode skips the EMA update and code expiry that follow it in training mode. Deterministic for
    a given torch RNG state and thread count (k-means draws its initial centroids from the RNG).

    Args:
        codec: audiocraft's `EncodecModel` (modified in place, left in eval mode).
        sample_rate: the codec's rate, at which the clips are rendered.
        clips: number of 10-s demo clips fitted on.
    """
    import numpy as np
    import torch

    from .data.demo import make_specs, render

    audio = [render(spec, sample_rate=sample_rate) for spec in make_specs(clips, seed=FIT_SEED)]
    wav = torch.from_numpy(np.stack(audio)).float()[:, None]
    with torch.no_grad():
        latents = codec.encoder(wav)
        for layer in codec.quantizer.vq.layers:
            layer._codebook.inited.fill_(0)
        codec.eval()
        codec.quantizer(latents, codec.frame_rate)


def checkpoint_file(checkpoint: str) -> Path | None:
    """The file a `compression_model_checkpoint` value names when it is one of our debug codecs, else None.

    Args:
        checkpoint: e.g. `//pretrained//home/me/reference/debug_codec/debug_encodec_32khz.th`.
    """
    text = str(checkpoint)
    name = text[len("//pretrained/"):] if text.startswith("//pretrained/") else text
    path = Path(name)
    if path.parent.name == FOLDER and path.name.startswith("debug_encodec_") and path.suffix == ".th":
        return path
    return None


def ensure(checkpoint: str) -> None:
    """Write the debug codec a config names if it does not exist yet (no-op for any other checkpoint).

    Called before the codec is loaded: by the solver registry, `tokenize` and `export`.

    Args:
        checkpoint: the config's `compression_model_checkpoint`.
    """
    path = checkpoint_file(checkpoint)
    if path is not None and not path.is_file():
        rate = int(path.stem.rsplit("_", 1)[-1].removesuffix("khz")) * 1000
        write(path, sample_rate=rate)


def load(path: str | Path | None = None, device: str = "cpu"):
    """The persisted debug codec (written first if missing), loaded by audiocraft's loader, in eval mode.

    Args:
        path: the checkpoint (default: `default_path()`).
        device: torch device.
    """
    from audiocraft.models import CompressionModel

    path = Path(path) if path is not None else default_path()
    ensure(str(path))
    return CompressionModel.get_pretrained(str(path), device=device)
