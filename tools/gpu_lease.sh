#!/usr/bin/env bash
# One lease of a GPU machine, in one call, from the repository root (docs/performance.md, "On a GPU"):
#   1. tools/gpu_check.sh: the tests marked `cuda` and the CUDA benchmark (bounded by CHECK_SECONDS);
#   2. tools/device_pace.py: the same short runs with the compiled step, the eager step and the CPU's
#      random numbers (bounded by PACE_SECONDS, 0 to skip), judged against the CPU records: the verdict
#      (PACE_VERDICT, or given as PACE_VERDICT=0|4|5|6 when the study ran in an earlier call) gates the pieces
#      written 'gated:ARGS': they run as given on 0 (the compiled step keeps the CPU's pace), with
#      --compile no on 4 (the eager step keeps it), with --draws cpu on 6 (only the CPU's draws keep it;
#      AEVB and MNIST wake-sleep pieces only: a piece with other runs is refused), not at all otherwise;
#   2b. tools/device_pace.py --record-draws: the pace runs' draws (every step's minibatch indices, the
#      first steps' noise) into $OUT/draws.pt, to be studied and replayed on a CPU back home
#      (bounded by RECORD_SECONDS, 0 to skip);
#   3. then pieces of the paper budget on the GPU, one after another, each stopped with its checkpoint
#      at the lease's deadline (SECONDS from the start, less a margin for packing);
#   4. results/paper, the checkpoints these pieces wrote, the logs and the files of steps 1-2 (gpu_tests.log,
#      benchmarks_cuda.json, pace.json, ...), packed into one tarball in parts $OUT/paper.tar.gz.0, .1, ...
#      of 15 MiB (a call returns at most 8 files of 16 MiB); back home, `python tools/gpu_unpack.py
#      /work/.device/N` installs from it only what goes further than there, and the rest in logs/.
# Usage:  bash tools/gpu_lease.sh SECONDS 'PIECE ARGS' ['PIECE ARGS' ...]
#   e.g.  bash tools/gpu_lease.sh 540 '--datasets mnist --algorithms aevb --latents 20 --seed 1 --target 1e8' \
#                                      'gated:--datasets mnist --algorithms aevb --latents 3'
# Each piece runs `python -m vae_utils piece --budget paper --figures 2 --device cuda PIECE ARGS` (BUDGET and
# DEVICE change those two, for a rehearsal on a CPU: BUDGET=smoke DEVICE=cpu).
# The data come from $AEVB_DATA_DIR (default: data/ in the repository, carried there).
set -uo pipefail
start=$(date +%s)
seconds=${1:?usage: gpu_lease.sh SECONDS 'PIECE ARGS' ...}; shift
out=${OUT:-gpu_lease}
mkdir -p "$out" logs
budget=${BUDGET:-paper} device=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1 AEVB_DATA_DIR=${AEVB_DATA_DIR:-$PWD/data}
left() { echo $(( seconds - ($(date +%s) - start) )); }
pack() {  # what comes back: one tarball (every record of the budget, the checkpoints written here, the logs and
  # this call's own files from $OUT) in parts of PART_BYTES, since a call returns at most 8 files of 16 MiB
  # (64 MiB in all): the loose files would be 9 with pace.json, and five checkpoints alone exceed 16 MiB
  find "checkpoints/$budget" -name '*.pt' -newer "$out/started" 2>/dev/null > "$out/new_checkpoints.txt"
  local own
  own=$(cd "$out" && ls -A | grep -v "^$budget\.tar\.gz")
  rm -f "$out/$budget.tar.gz."*  # an earlier call's parts, where $OUT is reused (a rehearsal)
  # shellcheck disable=SC2086
  tar czf - "results/$budget" -T "$out/new_checkpoints.txt" logs/gpu_*.log -C "$out" $own 2>/dev/null \
    | split -b "${PART_BYTES:-15m}" -d -a 1 - "$out/$budget.tar.gz."
  (cd "$out" && rm -f $own)
  local bytes
  bytes=$(cat "$out/$budget.tar.gz."* | wc -c)
  if [ "$bytes" -gt 62914560 ]; then  # 60 MiB: over the 64 MiB a call returns, with a margin
    echo "pack: the tarball is $bytes bytes, more than a call returns: carry fewer checkpoints next time"
  fi
  ls -l "$out"
}
touch "$out/started"
{ nvidia-smi; git rev-parse HEAD; git status --porcelain --untracked-files=no; date -u; } > "$out/env.log" 2>&1
python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
OUT=$out timeout "${CHECK_SECONDS:-240}" bash tools/gpu_check.sh > logs/gpu_check.log 2>&1
rc=$?; cp logs/gpu_check.log "$out/" 2>/dev/null
echo "gpu_check: exit $rc after $(( $(date +%s) - start )) s"
tail -n 4 "$out/gpu_tests.log" 2>/dev/null
grep -E "cuda|limit|ours|baseline" "$out/benchmark.log" 2>/dev/null | tail -n 12
verdict=${PACE_VERDICT:-}
if [ "${PACE_SECONDS:-240}" != 0 ]; then  # the GPU's pace against the CPU's (tools/device_pace.py)
  timeout "${PACE_SECONDS:-240}" python tools/device_pace.py --device "$device" --seeds "${PACE_SEEDS:-1,2}" \
    --samples "${PACE_SAMPLES:-3.2e6}" --out "$out/pace.json" > logs/gpu_pace.log 2>&1
  echo "device_pace: exit $? after $(( $(date +%s) - start )) s"; grep "^|" logs/gpu_pace.log
  python tools/device_pace.py --judge "$out/pace.json" 2>&1 | tee -a logs/gpu_pace.log
  verdict=${PIPESTATUS[0]}
fi
if [ "${RECORD_SECONDS:-60}" != 0 ]; then  # the pace runs' draws (indices, first noise), to study and replay on a CPU
  timeout "${RECORD_SECONDS:-60}" python tools/device_pace.py --device "$device" --seeds "${PACE_SEEDS:-1,2}" \
    --samples "${PACE_SAMPLES:-3.2e6}" --record-draws --out "$out/draws.pt" > logs/gpu_record.log 2>&1
  echo "record draws: exit $? after $(( $(date +%s) - start )) s"; tail -n 1 logs/gpu_record.log
fi
case "$verdict" in
  0) gate="run as given" ;;
  4) gate="run with --compile no" ;;
  6) gate="run with --draws cpu (AEVB and MNIST wake-sleep pieces only)" ;;
  *) gate="not begun" ;;
esac
echo "pace verdict: ${verdict:-none}: the gated pieces are $gate"
i=0
for args in "$@"; do
  i=$((i + 1))
  if [ "${args#gated:}" != "$args" ]; then
    args=${args#gated:}
    case "$verdict" in
      0) ;;
      4) args="$args --compile no" ;;
      6) args="$args --draws cpu" ;;
      *) echo "piece $i ($args): not begun: the pace verdict is ${verdict:-missing}"; continue ;;
    esac
  fi
  s=$(( $(left) - ${PACK_SECONDS:-45} ))
  if [ "$s" -lt 60 ]; then echo "piece $i: $s s left, not begun"; continue; fi
  # shellcheck disable=SC2086
  python -m vae_utils piece --budget "$budget" --figures 2 --device "$device" $args --max-minutes "$(awk "BEGIN {print $s / 60}")" \
    > "logs/gpu_piece$i.log" 2>&1
  echo "piece $i ($args): exit $? after $(( $(date +%s) - start )) s"
  tr '\r' '\n' < "logs/gpu_piece$i.log" | grep -v "sample/s[],]" | tail -n 6
done
pack
