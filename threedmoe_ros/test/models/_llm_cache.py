"""One SmolLM2-135M load per test process (it takes ~25 s on 2 cores); tests deep-copy before mutating."""

from __future__ import annotations

import functools
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@functools.lru_cache(maxsize=None)
def smollm2():
    """(model, tokenizer) of the smollm2-135m preset, or skips the test when the package is absent."""
    import pytest

    from threedmoe_ros.models.llm import load_llm, smollm2_gguf_path

    try:
        smollm2_gguf_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    return load_llm("smollm2-135m")
