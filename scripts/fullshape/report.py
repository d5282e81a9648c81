"""The Markdown table `bench_fullshape.py` prints from its JSON result."""

from __future__ import annotations


def _per_codebook(loop: dict) -> str:
    """`all/away%` per codebook of a loop comparison."""
    return ", ".join(f"{100 * x:.1f}/{100 * y:.1f}%" for x, y in
                     zip(loop["agree_per_codebook"], loop["agree_away_from_seams_per_codebook"], strict=True))


def _fmt_rss(d: dict) -> str:
    s = f"{d.get('peak_rss_mb', '?'):,}" if isinstance(d.get("peak_rss_mb"), int) else "?"
    if d.get("cuda_max_allocated_mb") is not None:
        s += f" / {d['cuda_max_allocated_mb']:,} cuda"
    return s


def table(res: dict) -> str:
    rows = ["| section | mode | figure | peak RSS MB (mode) |", "| --- | --- | ---: | ---: |"]
    sec = res["sections"]
    t = sec.get("train", {})
    if "audio" in t:
        for k in ("audio", "tokens"):
            rows.append(f"| train | from {k} (batch {t['batch']}, {t['segment_s']:g}-s segments) | "
                        f"{t[k]['s_per_step']:.2f} s/step (data wait {t[k]['data_wait_s_per_step']:.3f} s) | "
                        f"{_fmt_rss(t[k])} |")
        rows.append(f"| train | tokens vs audio | {t['speedup_tokens_vs_audio']}x faster | "
                    f"process {t['process_peak_rss_mb']:,} |")
    lv = sec.get("levers", {})
    if "modes" in lv:
        for name, m in lv["modes"].items():
            rows.append(f"| levers | {name} (batch {lv['batch']}, {lv['segment_s']:g}-s segments, from tokens) | "
                        f"{m['s_per_step']:.2f} s/step, {m['speedup_vs_baseline']}x baseline, "
                        f"{m['tflops_per_s']:.3f} TFLOP/s | {_fmt_rss(m)} |")
    g = sec.get("generate", {})
    if "modes" in g:
        for name, m in g["modes"].items():
            rows.append(f"| generate | {name} ({m['clips']} x {g['duration_s']:g} s) | RTF {m['rtf_wall_per_audio_s']:.3f} "
                        f"({m['speedup_vs_zalo_batch1']}x zalo batch 1) | {_fmt_rss(m)} |")
        rows.append(f"| generate | batched vs MusicGen.generate one at a time | "
                    f"{g['speedup_batched_vs_musicgen_one_at_a_time']}x | process {g['process_peak_rss_mb']:,} |")
    c = sec.get("clap", {})
    if "modes" in c:
        for name, m in c["modes"].items():
            rows.append(f"| clap | HTSAT-base {name} ({m['clips']} clips) | {m['clips_per_s']:.3f} clips/s "
                        f"({m['s_per_clip']:.2f} s/clip) | {_fmt_rss(m)} |")
        rows.append(f"| clap | batched vs one at a time | {c['speedup_batched']}x | "
                    f"process {c['process_peak_rss_mb']:,} |")
        rows.append(f"| clap | read-ahead vs serial reads (float32); bfloat16 vs serial | {c['speedup_read_ahead']}x; "
                    f"{c['speedup_bfloat16']}x | |")
        parts = c["parts"]
        rows.append(f"| clap | alone: reads serial / on {c['read_workers']} threads; embedding float32 / bfloat16 | "
                    f"{parts['read_serial']} / {parts['read_threads']}; {parts['embed_float32']} / "
                    f"{parts['embed_bfloat16']} clips/s | |")
        tw = c["tower"]
        rows.append(f"| clap | tower: GFLOP per clip; TFLOP/s float32 / bfloat16 (share of peak) | {tw['gflop_per_clip']}; "
                    f"{tw['float32_tflops']} / {tw['bfloat16_tflops']} ({tw.get('bfloat16_share_of_peak', 'no peak')}) | |")
        ag = c["bfloat16_vs_float32"]
        rows.append(f"| clap | bfloat16 vs float32: audio cosine min, CLAP diff max, same best of 4 | "
                    f"{ag['audio_cos_min']}, {ag['clap_abs_diff_max']}, {ag['same_choice']}/{ag['groups_of_4']} | |")
    lp = sec.get("loop", {})
    if "agree" in lp:
        p = lp
        rows.append(f"| loop | EnCodec 32 kHz (random), {lp['clips']} clips, tiled x3 vs encode(loop) | "
                    f"{100 * p['agree']:.1f}% equal, {100 * p['agree_away_from_seams']:.1f}% away from seams | "
                    f"{_fmt_rss(lp)} |")
        rows.append(f"| loop | distinct codes per codebook (stand-in as built) | {lp['distinct_codes_per_codebook']}"
                    f"{' DEGENERATE' if 'degenerate' in lp else ''} | |")
        rows.append(f"| loop | per codebook (all / away from seams) | {_per_codebook(lp)} | |")
        f = lp.get("fitted_codebooks")
        if f:
            rows.append(f"| loop | same, codebooks fitted to the encoder ({f['distinct_codes_per_codebook']} codes) | "
                        f"{100 * f['agree']:.1f}% equal, {100 * f['agree_away_from_seams']:.1f}% away from seams; "
                        f"per copy {', '.join(f'{100 * x:.1f}%' for x in f['agree_per_copy'])}; "
                        f"per codebook {_per_codebook(f)} | |")
    for name, s in sec.items():
        if "error" in s:
            rows.append(f"| {name} | FAILED | {s['error'].splitlines()[0][:160] if s['error'] else '?'} | |")
    return "\n".join(rows)
