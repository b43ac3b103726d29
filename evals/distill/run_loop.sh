#!/usr/bin/env bash
# Issue 24, the loop measured with the project's own commands: the LLM labels once (`llmrerank
# label`; here the fair simulated judge at sigma = 1, a stand-in for a real LLM), `llmrerank
# distill` trains the local stages on those labels, `llmrerank eval` grades them on queries they
# never saw, and `eval report` writes the committed report.
#   evals/distill/run_loop.sh dl20-dl19     DL20 labels -> evaluated on DL19
#   evals/distill/run_loop.sh scifact       SciFact train labels -> evaluated on SciFact test
# Labels, models and traces go to .cache/distill/SPLIT/ (not committed; each model folder holds
# its MODEL_CARD.md and llmrerank-training.json). Training times go to the report folder.
# STEPS="label distill eval report" (the default) picks the parts to run; the three trainings
# can run side by side: STEPS=distill-ce, STEPS=distill-dense, STEPS=distill-curve.
set -euo pipefail
cd "$(dirname "$0")/../.."
LLMRERANK=${LLMRERANK:-.venv/bin/llmrerank}
PYTHON=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
# the offline datasets and models (../shared/assets beside this checkout), as the Makefile sets it
export LLMRERANK_ASSETS=${LLMRERANK_ASSETS:-$(cd .. && pwd)/shared/assets}
SPLIT=${1:?usage: run_loop.sh dl20-dl19|scifact}
STEPS=${STEPS:-label distill eval report}
W=.cache/distill/$SPLIT
R=evals/reports/distill-$SPLIT
mkdir -p "$W" "$R"

case $SPLIT in
  dl20-dl19)
    TRAIN=dl20; JUDGE=sim:dl20@1.0; EVAL_SET=dl19; DEPTH=100; SIZES="10 25 54"; MAX_LENGTH=128 ;;
  scifact)
    TRAIN=scifact-train; JUDGE=sim:scifact@1.0; EVAL_SET=scifact; DEPTH=30; SIZES="50 100 200"; MAX_LENGTH=256 ;;
  *) echo "unknown split $SPLIT" >&2; exit 2 ;;
esac
ALL=${SIZES##* }
# the recipe (evals/distill/README.md says why): listwise LambdaLoss from the shipped
# cross-encoder; CoSENT from all-MiniLM-L6-v2 for the dense stage; one epoch, early stopping
# on the validation queries' nDCG@10 (teacher labels), seed 0
CE_ARGS=(--loss lambda --epochs 2 --lr 1e-4 --batch-size 4 --list-size 25 --max-length "$MAX_LENGTH"
         --validation-fraction 0.2 --seed 0)
half_epoch() {  # validate twice an epoch: N labelled queries, 80 % train, lists of 25, 4 per step
  local train=$(( $1 - ($1 + 2) / 5 ))
  echo $(( (train * ((DEPTH + 24) / 25) + 7) / 8 ))
}
DENSE_ARGS=(--loss cosent --epochs 1 --lr 1e-5 --batch-size 32 --max-length "$MAX_LENGTH"
            --validation-fraction 0.2 --seed 0)

timed() {  # name, command...: runs it, appends the wall time to the report's timings
  local name=$1; shift
  local start=$SECONDS
  "$@"
  [ -f "$R/timings.md" ] || printf '| training run | wall seconds (model loading and validation included) |\n|---|---|\n' > "$R/timings.md"
  printf '| %s | %d |\n' "$name" $((SECONDS - start)) >> "$R/timings.md"
}

if [[ " $STEPS " == *" label "* ]]; then
  # one teacher pass over every query; the smaller label sets are the first N queries, answered
  # from the response cache (no new LLM calls)
  for n in $SIZES; do
    rm -f "$W/labels-${n}q.jsonl"
    "$LLMRERANK" label --dataset "$TRAIN" --limit "$n" --depth "$DEPTH" -m "$JUDGE" \
      --cache-dir "$W/llm-cache" --quiet --out "$W/labels-${n}q.jsonl"
  done
fi

want() {  # is step $1 asked for? "distill" means its three parts
  [[ " $STEPS " == *" $1 "* ]] || { [[ $1 == distill-* ]] && [[ " $STEPS " == *" distill "* ]]; }
}

# the three trainings are independent: STEPS="distill-ce", "distill-dense", "distill-curve" run one each
if want distill-ce; then
  rm -rf "$W/ce-${ALL}q"
  timed "cross-encoder, ${ALL} queries" "$LLMRERANK" distill "$W/labels-${ALL}q.jsonl" --stage cross-encoder: \
    --out "$W/ce-${ALL}q" --eval-set "$EVAL_SET" --eval-steps "$(half_epoch "$ALL")" "${CE_ARGS[@]}"
fi
if want distill-dense; then
  rm -rf "$W/dense-${ALL}q"
  # cached passage embeddings are keyed by the model's name (its folder): drop the old folder's
  "$LLMRERANK" cache clear --cache-dir .cache/distill/eval-cache --namespace embeddings --yes
  timed "dense, ${ALL} queries" "$LLMRERANK" distill "$W/labels-${ALL}q.jsonl" --stage dense: \
    --out "$W/dense-${ALL}q" --eval-set "$EVAL_SET" --eval-steps "$(( ($(half_epoch "$ALL") * 100 + 31) / 32 ))" \
    "${DENSE_ARGS[@]}"
fi
if want distill-curve; then
  for n in $SIZES; do
    [ "$n" = "$ALL" ] && continue
    rm -rf "$W/ce-${n}q"
    timed "cross-encoder, ${n} queries" "$LLMRERANK" distill "$W/labels-${n}q.jsonl" --stage cross-encoder: \
      --out "$W/ce-${n}q" --eval-set "$EVAL_SET" --eval-steps "$(half_epoch "$n")" "${CE_ARGS[@]}"
  done
fi

# the cascades (their traces give the stage-alone figures and the routing counts) and the
# learning curve's smaller students; STEPS=eval-cascade and STEPS=eval-curve run one each
if want eval-cascade || [[ " $STEPS " == *" eval "* ]]; then
  rm -rf "$R/results" "$W"/trace-*.jsonl
  "$LLMRERANK" eval run "evals/configs/distill-$SPLIT.yaml" --out "$R/results"
fi
if want eval-curve || [[ " $STEPS " == *" eval "* ]]; then
  rm -rf "$R/curve"
  "$LLMRERANK" eval run "evals/configs/distill-$SPLIT-curve.yaml" --out "$R/curve"
fi

if [[ " $STEPS " == *" report "* ]]; then
  "$PYTHON" evals/distill/report.py "$SPLIT"
fi
