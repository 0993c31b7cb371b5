"""Keeps benchmarks/ from rotting: the whole run, every section, on a tiny U-Net at tiny sizes."""

import json

from benchmarks import run as bench
from benchmarks.common import TINY, Settings, model_gflop


def tiny_settings() -> Settings:
    return Settings(
        models=[TINY],
        sizes=[32],
        train_batch={},
        infer_batches=[1, 2],
        iters=1,
        warmup=1,
        max_case_seconds=1.0,
        gemm_size=256,
        memory_image=96,
        memory_tile=64,
        memory_models=["tiny"],
        memory_train_steps=1,
    )


def test_tiny_run_covers_every_section():
    results = bench.run(tiny_settings(), log=lambda _: None)
    rows = results["results"]
    train = {r["variant"] for r in rows if r["section"] == "train"}
    infer = {r["variant"] for r in rows if r["section"] == "infer"}
    assert train == {"unetkit", "bare", "naive"}
    assert {"naive", "unetkit"} <= infer
    for row in rows:
        if row["section"] in ("train", "infer"):
            assert row["images_per_s"] > 0 and 0 < row["ceiling_fraction"]
            assert row["gflop_per_image"] > 0
    memory = {r["job"]: r for r in rows if r["section"] == "memory"}
    assert set(memory) == {"baseline", "train", "tiled"}
    assert all("error" not in r and r["peak_rss_mib"] > 50 for r in memory.values()), memory
    # VmHWM of the child, not ru_maxrss (which inherits the parent's peak across fork + exec)
    assert memory["baseline"]["peak_rss_mib"] < 1500
    assert memory["tiled"]["output_shape"] == [1, 1, 96, 96]
    assert "cpu" in results["machine"] and results["gemm_ceiling_gflops"]["fp32"] > 0
    json.dumps(results)  # JSON-ready
    assert "naive" in bench.format_table(rows)


def test_flops_grow_with_pixels_and_training_costs_more():
    forward = model_gflop(TINY, 32, training=False)
    assert model_gflop(TINY, 64, training=False) > 3.9 * forward
    assert model_gflop(TINY, 32, training=True) > 2 * forward


def test_demo_variant_options_parse_as_python_values():
    from benchmarks.demo_variants import parse_options

    assert parse_options(["time=90.0", "min_epochs=None", "amp=bf16", "class_weights=[2.0, 1.0]"]) == {
        "time": 90.0,
        "min_epochs": None,
        "amp": "bf16",
        "class_weights": [2.0, 1.0],
    }
