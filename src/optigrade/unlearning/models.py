"""Models: the tiny Llama pretrained on the embedded benchmark, and loading local checkpoints.

``pretrained_tiny(benchmark, seed)`` returns a ``LlamaForCausalLM`` (eager attention, so
curvature probes can take double backward) that knows every fact of the benchmark, pretraining
it on first use (about a minute on a laptop CPU) and caching it on disk under
``$OPTIGRADE_CACHE`` (default ``~/.cache/optigrade``), keyed by the model config, the training
settings, the benchmark fingerprint and the seed.  ``load(path)`` opens any local Hugging Face
checkpoint (``config.json`` + weights), refusing clearly anything else.  Named models
(``"smollm2"``) are resolved through :data:`NAMED_MODELS`.

Randomness: initialisation and data order come from ``seed`` through a local
``torch.Generator`` / ``torch.random.fork_rng``; the global RNG is left as it was.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

from .._validate import ModelLoadError
from .._files import atomic_dir

__all__ = ["TinyConfig", "PretrainConfig", "tiny_llama", "pretrain", "pretrained_tiny", "load",
           "cache_dir", "NAMED_MODELS", "ModelLoadError"]

NAMED_MODELS: Dict[str, Callable] = {}  # name -> fn(**kw) -> (model, tokenizer); filled by plug-ins


@dataclass(frozen=True)
class TinyConfig:
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    max_position_embeddings: int = 64


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 1000
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup: int = 50
    text_weight: float = 0.5
    target_acc: float = 0.995
    check_every: int = 50


def cache_dir() -> Path:
    return Path(os.environ.get("OPTIGRADE_CACHE", Path.home() / ".cache" / "optigrade"))


def tiny_llama(vocab_size: int, cfg: TinyConfig = TinyConfig(), seed: int = 0, tokenizer=None):
    """A freshly initialised LlamaForCausalLM (eager attention, fp32, no dropout)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    kw = {}
    if tokenizer is not None:
        kw = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    config = LlamaConfig(vocab_size=vocab_size, attention_dropout=0.0, tie_word_embeddings=False,
                         **asdict(cfg), **kw)
    config._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.config._attn_implementation = "eager"
    model.eval()
    return model


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def pretrain(benchmark, model_cfg: TinyConfig = TinyConfig(), train_cfg: PretrainConfig = PretrainConfig(),
             seed: int = 0, progress: bool = True):
    """Train a tiny Llama until it knows every fact of ``benchmark``.

    Each step takes one batch of question/answer lines (loss on the answer tokens: the facts)
    and one batch of statements + general text (loss on every token: language), and minimises
    ``L_qa + text_weight * L_text``.  Forget and retain accuracy are checked every
    ``check_every`` steps; training stops once both reach ``target_acc``.
    Returns ``(model, metrics)``.
    """
    from tqdm.auto import tqdm

    tok = benchmark.tokenizer
    model = tiny_llama(len(tok), model_cfg, seed, tok)
    qa = benchmark.splits["forget"] + benchmark.splits["retain"]
    qa_data = benchmark.encode_qa(qa)
    texts = benchmark.statements() + list(benchmark.general["train"])
    text_data = benchmark.encode_text(texts)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine(s, train_cfg.steps, train_cfg.warmup))
    half = train_cfg.batch_size // 2
    model.train()
    metrics, done = {}, 0
    bar = tqdm(range(train_cfg.steps), desc="pretrain tiny llama", disable=not progress, leave=False)
    for step in bar:
        loss = 0.0
        for data, n, w in ((qa_data, len(qa), 1.0), (text_data, len(texts), train_cfg.text_weight)):
            idx = torch.randint(n, (half,), generator=gen)
            am = data["attention_mask"][idx]
            T = int(am.sum(1).max())
            out = model(input_ids=data["input_ids"][idx, :T], attention_mask=am[:, :T],
                        labels=data["labels"][idx, :T])
            loss = loss + w * out.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        done = step + 1
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if done % train_cfg.check_every == 0 or done == train_cfg.steps:
            metrics = benchmark.evaluate(model, splits=["forget", "retain"], general=False)
            model.train()
            if min(metrics["forget_acc"], metrics["retain_acc"]) >= train_cfg.target_acc:
                break
    model.eval()
    metrics = benchmark.evaluate(model)
    metrics["pretrain_steps"] = done
    return model, metrics


def _cache_key(benchmark, model_cfg, train_cfg, seed) -> str:
    import transformers

    blob = json.dumps({"bench": benchmark.fingerprint(), "model": asdict(model_cfg),
                       "train": asdict(train_cfg), "seed": seed, "torch": torch.__version__.split("+")[0],
                       "transformers": transformers.__version__, "v": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrained_tiny(benchmark, seed: int = 0, model_cfg: TinyConfig = TinyConfig(),
                    train_cfg: PretrainConfig = PretrainConfig(), progress: bool = True,
                    cache: bool = True):
    """The cached tiny Llama for ``benchmark`` (pretrained on first use).  Returns
    ``(model, path)``; ``path`` is the cache directory (None when ``cache=False``)."""
    key = _cache_key(benchmark, model_cfg, train_cfg, seed)
    path = cache_dir() / "models" / f"tiny-llama-{key}"
    if cache and (path / "config.json").exists():
        return load(path), path
    model, metrics = pretrain(benchmark, model_cfg, train_cfg, seed, progress)
    if metrics["forget_acc"] < train_cfg.target_acc or metrics["retain_acc"] < train_cfg.target_acc:
        raise RuntimeError(
            f"pretraining reached forget_acc={metrics['forget_acc']:.3f}, retain_acc={metrics['retain_acc']:.3f} "
            f"< {train_cfg.target_acc} in {train_cfg.steps} steps; raise PretrainConfig.steps or lr")
    if not cache:
        return model, None
    with atomic_dir(path, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        benchmark.tokenizer.save_pretrained(tmp)
        (tmp / "pretrain.json").write_text(json.dumps(
            {"model": asdict(model_cfg), "train": asdict(train_cfg), "seed": seed,
             "benchmark": benchmark.settings(), "metrics": metrics}, indent=2))
    return model, path


def load(path_or_name, dtype: Optional[torch.dtype] = None, **kw):
    """Load a local Hugging Face causal-LM checkpoint (eager attention) or a named model.

    Raises:
        ModelLoadError: the name is unknown, the path does not exist, or it holds no model
            (no ``config.json``).
    """
    name = str(path_or_name)
    if name in NAMED_MODELS:
        model, _tok = NAMED_MODELS[name](dtype=dtype, **kw)
        return model
    path = Path(name).expanduser()
    if not path.exists():
        known = ", ".join(sorted(NAMED_MODELS)) or "none registered"
        raise ModelLoadError(
            f"model {name!r}: no such path; give a local Hugging Face checkpoint directory "
            f"(with config.json and *.safetensors) or a named model ({known}) or 'tiny'")
    if not (path / "config.json").exists():
        raise ModelLoadError(
            f"model path {str(path)!r} exists but is not a model checkpoint (no config.json); "
            f"point at a directory written by save_pretrained / `optigrade unlearn --out`")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager",
                                                 dtype=dtype or torch.float32)
    model.eval()
    return model


def load_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(path))
