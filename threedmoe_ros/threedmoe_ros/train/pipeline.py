"""The paper's pipeline as one resumable command: collect → QA → Stage I → Stage II → Pose-DiT → evaluation.

    threedmoe-pipeline --preset smollm2-135m-cpu --out runs/pipeline          # this machine's budget
    threedmoe-pipeline --preset smollm2-135m --out runs/pipeline \\
        --launcher "accelerate launch --multi_gpu --num_processes 4"            # several GPUs
    threedmoe-pipeline --preset smollm2-135m --out runs/pipeline --dry-run     # print the commands

Each stage is the project's own command line (threedmoe-collect, threedmoe-qa-data,
threedmoe-train-stage1/-stage2, threedmoe-train-pose-dit, threedmoe-eval-closed-loop), run in a
process of its own with the preset's arguments. A stage that finished leaves OUT/<stage>/done.json
(its command and wall time) and is skipped on the next invocation; a training stage that was cut
short continues with --resume; collection keeps its complete bags. `--launcher` prefixes the three
training stages (accelerate launch, torchrun). OUT/pipeline.json collects every stage's wall time.
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

    llm: str = "smollm2-135m"
    moe: str = "e4-top2"
    # Demonstrations: tasks (or families) and episodes per task.
    tasks: tuple[str, ...] = ("zone", "bowl", "stacking")
    episodes: int = 500
    # QA scenes (lo:hi seeds per task) for Stage I captions and Stage II questions.
    qa_seeds: str = "0:400"
    stage1_steps: int = 2000
    stage2_steps: int = 6000
    stage_batch_size: int = 16
    stage1_lr: float = 5e-4
    stage2_lr: float = 1e-4
    # Pose-DiT on the 3D-MoE condition.
    condition: str = "all_hidden"
    regime: str = "frozen"
    pose_dit_steps: int = 7400
    pose_dit_lr: float = 5e-4
    # Closed-loop evaluation: test episodes per task.
    eval_episodes: int = 100
    device: str = "auto"


PRESETS = {
    # The shipped-default recipe, sized for a GPU.
    "smollm2-135m": PipelinePreset(),
    # What this 2-core CPU machine finishes in about three hours.
    "smollm2-135m-cpu": PipelinePreset(episodes=200, qa_seeds="0:40", stage1_steps=120, stage2_steps=160,
                                       stage_batch_size=4, pose_dit_steps=1500, eval_episodes=30, device="cpu"),
    # Every stage end to end in a minute or two on a random tiny LLM: a smoke test, not a model.
    "tiny": PipelinePreset(llm="tiny", moe="e2-top2", tasks=("put-block-in-zone",), episodes=2, qa_seeds="0:2",
                           stage1_steps=2, stage2_steps=2, stage_batch_size=2, pose_dit_steps=3, eval_episodes=1,
                           device="cpu"),
}
STAGES = ("collect", "qa", "stage1", "stage2", "pose_dit", "eval")
TRAINING = ("stage1", "stage2", "pose_dit")


def commands(preset: PipelinePreset, out: Path) -> dict[str, list[str]]:
    """Each stage's command line (without launcher or --resume)."""
    py = [sys.executable, "-m"]
    train = ["--device", preset.device, "--log-every", "10"]
    stage = ["--llm", preset.llm, "--moe", preset.moe, "--batch-size", str(preset.stage_batch_size),
             "--warmup-steps", str(max(1, min(100, preset.stage1_steps // 10))), *train]
    return {
        "collect": py + ["threedmoe_ros.train.collect", "--tasks", *preset.tasks, "--episodes", str(preset.episodes),
                         "--out", str(out / "collect")],
        "qa": py + ["threedmoe_ros.data.qa", "--out", str(out / "qa"), "--seeds", preset.qa_seeds],
        "stage1": py + ["threedmoe_ros.train.stage1", "--data", str(out / "qa"), "--out", str(out / "stage1"),
                        "--max-steps", str(preset.stage1_steps), "--lr", str(preset.stage1_lr), *stage],
        "stage2": py + ["threedmoe_ros.train.stage2", "--data", str(out / "qa"), "--out", str(out / "stage2"),
                        "--init", str(out / "stage1" / "checkpoint"), "--max-steps", str(preset.stage2_steps),
                        "--lr", str(preset.stage2_lr), *stage],
        "pose_dit": py + ["threedmoe_ros.train.pose_dit", "--data", str(out / "collect"), "--out", str(out / "pose_dit"),
                          "--encoder", "3dmoe", "--encoder-checkpoint", str(out / "stage2" / "checkpoint"),
                          "--condition", preset.condition, "--regime", preset.regime,
                          "--max-steps", str(preset.pose_dit_steps), "--lr", str(preset.pose_dit_lr),
                          "--warmup-steps", str(max(1, min(300, preset.pose_dit_steps // 5))), *train],
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
            if name in TRAINING:
                if (out / name / "train_state" / "state.pt").is_file():
                    cmd = cmd + ["--resume"]
                if launcher:  # `accelerate launch -m module` takes the module after its own options
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
