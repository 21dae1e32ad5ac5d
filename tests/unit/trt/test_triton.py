"""The Triton repository writer: layout, and config.pbtxt parsed with Triton's own ModelConfig schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import get_preset
from trt.errors import TritonRepoError
from trt.triton import ONNX_MODEL, PLAN_MODEL, TritonOptions, config_pbtxt, write_repository

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] (dev extra) gives Triton's ModelConfig schema"
)
from google.protobuf import text_format  # noqa: E402


def _parse(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"onnx-bytes")
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"plan-bytes")
    (tmp_path / "m.plan.json").write_text(json.dumps({"profile": {"min": 1, "opt": 16, "max": 64}}))
    return onnx_file, plan


def test_onnx_and_plan_models_are_laid_out_and_parse(tmp_path: Path, files) -> None:
    cfg = get_preset("tiny")
    written = write_repository(tmp_path / "repo", cfg, onnx_path=files[0], plan_path=files[1], options=TritonOptions(max_batch_size=128))
    assert [d.name for d in written] == [ONNX_MODEL, PLAN_MODEL]
    assert (tmp_path / "repo" / ONNX_MODEL / "1" / "model.onnx").read_bytes() == b"onnx-bytes"
    assert (tmp_path / "repo" / PLAN_MODEL / "1" / "model.plan").read_bytes() == b"plan-bytes"

    onnx_cfg = _parse((tmp_path / "repo" / ONNX_MODEL / "config.pbtxt").read_text())
    assert onnx_cfg.name == ONNX_MODEL and onnx_cfg.platform == "onnxruntime_onnx"
    assert onnx_cfg.max_batch_size == 128
    dims = {i.name: list(i.dims) for i in onnx_cfg.input}
    assert dims == {"ecg": [12, cfg.T], "image": [1, 224, 224], "labs": [cfg.lab_dim], "lab_mask": [cfg.lab_dim]}
    assert all(i.data_type == model_config_pb2.TYPE_FP32 for i in onnx_cfg.input)
    outs = {o.name: o for o in onnx_cfg.output}
    assert list(outs["probs"].dims) == [1] and list(outs["probs"].reshape.shape) == []
    assert list(outs["lead_weights"].dims) == [12] and list(outs["logits"].dims) == [2]
    assert list(onnx_cfg.dynamic_batching.preferred_batch_size) == [8, 32]
    assert onnx_cfg.dynamic_batching.max_queue_delay_microseconds == 2000
    assert onnx_cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU

    plan_cfg = _parse((tmp_path / "repo" / PLAN_MODEL / "config.pbtxt").read_text())
    assert plan_cfg.platform == "tensorrt_plan"
    assert plan_cfg.max_batch_size == 64  # capped at the plan's profile max from its metadata


def test_cpu_kind_and_preferred_sizes_above_max_are_dropped() -> None:
    text = config_pbtxt("m", "onnxruntime_onnx", get_preset("tiny"), TritonOptions(max_batch_size=16, preferred_batch_sizes=(4, 32), kind="cpu"), kind="cpu")
    parsed = _parse(text)
    assert list(parsed.dynamic_batching.preferred_batch_size) == [4]
    assert parsed.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_errors_name_the_problem(tmp_path: Path) -> None:
    cfg = get_preset("tiny")
    with pytest.raises(TritonRepoError, match="--onnx"):
        write_repository(tmp_path / "r", cfg)
    with pytest.raises(TritonRepoError, match="missing.onnx"):
        write_repository(tmp_path / "r", cfg, onnx_path=tmp_path / "missing.onnx")
    with pytest.raises(TritonRepoError, match="max_batch_size=0"):
        TritonOptions(max_batch_size=0)
    with pytest.raises(TritonRepoError, match="kind='tpu'"):
        TritonOptions(kind="tpu")


def test_cli_writes_repository(tmp_path: Path, files) -> None:
    from trt.cli import triton_repo_main

    assert triton_repo_main(["--onnx", str(files[0]), "--out", str(tmp_path / "repo"), "--preset", "tiny", "--max-batch", "32"]) == 0
    assert _parse((tmp_path / "repo" / ONNX_MODEL / "config.pbtxt").read_text()).max_batch_size == 32
    assert triton_repo_main(["--out", str(tmp_path / "r2"), "--preset", "tiny"]) == 2
