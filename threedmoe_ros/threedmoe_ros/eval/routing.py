"""Expert routing of the 3D-MoE's trained top: which experts each MoE layer uses, and how decided its router
is, over all tokens and separately for the 3D object tokens and the text tokens.

    threedmoe-routing --checkpoint runs/stage2/checkpoint --data data_out/qa --items 50 --out runs/routing
    threedmoe-routing --checkpoint runs/lm_moe/checkpoint --data data_out/qa    # a policy with a trained top

--checkpoint is a Stage II checkpoint (threedmoe-train-stage2's OUT/checkpoint) or a policy checkpoint whose lm
encoder has a trained top with experts (threedmoe-train-pose-dit --encoder lm --lm-tune-layers N --lm-moe ...).
The first --items questions of --data (a qa.jsonl directory or a compact file of threedmoe-train-stage2
--export-inputs; captions left out) run once through the frozen layers, as Stage II caches them (prompt, objects
and the answer), then through the top once per token kind, each MoE layer recording only that kind: the object
tokens (3d) or the rest of the sequence, the prompt's words and the answer (text). Writes routing.json (per token
kind and decoder layer: expert fractions, mean router probabilities, entropy and tokens) and one PNG per token
kind (routing_all.png, routing_3d.png, routing_text.png).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from threedmoe_ros.models.moe import RouterStats

TOKEN_KINDS = ("all", "3d", "text")


def plot_routing(stats: dict[int, RouterStats], path: str | Path, title: str = "expert routing") -> Path:
    """Write a PNG: left, the share of token→expert assignments per layer × expert (a balanced layer is
    one flat colour at 1/E); right, mean router entropy per layer relative to uniform (1 = undecided).

    `stats` comes from moe.router_stats(model) (one forward) or moe.RoutingTally.stats() (many).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not stats:
        raise ValueError("no routing statistics to plot: run a forward pass through an upcycled model first")
    layers = sorted(stats)
    fractions = np.stack([stats[i].fraction.numpy() for i in layers])  # (L, E)
    num_experts = fractions.shape[1]
    entropy = np.array([stats[i].entropy for i in layers]) / math.log(num_experts)

    fig, (ax_heat, ax_ent) = plt.subplots(1, 2, figsize=(9, 0.35 * len(layers) + 2), width_ratios=(2, 1))
    im = ax_heat.imshow(fractions, aspect="auto", cmap="viridis", vmin=0, vmax=max(2 / num_experts, fractions.max()))
    ax_heat.set(xlabel="expert", ylabel="decoder layer", xticks=range(num_experts), yticks=range(len(layers)),
                yticklabels=layers, title=f"share of assignments (balanced = {1 / num_experts:.2f})")
    fig.colorbar(im, ax=ax_heat)
    ax_ent.barh(range(len(layers)), entropy, color="tab:orange")
    ax_ent.set(xlim=(0, 1), yticks=range(len(layers)), yticklabels=layers, xlabel="entropy / log E",
               title="router entropy")
    ax_ent.invert_yaxis()
    fig.suptitle(f"{title} ({stats[layers[0]].num_tokens} tokens)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def read_checkpoint(path: str | Path):
    """The 3D-MoE of a Stage II checkpoint (encoder_config.json + encoder.safetensors) or of an lm policy
    checkpoint (config.json + model.safetensors); CheckpointError naming what is wrong."""
    from threedmoe_ros.models.checkpoint import CheckpointError
    from threedmoe_ros.models.lm_condition import CONFIG_NAME as ENCODER_CONFIG, LMConditionEncoder

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} is not a directory; give a Stage II checkpoint "
                              "(threedmoe-train-stage2 OUT/checkpoint) or an lm policy checkpoint")
    if (path / ENCODER_CONFIG).is_file():
        return LMConditionEncoder.from_pretrained(path)
    from threedmoe_ros.policy import CONFIG_NAME, Policy

    if not (path / CONFIG_NAME).is_file():
        raise CheckpointError(f"{path} holds neither {ENCODER_CONFIG} (a Stage II checkpoint) nor {CONFIG_NAME} "
                              "(a policy checkpoint)")
    policy = Policy.from_pretrained(path)
    if policy.config.encoder != "lm":
        raise CheckpointError(f"{path} is a {policy.config.encoder!r} policy; routing reads the experts of an 'lm' "
                              "policy's trained top")
    return policy.encoder


def token_kinds(samples: list) -> dict:
    """{kind: (B, L) bool} over the left-padded batch the top runs on (LMConditionEncoder._top): the real
    tokens, the object tokens (each sample's LowerStates.objects_at, one per object) and the rest (text)."""
    import torch

    L = max(len(s.hidden) for s in samples)
    real = torch.zeros(len(samples), L, dtype=torch.bool)
    is_3d = torch.zeros_like(real)
    for i, s in enumerate(samples):
        start = L - len(s.hidden)
        real[i, start:] = True
        is_3d[i, start + s.objects_at: start + s.objects_at + len(s.objects.features)] = True
    return {"all": real, "3d": is_3d, "text": real & ~is_3d}


def routing_by_token_kind(encoder, samples: list, batch_size: int = 16,
                          progress: bool = True) -> dict[str, dict[int, RouterStats]]:
    """Routing statistics of the trained top over cached lower states (train/stage2.py's lower_states), one
    RoutingTally per token kind, keyed by the decoder layer's index in the whole LM. One pass of the top per
    kind and batch: a pre-hook hands every MoE layer the kind's mask, so it records only those tokens (the
    padding mask the top sets for its balance loss is replaced just before the layer runs)."""
    import torch
    from tqdm import tqdm

    from threedmoe_ros.models.moe import RoutingTally, moe_layers

    tallies = {kind: RoutingTally() for kind in TOKEN_KINDS}
    current = {}

    def record_only(module, args):
        module.token_mask = current["mask"]

    hooks = [m.register_forward_pre_hook(record_only) for _, m in moe_layers(encoder.top)]
    try:
        with torch.no_grad(), tqdm(total=len(samples), desc="routing", unit="question", disable=not progress) as bar:
            for lo in range(0, len(samples), batch_size):
                batch = samples[lo: lo + batch_size]
                for kind, mask in token_kinds(batch).items():
                    current["mask"] = mask.to(encoder.align.device)
                    encoder._top(batch)
                    tallies[kind].update(encoder.top)
                bar.update(len(batch))
    finally:
        for hook in hooks:
            hook.remove()
    cut = encoder.config.cut  # the top's layers are the LM's cut, cut + 1, ...
    return {kind: {cut + layer: s for layer, s in tally.stats().items()} for kind, tally in tallies.items()}


def to_json(groups: dict[str, dict[int, RouterStats]]) -> dict:
    return {kind: {str(layer): {"fraction": s.fraction.tolist(), "mean_prob": s.mean_prob.tolist(),
                                "entropy": s.entropy, "entropy_relative": s.entropy / math.log(len(s.fraction)),
                                "tokens": s.num_tokens}
                   for layer, s in stats.items()}
            for kind, stats in groups.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="threedmoe-routing", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="a Stage II checkpoint (threedmoe-train-stage2 OUT/checkpoint) or a policy checkpoint "
                             "whose lm encoder has a trained top with experts")
    parser.add_argument("--data", required=True, help="questions: a qa.jsonl directory (threedmoe-qa-data) or a "
                                                      "compact file (threedmoe-train-stage2 --export-inputs)")
    parser.add_argument("--items", type=int, default=50, help="questions to route (the first N, captions left out)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="runs/routing", help="where routing.json and the PNGs go")
    args = parser.parse_args(argv)
    if args.items < 1 or args.batch_size < 1:
        parser.error("--items and --batch-size must be >= 1")
    try:
        from threedmoe_ros.models.checkpoint import CheckpointError
        from threedmoe_ros.models.moe import moe_layers
        from threedmoe_ros.train.stage2 import Questions, lower_states

        encoder = read_checkpoint(args.checkpoint)
        if encoder.top is None:
            print(f"threedmoe-routing: {args.checkpoint} holds the frozen LM (tune_layers: 0); it has no trained top "
                  "and no experts to route to", file=sys.stderr)
            return 2
        if not any(True for _ in moe_layers(encoder.top)):
            print(f"threedmoe-routing: {args.checkpoint} has a dense top (moe: null); it has no experts to route to",
                  file=sys.stderr)
            return 2
        data = Questions(args.data, encoder.light.config)
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        print(f"threedmoe-routing: {exc}", file=sys.stderr)
        return 2
    data.records = data.records[: args.items]
    if not data.records:
        print(f"threedmoe-routing: {args.data} holds no questions", file=sys.stderr)
        return 2
    samples = lower_states(encoder, data, batch_size=args.batch_size)
    groups = routing_by_token_kind(encoder, samples, args.batch_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"checkpoint": str(args.checkpoint), "items": len(samples), "moe": encoder.config.moe,
              "top_layers": list(range(encoder.config.cut, encoder.config.layer)), "routing": to_json(groups)}
    (out / "routing.json").write_text(json.dumps(record, indent=2) + "\n")
    names = {"all": "all tokens", "3d": "3D object tokens", "text": "text tokens"}
    for kind, stats in groups.items():
        if stats:
            plot_routing(stats, out / f"routing_{kind}.png", f"expert routing, {names[kind]}")
    print(f"threedmoe-routing: {len(samples)} questions; routing.json and routing_{{{','.join(groups)}}}.png in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
