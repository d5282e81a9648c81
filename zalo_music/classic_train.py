"""`zalo-music train`: the classic musicgen_trainer options, as a front end onto the Dora XP.

It prepares the data through `zalo-music prepare` and launches `dora -P zalo_music run solver=... <overrides>`:
an ordinary XP that `dora info` and the grids see. There is no second training loop. Option semantics:

- `--dataset_path`: a folder of `<name>.wav|mp3` + `<name>.txt` pairs (musicgen_trainer's layout), or a folder
  holding one Zalo JSON (`{"<id>.mp3": "<description>"}`) beside its clips.
- `--model_id`: small/medium/large fine-tune `facebook/musicgen-<id>` with the matching LM scale; `tiny` is the
  random-init CPU recipe (tests, demos).
- `--epochs`: passes over the training split; `--batch_size`: clips per optimizer micro-batch.
- `--grad_acc N`: gradients of N micro-batches are averaged before each optimizer step (really accumulated:
  the optimizer and the lr schedule step N times less often).
- `--use_cfg`: classifier-free-guidance condition dropout as audiocraft does it (the whole text condition is
  replaced by the null condition with probability `--cfg_p`); off means no condition dropout.
- `--no_label`: trains without text (every description is dropped, audiocraft's attribute dropout at 1.0).
- `--tune_text`: trains only the text-to-LM conditioning projection (`condition_provider` output projection);
  every LM weight stays frozen. It is not textual inversion: no new token embeddings are learned.
- `--save_step N`: a checkpoint every N optimizer steps (an audiocraft "epoch" is then N steps long).
- `--use_wandb`: logs through audiocraft's wandb support (`logging.log_wandb`).
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

from . import env
from .fileio import AUDIO_SUFFIXES

MODEL_IDS = {"small", "medium", "large", "tiny"}


def dataset_from_folder(path: str | Path, name: str, workers: int | None = None) -> dict:
    """Prepare `--dataset_path` (wav/mp3 + txt pairs, or a folder with one Zalo JSON) as dataset `name`.

    Returns:
        The prepare report.
    """
    from .data.prepare import prepare

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"--dataset_path {folder}: no such folder")
    jsons = sorted(folder.glob("*.json"))
    if jsons:
        if len(jsons) > 1:
            raise ValueError(f"--dataset_path {folder}: several JSON files ({[j.name for j in jsons]}); keep one")
        json_path = jsons[0]
    else:
        pairs = {}
        for audio in sorted(folder.iterdir()):
            if audio.suffix.lower() in AUDIO_SUFFIXES:
                txt = audio.with_suffix(".txt")
                pairs[audio.name] = txt.read_text(encoding="utf-8").strip() if txt.exists() else ""
        if not pairs:
            raise ValueError(f"--dataset_path {folder}: no audio + .txt pairs ({', '.join(sorted(AUDIO_SUFFIXES))}) "
                             "and no Zalo JSON")
        json_path = env.data_dir() / name / "descriptions.json"
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(pairs, ensure_ascii=False, indent=1))
    return prepare(json_path, folder, name, workers=workers, quiet=False)


def overrides(opts: dict, n_train: int) -> list[str]:
    """Dora/Hydra overrides for the trainer options.

    Args:
        opts: option values (the argparse namespace as a dict).
        n_train: clips in the training split (to turn epochs into optimizer steps).
    """
    model_id = opts["model_id"]
    if model_id not in MODEL_IDS:
        raise ValueError(f"--model_id {model_id!r}: choose one of {sorted(MODEL_IDS)}")
    if opts["grad_acc"] < 1 or opts["batch_size"] < 1 or opts["epochs"] < 1:
        raise ValueError("--grad_acc, --batch_size and --epochs must be >= 1")
    steps_per_pass = max(1, math.ceil(n_train / (opts["batch_size"] * opts["grad_acc"])))
    micro_per_pass = steps_per_pass * opts["grad_acc"]
    argv = ["solver=zalo/tiny" if model_id == "tiny" else "solver=zalo/musicgen_small_ft",
            "dset=zalo/prepared", f"zalo.dataset={opts['name']}"]
    if model_id not in {"tiny", "small"}:
        argv += [f"model/lm/model_scale={model_id}", f"continue_from=//pretrained/facebook/musicgen-{model_id}"]
    # audiocraft counts micro-batches per epoch; our solver steps the optimizer every grad_acc of them.
    if opts["save_step"]:
        per_epoch = opts["save_step"] * opts["grad_acc"]
        epochs = math.ceil(opts["epochs"] * micro_per_pass / per_epoch)
        argv += [f"optim.updates_per_epoch={per_epoch}", f"optim.epochs={epochs}", "checkpoint.save_every=1",
                 "checkpoint.keep_last=null"]
    else:
        per_epoch = micro_per_pass
        argv += [f"optim.updates_per_epoch={per_epoch}", f"optim.epochs={opts['epochs']}"]
    # The train loader must hold a whole epoch: audiocraft stops an epoch early, silently, when it runs out.
    argv += [f"dataset.train.num_samples={per_epoch * opts['batch_size']}"]
    argv += [f"optim.lr={opts['lr']}", f"optim.adam.weight_decay={opts['weight_decay']}",
             f"dataset.batch_size={opts['batch_size']}", f"zalo.grad_acc={opts['grad_acc']}"]
    argv += [f"schedule.cosine.warmup={opts['warmup_steps']}"]  # every recipe (tiny too) uses the cosine schedule
    argv += [f"classifier_free_guidance.training_dropout={opts['cfg_p'] if opts['use_cfg'] else 0.0}"]
    if opts["no_label"]:
        argv += ["+attribute_dropout.text.description=1.0"]
    if opts["tune_text"]:
        argv += ["zalo.tune_text=true"]
    if opts.get("lora_rank"):
        argv += [f"zalo.lora.rank={opts['lora_rank']}"]
    if opts["use_wandb"]:
        argv += ["logging.log_wandb=true", "wandb.project=zalo-music"]
    argv += list(opts.get("extra") or [])
    return argv


def device_overrides(argv: list[str], cuda: bool | None = None) -> list[str]:
    """`device=cpu` when the recipe wants CUDA, none is available and the user did not choose a device.

    Args:
        argv: the overrides so far.
        cuda: whether CUDA is available (None: ask torch).
    """
    if any(a.startswith("device=") for a in argv) or "solver=zalo/tiny" in argv:
        return []
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if cuda:
        return []
    print("zalo-music train: no CUDA device here: adding device=cpu (autocast is then turned off; a step of "
          "the real recipe takes about a minute on 2 CPU cores)", flush=True)
    return ["device=cpu"]


def train(opts: dict, run: bool = True) -> tuple[str, list[str]]:
    """Prepare the data and run the XP. Returns (signature, overrides).

    Args:
        opts: option values (see `zalo-music train --help`).
        run: launch `dora run` (False: only print what would run).
    """
    name = opts.get("name") or re.sub(r"[^A-Za-z0-9_.-]", "_", Path(opts["dataset_path"]).resolve().name)
    opts = {**opts, "name": name}
    report = dataset_from_folder(opts["dataset_path"], name, workers=opts.get("workers"))
    if not report["prepared"]:
        raise ValueError(f"--dataset_path {opts['dataset_path']}: no usable clip ({report['skipped']} skipped, "
                         f"see {report['manifests']}/report.json)")
    argv = overrides(opts, report["splits"]["train"])
    argv += device_overrides(argv)
    from .procutil import run_dora
    from .quickstart import xp_signature

    sig, folder, _ = xp_signature(argv)
    print(f"zalo-music train: XP {sig} -> {folder}\n  dora -P zalo_music run {' '.join(argv)}", flush=True)
    if run:
        proc = run_dora("run", *argv, check=False)
        if proc.returncode != 0:
            print(f"zalo-music train: XP {sig} failed (exit {proc.returncode}); log: {folder / 'solver.log.0'}",
                  file=sys.stderr)
            raise SystemExit(proc.returncode)
        print(f"zalo-music train: XP {sig} done -> {folder} (dora -P zalo_music info -f {sig} -m)")
    return sig, argv


def register(sub) -> None:
    """Add the `train` sub-command (musicgen_trainer's options and defaults) to `sub`."""
    from .helpfmt import RawDescriptionHelpFormatter

    t = sub.add_parser("train", formatter_class=RawDescriptionHelpFormatter,
                       help="musicgen_trainer-style front end: prepare a folder and run a Dora XP",
                       description=__doc__)
    t.add_argument("--dataset_path", required=True, help="folder of wav/mp3 + txt pairs, or with one Zalo JSON")
    t.add_argument("--model_id", default="small", help="small | medium | large | tiny (CPU test recipe)")
    t.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate")
    t.add_argument("--epochs", type=int, default=100, help="passes over the training split")
    t.add_argument("--use_wandb", type=int, default=0, help="1: log to Weights & Biases")
    t.add_argument("--save_step", type=int, default=None, help="checkpoint every N optimizer steps (default: once per epoch)")
    t.add_argument("--no_label", type=int, default=0, help="1: train without text conditioning")
    t.add_argument("--tune_text", type=int, default=0, help="1: train only the text->LM conditioning projection")
    t.add_argument("--lora_rank", type=int, default=0,
                   help="> 0: LoRA adapters of this rank, base LM frozen (zalo.lora.rank; docs/lora.md); "
                        "0: full fine-tuning")
    t.add_argument("--weight_decay", type=float, default=1e-5, help="AdamW weight decay")
    t.add_argument("--grad_acc", type=int, default=2, help="micro-batches averaged per optimizer step")
    t.add_argument("--warmup_steps", type=int, default=16, help="lr warmup in optimizer steps")
    t.add_argument("--batch_size", type=int, default=4, help="clips per micro-batch")
    t.add_argument("--use_cfg", type=int, default=0, help="1: classifier-free guidance condition dropout")
    t.add_argument("--cfg_p", type=float, default=0.3, help="condition dropout probability with --use_cfg 1")
    t.add_argument("--name", default=None, help="dataset name (default: the folder's name)")
    t.add_argument("--workers", type=int, default=None, help="prepare processes (default: all cores)")
    t.add_argument("--dry_run", action="store_true", help="prepare and print the dora command, train nothing")
    t.add_argument("extra", nargs="*", help="more Hydra overrides, e.g. device=cpu")
    t.set_defaults(func=lambda a: (train(vars(a), run=not a.dry_run), 0)[1])
