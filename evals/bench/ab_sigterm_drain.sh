#!/usr/bin/env bash
# SIGTERM under load, this checkout against BASE (a commit without the drain), interleaved:
# bench_serve_cascade.py's two SIGTERM cases (64 clients, hanging LLM; clients that wait
# Retry-After, clients that retry 429s at once), with its load levels cut to one short one.
#   evals/bench/ab_sigterm_drain.sh BASE [ROUNDS] → evals/bench/results/sigterm_drain_ab.json
set -euo pipefail
base=${1:?usage: ab_sigterm_drain.sh BASE [ROUNDS]}
rounds=${2:-2}
here=$(git rev-parse --show-toplevel)
python="$here/.venv/bin/python"
# as the Makefile sets them, for both trees
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
export LLMRERANK_ASSETS=${LLMRERANK_ASSETS:-$(dirname "$here")/shared/assets}
work=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$here" worktree add --detach --quiet "$work/base" "$base"
runs=()
for round in $(seq "$rounds"); do
  for side in base head; do
    tree=$here
    [ "$side" = base ] && tree=$work/base
    out="$work/$side-$round.json"
    # each tree's own llmrerank serves (ServiceProcess puts its checkout on PYTHONPATH)
    if ! (cd "$tree" && PYTHONPATH="$tree" "$python" evals/bench/bench_serve_cascade.py \
      --levels 1 --level-s 2 --out "$out" >"$work/$side-$round.log" 2>&1); then
      tail -20 "$work/$side-$round.log" >&2
      exit 1
    fi
    runs+=("$side=$out")
  done
done
"$python" - "$here/evals/bench/results/sigterm_drain_ab.json" "$base" \
  "$(git -C "$here" rev-parse --short HEAD)" "${runs[@]}" <<'EOF'
import json, sys
out, base, head, *runs = sys.argv[1:]
keep = ("in_flight_at_sigterm", "in_flight_answers", "sent_after_sigterm", "answers_after_sigterm",
        "connection_errors_the_service_logged", "exit_after_sigterm_s")
rows = []
for run in runs:
    side, path = run.split("=", 1)
    result = json.load(open(path))
    for case, sigterm in result["sigterm"].items():
        rows.append({"side": side, "case": case, **{k: sigterm[k] for k in keep}})
record = {"what": "SIGTERM 3 s into 64 clients' load, hanging LLM, deadline 1 s",
          "base": base, "head": head, "machine": result["machine"], "runs": rows}
with open(out, "w") as f:
    json.dump(record, f, indent=2)
for row in rows:
    print(row["side"], row["case"], "in flight", row["in_flight_at_sigterm"], row["in_flight_answers"])
print("wrote", out)
EOF
