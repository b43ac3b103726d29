#!/usr/bin/env bash
# Re-runs every evaluation whose numbers the README and evals/README.md quote, and writes
# evals/reports/. `make reports` runs it.
#   REPORTS_ONLY=1 evals/make_reports.sh   re-renders the reports, gate and screenshots from
#                                           the committed results without running anything.
set -euo pipefail
cd "$(dirname "$0")/.."
LLMRERANK=${LLMRERANK:-.venv/bin/llmrerank}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
R=evals/reports
# LLM answers are asked afresh, so token counts and latencies are those of real calls;
# dense embeddings stay cached (they only make the local stage faster, never different).
REPORTS_ONLY=${REPORTS_ONLY:-}
[ -n "$REPORTS_ONLY" ] || "$LLMRERANK" cache clear --cache-dir .cache/eval --namespace responses --yes

run() {  # config, output folder
  [ -z "$REPORTS_ONLY" ] || return 0
  rm -rf "$2/results"
  "$LLMRERANK" eval run "$1" --out "$2/results"
}

# 1. Local stages alone over the BM25 top-100 of DL19 and DL20 (bi-encoder, cross-encoder).
run evals/configs/local-stages.yaml $R/local-stages
for ds in dl19 dl20; do
  "$LLMRERANK" eval report $R/local-stages/results/${ds}__bm25__r0.json \
    $R/local-stages/results/${ds}__dense__r0.json $R/local-stages/results/${ds}__cross-encoder__r0.json \
    --out $R/local-stages/$ds --title "Local stages on TREC DL ${ds#dl}: BM25 top-100 reranked"
done

# 2. Every LLM strategy with the fair simulated judge (sigma = 1) on DL19, beside the local stages,
#    plus the depth sweep.
run evals/configs/dl19-strategies.yaml $R/dl19-strategies
if [ -z "$REPORTS_ONLY" ]; then
  rm -rf $R/dl19-strategies/sweep
  "$LLMRERANK" eval sweep evals/configs/sweep-dl19.yaml --out $R/dl19-strategies/sweep
fi
S=$R/dl19-strategies/results
"$LLMRERANK" eval report $S/dl19__bm25__r0.json $S/dl19__cross-encoder__r0.json $S/dl19__dense__r0.json \
  $S/dl19__pointwise__r0.json $S/dl19__listwise__r0.json $S/dl19__listwise-partition__r0.json \
  $S/dl19__pairwise-heapsort__r0.json \
  $S/dl19__setwise__r0.json $S/dl19__cross-encoder-20-listwise__r0.json $S/dl19__dense-20-listwise__r0.json \
  --sweep $R/dl19-strategies/sweep/sweep.json --out $R/dl19-strategies \
  --title "TREC DL 2019: BM25, local stages and every LLM strategy (fair simulated judge, sigma = 1)" \
  --notes "The LLM rows use the simulated judge, not a real LLM: every answer (grade, permutation, preference, best-of-set) derives from one latent reading per query-passage pair, its qrels label + N(0, 1). They show what each strategy makes of the same imperfect judge and what it costs in calls."

# 2b. Listwise in few rounds: sliding window, top-down partitioning, single pass and first-token,
#     with the fair judge at sigma = 0, sigma = 1 and sigma = 1 with a position bias of 0.2.
run evals/configs/listwise-rounds.yaml $R/listwise-rounds
L=$R/listwise-rounds/results
LR=()
for judge in "sim-dl19-" "sim-dl19-1.0-" "sim-dl19-1.0-bias-0.2-"; do
  for method in sliding partition single-pass partition-first-token; do
    LR+=("$L/dl19__${method}-${judge}__r0.json")
  done
done
"$LLMRERANK" eval report $L/dl19__bm25__r0.json "${LR[@]}" --out $R/listwise-rounds \
  --title "Listwise in few rounds on TREC DL 2019: sliding window, partition, single pass, first-token (fair simulated judge)" \
  --notes "The LLM rows use the simulated judge (one latent model: each pair read as its label + sigma * N(0,1); bias = probability of preferring what is shown first), not a real LLM."

# 3. The hybrid cascade as apps run it: BM25 top-50 → local stage → 20 → LLM.
run evals/configs/cascade-dl19.yaml $R/cascade-dl19
C=$R/cascade-dl19/results
"$LLMRERANK" eval report $C/dl19__bm25__r0.json $C/dl19__dense__r0.json $C/dl19__cross-encoder__r0.json \
  $C/dl19__listwise-alone__r0.json $C/dl19__cross-encoder-20-listwise__r0.json \
  $C/dl19__dense-20-listwise__r0.json $C/dl19__dense-20-pointwise__r0.json \
  --out $R/cascade-dl19 --title "TREC DL 2019 cascade: BM25 top-50 → local stage → 20 → LLM (fair simulated judge, sigma = 1)"

# 4. The regression gate: the dense cascade against the cross-encoder cascade, gated on nDCG@10.
#    Exits 1 when the candidate is worse by more than 0.01; the output is kept either way.
set +e
"$LLMRERANK" eval compare $C/dl19__dense-20-listwise__r0.json $C/dl19__cross-encoder-20-listwise__r0.json \
  --fail-if-worse ndcg@10:0.01 > $R/cascade-dl19/gate.txt 2>&1
echo "exit code $?" >> $R/cascade-dl19/gate.txt
set -e

# 5. The shipped golden set with the real local LLM (slow on a CPU: about 10 minutes cold).
run evals/configs/devkb-local.yaml $R/devkb-local
D=$R/devkb-local/results
"$LLMRERANK" eval report $D/devkb__first-stage__r0.json $D/devkb__dense__r0.json \
  $D/devkb__pointwise-default-__r0.json $D/devkb__pointwise-support-kb-__r0.json \
  $D/devkb__listwise__r0.json --out $R/devkb-local \
  --title "devkb with the local Qwen2.5-Coder-0.5B: rubrics × strategies"

# 5b. Rubric authoring (`eval agree`): the devkb rubric support-kb@1 against a deliberately worse
#     draft support-kb@2, graded by the local LLM with logprobs; and web-passages@1 against the
#     DL19 qrels with the fair simulated judge (sigma = 1) as a stand-in for a real LLM.
run evals/configs/rubric-devkb.yaml $R/rubric-devkb
RD=$R/rubric-devkb/results
"$LLMRERANK" eval agree $RD/devkb__pointwise-support-kb-1-__r0.json $RD/devkb__pointwise-support-kb-2-__r0.json \
  --out $R/rubric-devkb --title "devkb: the set's rubric (support-kb@1) against a worse draft (support-kb@2), local Qwen2.5-Coder-0.5B" \
  --notes "Grades from the real local LLM (Qwen2.5-Coder-0.5B-Instruct, llama.cpp, CPU) with logprobs; labels from the devkb qrels. support-kb@2 was written to be worse: it asks for topic and wording, not for an answer the engineer can act on."
run evals/configs/rubric-dl19.yaml $R/rubric-dl19
RT=$R/rubric-dl19/results
"$LLMRERANK" eval agree $RT/dl19__pointwise__r0.json $RT/dl19__listwise__r0.json --out $R/rubric-dl19 \
  --title "TREC DL 2019: web-passages@1, pointwise grades and listwise order against the qrels (fair simulated judge, sigma = 1)" \
  --notes "The LLM is the fair simulated judge (sim:dl19@1.0), a stand-in for a real LLM: it reads each query-passage pair once as its qrels label + N(0, 1) and answers every question from that reading; it reads the rubric's scale, not its words. BM25 top-30 of the 43 queries."

# 6. The README's main job with the local LLM (what `make demo` prints without an API key).
[ -n "$REPORTS_ONLY" ] || "$LLMRERANK" demo --model local: --cache-dir .cache/eval > $R/demo-dl19-local.txt

# 7. Each HTML report as a reader sees it, rendered by headless Chromium (skipped without one).
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
  for page in $R/local-stages/dl19 $R/dl19-strategies $R/cascade-dl19 $R/devkb-local; do
    evals/screenshot_report.sh $page/report.html $page/report.png
  done
  for page in $R/rubric-devkb $R/rubric-dl19; do
    evals/screenshot_report.sh $page/agreement.html $page/agreement.png
  done
fi
