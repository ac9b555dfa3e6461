"""The shipped canonical tiny base: sha256-checked package data, the same bits under every CPU
capability, a recipe that rebuilds it, a cache key for other settings that covers the CPU
capability and the code, and the base's identity in every unlearn manifest."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from optigrade._files import model_fingerprint, sha256_file
from optigrade._validate import ModelLoadError
from optigrade.unlearning import PretrainConfig, SyntheticFacts, TinyConfig, pretrained_tiny
from optigrade.unlearning.models import tiny
from optigrade.unlearning.models.tiny import SHIPPED, load_shipped, shipped_recipe

SMALL = TinyConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
FAST = PretrainConfig(steps=4, batch_size=16, check_every=2, target_acc=0.0)


def _sha(path):
    return sha256_file(path)


def _boom(*a, **k):
    raise AssertionError("pretraining ran")


# ----------------------------------------------------------------------------- the shipped files
def test_shipped_files_match_their_recipe(bench):
    r = shipped_recipe()
    assert sorted(p.name for p in SHIPPED.iterdir()) == sorted([*r["files"], "recipe.json"])
    for name, f in r["files"].items():
        assert _sha(SHIPPED / name) == f["sha256"] and (SHIPPED / name).stat().st_size == f["bytes"], name
    assert r["files"]["model.safetensors"]["bytes"] < 4 * 2**20  # a few MB: 430,464 fp32 parameters
    assert r["parameters"] == 430_464
    # it is the model of the default setting, on today's benchmark (a changed benchmark needs a rebuild)
    assert r["recipe"] == tiny._recipe(bench, TinyConfig(), PretrainConfig(), 0)
    assert set(r["made_with"]) >= {"torch", "transformers", "cpu_capability", "code"}
    assert r["pretrain_steps"] == r["metrics"]["pretrain_steps"] > 0


def test_default_setting_loads_the_shipped_base(bench, tmp_path, monkeypatch):
    monkeypatch.setenv("OPTIGRADE_CACHE", str(tmp_path))
    monkeypatch.setattr(tiny, "pretrain", _boom)
    model, path = pretrained_tiny(bench, progress=False)
    assert path == SHIPPED and not any(tmp_path.iterdir())  # nothing pretrained, nothing cached
    assert model_fingerprint(model, full=True) == shipped_recipe()["weights_sha256"]
    m = bench.evaluate(model, splits=["forget", "retain"], general=False, limit={"retain": 200})
    assert min(m["forget_acc"], m["retain_acc"]) >= PretrainConfig().target_acc  # it knows the facts


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "missing", "config"])
def test_damaged_shipped_file_is_named(damage, tmp_path):
    d = tmp_path / "tiny-llama"
    shutil.copytree(SHIPPED, d)
    f = d / ("config.json" if damage == "config" else "model.safetensors")
    data = f.read_bytes()
    if damage == "flip":
        f.write_bytes(data[:5000] + bytes([data[5000] ^ 1]) + data[5001:])
    elif damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        f.write_bytes(b"")
    elif damage == "missing":
        f.unlink()
    else:
        f.write_text(data.decode().replace("128", "64", 1))
    want = shipped_recipe()["files"][f.name]["sha256"]
    with pytest.raises(ModelLoadError) as e:
        load_shipped(d)
    msg = str(e.value)
    assert str(f) in msg and want in msg and "reinstall optigrade" in msg and "--rebuild" in msg
    assert ("missing" if damage == "missing" else _sha(f)) in msg


def test_unreadable_recipe_is_named(tmp_path):
    d = tmp_path / "tiny-llama"
    shutil.copytree(SHIPPED, d)
    (d / "recipe.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="recipe.json"):
        load_shipped(d)


def test_check_command(capsys):
    assert tiny.main(["--check"]) == 0
    assert shipped_recipe()["files"]["model.safetensors"]["sha256"] in capsys.readouterr().out


def test_rebuild_refuses_a_nonempty_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tiny, "pretrain", _boom)
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as e:
        tiny.main(["--rebuild", str(tmp_path)])
    assert e.value.code == 2 and "not empty" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "mine"


_LOAD = """
import json, torch
from optigrade._files import model_fingerprint, sha256_file
from optigrade.unlearning.models import load
model, _ = load("tiny")
print(json.dumps({"cap": torch.backends.cpu.get_cpu_capability(), "weights": model_fingerprint(model, full=True)}))
"""


def test_shipped_base_loads_bit_identically_under_every_cpu_capability():
    """ATEN_CPU_CAPABILITY changes the kernels (and so what pretraining computes) but never the
    loaded bits: default (no SIMD), avx2 and the machine's native setting give one weight hash."""
    native = torch.backends.cpu.get_cpu_capability()
    procs = {}
    for setting in ("default", "avx2", None):  # three fresh processes, side by side
        env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
        if setting is not None:
            env["ATEN_CPU_CAPABILITY"] = setting
        procs[setting or "native"] = subprocess.Popen([sys.executable, "-c", _LOAD], env=env, text=True,
                                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        seen[name] = json.loads(out.strip().splitlines()[-1])
    assert seen["default"]["cap"] == "DEFAULT" and seen["native"]["cap"] == native
    if native != "DEFAULT":  # a CPU without AVX2 cannot be asked for it
        assert seen["avx2"]["cap"] == "AVX2"
    assert {s["weights"] for s in seen.values()} == {shipped_recipe()["weights_sha256"]}


@pytest.mark.slow
def test_recipe_rebuilds_the_shipped_file(tmp_path):
    """Pretraining is bit-exact on one machine: on the CPU capability and torch version it was made
    with, the recipe writes the shipped files byte for byte (about a minute of pretraining)."""
    made = shipped_recipe()["made_with"]
    cap = torch.backends.cpu.get_cpu_capability()
    if (cap, torch.__version__) != (made["cpu_capability"], made["torch"]):
        pytest.skip(f"the shipped base was made with {made['cpu_capability']} / torch {made['torch']}; "
                    f"this machine runs {cap} / torch {torch.__version__}, whose kernels round differently")
    out = tiny.rebuild_tiny(tmp_path / "rebuilt", progress=False)
    for name, f in shipped_recipe()["files"].items():
        assert _sha(out / name) == f["sha256"], name
    got = json.loads((out / "recipe.json").read_text())
    assert got["weights_sha256"] == shipped_recipe()["weights_sha256"]
    assert got["pretrain_steps"] == shipped_recipe()["pretrain_steps"]


# ----------------------------------------------------------------------------- other settings
def test_other_settings_pretrain_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTIGRADE_CACHE", str(tmp_path))
    b = SyntheticFacts(n_entities=20)
    model, path = pretrained_tiny(b, model_cfg=SMALL, train_cfg=FAST, progress=False)
    assert path.parent == tmp_path / "models" and path != SHIPPED
    info = json.loads((path / "pretrain.json").read_text())
    assert info["weights_sha256"] == model_fingerprint(model, full=True)
    assert info["made_with"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    monkeypatch.setattr(tiny, "pretrain", _boom)  # the second call reads the cache
    again, path2 = pretrained_tiny(b, model_cfg=SMALL, train_cfg=FAST, progress=False)
    assert path2 == path and model_fingerprint(again, full=True) == info["weights_sha256"]
    # a damaged cache entry is named, with what to do (never loaded quietly, never silently re-pretrained)
    f = path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:-8] + bytes(8))
    with pytest.raises(ModelLoadError) as e:
        pretrained_tiny(b, model_cfg=SMALL, train_cfg=FAST, progress=False)
    assert "model.safetensors" in str(e.value) and "delete" in str(e.value)


def test_cache_key_covers_cpu_capability_and_code(monkeypatch):
    b = SyntheticFacts(n_entities=20)
    key = tiny._cache_key(b, SMALL, FAST, 0)
    assert tiny._cache_key(b, SMALL, FAST, 0) == key
    assert tiny._cache_key(b, SMALL, FAST, 1) != key
    with monkeypatch.context() as m:
        m.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "SOMETHING_ELSE")
        assert tiny._cache_key(b, SMALL, FAST, 0) != key
    with monkeypatch.context() as m:
        m.setattr(tiny, "_code_version", lambda: "0.0.0-edited")
        assert tiny._cache_key(b, SMALL, FAST, 0) != key


def test_code_version_follows_the_pretraining_source(monkeypatch):
    v = tiny._code_version()
    monkeypatch.setattr(tiny.inspect, "getsource", lambda f: "def pretrain(): pass  # edited")
    assert tiny._code_version() != v


# ----------------------------------------------------------------------------- manifests
def test_manifest_records_the_base(tmp_path):
    from optigrade.unlearning import tiny_llama
    from optigrade.unlearning.run import UnlearnConfig, run_unlearn

    b = SyntheticFacts(n_entities=20)
    model = tiny_llama(len(b.tokenizer), SMALL, seed=3, tokenizer=b.tokenizer)
    start = model_fingerprint(model, full=True)
    cfg = UnlearnConfig(objective="graddiff", steps=2, eval_every=2, target=None)
    run_unlearn(cfg, tmp_path / "o", benchmark=b, model=model, progress=False)
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert man["base_sha256"] == start != model_fingerprint(model, full=True)  # the start, not the result
    assert man["versions"]["torch"] == torch.__version__
    assert man["versions"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
