"""Device and dtype names (``--device`` / ``--dtype``) and library code following the model's
device.  This machine has no GPU: cpu runs for real, cuda must be refused before any work."""

import pytest
import torch

from optigrade import optimizers
from optigrade._device import model_device, resolve_device, resolve_dtype, to_device
from optigrade._validate import ConfigError
from optigrade.unlearning import GradDiff, NPO, load_model, unlearn

NO_CUDA = not torch.cuda.is_available()


@pytest.mark.parametrize("name,want", [("cpu", "cpu"), (None, "cpu"), ("CPU", "cpu"), (torch.device("cpu"), "cpu")])
def test_cpu_names(name, want):
    assert resolve_device(name) == torch.device(want)


def test_auto_picks_what_exists():
    want = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == want


@pytest.mark.skipif(not NO_CUDA, reason="a CUDA GPU is visible")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA"])
def test_cuda_without_a_gpu_is_refused_with_the_fix(name):
    with pytest.raises(ConfigError, match=r"no CUDA GPU is visible \(torch.cuda.is_available\(\) is False\); use --device cpu"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["tpu", "gpu", "cpu:1", "cuda:x", ""])
def test_unknown_device_names_list_the_allowed(name):
    with pytest.raises(ConfigError, match="choose one of: auto, cpu, cuda, mps"):
        resolve_device(name)


def test_dtypes():
    assert resolve_dtype("float32") is torch.float32 and resolve_dtype("BFloat16") is torch.bfloat16
    assert resolve_dtype("float16") is torch.float16 and resolve_dtype(None) is None
    assert resolve_dtype(torch.float64) is torch.float64
    with pytest.raises(ConfigError, match="unknown dtype 'half'; choose one of: bfloat16, float16, float32"):
        resolve_dtype("half")


@pytest.mark.skipif(not NO_CUDA, reason="a CUDA GPU is visible")
def test_load_model_refuses_cuda_before_loading(tmp_path):
    # the path does not exist: the device error must come first, before any loading
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        load_model(tmp_path / "nowhere", device="cuda")


def test_load_model_casts_and_places(bench, pretrained):
    model, _ = load_model("tiny", device="cpu", dtype="bfloat16")
    assert model_device(model) == torch.device("cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in pretrained[0].parameters()} == {torch.float32}  # the cached copy is untouched
    m = bench.evaluate(model, splits=["forget"], general=False, limit={"forget": 20})
    assert 0.0 <= m["forget_acc"] <= 1.0 and m["forget_nll"] == m["forget_nll"]


def test_unlearn_follows_a_bfloat16_model_on_cpu(bench, tiny_model):
    """Batches, the NPO reference and the retain term are built where the model is, in the
    model's dtype; the loss (token NLL) is computed in float32."""
    model = tiny_model.to(torch.bfloat16)
    opt = optimizers.make("adam", model.parameters(), lr=1e-3)
    res = unlearn(model, NPO(), opt, bench, steps=2, eval_every=2, batch_size=4, final_eval=False,
                  progress=False)
    assert res.steps == 2 and res.log["loss"].notna().all()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_retain_term_zero_is_on_the_model_device(tiny_model, bench):
    f = to_device(bench.encode_qa(bench.forget[:2]), tiny_model)
    z = GradDiff(alpha=0.0).retain_term(tiny_model, None)
    assert z.device == model_device(tiny_model) and z.item() == 0.0 and f["input_ids"].device == z.device
