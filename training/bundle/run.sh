#!/bin/sh
# Stage 3 from a `python -m training.bundle pack` folder, on the machine it was carried to; run in the
# repo root. Usage: sh BUNDLE/run.sh STEPS MINUTES WORKERS [-- more `training.train finetune` flags]
# Writes fitting.log, train.log, log.csv and best.pt.part* to $OUT (default BUNDLE/out).
set -e
B=$(dirname "$0"); STEPS=$1; MINUTES=$2; WORKERS=$3; shift 3; [ "$1" = "--" ] && shift
PY=${PY:-python3}; OUT=${OUT:-$B/out}; DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FACEKIT_PATH=$B/facekit.npz
$PY -m training.bundle unbundle "$B"
EXTRA=""; [ -f "$B/landmarks.npz" ] && EXTRA="--extra-landmarks $B/landmarks.npz --extra-photos $B/extra-photos"
$PY -m training.fitting --data "$B/fitted-photos" --out "$B/fitted" --size 128 > "$OUT/fitting.log" 2>&1
grep -a "NME median\|photos:" "$OUT/fitting.log"
# shellcheck disable=SC2086
$PY -m training.train finetune --config cpu-small --albedo "$B/albedo.npz" --fitted "$B/fitted" \
    --photos "$B/fitted-photos" --geometry-from "$B/start.pt" --texture-from "$B/start.pt" $EXTRA \
    --steps "$STEPS" --minutes "$MINUTES" --workers "$WORKERS" --device "$DEVICE" --out "$B/run" "$@" > "$OUT/train.log" 2>&1
cp "$B/run/log.csv" "$OUT/log.csv"
BEST=$B/run/best.pt; [ -f "$BEST" ] || BEST=$B/run/checkpoint.pt
$PY -m training.bundle split "$BEST" "$OUT"
