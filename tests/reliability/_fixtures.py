"""Damaged checkpoints rebuilt in a scratch directory, one per appendix fixture."""

import json
from pathlib import Path

import pandas as pd


def good_checkpoint(path: Path, bench) -> Path:
    """A small valid checkpoint (random tiny Llama, the benchmark's tokenizer, a manifest)."""
    from optigrade.unlearning import tiny_llama
    from optigrade.unlearning.loop import UnlearnResult

    model = tiny_llama(len(bench.tokenizer), seed=0, tokenizer=bench.tokenizer)
    res = UnlearnResult(model, pd.DataFrame({"step": [1]}), steps=1, stop_reason="budget",
                        tokenizer=bench.tokenizer)
    manifest = {"config": {"benchmark": "synthetic", "forget_fraction": 0.1, "benchmark_kwargs": {}},
                "steps": 1, "stop_reason": "budget"}
    return res.save_pretrained(path, manifest=manifest)


def _header_len(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


def damaged_checkpoint(kind: str, path: Path, bench) -> Path:
    """``kind``: good (undamaged), trunc, zero, badheader, flipped, zerotail, nosafetensors, badmanifest,
    badconfigjson, manifest-unknown-bench, noconfig (a directory without config.json), file (a
    plain file), missing (nothing at ``path``)."""
    if kind == "missing":
        return path
    if kind == "file":
        path.write_text("not a checkpoint\n")
        return path
    if kind == "noconfig":
        path.mkdir()
        (path / "readme.txt").write_text("x")
        return path
    good_checkpoint(path, bench)
    if kind == "good":
        return path
    st = path / "model.safetensors"
    data = bytearray(st.read_bytes())
    h = _header_len(data)
    if kind == "trunc":
        st.write_bytes(bytes(data[: len(data) // 2]))
    elif kind == "zero":
        st.write_bytes(bytes(len(data)))
    elif kind == "badheader":
        st.write_bytes(bytes(data[:8]) + b"!" * (h - 8) + bytes(data[h:]))
    elif kind == "flipped":   # 2000 bytes of tensor data flipped, header intact
        step = max(1, (len(data) - h) // 2000)
        for i in range(h, len(data), step)[:2000]:
            data[i] ^= 0xFF
        st.write_bytes(bytes(data))
    elif kind == "zerotail":  # the last 25% of the file zeroed (as after a power loss)
        n = len(data) // 4
        st.write_bytes(bytes(data[:-n]) + bytes(n))
    elif kind == "nosafetensors":
        st.unlink()
    elif kind == "badmanifest":
        (path / "manifest.json").write_text("{\n'config': 1}")
    elif kind == "badconfigjson":
        (path / "config.json").write_text("{not json")
    elif kind == "manifest-unknown-bench":
        m = json.loads((path / "manifest.json").read_text())
        m["config"]["benchmark"] = "nosuch"
        (path / "manifest.json").write_text(json.dumps(m))
    else:
        raise ValueError(f"unknown fixture kind {kind!r}")
    return path
