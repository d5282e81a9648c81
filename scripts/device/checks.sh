#!/usr/bin/env bash
# The GPU measurements of the training-speed and generation-speed work, as ONE command on a lent device machine.
#
# Here, first:   .venv/bin/python scripts/device/kit.py          (writes .device/: wheels, audiocraft, stubs, texts)
# Then:          run(command="bash scripts/device/checks.sh all", carry=[".device"], timeout_s=570)
# A follow-up call on the still-warm machine (within its 30-s idle window) reuses the wheels and stand-ins in /tmp:
#                run(command="bash scripts/device/checks.sh clap best4 compile", carry=[".device"], timeout_s=...)
#
# Parts (arguments, in order; `all` = graphs decode hf train job clap best4 compile), each under its own time limit and all under
# one deadline (CHECKS_BUDGET seconds from the start, 540 by default), so that one slow part leaves the others
# their time; every figure lands in $OUT as JSON as soon as its part ends, the whole log in $OUT/checks.log:
#   graphs   tests/test_graph_decoder.py: replayed CUDA graphs give the eager static step's logits
#   train    training steps from tokens, each `zalo.speed.*` lever off/on but torch.compile, host waits per step
#            (bench_fullshape.py --only levers: MFU against the peak table, data wait, peak memory), and a profile
#            of the baseline and all-on steps (kernels per step, GPU idle share, top ops)
#   job      `zalo-music generate` of 2,000 descriptions end to end (model load, T5, LM, EnCodec, MP3s, ZIP),
#            then `validate-submission`; best-of-1 at --batch-size auto (the size it picks is in the log)
#   decode   ms/step of audiocraft's loop, the fast decoder and its CUDA-graph step (`--decoder graph`) at batch
#            1, 16, 64 and 256 (bench_decoder.py), codes compared with audiocraft's; profiles at batch 1 and 256
#   hf       transformers' MusicgenForConditionalGeneration.generate (same weights, exported) beside the fast decoder
#            at the decode part's batch sizes (bench_decoder.py --decoders fast,transformers)
#   clap     CLAP clips/s (bench_fullshape.py --only clap): serial reads vs read-ahead, float32 vs bfloat16, what
#            bounds it (reads alone, embedding alone), bfloat16's agreement with float32
#   best4    the job with --candidates 4 (CLAP reranking, --clap-dtype auto = bfloat16), ZIP validated
#   compile  the train part again with torch.compile as one more lever (its compilation takes minutes: last)
# Stand-ins are built there at full depth (once per warm machine: /tmp/zalo-standins).
#
# Rehearse on a CPU (the kit for this Python, tiny sizes):
#   CHECKS_DEVICE=cpu CHECKS_KIT=/tmp/devkit311 CHECKS_SMALL=1 OUT=/tmp/checks bash scripts/device/checks.sh all
set -uo pipefail

PY=${PYTHON:-python3}
KIT=${CHECKS_KIT:-$PWD/.device}
DEVICE=${CHECKS_DEVICE:-cuda}
OUT=${OUT:-/tmp/zalo-checks}
STANDINS=${CHECKS_STANDINS:-/tmp/zalo-standins}
SITE=${CHECKS_SITE:-/tmp/zalo-site}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/checks.log") 2>&1
parts=("$@")
# Issue 28's decoding first (the graph test guards the decode part's `graph` column), then issue 26's training,
# then the end-to-end job; what the deadline leaves runs last.
[[ ${#parts[@]} -eq 0 || ${parts[0]} == all ]] && parts=(graphs decode hf train job clap best4 compile)
start=$(date +%s)
deadline=$(( start + ${CHECKS_BUDGET:-540} ))
say() { echo "[checks $(( $(date +%s) - start ))s] $*"; }
# The seconds a part may take: its own limit, or what is left before the deadline.
limit() { local left=$(( deadline - $(date +%s) )); echo $(( left < $1 ? left : $1 )); }

# Sizes: the GPU's, or a CPU rehearsal's (CHECKS_SMALL=1: depth-1 stand-ins, short clips, few steps).
if [[ -n ${CHECKS_SMALL:-} ]]; then
  DEPTH=(--depth 1); LEVERS=(--steps 2 --rounds 1 --warmup 1 --batch 2 --segment 2 --clips 8)
  BATCHES=1:0.5,4:0.5; PROFILE=2:0.3; JOB_N=24; JOB_BATCH=8; JOB_DURATION=1; LIMIT_TRAIN=900; LIMIT_DECODE=900; LIMIT_JOB=900
  CLAP=(--clap-n 8 --clap-batch 4 --clap-n-single 2); BEST4_N=8; LIMIT_CLAP=900; LIMIT_BEST4=900
else
  DEPTH=(); LEVERS=(--steps 6 --rounds 2 --warmup 2)
  BATCHES=1:10,16:5,64:5,256:5; PROFILE=1:2,256:2; JOB_N=2000; JOB_BATCH=auto; JOB_DURATION=10
  LIMIT_TRAIN=150; LIMIT_JOB=150; LIMIT_DECODE=180
  CLAP=(--clap-n 512 --clap-batch 64 --clap-n-single 16); BEST4_N=2000; LIMIT_CLAP=120; LIMIT_BEST4=300
fi
LIMIT_GRAPHS=90
if [[ -n ${CHECKS_SMALL:-} ]]; then LIMIT_GRAPHS=300
fi

if [[ ! -d $SITE ]]; then
  say "installing $(ls "$KIT"/wheels/*.whl | wc -l) wheels into $SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$KIT"/wheels/*.whl || exit 1
fi
# Offline from the start: nothing there reaches the hub, and a lookup would retry for minutes.
export PYTHONPATH=$SITE:$KIT/src:$KIT/stubs:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$PY" - <<'EOF' || exit 1
import torch, transformers
import dora, flashy, hydra, soundfile  # noqa: F401  (audiocraft itself: once the stand-ins' cache is set, below)
print(f"[checks] torch {torch.__version__}, transformers {transformers.__version__}, "
      f"cuda {torch.cuda.is_available()} {torch.cuda.get_device_name() if torch.cuda.is_available() else ''}")
EOF
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || true

if [[ ! -f $STANDINS/standins.json ]]; then
  say "stand-ins (full shapes, random weights) into $STANDINS"
  "$PY" -m zalo_music.cli standins --out "$STANDINS" "${DEPTH[@]}" > "$OUT/standins.log" 2>&1 || {
    tail -20 "$OUT/standins.log"; exit 1; }
fi
# The hub cache and reference folder of the stand-ins, for the commands that load models by name.
eval "$("$PY" -c "import json, shlex, sys; e = json.load(open(sys.argv[1]))['environment']
print(' '.join(f'export {k}={shlex.quote(v)}' for k, v in e.items()))" "$STANDINS/standins.json")"
"$PY" -c "import zalo_music.runtime as r; r.prepare(); import audiocraft.solvers, laion_clap" || exit 1

status=0
for part in "${parts[@]}"; do
  case $part in
    graphs)
      say "graphs: replayed CUDA graphs vs the eager static step"
      timeout "$(limit "$LIMIT_GRAPHS")" "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_graph_decoder.py \
        -k replayed --junitxml "$OUT/graphs.xml" || status=1 ;;
    train|compile)
      [[ $part == train ]] && compiled=0 || compiled=1
      say "$part: speed levers from tokens (torch.compile: $compiled)"
      timeout "$(limit "$LIMIT_TRAIN")" "$PY" scripts/bench_fullshape.py --only levers --device "$DEVICE" \
        --standins "$STANDINS" "${DEPTH[@]}" "${LEVERS[@]}" --levers-compile "$compiled" \
        --json "$OUT/${part}_levers.json" || status=1 ;;
    job|best4)
      [[ $part == job ]] && { n=$JOB_N; cands=1; lim=$LIMIT_JOB; } || { n=$BEST4_N; cands=4; lim=$LIMIT_BEST4; }
      say "$part: $n descriptions, best-of-$cands, --batch-size $JOB_BATCH"
      rm -rf /tmp/zalo-job && mkdir -p /tmp/zalo-job
      "$PY" -c "import json, sys; d = json.load(open(sys.argv[1])); n = int(sys.argv[2])
json.dump(dict(list(d.items())[:n]), open(sys.argv[3], 'w'))" "$KIT/texts/job2000.json" "$n" /tmp/zalo-job/texts.json
      t0=$(date +%s.%N)
      timeout "$(limit "$lim")" "$PY" -m zalo_music.cli generate --model facebook/musicgen-small \
        --device "$DEVICE" --json /tmp/zalo-job/texts.json --out /tmp/zalo-job/out --candidates "$cands" \
        --zip /tmp/zalo-job/submission.zip --batch-size "$JOB_BATCH" --duration "$JOB_DURATION" || status=1
      t1=$(date +%s.%N)
      valid=false
      [[ -f /tmp/zalo-job/submission.zip ]] && "$PY" -m zalo_music.cli validate-submission \
        /tmp/zalo-job/submission.zip --json /tmp/zalo-job/texts.json --duration "$JOB_DURATION" && valid=true
      written=$(find /tmp/zalo-job/out -name '*.mp3' | wc -l)
      "$PY" -c "import json, sys; json.dump({'command': 'zalo-music generate --candidates ' + sys.argv[8] + ' --batch-size ' + sys.argv[4],
'descriptions': int(sys.argv[3]), 'written': int(sys.argv[7]), 'wall_s': round(float(sys.argv[2]) - float(sys.argv[1]), 1),
'zip_valid': sys.argv[5] == 'true'}, open(sys.argv[6], 'w'), indent=1)" \
        "$t0" "$t1" "$n" "$JOB_BATCH" "$valid" "$OUT/$part.json" "$written" "$cands"
      cat "$OUT/$part.json" ;;
    hf)
      say "hf: transformers' generate beside the fast decoder at $BATCHES"
      timeout "$(limit "$LIMIT_DECODE")" "$PY" scripts/bench_decoder.py --device "$DEVICE" --standins "$STANDINS" \
        --texts "$KIT/texts/public_test.json" --batches "$BATCHES" --decoders fast,transformers \
        --json "$OUT/hf.json" || status=1 ;;
    clap)
      say "clap: CLAP clips/s, read-ahead and bfloat16"
      timeout "$(limit "$LIMIT_CLAP")" "$PY" scripts/bench_fullshape.py --only clap --device "$DEVICE" \
        --standins "$STANDINS" "${DEPTH[@]}" "${CLAP[@]}" --json "$OUT/clap.json" || status=1 ;;
    decode)
      say "decode: fast vs audiocraft at $BATCHES"
      timeout "$(limit "$LIMIT_DECODE")" "$PY" scripts/bench_decoder.py --device "$DEVICE" --standins "$STANDINS" \
        --texts "$KIT/texts/public_test.json" --batches "$BATCHES" --profile "$PROFILE" \
        --json "$OUT/decode.json" || status=1 ;;
    *) echo "unknown part $part (graphs, decode, hf, train, job, clap, best4, compile, all)"; exit 2 ;;
  esac
done
say "done (status $status); results in $OUT"
exit $status
