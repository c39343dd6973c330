#!/usr/bin/env bash
# EFT end to end on the bundled TREC-6 questions with the embedded all-MiniLM-L6-v2:
# one backprop epoch, the I-ELM head (its scores calibrated on 10 % of the training questions),
# then accuracy on the 500 test questions.
set -euo pipefail
cd "$(dirname "$0")/.."
EFT=.venv/bin/eft
OUT=demo-output
rm -rf "$OUT"
mkdir -p "$OUT"
echo "== eft train (1 BP epoch + I-ELM head) on TREC-6: 4,907 questions, 545 held out for validation"
$EFT train --dataset trec --data-dir examples/data --bp-epochs 1 --validation-fraction 0.1 \
    --output "$OUT/trec-eft"
echo
echo "== eft evaluate on the TREC-6 test split (500 questions)"
$EFT evaluate "$OUT/trec-eft" --dataset trec --data-dir examples/data \
    --predictions "$OUT/test-predictions.jsonl" --metrics "$OUT/test-metrics.json"
echo
echo "== eft predict"
$EFT predict "$OUT/trec-eft" "Who wrote Hamlet?" "How far is the Moon from the Earth?"
