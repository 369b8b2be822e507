"""The 3D-MoE LM as Pose-DiT's condition: the frozen LM reads the instruction and then one token per
object, and the head reads the LM's states of both beside the explicit object features.

Prompt (ChatML, as the tokenizer renders it), with the default `order="instruction_first"`:

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{instruction}\\n[obj_1 … obj_M]

- Object tokens come from each object's explicit features (the light encoder's: centroid, extent,
  colour, count, orientation, top-face CIELAB) through one linear map onto the LM's input-embedding
  space. The map is fitted by least squares onto the mean input embedding of each object's words
  ("red block"), on simulator objects whose names are known (`fit_alignment`): the LM reads them
  as words from the first step, with no backpropagation through it.
- With the instruction first, each object token attends to the words, so its state says whether the
  instruction means it; and the instruction's keys and values do not change within an episode, so
  they are computed once per instruction (`prefix_cache`) and only the M object tokens run per plan.
  `order="objects_first"` is the paper's order (objects, then the instruction), for the ablation.
- The states are read after decoder layer `layer` (the LM is cut there: the layers above are never
  run), before any final norm. A middle layer carried more than the last in the probes (DESIGN.md §1).
- The head's condition is the light encoder's (explicit object features + hashed words, mixed by a
  small Transformer), with the LM's object states added to the object tokens and the LM's instruction
  states appended as tokens of their own. Both enter through zero-initialised projections, so a
  policy started from a light checkpoint (`--init-from`) plans exactly as it did at step 0.

The LM is frozen and not part of the policy's weights: it is rebuilt from its preset on load, so a
checkpoint holds only the light encoder, the alignment map, the two projections and the head.
`precompute` returns what does not train (objects and LM states) for one sample, so training runs
the LM once per sample (train/pose_dit.py keeps them), not once per step.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from threedmoe_ros.models.condition import Condition, ConditionEncoder
from threedmoe_ros.models.light_encoder import LightConditionEncoder, LightEncoderConfig, ObjectInputs, object_inputs
from threedmoe_ros.types import Cloud

ORDERS = ("instruction_first", "objects_first")
SYSTEM = "You are a robot arm at a tabletop. The user names objects; the objects on the table follow."


@dataclass
class LMConditionConfig:
    """The LM condition encoder (JSON-serialisable, saved in the policy's config.json)."""

    # LightEncoderConfig fields of the explicit side (the top-face colour on by default).
    light: dict = field(default_factory=lambda: {"top_color": True})
    llm: str = "smollm2-135m"
    llm_path: str | None = None
    layer: int = 15  # states after this many decoder layers (SmolLM2-135M has 30)
    order: str = "instruction_first"
    read_objects: bool = True  # add the LM's object-token states to the object tokens
    read_instruction: bool = True  # append the LM's instruction-token states as tokens
    system_prompt: str = SYSTEM
    prefix_cache: int = 32  # instructions whose keys and values are kept (instruction_first)

    def __post_init__(self) -> None:
        if isinstance(self.light, LightEncoderConfig):
            self.light = {k: getattr(self.light, k) for k in self.light.__dataclass_fields__}
        self.light_config()  # validates its fields
        from threedmoe_ros.models.llm import PRESETS

        if self.llm not in PRESETS:
            raise ValueError(f"LMConditionConfig.llm must be one of {PRESETS}, got {self.llm!r}")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 1:
            raise ValueError(f"LMConditionConfig.layer must be a positive int, got {self.layer!r}")
        if self.order not in ORDERS:
            raise ValueError(f"LMConditionConfig.order must be one of {ORDERS}, got {self.order!r}")
        if not isinstance(self.prefix_cache, int) or self.prefix_cache < 0:
            raise ValueError(f"LMConditionConfig.prefix_cache must be an int >= 0, got {self.prefix_cache!r}")

    def light_config(self) -> LightEncoderConfig:
        try:
            return LightEncoderConfig(**self.light)
        except TypeError as e:
            raise ValueError(f"LMConditionConfig.light does not fit LightEncoderConfig: {e}") from None


class LMStates(NamedTuple):
    """One sample's frozen part: its objects and the LM's states of its object and instruction tokens."""

    objects: ObjectInputs
    object_states: torch.Tensor  # (M, D_lm)
    instruction_states: torch.Tensor  # (W, D_lm)


class LMConditionEncoder(ConditionEncoder):
    """(clouds, instructions) → Condition, the light encoder's tokens informed by the frozen LM's states."""

    def __init__(self, config: LMConditionConfig | None = None, llm: nn.Module | None = None, tokenizer=None):
        super().__init__()
        self.config = cfg = config or LMConditionConfig()
        self.light = LightConditionEncoder(cfg.light_config())
        self.cond_dim = self.light.cond_dim
        if llm is None:
            from threedmoe_ros.models.llm import load_llm

            llm, tokenizer = load_llm(cfg.llm, cfg.llm_path)
        decoder = llm.get_decoder()
        if cfg.layer > len(decoder.layers):
            raise ValueError(f"LMConditionConfig.layer={cfg.layer} but the {cfg.llm!r} LM has {len(decoder.layers)} layers")
        decoder.layers = decoder.layers[: cfg.layer]  # the layers above are never run
        decoder.config.num_hidden_layers = cfg.layer
        decoder.norm = nn.Identity()  # the residual stream itself; the projections normalise it
        decoder.requires_grad_(False).eval()
        # Not a submodule: the LM is rebuilt from its preset, never saved with the policy.
        self.__dict__["lm"] = decoder
        self.tokenizer = tokenizer
        D, F = llm.config.hidden_size, self.light.config.n_object_features
        # Object features (+ 1 for the bias) → LM input embedding; fitted by fit_alignment, not trained.
        self.register_buffer("align", torch.zeros(F + 1, D))
        dim = self.cond_dim
        self.object_norm, self.object_proj = nn.LayerNorm(D), nn.Linear(D, dim)
        self.instruction_norm, self.instruction_proj = nn.LayerNorm(D), nn.Linear(D, dim)
        for proj in (self.object_proj, self.instruction_proj):  # step 0 plans as the light policy did
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)
        self._prefixes: OrderedDict[str, tuple] = OrderedDict()

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self.lm._apply(fn)  # .to(device) moves the LM too, though it is not a submodule
        return self

    # ----- prompt -------------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_parts(self, instruction: str) -> tuple[list[int], list[int], list[int]]:
        """Token ids (before, instruction, after): the objects go after all three (instruction_first)
        or between `before` and the instruction (objects_first)."""
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "system", "content": self.config.system_prompt}, {"role": "user", "content": "\x00"}],
            tokenize=False, add_generation_prompt=False)
        before = rendered.split("\x00")[0]
        return self._ids(before), self._ids(instruction.strip()), self._ids("\n")

    def object_embeddings(self, features: np.ndarray) -> torch.Tensor:
        """(M, F) explicit features → (M, D_lm) LM input embeddings through the alignment map."""
        x = torch.as_tensor(features, dtype=torch.float32, device=self.align.device)
        return torch.cat([x, torch.ones_like(x[:, :1])], 1) @ self.align

    # ----- the frozen part ----------------------------------------------------------------------
    @torch.no_grad()
    def precompute(self, clouds: list[Cloud | ObjectInputs], instructions: list[str]) -> list[LMStates]:
        """Objects and LM states of each sample: everything of the condition that does not train. A scene
        may come as its ObjectInputs already (a compact training file: train/pose_dit.py --export-inputs)."""
        scenes = [c if isinstance(c, ObjectInputs) else object_inputs(c, self.light.config) for c in clouds]
        if len(clouds) == 1 and self.config.order == "instruction_first" and self.config.prefix_cache:
            return [self._states_with_prefix(scenes[0], instructions[0])]
        return self._states_batched(scenes, instructions)

    def _run(self, embeds: torch.Tensor, mask: torch.Tensor | None = None, past=None, start: int = 0):
        if mask is None:
            position_ids = torch.arange(start, start + embeds.shape[1], device=embeds.device)[None]
        else:
            position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
        dtype = next(self.lm.parameters()).dtype
        out = self.lm(inputs_embeds=embeds.to(dtype), attention_mask=mask, position_ids=position_ids,
                      past_key_values=past, use_cache=past is not None)
        return out.last_hidden_state.float()

    def _states_batched(self, scenes: list[ObjectInputs], instructions: list[str]) -> list[LMStates]:
        """One left-padded forward over whole prompts (training's precompute, and objects_first)."""
        embed = self.lm.get_input_embeddings()
        device = self.align.device
        rows, spans = [], []
        for scene, text in zip(scenes, instructions):
            before, words, after = self.prompt_parts(text)
            e = lambda ids: embed(torch.tensor(ids, dtype=torch.long, device=device)).float()  # noqa: E731
            objects = self.object_embeddings(scene.features)
            if self.config.order == "instruction_first":
                parts = [e(before), e(words), e(after), objects]
                w0, o0 = len(before), len(before) + len(words) + len(after)
            else:
                parts = [e(before), objects, e(after), e(words)]
                o0, w0 = len(before), len(before) + len(objects) + len(after)
            rows.append(torch.cat(parts))
            spans.append((o0, len(objects), w0, len(words)))
        L = max(len(r) for r in rows)
        embeds = rows[0].new_zeros(len(rows), L, rows[0].shape[-1])
        mask = torch.zeros(len(rows), L, dtype=torch.long, device=device)
        for i, r in enumerate(rows):
            embeds[i, L - len(r):] = r
            mask[i, L - len(r):] = 1
        hidden = self._run(embeds, mask)
        out = []
        for i, (scene, (o0, m, w0, w)) in enumerate(zip(scenes, spans)):
            pad = L - len(rows[i])
            out.append(LMStates(scene, hidden[i, pad + o0: pad + o0 + m], hidden[i, pad + w0: pad + w0 + w]))
        return out

    def _states_with_prefix(self, scene: ObjectInputs, instruction: str) -> LMStates:
        """Batch 1, instruction first: the prefix's keys and values come from the cache (computed once per
        instruction), and only the object tokens run."""
        from transformers import DynamicCache

        entry = self._prefixes.get(instruction)
        if entry is None:
            before, words, after = self.prompt_parts(instruction)
            ids = torch.tensor([before + words + after], dtype=torch.long, device=self.align.device)
            cache = DynamicCache(config=self.lm.config)
            hidden = self._run(self.lm.get_input_embeddings()(ids).float(), past=cache)
            entry = (cache, hidden[0, len(before): len(before) + len(words)], ids.shape[1])
            self._prefixes[instruction] = entry
            while len(self._prefixes) > self.config.prefix_cache:
                self._prefixes.popitem(last=False)
        self._prefixes.move_to_end(instruction)
        cache, words, length = entry
        objects = self.object_embeddings(scene.features)
        if len(objects) == 0:
            return LMStates(scene, objects, words)
        try:
            hidden = self._run(objects[None], past=cache, start=length)
        finally:
            cache.crop(-(cache.get_seq_length() - length))  # the prefix stays as it was for the next plan
        return LMStates(scene, hidden[0], words)

    # ----- the trained part ---------------------------------------------------------------------
    def encode(self, samples: list[LMStates], instructions: list[str]) -> Condition:
        cfg = self.config
        object_extra = extra = None
        if cfg.read_objects:
            object_extra = [self.object_proj(self.object_norm(s.object_states.to(self.align.device).float()))
                            for s in samples]
        if cfg.read_instruction:
            extra = [self.instruction_proj(self.instruction_norm(s.instruction_states.to(self.align.device).float()))
                     for s in samples]
        return self.light.encode([s.objects for s in samples], instructions, object_extra, extra)

    def forward(self, clouds: list[Cloud], instructions: list[str]) -> Condition:
        if len(clouds) != len(instructions):
            raise ValueError(f"{len(clouds)} clouds but {len(instructions)} instructions")
        return self.encode(self.precompute(clouds, instructions), instructions)

    # ----- alignment ----------------------------------------------------------------------------
    @torch.no_grad()
    def word_embedding(self, words: str) -> torch.Tensor:
        """Mean input embedding of the tokens of `words` (" red block"), the target of an object token."""
        ids = torch.tensor(self._ids(" " + words.strip()), dtype=torch.long, device=self.align.device)
        return self.lm.get_input_embeddings()(ids).float().mean(0)

    @torch.no_grad()
    def fit_alignment(self, features: np.ndarray, names: list[str], ridge: float = 1e-3) -> float:
        """Fit `align` by ridge least squares: features (N, F) of objects whose words are `names` (N).
        Returns the relative residual ‖XA − Y‖ / ‖Y‖ (how much of the words the features explain)."""
        if len(features) != len(names) or len(names) == 0:
            raise ValueError(f"fit_alignment needs one name per object, got {len(features)} objects, {len(names)} names")
        targets = {n: self.word_embedding(n) for n in set(names)}
        X = torch.as_tensor(np.asarray(features, np.float64))
        X = torch.cat([X, torch.ones_like(X[:, :1])], 1)
        Y = torch.stack([targets[n] for n in names]).double().cpu()
        A = torch.linalg.solve(X.T @ X + ridge * len(X) * torch.eye(X.shape[1], dtype=X.dtype), X.T @ Y)
        self.align.copy_(A.float())
        self._prefixes.clear()
        return float((X @ A - Y).norm() / Y.norm())
