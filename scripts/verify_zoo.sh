#!/usr/bin/env bash
# Run MONAI model-zoo's own bundle check (ci/verify_bundle.py) on our bundles, the way its CI does:
# each bundle copied under a temporary models/NAME, the official metadata schema at
# models/NAME/eval/schema.json (no download), models/model_info.json from the zoo, no network.
# The zoo's code is read from a model-zoo checkout (not part of this repository):
#   scripts/verify_zoo.sh /path/to/model-zoo [regular|full] [python]
# radfm (an LLM: forward takes token ids + a list of scans, not one tensor; transformers is not
# TorchScript-able) is added to the temporary copy's shape and TorchScript exclusion lists, as
# model-zoo allows for such bundles; radfm_classification is checked in full.
set -euo pipefail
ZOO=${1:?path to a Project-MONAI/model-zoo checkout}
MODE=${2:-full}
PY=${3:-python}
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # absolute: the check runs elsewhere
REPO=$(cd "$(dirname "$0")/.." && pwd)
SCHEMA=${SCHEMA:-$REPO/tests/bundles/data/meta_schema_20240725.json}  # MONAI's official schema, carried by the tests
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/ci" "$WORK/models"
cp "$ZOO/ci/verify_bundle.py" "$ZOO/ci/utils.py" "$ZOO/ci/bundle_custom_data.py" "$WORK/ci/"
cp "$ZOO/models/model_info.json" "$WORK/models/"
"$PY" - "$WORK/ci/bundle_custom_data.py" <<'PYEOF'
import sys
path = sys.argv[1]
text = open(path).read()
for name in ("exclude_verify_shape_list = [\n", "exclude_verify_torchscript_list = [\n"):
    text = text.replace(name, name + '    "radfm",\n', 1)
open(path, "w").write(text)
PYEOF
status=0
for bundle in radfm radfm_classification; do
  cp -r "$REPO/bundles/$bundle" "$WORK/models/$bundle"
  mkdir -p "$WORK/models/$bundle/eval"
  cp "$SCHEMA" "$WORK/models/$bundle/eval/schema.json"
  if (cd "$WORK" && HF_HUB_OFFLINE=1 PYTHONPATH=ci "$PY" ci/verify_bundle.py -b "$bundle" -p models -m "$MODE" > "$WORK/$bundle.log" 2>&1); then
    echo "$bundle ($MODE): passed"
  else
    echo "$bundle ($MODE): FAILED"; tail -20 "$WORK/$bundle.log"; status=1
  fi
done
exit $status
