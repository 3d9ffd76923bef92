#!/usr/bin/env bash
# The paper's experiment on a real pretrained encoder, through the project's own stages (head,
# sweep, evaluate, average, evaluate averages, tables, plots), on ../shared/realdata.
#   bash bench/replication/run.sh [ner|nli]      (make replicate TASK=ner)
# Resumable: a re-run does only what is missing (every stage skips what the store holds).
# Writes the tables and the score-vs-k figure to bench/replication/<task>/ and appends the
# wall time of each invocation to bench/replication/<task>/wall-seconds.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
TASK=${1:-ner}
CONFIG=configs/replicate-$TASK.yaml
[ -f "$CONFIG" ] || { echo "run.sh: no $CONFIG (tasks: ner, nli)" >&2; exit 2; }
BUCKET=${BUCKET:-file://$PWD/.replication/store}
ORCH=${ORCH:-.venv/bin/orchestrator}
OUT=bench/replication/$TASK
export XLT_NUM_THREADS=${XLT_NUM_THREADS:-1}  # two one-thread jobs at once use 2 cores best here
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p "$OUT"
start=$(date +%s)
"$ORCH" pipeline --config "$CONFIG" --bucket "$BUCKET" --parallelism "${PARALLELISM:-2}"
EXPERIMENT=$TASK-multilingual-e5-small
"$ORCH" tables --bucket "$BUCKET" --experiment "$EXPERIMENT" --task "$TASK" --format markdown --out "$OUT" --plot
"$ORCH" tables --bucket "$BUCKET" --experiment "$EXPERIMENT" --task "$TASK" > "$OUT/tables.txt"
end=$(date +%s)
echo "$(date -u +%FT%TZ) $((end - start))" >> "$OUT/wall-seconds.txt"
echo "replicate $TASK: $((end - start)) s; tables and figure in $OUT/"
