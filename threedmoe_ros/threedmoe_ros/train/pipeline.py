"""The paper's pipeline as one resumable command: collect → QA → Pose-DiT (the lm policy) → Stage II → evaluation.

    threedmoe-pipeline --preset smollm2-135m-cpu --out runs/pipeline          # this machine's budget
    threedmoe-pipeline --preset smollm2-135m --out runs/pipeline \\
        --launcher "accelerate launch --multi_gpu --num_processes 4"            # several GPUs
    threedmoe-pipeline --preset smollm2-135m --out runs/pipeline --dry-run     # print the commands

Each stage is the project's own command line (threedmoe-collect, threedmoe-qa-data, threedmoe-train-pose-dit,
threedmoe-train-stage2, threedmoe-eval-closed-loop), run in a process of its own with the preset's arguments:
  pose_dit  the lm policy (models/lm_condition.py) on the demonstrations, from the shipped light policy
            (--init-from); Stage I of the 3D-MoE, the least-squares alignment of the object tokens onto the
            LM's word embeddings, is fitted there first (--align-scenes).
  stage2    the 3D-MoE's top layers upcycled to experts with LoRA and trained on the QA, from that policy
            (threedmoe-train-stage2 --init-from): OUT/stage2/checkpoint, what threedmoe-routing reads and what
            `threedmoe-train-pose-dit --lm-init-top` starts a policy's trained top from.
  eval      the pose_dit policy in closed loop.
A stage that finished leaves OUT/<stage>/done.json (its command and wall time) and is skipped on the next
invocation; Pose-DiT cut short continues with --resume (Stage II starts again, from its cached lower states);
collection keeps its complete bags. `--launcher` prefixes the training stages (accelerate launch, torchrun).
OUT/pipeline.json collects every stage's wall time.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class PipelinePreset:
    """Data and budgets of one pipeline run."""

    # The lm policy: its LM preset, the layer Pose-DiT reads, the policy it starts from (a shipped one by name
    # or a checkpoint directory; "" builds its light side fresh) and the simulator scenes its alignment is fitted on.
    llm: str = "smollm2-135m"
    lm_layer: int = 15
    init_from: str = "light"
    align_scenes: int = 300
    # Demonstrations: tasks (or families) and episodes per task.
    tasks: tuple[str, ...] = ("zone", "bowl", "stacking")
    episodes: int = 500
    # QA scenes (lo:hi seeds per task) for Stage II's questions.
    qa_seeds: str = "0:400"
    pose_dit_steps: int = 4500
    pose_dit_lr: float = 3e-4
    # Stage II: the top layers of the read layer that train, their experts and LoRA preset, and the budget.
    tune_layers: int = 4
    moe: str = "e4-top2"
    lora: str = "smollm2-135m"
    stage2_steps: int = 6000
    stage2_batch_size: int = 16
    stage2_lr: float = 5e-4
    # Closed-loop evaluation: test episodes per task.
    eval_episodes: int = 100
    device: str = "auto"


PRESETS = {
    # The shipped-default recipe, sized for a GPU.
    "smollm2-135m": PipelinePreset(),
    # What this 2-core CPU machine finishes in a few hours.
    "smollm2-135m-cpu": PipelinePreset(episodes=200, qa_seeds="0:40", pose_dit_steps=1500, stage2_steps=160,
                                       stage2_batch_size=4, eval_episodes=30, device="cpu"),
    # Every stage end to end in a few minutes on a random tiny LM: a smoke test, not a model.
    "tiny": PipelinePreset(llm="tiny", lm_layer=2, align_scenes=1, tasks=("put-block-in-zone",), episodes=2,
                           qa_seeds="0:2", pose_dit_steps=3, tune_layers=1, moe="e2-top2", lora="tiny",
                           stage2_steps=2, stage2_batch_size=2, eval_episodes=1, device="cpu"),
}
STAGES = ("collect", "qa", "pose_dit", "stage2", "eval")
TRAINING = ("pose_dit", "stage2")  # what --launcher prefixes
RESUMABLE = ("pose_dit",)  # what continues from OUT/<stage>/train_state with --resume


def commands(preset: PipelinePreset, out: Path) -> dict[str, list[str]]:
    """Each stage's command line (without launcher or --resume)."""
    from threedmoe_ros.checkpoints import policy_path

    py = [sys.executable, "-m"]
    train = ["--device", preset.device, "--log-every", "10"]
    init = ["--init-from", policy_path(preset.init_from)] if preset.init_from else []
    return {
        "collect": py + ["threedmoe_ros.train.collect", "--tasks", *preset.tasks, "--episodes", str(preset.episodes),
                         "--out", str(out / "collect")],
        "qa": py + ["threedmoe_ros.data.qa", "--out", str(out / "qa"), "--seeds", preset.qa_seeds],
        "pose_dit": py + ["threedmoe_ros.train.pose_dit", "--data", str(out / "collect"), "--out", str(out / "pose_dit"),
                          "--encoder", "lm", "--lm-llm", preset.llm, "--lm-layer", str(preset.lm_layer),
                          "--align-scenes", str(preset.align_scenes), *init,
                          "--max-steps", str(preset.pose_dit_steps), "--lr", str(preset.pose_dit_lr),
                          "--warmup-steps", str(max(1, min(200, preset.pose_dit_steps // 5))), *train],
        "stage2": py + ["threedmoe_ros.train.stage2", "--data", str(out / "qa"), "--out", str(out / "stage2"),
                        "--init-from", str(out / "pose_dit" / "checkpoint"), "--tune-layers", str(preset.tune_layers),
                        "--moe", preset.moe, "--lora", preset.lora, "--max-steps", str(preset.stage2_steps),
                        "--batch-size", str(preset.stage2_batch_size), "--lr", str(preset.stage2_lr),
                        "--warmup-steps", str(max(1, min(100, preset.stage2_steps // 10))), *train],
        "eval": py + ["threedmoe_ros.eval.closed_loop", "--checkpoint", str(out / "pose_dit" / "checkpoint"),
                      "--tasks", *preset.tasks, "--episodes", str(preset.eval_episodes), "--out", str(out / "eval")],
    }


def run(preset: PipelinePreset, out: Path, launcher: list[str], until: str = STAGES[-1], dry_run: bool = False) -> int:
    """Run every stage up to `until` that has not finished; 0, or the failing stage's exit status."""
    out.mkdir(parents=True, exist_ok=True)
    summary_file = out / "pipeline.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    summary["preset"] = asdict(preset)
    for name, cmd in commands(preset, out).items():
        done = out / name / "done.json"
        if done.is_file():
            print(f"[pipeline] {name}: done ({json.loads(done.read_text())['seconds']:.0f} s), skipped")
        else:
            if name in RESUMABLE and (out / name / "train_state" / "state.pt").is_file():
                cmd = cmd + ["--resume"]
            if name in TRAINING and launcher:  # `accelerate launch -m module` takes the module after its own options
                cmd = launcher + cmd[1:]
            print(f"[pipeline] {name}: {shlex.join(cmd)}", flush=True)
            if not dry_run:
                t0 = time.perf_counter()
                code = subprocess.call(cmd)
                if code != 0:
                    print(f"[pipeline] {name} failed (exit {code}); fix the cause and run the same command again to "
                          "continue from here", file=sys.stderr)
                    return code
                seconds = time.perf_counter() - t0
                (out / name).mkdir(parents=True, exist_ok=True)
                done.write_text(json.dumps({"command": cmd, "seconds": round(seconds, 1)}, indent=2) + "\n")
                summary.setdefault("seconds", {})[name] = round(seconds, 1)
                summary_file.write_text(json.dumps(summary, indent=2) + "\n")
        if name == until:
            break
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="threedmoe-pipeline", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--preset", default="smollm2-135m-cpu", choices=sorted(PRESETS))
    ap.add_argument("--out", required=True, type=Path, help="run directory; each stage writes OUT/<stage>/")
    ap.add_argument("--launcher", default="", help='prefix of the training stages, e.g. "accelerate launch '
                                                   '--multi_gpu --num_processes 4"')
    ap.add_argument("--until", default=STAGES[-1], choices=STAGES, help="last stage to run")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = ap.parse_args(argv)
    return run(PRESETS[args.preset], args.out, shlex.split(args.launcher), args.until, args.dry_run)


if __name__ == "__main__":
    raise SystemExit(main())
