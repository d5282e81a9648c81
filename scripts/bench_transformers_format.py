"""transformers export of musicgen-small, measured against audiocraft side by side in one run.

Exports `facebook/musicgen-small` (the full-shape stand-ins of `zalo-music standins`, or the real model where the
hub is reachable: its hub folder is an audiocraft export) with `zalo_music.transformers_export`, then on the same
texts and codes reports:

- logits: max |audiocraft - transformers| of the teacher-forced LM over random codes, one text at a time, and
  the largest logit (fp32);
- greedy: whether greedy decoding with CFG 3 draws the same codes, and the max audio difference;
- round trip: whether audiocraft -> transformers -> audiocraft is bit-exact;
- seconds per generated second of audio (top-k 250, CFG 3) for each library, in alternating order.

    .venv/bin/python scripts/bench_transformers_format.py --standins /tmp/standins_full --seconds 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import benchkit

TEXTS = ["calm piano with soft strings and rain", "energetic edm, heavy drums and a bright synth lead"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--standins", default=None, help="stand-ins folder (default: the real hub)")
    parser.add_argument("--seconds", type=float, default=1.0, help="audio per timed generation")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    if args.standins:
        from zalo_music.standins.build import environment

        os.environ.update(environment(args.standins))
    import torch

    from zalo_music.runtime import prepare

    prepare()
    from audiocraft.models import MusicGen
    from audiocraft.modules.conditioners import ConditioningAttributes
    from huggingface_hub import snapshot_download
    from safetensors.torch import load_file
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    from zalo_music.transformers_export import export_transformers
    from zalo_music.transformers_format import from_transformers

    torch.manual_seed(0)
    source = Path(snapshot_download("facebook/musicgen-small", allow_patterns=["*.bin", "*.json"]))
    out = Path(tempfile.mkdtemp(prefix="zalo-tf-bench-")) / "musicgen-small-transformers"
    t0 = time.time()
    export_transformers(source, out)
    export_s = time.time() - t0
    ours = MusicGen.get_pretrained("facebook/musicgen-small", device="cpu")
    lm = ours.lm.eval()
    theirs = MusicgenForConditionalGeneration.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    figures: dict = {**benchkit.result_header(__file__, sys.argv[1:]), "export_s": round(export_s, 1),
                     "layers": len(lm.transformer.layers)}
    codes = torch.randint(0, lm.card, (1, lm.num_codebooks, 50), generator=torch.Generator().manual_seed(1))
    worst, top = 0.0, 0.0
    for text in TEXTS:
        with torch.no_grad():
            attrs = [ConditioningAttributes(text={"description": text})]
            a = lm(codes, [], condition_tensors=lm.condition_provider(lm.condition_provider.tokenize(attrs)))
            b = theirs(**processor(text=[text], return_tensors="pt"),
                       decoder_input_ids=codes.reshape(lm.num_codebooks, -1)).logits.reshape(a.shape)
        worst, top = max(worst, (a - b).abs().max().item()), max(top, a.abs().max().item())
    figures["logits_max_abs_diff"], figures["logits_max_abs"] = worst, top
    ours.set_generation_params(use_sampling=False, duration=args.seconds, cfg_coef=3.0)
    wav, tokens = ours.generate(TEXTS[:1], return_tokens=True)
    seen = {}
    decode = theirs.audio_encoder.decode

    def spy(audio_codes, *a, **k):
        seen["codes"] = audio_codes.clone()
        return decode(audio_codes, *a, **k)

    theirs.audio_encoder.decode = spy
    n_q = lm.num_codebooks
    with torch.no_grad():
        audio = theirs.generate(**processor(text=TEXTS[:1], return_tensors="pt"), do_sample=False,
                                guidance_scale=3.0, max_length=1 + tokens.shape[-1] + n_q - 1)
    theirs.audio_encoder.decode = decode
    figures["greedy_same_codes"] = bool(torch.equal(seen["codes"][0], tokens))
    figures["greedy_audio_max_abs_diff"] = (audio - wav).abs().max().item()
    state = lm.state_dict()
    back = from_transformers(load_file(str(out / "model.safetensors")),
                             torch_mha=any(".mha." in k for k in state))  # as this LM names its attention
    figures["round_trip_bit_exact"] = sorted(back) == sorted(state) and all(torch.equal(back[k], state[k])
                                                                             for k in state)
    ours.set_generation_params(use_sampling=True, top_k=250, duration=args.seconds, cfg_coef=3.0)
    inputs = processor(text=TEXTS, padding=True, return_tensors="pt")
    steps = 1 + round(args.seconds * 50) + n_q - 1
    times: dict[str, list[float]] = {"audiocraft": [], "transformers": []}
    for _ in range(2):
        t = time.time()
        ours.generate(TEXTS)
        times["audiocraft"].append(time.time() - t)
        t = time.time()
        with torch.no_grad():
            theirs.generate(**inputs, do_sample=True, top_k=250, guidance_scale=3.0, max_length=steps)
        times["transformers"].append(time.time() - t)
    figures["seconds_per_audio_second_batch2"] = {k: round(min(v) / args.seconds, 2) for k, v in times.items()}
    benchkit.write_result(figures, args.json)


if __name__ == "__main__":
    main()
