"""Expert-routing plots: which experts each MoE layer uses, and how decided its router is."""

from __future__ import annotations

import math
from pathlib import Path

from threedmoe_ros.models.moe import RouterStats


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
