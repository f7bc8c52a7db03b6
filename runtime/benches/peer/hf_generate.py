#!/usr/bin/env python3
"""Peer for the generation benchmark: Hugging Face transformers `generate` on
the same tiny Qwen2 model, batch and length as `saferc generate`.

    hf_generate.py make DIR     # a ~3.8M-parameter random Qwen2 (seed 0) + the fixture tokenizer
    hf_generate.py bench DIR [DEVICE]
                                # tokens/s of model.generate, batch 8, 64 new tokens, as JSON
                                # (DEVICE: cpu, the default, or cuda for runtime/scripts/cuda_check.sh)
    hf_generate.py floor DIR    # ms per decode step spent in the linear products alone, as JSON

Sampling (temperature 1, no top-k/top-p), `min_new_tokens = max_new_tokens = 64`
so every row produces exactly 64 tokens; one warm-up, then the median of 5 runs.
Run through runtime/benches/generate_vs_hf.sh, which times saferc the same way.
"""
import json
import os
import shutil
import statistics
import sys
import time

import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER = os.path.join(HERE, "..", "..", "fixtures", "models", "tokenizer")
PROMPT = "Look at the picture and tell me whether it is safe to use this tool in the kitchen."
BATCH, NEW_TOKENS, RUNS = 8, 64, 5


def make(out):
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=256, intermediate_size=704, num_hidden_layers=5,
                         num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=True,
                         max_position_embeddings=1024, rope_theta=10000.0,
                         eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id)
    model = Qwen2ForCausalLM(config)
    if os.path.exists(out):
        shutil.rmtree(out)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"parameters": params, "dir": out}))


def bench(path, device="cpu"):
    torch.set_grad_enabled(False)
    tok = AutoTokenizer.from_pretrained(path)
    model = Qwen2ForCausalLM.from_pretrained(path, dtype=torch.float32).eval().to(device)
    ids = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                  return_dict=True, return_tensors="pt")["input_ids"]
    batch = ids.repeat(BATCH, 1).to(device)
    mask = torch.ones_like(batch)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def once(seed):
        torch.manual_seed(seed)
        sync()
        start = time.perf_counter()
        out = model.generate(batch, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                             max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, pad_token_id=tok.pad_token_id)
        sync()
        seconds = time.perf_counter() - start
        assert out.shape == (BATCH, batch.shape[1] + NEW_TOKENS)
        return BATCH * NEW_TOKENS / seconds

    once(0)
    rates = [once(seed) for seed in range(1, RUNS + 1)]
    print(json.dumps({"peer": "transformers", "version": __import__("transformers").__version__,
                      "torch": torch.__version__, "threads": torch.get_num_threads(), "device": device,
                      "prompt_tokens": batch.shape[1], "batch": BATCH, "new_tokens": NEW_TOKENS,
                      "tokens_per_second": statistics.median(rates), "runs": rates}))


def floor(path):
    """A lower bound on a decode step with torch's kernels: only the model's
    linear products (every projection and the output head, in layer order,
    on 8 rows), nothing else: no attention, norms, sampling or Python model
    code. Median of 200 steps after 20 warm-ups."""
    torch.set_grad_enabled(False)
    model = Qwen2ForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    x = {w.shape[1]: torch.randn(BATCH, w.shape[1]) for w in weights}
    linear = torch.nn.functional.linear

    def step():
        start = time.perf_counter()
        for w in weights:
            linear(x[w.shape[1]], w)
        return time.perf_counter() - start

    for _ in range(20):
        step()
    ms = statistics.median(step() for _ in range(200)) * 1e3
    print(json.dumps({"products": len(weights), "rows": BATCH, "threads": torch.get_num_threads(),
                      "ms_per_step": ms, "tokens_per_second_bound": BATCH / ms * 1e3}))


if __name__ == "__main__":
    {"make": make, "bench": bench, "floor": floor}[sys.argv[1]](*sys.argv[2:])
