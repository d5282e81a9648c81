"""A random-weight LAION-CLAP checkpoint in the exact layout of laion-clap's training script.

The official music checkpoint (`music_audioset_epoch_15_esc_90.14.pt`) was written by laion-clap's training
loop, which saves `{"epoch", "name", "state_dict", "optimizer"}` with `torch.save`: the state dict of the
DistributedDataParallel-wrapped model (every key prefixed `module.`, including the
`text_branch.embeddings.position_ids` buffer that older transformers saved), and the AdamW state whose
param groups' `lr` values are numpy float64 (laion's cosine scheduler assigns `np.cos(...)`-based values).
That numpy scalar is what torch's safe loader refuses unless numpy's scalar and dtype types are allowed, so a
stand-in in any simpler layout would hide the problem. This one reproduces it with random weights.

Precondition: `laion_clap` must be importable, i.e. the Hugging Face cache (HF_HOME) holds the roberta-base,
bert-base-uncased and facebook/bart-base tokenizers (and roberta-base's weights for `tmodel='roberta'`), as the
real cache does after one online run or as `tests/clap_fixture.build_hf_cache()` / `zalo-music standins`
write them. Import `zalo_music` first (its import guard turns a failing `import laion_clap` into a clear
ImportError).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

#: Per-parameter optimizer state is kept only for these parameters (one real AdamW step on them), so the file
#: has laion's structure (state + param groups) without tripling the size of a test checkpoint.
_STEPPED = ("logit_scale_a", "logit_scale_t")


def build_clap_checkpoint(path: str | os.PathLike, amodel: str = "HTSAT-base", tmodel: str = "roberta",
                          seed: int = 0, epoch: int = 15) -> Path:
    """Write a random `CLAP_Module` checkpoint exactly as laion-clap's training script lays it out.

    Args:
        path: file to write (parents are created; written to a temporary name, then renamed).
        amodel: audio tower (`HTSAT-base` is the music checkpoint's; `HTSAT-tiny` is the package default's).
        tmodel: text tower (`roberta` for both official checkpoints).
        seed: torch seed of the random weights (same seed, same tensors).
        epoch: the `epoch` value stored.
    Returns:
        `path`.
    Raises:
        ImportError: laion_clap cannot be imported (tokenizers missing from the Hugging Face cache).
    """
    import numpy as np
    import torch

    from zalo_music.fileio import atomic_path
    from zalo_music.runtime import prepare

    prepare()  # laion_clap import guard, before laion_clap

    laion_clap = importlib.import_module("laion_clap")
    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = laion_clap.CLAP_Module(enable_fusion=False, amodel=amodel, tmodel=tmodel, device="cpu")
    model = module.model
    # laion's training script: AdamW with gains/biases/logit scales in a no-weight-decay group.
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = [p for n, p in named if p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n]
    ids = {id(p) for p in no_decay}
    decay = [p for _, p in named if id(p) not in ids]
    base_lr = 1e-4
    optimizer = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                                   {"params": decay, "weight_decay": 0.2}], lr=base_lr, betas=(0.9, 0.99), eps=1e-9)
    stepped = [p for n, p in named if n in _STEPPED]
    loss = sum((p * p).sum() for p in stepped)
    loss.backward()
    optimizer.step()  # creates real per-parameter state (step, exp_avg, exp_avg_sq) for the stepped ones
    optimizer.zero_grad(set_to_none=True)
    # laion's cosine scheduler: lr = 0.5 * (1 + np.cos(pi * e / es)) * base_lr, a numpy float64.
    lr = 0.5 * (1 + np.cos(np.pi * 0.9)) * base_lr
    for group in optimizer.param_groups:
        group["lr"] = lr
    state = {"module." + k: v for k, v in model.state_dict().items()}
    text_cfg = getattr(getattr(model, "text_branch", None), "config", None)
    n_pos = int(getattr(text_cfg, "max_position_embeddings", 514))
    # transformers >= 4.31 no longer saves this buffer; the official file (older transformers) has it.
    state.setdefault("module.text_branch.embeddings.position_ids", torch.arange(n_pos).unsqueeze(0))
    checkpoint = {"epoch": epoch, "name": f"zalo-standin-clap-{amodel}-{tmodel}-seed{seed}",
                  "state_dict": state, "optimizer": optimizer.state_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return path
