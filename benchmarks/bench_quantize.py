"""Quantized SmolLM2 on the kernels that serve it: W4A16 and W8A8 against bf16 on vLLM.

The real pretrained SmolLM2-135M-Instruct (``training.base_model`` of ``profiles/smollm2.yaml``,
converted from its package's GGUF) is quantized with the profile's settings, once per scheme
(``quantization.method``: ``gptq`` W4A16, ``w8a8`` int8), calibrated on the sample training
questions in the model's chat template, as a release calibrates. Then vLLM serves the
unquantized checkpoint (bf16) and each quantized one in turn, under the same load (the profile's
``bench_requests`` x ``bench_max_tokens`` at ``bench_concurrency``, the quantization check's
load), and the run prints tokens/s, p50/p95 latency and size, as ratios against bf16 measured in
the same run. Speed does not depend on fine-tuning, so the base model stands in for a fine-tune.

Run: ``python -m benchmarks.bench_quantize [--methods gptq w8a8]`` (needs ``.venv-serving``;
about 8 minutes on two cores).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from flows.cli.console import quiet_libraries
from lockgate._io import load_jsonl
from lockgate.artifacts import LocalArtifactStore
from lockgate.basemodel import ensure_base_model
from lockgate.chat import chat_format_of
from lockgate.quantize import calibration_rows, quantize_checkpoint, serving_python, weights_size
from lockgate.serving.bench import BenchLoad, ServedSpeed, bench_checkpoint
from lockgate.settings import load_settings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--methods", nargs="+", default=["gptq", "w8a8"], choices=["gptq", "w8a8"], help="gptq: W4A16; w8a8: int8"
    )
    args = parser.parse_args()
    quiet_libraries()  # llm-compressor's and transformers' own lines stay out of the table
    os.environ.setdefault("TQDM_DISABLE", "1")  # compressed-tensors' progress bars
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    settings = load_settings("smollm2")
    quant = settings.quantization.model_copy(update={"serving_benchmark": "vllm"})
    python = serving_python(quant)
    assert python is not None
    work = Path(tempfile.mkdtemp(prefix="lockgate-bench-quant-"))
    try:
        start = time.perf_counter()
        base = ensure_base_model(
            settings.training.base_model, settings.base, [], LocalArtifactStore(work / "artifacts")
        )
        print(f"base {settings.training.base_model}: converted in {time.perf_counter() - start:.0f} s", flush=True)
        base_dir = Path(base.path)
        texts = calibration_rows(load_jsonl(EXAMPLES / "data" / "qa.jsonl"), chat=chat_format_of(base_dir))
        models: dict[str, Path] = {"bf16": base_dir}
        for method in args.methods:
            scheme = quant.model_copy(
                update={"method": method, "scheme": "W8A8", "group_size": None}
                if method == "w8a8"
                else {"method": method}
            )
            start = time.perf_counter()
            with contextlib.redirect_stderr(io.StringIO()):  # llm-compressor's progress bars; errors still raise
                models[f"{method} {scheme.scheme}"] = quantize_checkpoint(base_dir, work / method, texts, scheme)
            print(f"{method} ({scheme.scheme}): quantized in {time.perf_counter() - start:.0f} s", flush=True)

        load = BenchLoad(
            prompts=tuple(texts[:8]),
            requests=quant.bench_requests,
            concurrency=quant.bench_concurrency,
            max_tokens=quant.bench_max_tokens,
        )
        speeds: dict[str, ServedSpeed] = {}
        for name, path in models.items():
            speeds[name] = bench_checkpoint(str(python), str(path), load, work / f"{name.split()[0]}-vllm.log")
            print(f"{name}: {speeds[name].tokens_per_s:.1f} tokens/s on vLLM", flush=True)

        bf16, size = speeds["bf16"], weights_size(base_dir)
        print(
            f"\n{load.requests} requests x {load.max_tokens} tokens at concurrency {load.concurrency}, "
            f"vLLM {python.parent.parent.name}\n"
            f"{'model':<16}{'tokens/s':>10}{'vs bf16':>9}{'p50 ms':>9}{'p95 ms':>9}{'size MB':>9}{'vs bf16':>9}"
        )
        for name, speed in speeds.items():
            weights = weights_size(models[name])
            print(
                f"{name:<16}{speed.tokens_per_s:>10.1f}{speed.tokens_per_s / bf16.tokens_per_s:>8.2f}x"
                f"{speed.p50_ms:>9.0f}{speed.p95_ms:>9.0f}{weights / 1e6:>9.0f}{weights / size:>8.2f}x"
            )
        print("(bf16: the converted float32 checkpoint, served by vLLM in bf16)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
