"""Attacks on unlearned models: each maps a model to a NEW model and never edits its input.

=========  ====================================  ==========================================
kind       function                              settings
=========  ====================================  ==========================================
quantize   :func:`~.rtn.quantize_rtn`            :class:`~.rtn.QuantizeSpec` (bits, group_size, ...)
relearn    :func:`~.relearn.relearn`             :class:`~.relearn.RelearnSpec` (steps, lr, protocol, ...)
noise      :func:`~.noise.weight_noise`          :class:`~.noise.NoiseSpec` (sigma, relative, ...)
gguf       :func:`~.gguf.requantize_gguf`        :class:`~.gguf.GGUFSpec` (types)
=========  ====================================  ==========================================

:data:`ATTACKS` is the table: each module registers its function with its settings model and
whether it takes the benchmark and the run seed.  A study YAML entry becomes a spec with
:func:`attack_spec`, runs with :func:`apply_attack`, and is recorded with :func:`resolved`:

    >>> import torch
    >>> spec = attack_spec({"kind": "quantize", "label": "rtn4", "bits": 4})
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 2))
    >>> out = apply_attack(spec.check_model(net), net)
    >>> sorted(ATTACKS), len(torch.unique(out[0].weight[0])) <= 16
    (['gguf', 'noise', 'quantize', 'relearn'], True)

All randomness comes from local ``torch.Generator`` s seeded by ``seed``; the global RNG is
never touched.
"""

from ._spec import ATTACKS, AttackSpec, apply_attack, attack_spec, kinds, resolved
from .rtn import QuantizeSpec, check_bits, check_group_size, quant_step, quantize_rtn, rtn_quantize
from .relearn import RelearnSpec, forget_halves, half_view, relearn
from .noise import NoiseSpec, weight_noise
from .gguf import GGUFSpec, SUPPORTED_TYPES, bin_crossing_gguf, export_gguf, requantize_gguf

#: the registered kinds in registration order (the order error messages list them)
ATTACK_KINDS = kinds()

__all__ = [
    "ATTACKS", "ATTACK_KINDS", "AttackSpec", "attack_spec", "resolved", "apply_attack",
    "QuantizeSpec", "RelearnSpec", "NoiseSpec", "GGUFSpec",
    "quantize_rtn", "rtn_quantize", "quant_step", "check_bits", "check_group_size",
    "relearn", "forget_halves", "half_view", "weight_noise",
    "requantize_gguf", "export_gguf", "bin_crossing_gguf", "SUPPORTED_TYPES",
]
