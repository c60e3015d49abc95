#!/usr/bin/env bash
# Train independent SEN networks for an ensemble like sen/models/sen_mp, several at once (one GPU is shared
# by all of them; on the CPU give each one core). One line per SEED, the recipe of the shipped networks:
#   1. pretrain:  configs/sen_mp.toml (lr 2e-3, cosine), the shipped split (--split-seed 0), --seed SEED
#   2. fine-tune: configs/sen_mp_fe.toml from the pretrained network (lr 5e-4, formation energy weighted 3x),
#                 --seed SEED+100
#   3. (REFIT_EPOCHS > 0 only) refit on train + validation: lr 2e-4, no early stopping, --seed SEED+200
# Each stage stops after its epochs or its minutes, whichever comes first; the cosine learning-rate schedule
# ends on time either way. Runs go to $RUNS/sen_mp_g<SEED>, ..._fe, ..._refit; each line's output to
# $RUNS/line_<SEED>.log. Pick the networks to combine on validation (benchmarks/ensemble_members.py) and
# package them with scripts/package_model.py.
#
#   scripts/train_lines.sh 21 22 23 24
#   PRE_MIN=4 FE_MIN=2.6 scripts/train_lines.sh 21 22     # time budgets in minutes per stage
#
# Settings (environment, defaults in brackets): DATA [../shared/data/mp_crystals], RUNS [runs],
# PRE_EPOCHS [46], FE_EPOCHS [30], REFIT_EPOCHS [0], PRE_MIN / FE_MIN / REFIT_MIN [the configs' limits],
# PYTHON [python3], EXTRA [more `sen train` options for every stage, e.g. "--device cuda"].
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 SEED [SEED ...]" >&2; exit 2; }
for s in "$@"; do
    [[ $s =~ ^[0-9]+$ ]] || { echo "$0: seeds must be whole numbers, got '$s'" >&2; exit 2; }
done
DATA=${DATA:-../shared/data/mp_crystals}
RUNS=${RUNS:-runs}
PRE_EPOCHS=${PRE_EPOCHS:-46}
FE_EPOCHS=${FE_EPOCHS:-30}
REFIT_EPOCHS=${REFIT_EPOCHS:-0}
PYTHON=${PYTHON:-python3}
EXTRA=${EXTRA:-}
mkdir -p "$RUNS"

stage() {  # one `sen train` run with the settings every stage shares
    # shellcheck disable=SC2086  # EXTRA is a list of options
    $PYTHON -m sen train --data "$DATA" --no-progress "$@" $EXTRA
}

line() {
    local s=$1 pre="$RUNS/sen_mp_g$1"
    stage --config configs/sen_mp.toml --out "$pre" --seed "$s" --split-seed 0 --epochs "$PRE_EPOCHS" \
        --patience 200 ${PRE_MIN:+--time-limit-min "$PRE_MIN"}
    stage --config configs/sen_mp_fe.toml --init-from "$pre" --out "${pre}_fe" --seed $((s + 100)) \
        --epochs "$FE_EPOCHS" ${FE_MIN:+--time-limit-min "$FE_MIN"}
    if [ "$REFIT_EPOCHS" -gt 0 ]; then
        stage --config configs/sen_mp_fe.toml --init-from "${pre}_fe" --out "${pre}_refit" --seed $((s + 200)) \
            --lr 2e-4 --train-on-val --epochs "$REFIT_EPOCHS" ${REFIT_MIN:+--time-limit-min "$REFIT_MIN"}
    fi
}

seeds=("$@")
pids=()
for s in "${seeds[@]}"; do
    line "$s" >"$RUNS/line_$s.log" 2>&1 &
    pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
        echo "line with seed ${seeds[$i]} failed: see $RUNS/line_${seeds[$i]}.log" >&2
        status=1
    fi
done
exit $status
