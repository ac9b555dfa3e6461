"""The closure contract shared by every optimizer grade and the unlearn loop.

torch.optim's convention is kept: ``optimizer.step(closure)`` and the closure returns the
loss.  optigrade makes *what the closure computes* depend on autograd's mode, so one closure
serves every grade:

* ``torch.is_grad_enabled()`` (first-order, compressed, second-order optimizers; torch's own
  ``Adam.step`` calls closures under ``torch.enable_grad()``): the closure zeroes the ``.grad``
  of its parameters, computes the loss, calls ``backward()`` and returns the detached loss.
* under ``torch.no_grad()`` (zeroth-order optimizers): forward only, no graph is built, no
  ``.grad`` is touched; returns the loss.

Optional capabilities, used by optimizers that need more than a loss value:

* ``closure.loss_with_graph()`` -> loss with its autograd graph and *no* backward (HVPs for
  Sophia-H / AdaHessian; forward-gradient).
* ``closure.parts(with_graph)`` -> ``{"forget": L_f, "retain": L_r}``, the objective split into
  its unlearning term and its retain term (``L = L_f + L_r``); SAM perturbs along the forget
  term, GRU keeps an EMA of the retain-NLL gradient.
* ``closure.retain_loss()`` -> the plain retain NLL (GRU's ĝ_r); may be None.
* ``closure.sampled_label_loss(generator)`` -> cross-entropy of the model against labels
  sampled from its own softmax (Sophia-G's Gauss-Newton-Bartlett estimator).

Optimizers check for these with :func:`capability` and raise a clear error naming the missing
capability when a closure lacks one.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch

LossFn = Callable[[], torch.Tensor]

__all__ = ["Closure", "capability"]


class Closure:
    """A closure obeying the contract above, built from plain loss functions.

    Args:
        loss_fn: computes the full objective ``L`` (a 0-dim tensor) at the current weights.
        params: the trainable tensors whose ``.grad`` the closure fills.
        forget_fn: optional, the unlearning term ``L_f`` of ``L``.
        retain_fn: optional, the retain term ``L_r = L - L_f`` of ``L``.
        retain_loss_fn: optional, the plain retain NLL used by GRU (defaults to ``retain_fn``).
        sampled_label_fn: optional, ``fn(generator) -> loss`` against model-sampled labels.

    Example:
        >>> w = torch.tensor([1.0, -2.0], requires_grad=True)
        >>> c = Closure(lambda: (w ** 2).sum(), [w])
        >>> float(c()), w.grad.tolist()
        (5.0, [2.0, -4.0])
        >>> with torch.no_grad():
        ...     float(c())
        5.0
    """

    def __init__(
        self,
        loss_fn: LossFn,
        params: Iterable[torch.Tensor],
        *,
        forget_fn: Optional[LossFn] = None,
        retain_fn: Optional[LossFn] = None,
        retain_loss_fn: Optional[LossFn] = None,
        sampled_label_fn: Optional[Callable[[Optional[torch.Generator]], torch.Tensor]] = None,
    ) -> None:
        self.loss_fn = loss_fn
        self.params = [p for p in params if p.requires_grad]
        self.forget_fn = forget_fn
        self.retain_fn = retain_fn
        self.retain_loss_fn = retain_loss_fn if retain_loss_fn is not None else retain_fn
        self.sampled_label_fn = sampled_label_fn
        self.n_loss = 0  # forward evaluations
        self.n_grad = 0  # backward passes

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def __call__(self) -> torch.Tensor:
        self.n_loss += 1
        if not torch.is_grad_enabled():
            return self.loss_fn().detach()
        self.zero_grad()
        loss = self.loss_fn()
        loss.backward()
        self.n_grad += 1
        return loss.detach()

    def loss_with_graph(self) -> torch.Tensor:
        self.n_loss += 1
        with torch.enable_grad():
            return self.loss_fn()

    def parts(self, with_graph: bool = True) -> dict:
        if self.forget_fn is None or self.retain_fn is None:
            raise TypeError(
                "this closure was built without forget_fn/retain_fn; pass both to Closure(...) "
                "to use an optimizer that needs the objective's parts (SAM, GRU)"
            )
        self.n_loss += 1
        with torch.set_grad_enabled(with_graph):
            return {"forget": self.forget_fn(), "retain": self.retain_fn()}

    def retain_loss(self) -> Optional[torch.Tensor]:
        if self.retain_loss_fn is None:
            return None
        with torch.enable_grad():
            return self.retain_loss_fn()

    def sampled_label_loss(self, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if self.sampled_label_fn is None:
            raise TypeError(
                "Sophia-G needs closure.sampled_label_loss(generator); build the closure with "
                "Closure(..., sampled_label_fn=...) or use Sophia-H / the SOUL setting"
            )
        with torch.enable_grad():
            return self.sampled_label_fn(generator)


def capability(closure, name: str, who: str):
    """Return ``closure.<name>`` or raise a TypeError saying who needs it and how to fix it.

    >>> c = Closure(lambda: torch.zeros(()), [])
    >>> capability(c, "loss_with_graph", "Sophia-H") == c.loss_with_graph
    True
    >>> capability(lambda: torch.zeros(()), "parts", "SAM")
    Traceback (most recent call last):
    ...
    TypeError: SAM needs closure.parts(); wrap your loss with optimizers.Closure(loss_fn, params, ...) which provides it
    """
    fn = getattr(closure, name, None)
    if fn is None:
        raise TypeError(
            f"{who} needs closure.{name}(); wrap your loss with optimizers.Closure(loss_fn, params, ...) "
            f"which provides it"
        )
    return fn
