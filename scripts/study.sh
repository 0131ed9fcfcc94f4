#!/usr/bin/env bash
# Set up (if needed) and run, or resume, the glyph study (configs/glyphs_study.yaml): the search
# on validation data and the 5-seed test grid, on every core or GPU of this machine. Hours on a
# 2-core CPU; stop it at any time and run this again to go on. Its finished work is kept in
# benchmarks/results/glyphs-study/state/ (small JSON files and the Optuna journal, tracked by
# git) so that another clone resumes it too: `python -m scripts.study_state save` copies the
# newly finished cells there (this script does it when the run ends or stops).
PMLAC_EXTRA=benchmarks
source "$(dirname "$0")/_env.sh"
RUN=benchmarks/results/runs/glyphs-study
STATE=benchmarks/results/glyphs-study/state
mkdir -p "$STATE"
"$PY" -m scripts.study_state restore "$STATE" "$RUN"
status=0
shown="bash scripts/study.sh"
for a in "$@"; do
    if [ "$a" = "--fresh" ]; then
        rm -rf "$STATE" && mkdir -p "$STATE"  # a fresh study: its saved state and journal too
    else
        shown="$shown $(printf '%q' "$a")"  # the resume line never repeats --fresh
    fi
done
"$PY" -m benchmarks.launch --resume-as "$shown" --resume-verbatim -- tune \
    --config benchmarks/harness/configs/glyphs_study.yaml --output "$RUN" \
    --storage "journal:$STATE/optuna.journal" "$@" || status=$?
[ -d "$RUN" ] && "$PY" -m scripts.study_state save "$RUN" "$STATE"
exit "$status"
