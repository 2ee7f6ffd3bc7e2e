"""Replay of a measured ``vllm bench serve`` run: the same requests through servesim,
and measured against simulated, metric by metric.

From the result file (``--save-result --save-detailed``) come the requests (its
``input_lens`` and ``output_lens``, failed requests left out) and how they arrived:

* ``max_concurrency`` set: a closed loop of that many clients, no think time (vLLM's
  client semaphore; a finite ``request_rate`` on top of it is not modelled);
* else ``start_times``: the measured send times, as a trace;
* else ``request_rate`` ``inf``: all at once (closed); a finite rate: Poisson, or
  gamma with cv = 1 / sqrt(``burstiness``) (vLLM's gamma shape).

The server is vLLM's: continuous batching with the ``vllm`` scheduler, paged KV,
``max_num_seqs`` 256 (``batch_size``) and the scenario defaults otherwise, no
speculation; any key can be changed with ``--set`` (e.g. ``max_num_batched_tokens``,
``method``). The GPU must be given; the model is the result's ``model_id`` when it names
a catalog model (``meta-llama/Llama-3.1-8B-Instruct`` -> ``llama-3-1-8b``), else given;
an FP8 checkpoint's id (``nvidia/Llama-3.1-8B-Instruct-FP8``, ``...-FP8-dynamic``) names
its model and sets ``model.quantization = "fp8"`` (W8A8; on a GPU without FP8 tensor
cores vLLM runs such weights another way, and the scenario says so: ``--set
quantization=none`` to replay it as 16-bit).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from servesim.inputs import InputError
from servesim.models import model_names

COMPARED = ("ttft", "tpot", "itl", "e2el")
THROUGHPUTS = ("request_throughput", "output_throughput", "total_token_throughput")
SUFFIXES = ("-instruct", "-chat", "-hf", "-it", "-base")
FP8_ID = re.compile(r"[-_]fp8(?:[-_]dynamic)?$")
"""How an FP8 checkpoint's id ends (NVIDIA's ``-FP8``, Neural Magic's ``-FP8-dynamic``)."""


def quantization_of(model_id: str | None) -> str:
    """``fp8`` for an FP8 checkpoint's Hugging Face id, else ``none``."""
    return "fp8" if model_id and FP8_ID.search(str(model_id).lower()) else "none"


def read_result(path: str | Path) -> dict:
    """A vLLM result file (one JSON object; with ``--append-result`` the last line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        try:  # --append-result writes one object per line: the last run
            data = json.loads(text.splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            raise InputError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("input_lens"), list):
        raise InputError(f"{path}: not a vllm bench serve result with per-request lengths (no 'input_lens'); "
                         "save it with `vllm bench serve --save-result --save-detailed`")
    return data


def catalog_model(model_id: str | None) -> str | None:
    """The catalog model a Hugging Face model id names, if any."""
    if not model_id:
        return None
    name = FP8_ID.sub("", str(model_id).rsplit("/", 1)[-1].lower())
    for suffix in SUFFIXES:
        name = name.replace(suffix, "")
    name = re.sub(r"-\d{4}$", "", name)  # a release date (Mistral's -2501)
    names = set(model_names())
    for candidate in (name, name.replace(".", "-"), name.removeprefix("meta-"),
                      name.removeprefix("meta-").replace(".", "-")):
        if candidate in names:
            return candidate
    return None


def _toml(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def replay_scenario_text(result_path: str | Path, data: dict, gpu: str, model: str) -> str:
    """A scenario that replays the result's requests (see module docstring)."""
    path = Path(result_path).resolve()
    workload = {"trace_file": str(path), "trace_format": "vllm_result"}
    ok = [o > 0 for o in data.get("output_lens", [])]
    errors = data.get("errors")
    if isinstance(errors, list) and len(errors) == len(ok):
        ok = [a and not e for a, e in zip(ok, errors)]
    n = max(1, sum(ok))
    rate = data.get("request_rate", "inf")
    rate = math.inf if rate in ("inf", None) else float(rate)
    starts = data.get("start_times")
    if data.get("max_concurrency"):
        workload.update(arrival="closed_loop", clients=int(data["max_concurrency"]), num_requests=n)
    elif isinstance(starts, list) and len(starts) == len(data["input_lens"]):
        workload.update(arrival="trace")
    elif math.isinf(rate):
        workload.update(arrival="closed", num_requests=n)
    else:
        burstiness = float(data.get("burstiness") or 1.0)
        workload.update(arrival="poisson" if burstiness == 1.0 else "gamma", rate_per_s=rate,
                        cv=1 / math.sqrt(burstiness), num_requests=n)
    sections = {
        "hardware": {"gpu": gpu},
        "model": {"model": model, **({"quantization": "fp8"} if quantization_of(data.get("model_id")) == "fp8"
                                     else {})},
        "speculation": {"method": "none"},
        "workload": workload,
        "serving": {"batching": "continuous", "scheduler": "vllm", "kv_cache": "paged", "batch_size": 256},
    }
    lines = [f"name = {_toml('replay_' + path.stem)}",
             f"description = {_toml('replay of ' + path.name)}", "seed = 0"]
    for section, keys in sections.items():
        lines.append(f"\n[{section}]")
        lines.extend(f"{k} = {_toml(v)}" for k, v in keys.items())
    return "\n".join(lines) + "\n"


def comparison(measured: dict, simulated: dict) -> pd.DataFrame:
    """Measured against simulated: one row per metric both have (mean, median and every
    percentile of TTFT, TPOT, ITL, E2EL in ms; throughputs), with the error
    (simulated - measured) / measured in percent."""
    rows = []
    for metric in COMPARED:
        stats = ["mean", "median"] + sorted(
            {k.split("_", 1)[0] for k in measured if re.fullmatch(rf"p[\d.]+_{metric}_ms", k)},
            key=lambda p: float(p[1:]))
        for stat in stats:
            key = f"{stat}_{metric}_ms"
            if key in measured and key in simulated and measured[key] is not None and simulated[key] is not None:
                rows.append((metric.upper(), f"{stat} (ms)", float(measured[key]), float(simulated[key])))
    for key in THROUGHPUTS:
        if measured.get(key) is not None and simulated.get(key) is not None:
            unit = "req/s" if key == "request_throughput" else "tok/s"
            rows.append((key, unit, float(measured[key]), float(simulated[key])))
    frame = pd.DataFrame(rows, columns=["metric", "statistic", "measured", "simulated"])
    frame["error_pct"] = (frame["simulated"] - frame["measured"]) / frame["measured"] * 100
    return frame
