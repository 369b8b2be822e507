"""The 3D multimodal LLM of 3D-MoE: object tokens from the 3D encoder spliced into a chat prompt of a
(MoE-upcycled, LoRA-tuned) Llama-family LM.

Prompt template. The tokenizer's own chat template (ChatML for SmolLM2 and the tiny preset) renders

    [system] {system_prompt}
    [user]   <3d>
             {instruction or question}
    [assistant] {answer}<eos>

and the placeholder "<3d>" is replaced by the K object embeddings of the scene (no text tokens for
them), in the order the encoder grouped the objects. For ChatML that is, token by token:

    <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n[obj_1 … obj_K]\n{text}<|im_end|>\n
    <|im_start|>assistant\n{answer}<|im_end|>

Training (`loss`) puts the LM loss on the answer tokens and the closing end-of-turn token only.
The Pose-DiT condition (`forward`, the ConditionEncoder face) is the final layer's hidden state at the
last prompt token, the one that would generate the first answer token, as in the paper;
`condition="all_hidden"` returns the states of the object tokens and the instruction instead. With
`object_anchors` (the default) the object tokens' states come with their positions, which the
pointer output of Pose-DiT points at.
Batches are left-padded with explicit position ids, so a scene's output does not depend on what it
is batched with.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from threedmoe_ros.models.checkpoint import (
    CheckpointError, atomic, load_module, load_tensors, read_json, save_tensors, write_json,
)
from threedmoe_ros.models.condition import Condition, ConditionEncoder
from threedmoe_ros.models.llm import CHATML_TEMPLATE, LORA_PRESETS, PRESETS, apply_lora, load_llm
from threedmoe_ros.models.moe import (
    MOE_PRESETS, moe_aux_loss, moe_layers, router_stats, set_token_mask, unshare_experts, upcycle_to_moe,
)
from threedmoe_ros.models.point_encoder import ObjectEncoder, PointEncoderConfig, SceneObjects, cloud_to_objects
from threedmoe_ros.types import Cloud

PLACEHOLDER = "<3d>"
CONFIG_NAME = "mm_llm_config.json"
ENCODER_WEIGHTS = "encoder.safetensors"
ADAPTER_DIR = "adapter"  # peft format: adapter_config.json + adapter_model.safetensors (LoRA + routers)
MERGED_DIR = "llm"  # merged checkpoints: the whole MoE LM (config.json, model.safetensors, tokenizer)
CONDITION_MODES = ("final_token", "all_hidden")
DEFAULT_SYSTEM = ("You are a robot that sees a tabletop as a list of 3D objects. Answer questions about the scene "
                  "and plan pick-and-place actions.")


@dataclass
class MMLLMConfig:
    """Everything needed to rebuild the 3D-MoE LLM (JSON-serialisable).

    llm / llm_path: LLM preset (tiny | smollm2-135m | llama-3.2-1b) and, for llama-3.2-1b, its local dir.
    moe: MoE preset ("e4-top2", "e2-top2") or None for the dense LM; moe_layers: "all" | "every_other" | indices.
    lora: LoRA preset name (defaults to the one matching `llm`), or "none".
    point_encoder: PointEncoderConfig fields; out_dim is set to the LLM's hidden size.
    condition: "final_token" (paper) or "all_hidden" (ThreeDMoELLM.forward says what each holds).
    object_anchors: the object tokens' states ride along with their positions, the anchors of the
        pointer head (Pose-DiT's output="pointer"); False with final_token is the paper's (B, 1, D).
    system_prompt: the chat system message.
    dtype: the LLM's weights, "float32" (CPU) or "bfloat16" (GPU); the 3D encoder stays float32
        and its tokens are cast into the LLM's dtype.
    seed: initialises routers, LoRA and the 3D encoder (and the random `tiny` LLM).
    """

    llm: str = "smollm2-135m"
    llm_path: str | None = None
    moe: str | None = "e4-top2"
    moe_layers: str | list[int] = "all"
    lora: str | None = None
    point_encoder: PointEncoderConfig = field(default_factory=PointEncoderConfig)
    condition: str = "final_token"
    object_anchors: bool = True
    system_prompt: str = DEFAULT_SYSTEM
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"MMLLMConfig.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if isinstance(self.point_encoder, dict):
            self.point_encoder = PointEncoderConfig(**self.point_encoder)
        if self.llm not in PRESETS:
            raise ValueError(f"MMLLMConfig.llm must be one of {PRESETS}, got {self.llm!r}")
        if self.moe is not None and self.moe not in MOE_PRESETS:
            raise ValueError(f"MMLLMConfig.moe must be one of {sorted(MOE_PRESETS)} or None, got {self.moe!r}")
        if self.lora is None:
            self.lora = self.llm
        if self.lora != "none" and self.lora not in LORA_PRESETS:
            raise ValueError(f"MMLLMConfig.lora must be one of {sorted(LORA_PRESETS)} or 'none', got {self.lora!r}")
        if self.condition not in CONDITION_MODES:
            raise ValueError(f"MMLLMConfig.condition must be one of {CONDITION_MODES}, got {self.condition!r}")
        if PLACEHOLDER in self.system_prompt:
            raise ValueError(f"MMLLMConfig.system_prompt must not contain {PLACEHOLDER!r}")


class ThreeDMoELLM(ConditionEncoder):
    """Cloud + text → LLM: answers questions (`answer`) and conditions Pose-DiT (`forward`)."""

    saves_itself = True  # its own checkpoint (save_pretrained): the base LM is rebuilt, never copied

    def __init__(self, config: MMLLMConfig | None = None, llm: nn.Module | None = None, tokenizer=None):
        """Builds the LLM from `config` (or takes a loaded `llm`, `tokenizer`), upcycles it to MoE,
        adds LoRA, and builds the 3D encoder projecting into the LLM's hidden size."""
        super().__init__()
        self.config = cfg = config or MMLLMConfig()
        if llm is None:
            llm, tokenizer = load_llm(cfg.llm, cfg.llm_path, dtype=getattr(torch, cfg.dtype), seed=cfg.seed)
        if tokenizer.chat_template is None:
            tokenizer.chat_template = CHATML_TEMPLATE
        # Routers, LoRA matrices and the 3D encoder are initialised from cfg.seed, so the same config
        # always builds the same model (and a checkpoint's untrained parts can be rebuilt).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            if cfg.moe is not None and not any(True for _ in moe_layers(llm)):  # merged checkpoints are MoE already
                moe = MOE_PRESETS[cfg.moe]
                layers = cfg.moe_layers if isinstance(cfg.moe_layers, str) else tuple(cfg.moe_layers)
                upcycle_to_moe(llm, moe.num_experts, moe.top_k, layers, moe.share_frozen_experts, moe.aux_loss_coef)
            if cfg.lora != "none":
                llm = apply_lora(llm, LORA_PRESETS[cfg.lora])
            self.encoder = ObjectEncoder(dataclasses.replace(cfg.point_encoder, out_dim=llm.config.hidden_size))
        self.llm = llm
        self.tokenizer = tokenizer
        self.cond_dim = llm.config.hidden_size
        self._prompt_cache: dict[str, tuple[list[int], list[int]]] = {}

    # ----- prompt assembly ----------------------------------------------------------------------
    def prompt_ids(self, text: str) -> tuple[list[int], list[int]]:
        """Token ids before and after the 3D placeholder for one user turn (generation prompt included)."""
        text = text.replace(PLACEHOLDER, "").strip()
        if text not in self._prompt_cache:
            rendered = self.tokenizer.apply_chat_template(
                [{"role": "system", "content": self.config.system_prompt},
                 {"role": "user", "content": f"{PLACEHOLDER}\n{text}"}],
                tokenize=False, add_generation_prompt=True,
            )
            before, after = rendered.split(PLACEHOLDER)
            # The template already holds the special tokens (e.g. <|im_start|>); add none twice.
            encode = lambda s: self.tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
            self._prompt_cache[text] = (encode(before), encode(after))
        return self._prompt_cache[text]

    def answer_ids(self, answer: str) -> list[int]:
        """Answer tokens followed by the end-of-turn token, the part the LM loss is taken on."""
        return self.tokenizer(answer.strip(), add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]

    def build_inputs(self, clouds: list[Cloud] | list[SceneObjects], texts: list[str],
                     answers: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Left-padded inputs_embeds (B, L, D), attention_mask (B, L), position_ids (B, L), labels (B, L)."""
        if len(clouds) != len(texts) or (answers is not None and len(answers) != len(texts)):
            raise ValueError(f"{len(clouds)} clouds, {len(texts)} texts and "
                             f"{'no' if answers is None else len(answers)} answers: give one of each per sample")
        objects, object_mask = self.encoder(clouds)  # (B, K, D), (B, K)
        embed = self.llm.get_input_embeddings()
        device = embed.weight.device
        rows, labels = [], []
        for i, text in enumerate(texts):
            before, after = self.prompt_ids(text)
            ans = self.answer_ids(answers[i]) if answers is not None else []
            ids_b, ids_a = torch.tensor(before, device=device), torch.tensor(after + ans, device=device)
            rows.append(torch.cat([embed(ids_b), objects[i, object_mask[i]].to(embed.weight.dtype), embed(ids_a)]))
            n_prompt = rows[-1].shape[0] - len(ans)
            labels.append(torch.cat([torch.full((n_prompt,), -100, device=device), torch.tensor(ans, device=device,
                                                                                              dtype=torch.long)]))
        length = max(r.shape[0] for r in rows)
        b, d = len(rows), rows[0].shape[-1]
        inputs = rows[0].new_zeros(b, length, d)
        mask = torch.zeros(b, length, dtype=torch.long, device=device)
        lab = torch.full((b, length), -100, dtype=torch.long, device=device)
        for i, (r, l) in enumerate(zip(rows, labels)):
            inputs[i, length - r.shape[0]:] = r
            mask[i, length - r.shape[0]:] = 1
            lab[i, length - r.shape[0]:] = l
        position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
        return {"inputs_embeds": inputs, "attention_mask": mask, "position_ids": position_ids, "labels": lab}

    def _decoder(self) -> nn.Module:
        base = self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm
        return base.get_decoder()

    # ----- ConditionEncoder ---------------------------------------------------------------------
    def forward(self, clouds: list[Cloud], instructions: list[str]) -> Condition:
        """(clouds, instructions) → the Pose-DiT condition: final-layer hidden states (after the final norm).

        final_token: the last prompt token's state, the one that would generate the first answer token
            (the paper's), in slot 0; with object_anchors the K object tokens' states follow in slots 1..K.
        all_hidden: the states of the 3D object tokens and of everything after them (the instruction,
            the end of the user turn, the assistant prefix): (B, K + L_text, D). The system turn before
            the objects is left out: under causal attention it is the same for every scene.
        With object_anchors, each object token carries its top-face centre and xy box (Condition.anchors),
        the anchors a pointer head aims at. Masks are True on real tokens; padding is zero.
        """
        scenes = [c if isinstance(c, SceneObjects) else cloud_to_objects(c, self.encoder.cfg) for c in clouds]
        inputs = self.build_inputs(scenes, instructions)
        mask = inputs["attention_mask"]
        set_token_mask(self.llm, mask.bool())
        try:
            hidden = self._decoder()(inputs_embeds=inputs["inputs_embeds"], attention_mask=mask,
                                     position_ids=inputs["position_ids"]).last_hidden_state  # (B, L, D)
        finally:
            set_token_mask(self.llm, None)
        hidden = hidden.float()  # the head runs in float32 whatever the LLM's dtype
        B, L, D = hidden.shape
        counts = [len(s) for s in scenes]
        # Left padding: row i starts at L - length_i; its objects follow the text before the placeholder.
        starts = [L - int(mask[i].sum()) + len(self.prompt_ids(t)[0]) for i, t in enumerate(instructions)]
        objects = self.config.object_anchors or self.config.condition == "all_hidden"
        K = max(counts) if objects else 0
        if self.config.condition == "final_token":
            width = [K + 1] * B  # slot 0 the final token, then the objects
            rows = [torch.cat([hidden[i, -1:], hidden[i, starts[i]: starts[i] + counts[i]][:K]]) for i in range(B)]
            first_object = 1
        else:
            rows = [hidden[i, starts[i]:] for i in range(B)]
            width = [len(r) for r in rows]
            first_object = 0
        tokens = hidden.new_zeros(B, max(width), D)
        token_mask = torch.zeros(B, max(width), dtype=torch.bool, device=hidden.device)
        anchors = hidden.new_zeros(B, max(width), 3)
        boxes = hidden.new_zeros(B, max(width), 4)
        anchor_mask = torch.zeros_like(token_mask)
        for i, (row, scene) in enumerate(zip(rows, scenes)):
            tokens[i, : len(row)] = row
            token_mask[i, : len(row)] = True
            if K and scene.top is not None:
                span = slice(first_object, first_object + counts[i])
                anchors[i, span] = torch.from_numpy(scene.top).to(hidden)
                lo, hi = scene.centres - scene.sizes / 2, scene.centres + scene.sizes / 2
                boxes[i, span] = torch.from_numpy(np.concatenate([lo[:, :2], hi[:, :2]], 1)).to(hidden)
                anchor_mask[i, span] = True
        if not self.config.object_anchors:
            return Condition(tokens, token_mask)
        return Condition(tokens, token_mask, anchors, boxes, anchor_mask)

    def condition(self, clouds: list[Cloud], instructions: list[str]) -> Condition:
        """The Pose-DiT condition; the same as calling the module."""
        return self(clouds, instructions)

    # ----- training -----------------------------------------------------------------------------
    def loss(self, clouds: list[Cloud], questions: list[str], answers: list[str]) -> tuple[torch.Tensor, dict]:
        """LM loss on the answer tokens + the MoE balance loss → (loss, info with both parts and routing)."""
        inputs = self.build_inputs(clouds, questions, answers)
        set_token_mask(self.llm, inputs["attention_mask"].bool())
        try:
            out = self.llm(**inputs)
        finally:
            set_token_mask(self.llm, None)
        aux = moe_aux_loss(self.llm)
        loss = out.loss if aux is None else out.loss + aux
        info = {"lm_loss": out.loss.item(), "aux_loss": 0.0 if aux is None else aux.item()}
        for layer, stats in router_stats(self.llm).items():
            info[f"router_entropy/{layer}"] = stats.entropy
        return loss, info

    def configure_stage(self, stage: int) -> None:
        """Freeze for a training stage. Stage I: spatial transformer + projection (PointNet++ and LLM
        frozen), on captions. Stage II: LoRA + routers of the LLM and the projection; PointNet++ and
        the base LLM stay frozen."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        for p in self.parameters():
            p.requires_grad_(False)
        self.encoder.spatial.requires_grad_(stage == 1)
        self.encoder.proj.requires_grad_(True)
        if stage == 2:
            for name, p in self.llm.named_parameters():
                if "lora_" in name or "modules_to_save" in name:
                    p.requires_grad_(True)

    # ----- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def answer_batch(self, clouds: list[Cloud], questions: list[str], max_new_tokens: int = 32) -> list[str]:
        """Greedy answers to one question per cloud."""
        inputs = self.build_inputs(clouds, questions)
        inputs.pop("labels")
        inputs.pop("position_ids")  # generate() derives them from the attention mask, step by step
        tok = self.tokenizer
        out = self.llm.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        return [s.strip() for s in tok.batch_decode(out, skip_special_tokens=True)]

    def answer(self, cloud: Cloud, question: str, max_new_tokens: int = 32) -> str:
        """Greedy answer to a question about one scene."""
        return self.answer_batch([cloud], [question], max_new_tokens)[0]

    # ----- checkpoints --------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, merge: bool = False) -> Path:
        """Write a checkpoint directory, each piece atomically (models/checkpoint.py).

        Default: mm_llm_config.json + encoder.safetensors + adapter/ (peft LoRA and routers). The base
        LM is not copied: it is rebuilt from its preset, so a checkpoint is megabytes, not gigabytes.
        merge=True: LoRA folded into the weights (experts first given their own copies, since a shared
        base would receive every expert's delta) and the whole LM written to llm/ with its tokenizer;
        it loads without peft (for export to other tools), but is E× larger in the FFNs and slower:
        independent experts cannot share the base matmuls (bench/bench_mm_llm.py).
        """
        path = Path(path)
        config = dataclasses.asdict(self.config)
        if not merge and (not hasattr(self.llm, "save_pretrained") or self.config.lora == "none"):
            raise ValueError("this model has no LoRA adapter to save; use save_pretrained(path, merge=True)")
        save_tensors(self.encoder.state_dict(), path / ENCODER_WEIGHTS)
        if merge:
            llm = self.llm
            if hasattr(llm, "merge_and_unload"):
                llm = copy.deepcopy(llm)  # the live model keeps its shared experts and adapters
                unshare_experts(llm)
                llm = llm.merge_and_unload()
            with atomic(path / MERGED_DIR) as merged:
                llm.config.save_pretrained(merged)
                save_tensors(llm, merged / "model.safetensors")  # tied weights stored once
                self.tokenizer.save_pretrained(merged)
            config["merged"] = True
        else:
            with atomic(path / ADAPTER_DIR) as adapter:
                self.llm.save_pretrained(adapter)
        write_json(config, path / CONFIG_NAME)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, llm_path: str | None = None) -> "ThreeDMoELLM":
        """Load a directory written by save_pretrained. `llm_path` overrides the base LM directory
        recorded for the llama-3.2-1b preset (checkpoints move between machines). CheckpointError
        naming the file that is missing, corrupt or does not fit."""
        path = Path(path)
        raw = read_json(path / CONFIG_NAME, "3D-MoE LLM checkpoint's config (write one with ThreeDMoELLM.save_pretrained)")
        merged = raw.pop("merged", False)
        if llm_path is not None:
            raw["llm_path"] = llm_path
        config = MMLLMConfig(**raw)
        if merged:
            model = cls(dataclasses.replace(config, lora="none"), *_load_merged(path / MERGED_DIR))
        else:
            model = cls(config)
            adapter = path / ADAPTER_DIR / "adapter_model.safetensors"
            if not adapter.is_file():
                raise CheckpointError(f"checkpoint {path} lacks {adapter.relative_to(path)}; was it saved completely?")
            from peft import set_peft_model_state_dict

            result = set_peft_model_state_dict(model.llm, load_tensors(adapter))
            if result.unexpected_keys:
                raise CheckpointError(f"{adapter} does not fit this model (unexpected {result.unexpected_keys[:3]} …); "
                                      "was it saved with another LLM or MoE preset?")
        model.load_3d_encoder(path)
        return model.eval()

    def load_3d_encoder(self, path: str | Path) -> None:
        """Take the 3D encoder (PointNet++, spatial transformer, projection) from the checkpoint directory
        `path`, whatever LLM that checkpoint was saved with (Stage II from one Stage I run for any MoE preset)."""
        load_module(self.encoder, Path(path) / ENCODER_WEIGHTS)


def _load_merged(directory: Path):
    """(llm, tokenizer) of a merged checkpoint: a dense LM of the saved shape, upcycled with
    independent experts, then filled with the saved weights."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not (directory / "model.safetensors").is_file():
        raise CheckpointError(f"merged checkpoint {directory} has no model.safetensors")
    hf_config = AutoConfig.from_pretrained(directory, local_files_only=True)
    llm = AutoModelForCausalLM.from_config(hf_config)
    moe = getattr(hf_config, "moe", None)
    if isinstance(moe, dict):
        upcycle_to_moe(llm, moe["num_experts"], moe["top_k"], moe["layers"], share_frozen_experts=False,
                       aux_loss_coef=moe["aux_loss_coef"])
    missing, unexpected = load_module(llm, directory / "model.safetensors", strict=False)
    if unexpected or [k for k in missing if not k.endswith("lm_head.weight")]:
        raise CheckpointError(f"{directory}/model.safetensors does not fit its config.json "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    llm.tie_weights()
    return llm.eval(), AutoTokenizer.from_pretrained(directory, local_files_only=True)
