"""The tiny Llama pretrained on the embedded benchmark (registered as the model ``"tiny"``).

``pretrained_tiny(benchmark, seed)`` returns a ``LlamaForCausalLM`` (eager attention, so
curvature probes can take double backward) that knows every fact of the benchmark, pretraining
it on first use (about a minute on a laptop CPU) and caching it on disk under
``$OPTIGRADE_CACHE`` (default ``~/.cache/optigrade``), keyed by the model config, the training
settings, the benchmark fingerprint and the seed.  ``models.load("tiny")`` is the one on the
default ``SyntheticFacts()``.  Pretraining runs on the CPU (the cache does not depend on the
device); the model is moved afterwards.

Randomness: initialisation and data order come from ``seed`` through a local
``torch.Generator`` / ``torch.random.fork_rng``; the global RNG is left as it was.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from ..._files import atomic_dir
from ..schedules import cosine_schedule
from .base import MODELS, cache_dir, load_checkpoint, place

__all__ = ["TinyConfig", "PretrainConfig", "tiny_llama", "pretrain", "pretrained_tiny", "load_tiny"]


@dataclass(frozen=True)
class TinyConfig:
    """Shape of the tiny Llama (fields of ``transformers.LlamaConfig``).

        >>> TinyConfig().hidden_size, TinyConfig(num_hidden_layers=1).num_hidden_layers
        (128, 1)
    """

    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    max_position_embeddings: int = 64


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining settings of :func:`pretrain`: AdamW with ``lr``, ``warmup`` steps then a cosine
    decay over ``steps`` (:func:`~optigrade.unlearning.schedules.cosine_schedule`); each step
    ``batch_size / 2`` QA lines and as many text lines weighted ``text_weight``; stop when forget
    and retain accuracy reach ``target_acc`` (checked every ``check_every`` steps).

        >>> PretrainConfig(steps=300).steps, PretrainConfig().target_acc
        (300, 0.995)
    """

    steps: int = 1000
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup: int = 50
    text_weight: float = 0.5
    target_acc: float = 0.995
    check_every: int = 50


def tiny_llama(vocab_size: int, cfg: TinyConfig = TinyConfig(), seed: int = 0, tokenizer=None):
    """A freshly initialised LlamaForCausalLM (eager attention, fp32, no dropout, eval mode),
    initialised from ``seed`` without touching the global RNG.

    Parameters: V·h (embedding) + V·h (untied head) + L·(4h² + 3h·i + 2h) + h (final norm):

        >>> cfg = TinyConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
        >>> model = tiny_llama(50, cfg)
        >>> sum(p.numel() for p in model.parameters()) == 2 * 50 * 32 + (4 * 32**2 + 3 * 32 * 64 + 2 * 32) + 32
        True
        >>> import torch
        >>> torch.equal(tiny_llama(50, cfg, seed=1).lm_head.weight, tiny_llama(50, cfg, seed=1).lm_head.weight)
        True
    """
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


def pretrain(benchmark, model_cfg: TinyConfig = TinyConfig(), train_cfg: PretrainConfig = PretrainConfig(),
             seed: int = 0, progress: bool = True):
    """Train a tiny Llama until it knows every fact of ``benchmark``.

    Each step takes one batch of question/answer lines (loss on the answer tokens: the facts)
    and one batch of statements + general text (loss on every token: language), and minimises
    ``L_qa + text_weight * L_text``.  Forget and retain accuracy are checked every
    ``check_every`` steps; training stops once both reach ``target_acc``.
    Returns ``(model, metrics)`` (``metrics``: :meth:`Benchmark.evaluate` + ``pretrain_steps``).

        >>> from optigrade.unlearning import SyntheticFacts
        >>> small = TinyConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
        >>> model, m = pretrain(SyntheticFacts(n_entities=20), small, PretrainConfig(steps=4, batch_size=16),
        ...                     progress=False)
        >>> m["pretrain_steps"], 0.0 <= m["forget_acc"] <= 1.0
        (4, True)
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
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_schedule(train_cfg.steps, train_cfg.warmup))
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
    ``(model, path)``; ``path`` is the cache directory (None when ``cache=False``).

    Raises:
        RuntimeError: pretraining ended below ``train_cfg.target_acc`` (the message says what to
            raise).

    The default settings pretrain for about a minute on first use; with a target of 0 a short
    uncached run returns at once:

        >>> from optigrade.unlearning import SyntheticFacts
        >>> small = TinyConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
        >>> fast = PretrainConfig(steps=4, batch_size=16, check_every=2, target_acc=0.0)
        >>> model, path = pretrained_tiny(SyntheticFacts(n_entities=20), model_cfg=small, train_cfg=fast,
        ...                               progress=False, cache=False)
        >>> type(model).__name__, path
        ('LlamaForCausalLM', None)
    """
    key = _cache_key(benchmark, model_cfg, train_cfg, seed)
    path = cache_dir() / "models" / f"tiny-llama-{key}"
    if cache and (path / "config.json").exists():
        return load_checkpoint(path)[0], path
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


@MODELS.register("tiny")
def load_tiny(*, device="cpu", dtype: Optional[torch.dtype] = None, progress: bool = False):
    """``(model, tokenizer)``: :func:`pretrained_tiny` on the default ``SyntheticFacts()`` (seed 0),
    on ``device`` in ``dtype`` (None: float32), and that benchmark's tokenizer.  Skipped here:
    the first call pretrains for about a minute.

        >>> model, tok = load_tiny(dtype=torch.bfloat16)     # doctest: +SKIP
        >>> model.dtype, tok.pad_token                        # doctest: +SKIP
        (torch.bfloat16, '<pad>')
    """
    from ..benchmarks.synthetic import SyntheticFacts

    bench = SyntheticFacts()
    model, _ = pretrained_tiny(bench, progress=progress)
    return place(model, device, dtype), bench.tokenizer
