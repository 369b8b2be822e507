"""Expert routing of a 3D-MoE LLM: which experts each MoE layer uses, and how decided its router is,
over all tokens and separately for the 3D (object) tokens and the text tokens.

    threedmoe-routing --checkpoint runs/stage2/checkpoint --data data_out/qa --items 50 --out runs/routing

writes routing.json (per token kind and layer: expert fractions, mean router probabilities, entropy
and tokens) and one PNG per token kind (routing_all.png, routing_3d.png, routing_text.png).
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


def token_kinds(model, clouds, texts) -> dict:
    """{kind: (B, L) bool}: which positions of model.build_inputs(clouds, texts) are real tokens, which
    are 3D object tokens (spliced in at the prompt's <3d>) and which are text. Left padding as there."""
    import torch

    inputs = model.build_inputs(clouds, texts)
    real = inputs["attention_mask"].bool()
    is_3d = torch.zeros_like(real)
    _, object_mask = model.encoder(clouds)  # (B, K)
    length = real.shape[1]
    for i, text in enumerate(texts):
        before, after = model.prompt_ids(text)
        n_obj = int(object_mask[i].sum())
        start = length - (len(before) + n_obj + len(after)) + len(before)
        is_3d[i, start:start + n_obj] = True
    return inputs, {"all": real, "3d": is_3d, "text": real & ~is_3d}


def routing_by_token_kind(model, items, progress: bool = True) -> dict[str, dict[int, RouterStats]]:
    """Routing statistics over (cloud, question) items, one RoutingTally per token kind (one decoder
    pass per kind: the MoE layers record only the tokens of the mask they are given)."""
    import torch
    from tqdm import tqdm

    from threedmoe_ros.models.moe import RoutingTally, set_token_mask

    tallies = {kind: RoutingTally() for kind in TOKEN_KINDS}
    decoder = model._decoder()
    with torch.no_grad():
        for cloud, question in tqdm(items, desc="routing", unit="scene", disable=not progress):
            inputs, kinds = token_kinds(model, [cloud], [question])
            for kind, mask in kinds.items():
                set_token_mask(model.llm, mask)
                try:
                    decoder(inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"],
                            position_ids=inputs["position_ids"])
                finally:
                    set_token_mask(model.llm, None)
                tallies[kind].update(model.llm)
    return {kind: tally.stats() for kind, tally in tallies.items()}


def to_json(groups: dict[str, dict[int, RouterStats]]) -> dict:
    return {kind: {str(layer): {"fraction": s.fraction.tolist(), "mean_prob": s.mean_prob.tolist(),
                                "entropy": s.entropy, "entropy_relative": s.entropy / math.log(len(s.fraction)),
                                "tokens": s.num_tokens}
                   for layer, s in stats.items()}
            for kind, stats in groups.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="threedmoe-routing", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="3D-MoE LLM checkpoint (threedmoe-train-stage2 writes OUT/checkpoint)")
    parser.add_argument("--data", required=True, help="directory with qa.jsonl and its scenes (threedmoe-qa-data)")
    parser.add_argument("--items", type=int, default=50, help="questions to route (the first N of qa.jsonl)")
    parser.add_argument("--out", default="runs/routing", help="where routing.json and the PNGs go")
    parser.add_argument("--llm-path", default=None, help="base LM directory of a llama-3.2-1b checkpoint moved from another machine")
    args = parser.parse_args(argv)
    if args.items < 1:
        parser.error("--items must be >= 1")
    try:
        from threedmoe_ros.data.qa import QADataset
        from threedmoe_ros.models.checkpoint import CheckpointError
        from threedmoe_ros.models.mm_llm import ThreeDMoELLM

        data = QADataset(args.data)
        model = ThreeDMoELLM.from_pretrained(args.checkpoint, llm_path=args.llm_path)
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        print(f"threedmoe-routing: {exc}", file=sys.stderr)
        return 2
    if model.config.moe is None:
        print(f"threedmoe-routing: {args.checkpoint} is a dense model (moe: null); it has no experts to route to",
              file=sys.stderr)
        return 2
    items = [(data[i][0], data[i][1]) for i in range(min(args.items, len(data)))]
    groups = routing_by_token_kind(model, items)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "routing.json").write_text(json.dumps({"checkpoint": str(args.checkpoint), "items": len(items),
                                                  "routing": to_json(groups)}, indent=2) + "\n")
    names = {"all": "all tokens", "3d": "3D object tokens", "text": "text tokens"}
    for kind, stats in groups.items():
        if stats:
            plot_routing(stats, out / f"routing_{kind}.png", f"expert routing, {names[kind]}")
    print(f"threedmoe-routing: {len(items)} questions; routing.json and routing_{{{','.join(groups)}}}.png in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
