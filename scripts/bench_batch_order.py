"""Padding of `generate`'s batches, side by side: `--batch-order length` vs `--batch-order id`.

A batch pads every description to its longest one in T5 and in each decoding step's cross-attention. For the
descriptions of a Zalo JSON, batched exactly as `generate` batches them (`generate._batches`), this counts the
text positions each order computes and the share of them that is padding, per batch size. Lengths come from
musicgen-small's T5 tokenizer (the stand-ins' with `--standins`, whose vocabulary is trained on the project's
corpus, so counts differ from the real t5-base's; the real one where the hub is reachable).

    .venv/bin/python scripts/bench_batch_order.py --standins /tmp/standins_full [--batches 16,64,256]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import types
from pathlib import Path

import benchkit

DEFAULT_JSON = benchkit.PROJECT.parent / "shared" / "data" / "zalo2023" / "public_test.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--standins", default=None, help="folder of `zalo-music standins` (default: the hub)")
    p.add_argument("--texts", default=str(DEFAULT_JSON), help="Zalo JSON of descriptions (default: public test)")
    p.add_argument("--batches", default="16,64,256", help="batch sizes (default: 16,64,256)")
    p.add_argument("--json", default=None, help="also write the result here")
    a = p.parse_args(argv)
    if a.standins:
        from zalo_music.standins.build import environment

        os.environ.update(environment(a.standins))  # before transformers is imported
    benchkit.ensure_project_on_path()
    from transformers import T5Tokenizer

    from zalo_music.batches import check_items
    from zalo_music.generate import GenerationConfig, _batches, text_length

    tokenizer = T5Tokenizer.from_pretrained("t5-base", legacy=False)
    conditioner = types.SimpleNamespace(t5_tokenizer=tokenizer)  # what `text_length` reads of a MusicGen
    model = types.SimpleNamespace(lm=types.SimpleNamespace(
        condition_provider=types.SimpleNamespace(conditioners={"description": conditioner})))
    length = text_length(model)
    items, _ = check_items(json.loads(Path(a.texts).read_text()), Path(tempfile.mkdtemp()))
    lengths = [length(text) for _, text, _ in items]
    result = {**benchkit.result_header(__file__, argv if argv is not None else sys.argv[1:]),
              "texts": a.texts, "descriptions": len(items),
              "t5_positions": {"mean": round(sum(lengths) / len(lengths), 1), "min": min(lengths),
                               "max": max(lengths)}, "runs": []}
    for batch in (int(b) for b in a.batches.split(",")):
        run: dict = {"batch": batch}
        for order in ("length", "id"):
            widths = [[length(text) for _, text, _ in b]
                      for b in _batches(items, GenerationConfig(batch_size=batch, batch_order=order), model, None)]
            computed = sum(max(w) * len(w) for w in widths)
            run[order] = {"positions": computed, "padded_share": round(1 - sum(map(sum, widths)) / computed, 4)}
        run["positions_saved"] = round(1 - run["length"]["positions"] / run["id"]["positions"], 4)
        result["runs"].append(run)
    benchkit.write_result(result, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
