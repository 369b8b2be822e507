"""The 3D-MoE, the project's one multimodal LM: it reads the instruction and then one token per object,
conditions Pose-DiT (the head reads its states beside the explicit object features) and answers questions.

Prompt (ChatML, as the tokenizer renders it), with the default `order="instruction_first"`:

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{instruction}\\n[obj_1 … obj_M]

and for a question the assistant turn and its answer follow the objects.

- Object tokens come from each object's explicit features (the light encoder's: centroid, extent,
  colour, count, orientation, top-face CIELAB) through one linear map onto the LM's input-embedding
  space. The map is fitted by least squares onto the mean input embedding of each object's words
  ("red block"), on simulator objects whose names are known (`fit_alignment`, Stage I): the LM reads them
  as words from the first step, with no backpropagation through it.
- With the instruction first, each object token attends to the words, so its state says whether the
  instruction means it; and the instruction's keys and values do not change within an episode, so
  they are computed once per instruction (`prefix_cache`) and only the M object tokens run per plan.
  `order="objects_first"` is the paper's order (objects, then the instruction), for the ablation.
- The states are read after decoder layer `layer` (the LM is cut there: the layers above are never
  run), before any final norm. A middle layer carried more than the last in the probes (DESIGN.md §1).
- The trained top (`tune_layers`, Stage II): the last layers below `layer` upcycled to experts (`moe`) with
  LoRA and routers; the layers under them stay frozen, so their states are computed once per sample
  (`LowerStates`) and each training step runs only the top. At step 0 it computes exactly the frozen LM.
- The head's condition is the light encoder's (explicit object features + hashed words, mixed by a
  small Transformer), with the LM's object states added to the object tokens and the LM's instruction
  states appended as tokens of their own. Both enter through zero-initialised projections, so a
  policy started from a light checkpoint (`--init-from`) plans exactly as it did at step 0.
- Answers (`answer`, `qa_loss`) are read from the same layer through the LM's output embedding.

The LM's own weights are never part of a checkpoint: it is rebuilt from its preset on load, so a policy holds
the light encoder, the alignment map, the two projections, a trained top's LoRA, routers and norm copy, and
the head. `precompute` returns what does not train for each sample, so training runs the frozen layers once
per sample (train/pose_dit.py and train/stage2.py keep them), not once per step.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from threedmoe_ros.models.condition import Condition, ConditionEncoder
from threedmoe_ros.models.light_encoder import LightConditionEncoder, LightEncoderConfig, ObjectInputs, object_inputs
from threedmoe_ros.types import Cloud

ORDERS = ("instruction_first", "objects_first")
CONFIG_NAME = "encoder_config.json"  # a 3D-MoE of its own (Stage II's checkpoint): config and weights, never the LM's
WEIGHTS_NAME = "encoder.safetensors"
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
    # The trained top (the paper's Stage II at this machine's budget): the last `tune_layers` of the `layer`
    # layers are upcycled to experts (`moe`, a MOE_PRESETS name; None keeps them dense) and given LoRA (`lora`,
    # a LORA_PRESETS name, or "none"); LoRA, routers and the final norm train. The layers below stay frozen,
    # so their states are computed once per sample (`precompute`). 0: the frozen LM.
    tune_layers: int = 0
    moe: str | None = None
    lora: str = "none"

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
        from threedmoe_ros.models.llm import LORA_PRESETS
        from threedmoe_ros.models.moe import MOE_PRESETS

        if isinstance(self.tune_layers, bool) or not isinstance(self.tune_layers, int) \
                or not 0 <= self.tune_layers <= self.layer:
            raise ValueError(f"LMConditionConfig.tune_layers must be an int in [0, layer={self.layer}], "
                             f"got {self.tune_layers!r}")
        if self.moe is not None and self.moe not in MOE_PRESETS:
            raise ValueError(f"LMConditionConfig.moe must be one of {sorted(MOE_PRESETS)} or None, got {self.moe!r}")
        if self.lora != "none" and self.lora not in LORA_PRESETS:
            raise ValueError(f"LMConditionConfig.lora must be one of {sorted(LORA_PRESETS)} or 'none', got {self.lora!r}")
        if self.tune_layers and self.lora == "none":
            raise ValueError("LMConditionConfig.tune_layers > 0 needs lora: the experts share frozen weights and "
                             "differ only by their LoRA")
        if not self.tune_layers and (self.moe is not None or self.lora != "none"):
            raise ValueError("LMConditionConfig.moe and lora apply to the tuned top layers: set tune_layers > 0")

    @property
    def cut(self) -> int:
        """Decoder layers below the trained top: frozen, and cached per sample."""
        return self.layer - self.tune_layers

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


class LowerStates(NamedTuple):
    """One sample's frozen part under a trained top: its objects and the states below the top of its whole
    prompt (a question's answer included), with where its objects and instruction sit in it."""

    objects: ObjectInputs
    hidden: torch.Tensor  # (T, D_lm) after the `cut` frozen layers
    objects_at: int
    instruction_at: int
    instruction_len: int
    answer: torch.Tensor  # (A,) the answer's token ids and end of turn (questions); empty for a plan


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
        # Answers come from the read layer's states through the LM's own final norm and output embedding.
        self.__dict__["lm_head"] = llm.get_output_embeddings()
        self.__dict__["final_norm"] = decoder.norm
        decoder.norm = nn.Identity()  # the residual stream itself; the projections normalise it
        decoder.requires_grad_(False).eval()
        # Not submodules: the LM is rebuilt from its preset, never saved with the policy. Only what trains of
        # it (LoRA, routers, a copy of the final norm) is registered, in `tuned`.
        self.__dict__["lm"] = decoder
        self.__dict__["top"] = None
        self.tuned = nn.ModuleDict()
        if cfg.tune_layers:
            self._build_top(decoder)
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

    def _build_top(self, decoder: nn.Module) -> None:
        """Upcycle the top `tune_layers` to experts and give them LoRA (peft), then split the decoder in two
        views sharing every module: `lm` runs the frozen layers below the cut, `top` the trained ones."""
        from peft import LoraConfig, inject_adapter_in_model

        from threedmoe_ros.models.llm import LORA_PRESETS
        from threedmoe_ros.models.moe import MOE_PRESETS, upcycle_to_moe

        cfg = self.config
        layers = list(range(cfg.cut, cfg.layer))
        lora = LORA_PRESETS[cfg.lora]
        with torch.random.fork_rng(devices=[]):  # the same config always starts from the same routers and LoRA
            torch.manual_seed(0)
            if cfg.moe is not None:
                moe = MOE_PRESETS[cfg.moe]
                upcycle_to_moe(decoder, moe.num_experts, moe.top_k, layers, True, moe.aux_loss_coef, moe.router_init_std)
            # Attention and every FFN (or expert) projection of the top layers only.
            target = (rf"layers\.({'|'.join(map(str, layers))})\.(self_attn|mlp)(\.experts\.\d+)?"
                      rf"\.({'|'.join(lora.target_modules)})")
            inject_adapter_in_model(LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=0.0, bias="none",
                                               target_modules=target), decoder)
        decoder.requires_grad_(False)
        for name, module in decoder.named_modules():
            if name.rsplit(".", 1)[-1] in ("lora_A", "lora_B", "router"):
                self.tuned[name.replace(".", "-")] = module.requires_grad_(True)
        self.tuned["norm"] = copy.deepcopy(self.final_norm).requires_grad_(True)
        top = copy.copy(decoder)  # the same modules; only its own lists of them differ
        top._modules = OrderedDict(decoder._modules)
        top.layers = nn.ModuleList(decoder.layers[cfg.cut:])
        decoder.layers = nn.ModuleList(decoder.layers[: cfg.cut])
        self.__dict__["top"] = top

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for part in (self.lm, self.top, self.lm_head, self.final_norm):  # .to(device) moves the LM too
            if part is not None:
                part._apply(fn)
        return self

    # ----- prompt -------------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_parts(self, instruction: str) -> tuple[list[int], list[int], list[int]]:
        """Token ids (before, instruction, after): the objects go after all three (instruction_first)
        or between `before` and the instruction (objects_first)."""
        return list(self._before), self._ids(instruction.strip()), self._ids("\n")

    # The prompt's fixed pieces, tokenized once (not per sample and per generated token).
    @functools.cached_property
    def _before(self) -> list[int]:
        return self._ids(self._template(False).split("\x00")[0])

    def _template(self, generation: bool) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "system", "content": self.config.system_prompt}, {"role": "user", "content": "\x00"}],
            tokenize=False, add_generation_prompt=generation)

    @functools.cached_property
    def _assistant(self) -> list[int]:
        return self._ids(self._template(True).split("\x00")[1])

    def assistant_ids(self) -> list[int]:
        """What closes the user turn and opens the answer, after the objects (a question's prompt only)."""
        return list(self._assistant)

    def answer_ids(self, answer: str) -> list[int]:
        """An answer's tokens and the end of turn: the targets of the LM loss."""
        return self._ids(answer.strip()) + [self.tokenizer.eos_token_id]

    def object_embeddings(self, features: np.ndarray) -> torch.Tensor:
        """(M, F) explicit features → (M, D_lm) LM input embeddings through the alignment map."""
        x = torch.as_tensor(features, dtype=torch.float32, device=self.align.device)
        return torch.cat([x, torch.ones_like(x[:, :1])], 1) @ self.align

    def _sequence(self, scene: ObjectInputs, text: str, tail: list[int] = ()) -> tuple[torch.Tensor, int, int, int]:
        """One prompt's input embeddings (T, D), its first object token, its first instruction token and the
        instruction's length. `tail`: token ids after the objects (a question's assistant turn and answer)."""
        embed = self.lm.get_input_embeddings()
        e = lambda ids: embed(torch.tensor(ids, dtype=torch.long, device=self.align.device)).float()  # noqa: E731
        before, words, after = self.prompt_parts(text)
        objects = self.object_embeddings(scene.features)
        if self.config.order == "instruction_first":
            parts = [e(before), e(words), e(after), objects]
            w0, o0 = len(before), len(before) + len(words) + len(after)
        else:
            parts = [e(before), objects, e(after), e(words)]
            o0, w0 = len(before), len(before) + len(objects) + len(after)
        return torch.cat(parts + [e(list(tail))]), o0, w0, len(words)

    # ----- the LM -------------------------------------------------------------------------------
    def _run(self, model: nn.Module, embeds: torch.Tensor, key_mask: torch.Tensor | None = None, past=None,
             start: int = 0) -> torch.Tensor:
        """States after `model` (the frozen view or the trained top) of `embeds` (B, n, D), which follow `start`
        tokens already in `past`. key_mask (B, start + n): 1 on real tokens (left padding is 0). The 4-D mask is
        built here, so the two views may share one cache (the library sizes its own from the first layer's)."""
        B, n = embeds.shape[:2]
        device = embeds.device
        if key_mask is None:
            key_mask = torch.ones(B, start + n, dtype=torch.long, device=device)
        dtype = next(self.lm.parameters()).dtype
        q = torch.arange(start, start + n, device=device)
        allowed = (torch.arange(start + n, device=device)[None] <= q[:, None])[None] & key_mask.bool()[:, None]
        mask = torch.zeros(B, 1, n, start + n, dtype=dtype, device=device).masked_fill(~allowed[:, None],
                                                                                       torch.finfo(dtype).min)
        from threedmoe_ros.models.moe import set_token_mask

        set_token_mask(model, key_mask[:, start:].bool())  # padding stays out of the balance loss
        try:
            out = model(inputs_embeds=embeds.to(dtype), attention_mask=mask, past_key_values=past,
                        position_ids=(key_mask.cumsum(-1) - 1).clamp_min(0)[:, start:], cache_position=q,
                        use_cache=past is not None)
        finally:
            set_token_mask(model, None)
        return out.last_hidden_state.float()

    def _through(self, embeds: torch.Tensor, key_mask=None, past=None, start: int = 0) -> torch.Tensor:
        """States after all `layer` layers: the frozen ones, then the trained top."""
        hidden = self._run(self.lm, embeds, key_mask, past, start)
        return hidden if self.top is None else self._run(self.top, hidden, key_mask, past, start)

    @staticmethod
    def _pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded (B, L, D) and its key mask (B, L)."""
        L = max(len(r) for r in rows)
        out = rows[0].new_zeros(len(rows), L, rows[0].shape[-1])
        mask = torch.zeros(len(rows), L, dtype=torch.long, device=rows[0].device)
        for i, r in enumerate(rows):
            out[i, L - len(r):] = r
            mask[i, L - len(r):] = 1
        return out, mask

    # ----- the frozen part ----------------------------------------------------------------------
    @torch.no_grad()
    def precompute(self, clouds: list[Cloud | ObjectInputs], instructions: list[str],
                   answers: list[str] | None = None) -> list[LMStates | LowerStates]:
        """Everything of each sample that does not train: its objects and the frozen layers' states. A scene may
        come as its ObjectInputs already (a compact training file: train/pose_dit.py --export-inputs).

        Frozen LM: the states of the object and instruction tokens (LMStates). With a trained top: the states
        below it of the whole prompt (LowerStates), and with `answers` (questions) the answer follows the prompt."""
        scenes = [c if isinstance(c, ObjectInputs) else object_inputs(c, self.light.config) for c in clouds]
        if answers is None and len(clouds) == 1 and self.config.order == "instruction_first" and self.config.prefix_cache:
            return [self._states_with_prefix(scenes[0], instructions[0])]
        return self._states_batched(scenes, instructions, answers)

    def _states_batched(self, scenes: list[ObjectInputs], instructions: list[str],
                        answers: list[str] | None = None) -> list[LMStates | LowerStates]:
        """One left-padded forward over whole prompts (training's precompute, and objects_first)."""
        if answers is not None and len(answers) != len(scenes):
            raise ValueError(f"{len(scenes)} scenes but {len(answers)} answers")
        rows, spans = [], []
        for i, (scene, text) in enumerate(zip(scenes, instructions)):
            answer = [] if answers is None else self.answer_ids(answers[i])
            seq, o0, w0, w = self._sequence(scene, text, (self.assistant_ids() + answer) if answers is not None else [])
            rows.append(seq)
            spans.append((o0, w0, w, torch.tensor(answer, dtype=torch.long)))
        embeds, mask = self._pad(rows)
        hidden = self._run(self.lm, embeds, mask)
        if self.top is not None or answers is not None:
            return [LowerStates(scene, hidden[i, mask[i].bool()], o0, w0, w, answer)
                    for i, (scene, (o0, w0, w, answer)) in enumerate(zip(scenes, spans))]
        out = []
        for i, (scene, (o0, w0, w, _)) in enumerate(zip(scenes, spans)):
            row, m = hidden[i, mask[i].bool()], len(scene.features)
            out.append(LMStates(scene, row[o0: o0 + m], row[w0: w0 + w]))
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
            hidden = self._through(self.lm.get_input_embeddings()(ids).float(), past=cache)
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
            hidden = self._through(objects[None], past=cache, start=length)
        finally:
            cache.crop(length - cache.get_seq_length())  # the prefix stays as it was for the next plan
        return LMStates(scene, hidden[0], words)

    # ----- the trained part ---------------------------------------------------------------------
    def _top(self, samples: list[LowerStates]) -> tuple[torch.Tensor, torch.Tensor]:
        """The trained top over cached lower states: (B, L, D) left-padded, and its key mask."""
        hidden, mask = self._pad([s.hidden.to(self.align.device).float() for s in samples])
        return self._run(self.top, hidden, mask), mask

    def top_states(self, samples: list[LowerStates]) -> list[LMStates]:
        """LMStates of samples whose lower states were cached: the trained top runs here, with gradients."""
        hidden, mask = self._top(samples)
        out = []
        for i, s in enumerate(samples):
            row, m = hidden[i, mask[i].bool()], len(s.objects.features)
            out.append(LMStates(s.objects, row[s.objects_at: s.objects_at + m],
                                row[s.instruction_at: s.instruction_at + s.instruction_len]))
        return out

    def encode(self, samples: list[LMStates | LowerStates], instructions: list[str]) -> Condition:
        cfg = self.config
        if samples and isinstance(samples[0], LowerStates):
            samples = self.top_states(samples)
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

    def aux_loss(self) -> torch.Tensor | None:
        """The Switch balance loss of the top's last forward (weighted), to add to the training loss."""
        from threedmoe_ros.models.moe import moe_aux_loss

        return None if self.top is None else moe_aux_loss(self.top)

    # ----- questions ----------------------------------------------------------------------------
    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        norm = self.tuned["norm"] if "norm" in self.tuned else self.final_norm
        return self.lm_head(norm(hidden.to(self.lm_head.weight.dtype))).float()

    def qa_loss(self, samples: list[LowerStates]) -> tuple[torch.Tensor, dict]:
        """LM loss on the answer tokens of cached questions (precompute with answers), plus the balance loss."""
        if self.top is None:
            raise ValueError("a frozen LM has nothing to train on questions; set tune_layers")
        hidden, mask = self._top(samples)
        L, logits, targets = hidden.shape[1], [], []
        for i, s in enumerate(samples):
            a = len(s.answer)  # the answer is the row's last `a` tokens; each is predicted by the one before
            logits.append(self._logits(hidden[i, L - a - 1: L - 1]))
            targets.append(s.answer.to(hidden.device))
        lm = nn.functional.cross_entropy(torch.cat(logits), torch.cat(targets))
        aux = self.aux_loss()
        info = {"lm_loss": lm.item()}
        if aux is not None:
            info["aux_loss"] = aux.item()
        return lm if aux is None else lm + aux, info

    @torch.no_grad()
    def answer_batch(self, clouds: list[Cloud | ObjectInputs], questions: list[str], max_new_tokens: int = 8) -> list[str]:
        """Greedy answers, one question per scene, read from the same layer the head reads."""
        from transformers import DynamicCache

        scenes = [c if isinstance(c, ObjectInputs) else object_inputs(c, self.light.config) for c in clouds]
        embeds, mask = self._pad([self._sequence(s, q, self.assistant_ids())[0] for s, q in zip(scenes, questions)])
        cache = DynamicCache(config=self.lm.config)
        hidden = self._through(embeds, mask, cache)
        eos, embed = self.tokenizer.eos_token_id, self.lm.get_input_embeddings()
        tokens, done = [], torch.zeros(len(scenes), dtype=torch.bool, device=mask.device)
        for step in range(max_new_tokens):
            token = self._logits(hidden[:, -1]).argmax(-1)
            done |= token == eos
            if bool(done.all()):
                break
            tokens.append(torch.where(done, eos, token))
            start = mask.shape[1]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            hidden = self._through(embed(token)[:, None].float(), mask, cache, start)
        ids = torch.stack(tokens, 1).tolist() if tokens else [[] for _ in scenes]
        return [self.tokenizer.decode([t for t in row if t != eos], skip_special_tokens=True).strip() for row in ids]

    def answer(self, cloud: Cloud, question: str, max_new_tokens: int = 8) -> str:
        """Greedy answer to a question about one scene (Planner.answer, the node's `answer` topic)."""
        return self.answer_batch([cloud], [question], max_new_tokens)[0]

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

    # ----- checkpoints (a 3D-MoE apart from a policy: Stage II's) --------------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        """Config and weights (alignment, projections, a trained top's LoRA, routers and norm; never the LM's own)."""
        from threedmoe_ros.models.checkpoint import save_tensors, write_json

        path = Path(path)
        save_tensors(self.state_dict(), path / WEIGHTS_NAME)
        write_json(dataclasses.asdict(self.config), path / CONFIG_NAME)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "LMConditionEncoder":
        """A directory save_pretrained wrote; CheckpointError naming the file that is missing or does not fit."""
        from threedmoe_ros.models.checkpoint import CheckpointError, load_module, read_json

        path = Path(path)
        raw = read_json(path / CONFIG_NAME, "3D-MoE config (write one with threedmoe-train-stage2)")
        try:
            encoder = cls(LMConditionConfig(**raw))
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path / CONFIG_NAME} is not a valid 3D-MoE config: {e}") from None
        load_module(encoder, path / WEIGHTS_NAME)
        return encoder.eval()
