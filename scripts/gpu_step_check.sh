#!/usr/bin/env bash
# The GPU step's checks, in one run of under ten minutes on one NVIDIA GPU:
# what a session with a lent H200 runs for the step at 50% MFU
# (docs/benchmarks.md, "GPU choices"). In the repository's root:
#
#   OUT=/tmp/gpu_check bash scripts/gpu_step_check.sh
#
# It needs jax with CUDA, flax, optax, torch, timm and ml_collections; wheels
# in .whl/ are installed first, for a machine that cannot fetch. The lent
# H200's image lacks ml_collections alone: fetch it where pip works,
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl ml_collections==1.1.0
# (.whl/ git-ignored through .git/info/exclude) and carry .whl along.
# In order of what matters most, each within what is left of DEADLINE_S:
#   1. the GPU-only tests (cuDNN attention, the encoder's padding);
#   2. ViT-B/16 bf16 at batch 256 as the defaults run it, timm AMP beside it,
#      and its profile's top kernels: the "before";
#   3. each change against the defaults, rounds interleaved (--against);
#   4. B/16 with all of them, timm and profile: the "after";
#   5. ViT-L/16 with all of them against the defaults;
#   6. XLA:GPU flags, a process each, against step 4.
#
#   MODE=sweep OUT=/tmp/gpu_sweep bash scripts/gpu_step_check.sh
#
# instead times the train step alone at each batch and remat policy of the
# configs' GPU notes (B/16 at 256 to 1024, L/16 at 128 to 512, remat at the
# largest), with SWEEP_FLAGS (the --config.* flags of the changes that paid)
# on every run: a second call, or the next session's.
# B16 and L16 (the benchmark flags of each) may be set, e.g. to a tiny
# model for a dry run on a CPU. Every result is appended to
# $OUT/results.jsonl as {"step", "result"}, or {"step", "exit_status",
# "error"} for a run that failed (an out-of-memory batch, say); the whole
# output goes to $OUT/log.txt.
set -u
OUT=${OUT:-/tmp/gpu_check}
DEADLINE_S=${DEADLINE_S:-560}
MODE=${MODE:-step}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH=".:${PYTHONPATH:-}"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import jax, torch, timm; print('jax', jax.__version__, jax.devices(), \
'torch', torch.__version__, 'timm', timm.__version__)"

CHANGES="model.token_padding=once model.embedding_implementation=matmul optim.mu_dtype=bfloat16"
ALL_CHANGES=$(echo "$CHANGES" | tr ' ' ',')
AS_FLAGS=$(for c in $CHANGES; do printf -- '--config.%s ' "$c"; done)
B16=${B16:-"--config=configs/benchmark.py:variant=B/16,dtype=bfloat16 --batch=256 --steps=10 --rounds=5"}
L16=${L16:-"--config=configs/benchmark.py:variant=L/16,dtype=bfloat16 --batch=256 --steps=10 --rounds=5"}

# run NAME NEEDS_S ARGS...: scripts/benchmark.py ARGS if NEEDS_S seconds are
# left, its JSON appended to results.jsonl, or its exit status (124: out of
# time) and the last line of its errors if it fails.
run() {
  local name=$1 needs=$2; shift 2
  local left=$((DEADLINE_S - SECONDS))
  if ((left < needs)); then echo "== $name: skipped, ${left}s left"; return; fi
  echo "== $name ($((SECONDS))s in)"
  timeout "$left" python3 scripts/benchmark.py "$@" --out="/tmp/$name.json" 2> "/tmp/$name.err"
  local status=$?
  cat "/tmp/$name.err"
  if ((status == 0)); then
    python3 -c "import json, sys; print(json.dumps({'step': sys.argv[1], \
'result': json.load(open(sys.argv[2]))}))" "$name" "/tmp/$name.json" >> "$OUT/results.jsonl"
  else
    python3 -c "import json, sys; lines = open(sys.argv[2]).read().split(chr(10)); \
print(json.dumps({'step': sys.argv[1], 'exit_status': int(sys.argv[3]), 'error': next( \
(l for l in reversed(lines) if l.strip()), 'no output')}))" \
      "$name" "/tmp/$name.err" "$status" >> "$OUT/results.jsonl"
  fi
}

if [[ $MODE == sweep ]]; then
  # Larger batches first: the one that fits with the most images per
  # second is what the notes want, and a batch that does not fit fails fast.
  SWEEP=${SWEEP:-"B16:1024 B16:512 B16:256 L16:512 L16:256 L16:128"}
  SWEEP_FLAGS=${SWEEP_FLAGS:-}
  largest=()
  for run_spec in $SWEEP; do
    model=${run_spec%%:*} batch=${run_spec##*:}
    # shellcheck disable=SC2086  # the flags are several words
    run "${model}_batch${batch}" 60 ${!model} $SWEEP_FLAGS --batch="$batch" \
      --steps=5 --rounds=3 --warmup=2 --noinference
    [[ " ${largest[*]} " == *" $model:"* ]] || largest+=("$model:$batch")
  done
  for run_spec in "${largest[@]}"; do
    model=${run_spec%%:*} batch=${run_spec##*:}
    for policy in dots_with_no_batch_dims_saveable nothing_saveable; do
      # shellcheck disable=SC2086
      run "${model}_batch${batch}_remat_${policy}" 60 ${!model} $SWEEP_FLAGS \
        --batch="$batch" --config.model.remat=True --config.model.remat_policy="$policy" \
        --steps=5 --rounds=3 --warmup=2 --noinference
    done
  done
  echo "== done in ${SECONDS}s"
  exit
fi

echo "== tests ($((SECONDS))s in)"
JAX_PLATFORMS=cuda CUDA_VISIBLE_DEVICES=0 timeout 120 python3 -m pytest -q -p no:cacheprovider \
  tests/models/test_attention.py tests/models/test_token_padding.py -k cudnn_on

run b16_before 90 $B16 --compare-timm --profile=/tmp/profile_before
for change in $CHANGES; do
  run "b16_${change##*.}" 75 $B16 --against="$change"
done
# shellcheck disable=SC2086  # the flags are several words
run b16_after 90 $B16 $AS_FLAGS --compare-timm --profile=/tmp/profile_after
run l16_against_all 120 $L16 --against="$ALL_CHANGES"
for flags in --xla_gpu_enable_latency_hiding_scheduler=true \
             --xla_gpu_enable_triton_gemm=false \
             --xla_gpu_enable_cublaslt=true \
             --xla_gpu_enable_command_buffer=; do
  XLA_FLAGS="$flags" run "b16_after_${flags//[^a-z_]/}" 60 $B16 $AS_FLAGS --noinference
done
echo "== done in ${SECONDS}s"
