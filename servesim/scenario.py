"""Scenario files: TOML -> validated, frozen configuration, with sweeps expanded.

A scenario has a top level (``name``, ``seed``, ``description``) and the sections
below. Every key has a type, a default and a rule; :data:`SCHEMA` is the single source
of truth (the README's reference table is written from it). ``[sweep]`` maps scenario
keys (bare, e.g. ``seq_len``, or dotted, ``workload.seq_len``) to lists; the points are
their cartesian product, in the order the keys appear.

Bad input raises :class:`ScenarioError` naming the file, the key and what is allowed.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from servesim.hardware import PROFILE_FIELDS, framework_names, gpu_names
from servesim.hardware.kernel_profile import VARIANTS, profile_problems, variant_problems
from servesim.inputs import MAX_CANDIDATES, MAX_HEADS, MAX_RANK, MAX_REQUESTS, MAX_TOKENS, InputError


class ScenarioError(Exception):
    """A scenario file or override is invalid. ``str()`` is the message for the user."""

    def __init__(self, source: str, key: str | None, message: str) -> None:
        self.source, self.key = source, key
        where = f"{source}: key '{key}'" if key else source
        super().__init__(f"{where}: {message}")


MAX_INT = 2**31 - 1
"""Bound of every integer key that has no bound of its own."""
MAX_REPLICATIONS = 1000
MAX_GAMMA = 64
"""Most tokens a draft model drafts per iteration."""
MAX_CLIENTS = 1_000_000
MAX_BATCH = 65_536
MAX_SIGMA = 10.0
"""Largest log-space standard deviation of a lognormal length (e^10 ~ 22,000x spread)."""


@dataclass(frozen=True)
class Key:
    """One scenario key: its type, default, unit/meaning and an optional check."""

    type: type | tuple[type, ...]
    default: Any
    doc: str
    choices: Callable[[], list[str]] | tuple[str, ...] | None = None
    minimum: float | None = None
    check: Callable[[Any], str | None] | None = None
    """Extra rule for structured values: returns a message if the value is bad."""
    maximum: float | None = None
    """Largest allowed value (numbers). Integers without one are bounded by
    :data:`MAX_INT`: sizes are allocated from them, and a huge one must be refused
    before anything runs, not fail (or hang) half-way."""
    infinite: bool = False
    """A float key that may be ``inf`` (no limit). NaN is never allowed."""

    def allowed(self) -> list[str] | None:
        if self.choices is None:
            return None
        return list(self.choices()) if callable(self.choices) else list(self.choices)


def _tree_paths_problem(value: list) -> str | None:
    if len(value) >= MAX_CANDIDATES:
        return f"has {len(value)} paths; a tree has at most {MAX_CANDIDATES - 1} nodes besides the root"
    for path in value:
        if (not isinstance(path, list) or not path or len(path) > MAX_HEADS
                or not all(isinstance(r, int) and not isinstance(r, bool) and 0 <= r < MAX_RANK for r in path)):
            return (f"expected a list of paths, each a list of 1 to {MAX_HEADS} ranks in [0, {MAX_RANK}), "
                    f"got {path!r}")
    seen = {tuple(p) for p in value}
    for path in value:
        if len(path) > 1 and tuple(path[:-1]) not in seen:
            return f"path {path} has no parent {path[:-1]} in the list (a tree is prefix-closed)"
    return None


def _probabilities_problem(value: list) -> str | None:
    if len(value) > MAX_GAMMA:
        return f"has {len(value)} entries; gamma is at most {MAX_GAMMA}"
    for a in value:
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a < 1:
            return f"expected a list of probabilities in [0, 1), got {a!r}"
    return None


def _trace_columns_problem(value: dict) -> str | None:
    fields = ("arrival_s", "prompt_len", "output_len", "prefix_id", "prefix_len")
    for field, column in value.items():
        if field not in fields:
            return f"maps {field!r}; servesim's trace columns are {', '.join(fields)}"
        if not isinstance(column, str) or not column:
            return f"maps {field} to {column!r}; expected a column name"
    return None


def _percentiles_problem(value: list) -> str | None:
    if not value or len(value) > 20:
        return f"expected a list of 1 to 20 percentiles, got {len(value)} entries"
    for q in value:
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q <= 100:
            return f"expected percentiles in (0, 100], got {q!r}"
    return None


METHODS = ("none", "medusa", "draft_model", "eagle", "eagle3", "mtp", "ngram")
CHAIN_METHODS = ("draft_model", "eagle", "eagle3", "mtp", "ngram")

LENGTH_DISTS = ("fixed", "uniform", "lognormal", "geometric", "empirical")


def _length_keys(kind: str, center: str, default_max: int) -> dict[str, "Key"]:
    """The keys of one length distribution (``prompt_*`` or ``output_*``)."""
    return {
        f"{kind}_dist": Key(str, "fixed", f"{kind} lengths: `fixed` (`{center}`), `uniform`, `lognormal`, `geometric` or `empirical`", choices=LENGTH_DISTS),
        f"{kind}_min": Key(int, 1, f"smallest {kind} (`uniform`)", minimum=1, maximum=MAX_TOKENS),
        f"{kind}_max": Key(int, default_max, f"largest {kind} (`uniform`)", minimum=1, maximum=MAX_TOKENS),
        f"{kind}_sigma": Key(float, 0.5, f"log-space standard deviation (`lognormal`; draws are clipped to [1, {MAX_TOKENS:,}])", minimum=0.0, maximum=MAX_SIGMA),
        f"{kind}_file": Key(str, "", f"CSV/Parquet file to resample {kind} lengths from (`empirical`)"),
        f"{kind}_column": Key(str, f"{kind}_len", "its column (`empirical`)"),
    }


SCHEMA: dict[str, dict[str, Key]] = {
    "": {
        "name": Key(str, None, "scenario name; default output folder is `outputs/<name>/`"),
        "description": Key(str, "", "free text"),
        "seed": Key(int, 0, "root seed; each random stream derives from it and the keys it depends on", minimum=0, maximum=2**64 - 1),
        "replications": Key(int, 1, "independent replications per point; K >= 2 adds `speedup_ci95_low/high` (Student-t interval of the mean speedup) and every summary figure becomes the mean over replications", minimum=1, maximum=MAX_REPLICATIONS),
    },
    "hardware": {
        "gpu": Key(str, "a100-80gb-pcie", "GPU catalog name (`servesim list`)", choices=gpu_names),
        "tensor_parallel_size": Key(int, 1, "GPUs a model is split across (tensor parallelism, vLLM's name): 1, 2, 4 or 8 (must divide the heads and MLP width); weights, heads, KV heads and FLOPs are split, two all-reduces per layer are charged from the GPU's interconnect", check=lambda v: None if v in (1, 2, 4, 8) else f"must be 1, 2, 4 or 8, got {v!r}"),
        "kernel_profile": Key(str, "", "kernel profile: a bundled name (`servesim list`; `medusa-paper` is the seed figure's) or a TOML file from `servesim calibrate`; empty = the GPU's calibrated profile for `serving.framework`'s kernels"),
    },
    "model": {
        "model": Key(str, "llama-7b", "the target model: a catalog name (`servesim list`), the name of a `[model.define.NAME]` table of Hugging Face config fields, or the path of a Hugging Face config.json"),
        "dtype_bytes": Key(int, 2, "bytes per weight, activation and KV element", minimum=1, maximum=8),
        "quantization": Key(str, "none", "the decoder layers' linear layers (q/k/v, o, gate/up, down): `none` (dtype_bytes) or `fp8` (vLLM's `--quantization fp8`, W8A8 with per-tensor scales: one byte a weight, activations written in FP8 by the norm or activation kernel before each GEMM, FP8 tensor cores at the kernel profile's own FP8 GEMM fit); embeddings, lm_head, norms, attention, the KV cache and any drafter stay at dtype_bytes. Needs FP8 tensor cores (not A100 or A10G)", choices=("none", "fp8")),
        "fp8_activation_quantization": Key(str, "fused", "with `quantization = \"fp8\"`: how each FP8 linear layer's input gets to FP8. `fused` (default): the kernel before it (the fused add + RMSNorm, SiLU-and-mul, attention's output) writes it in FP8, no kernel of its own (TRT-LLM's fused norm-quant kernels, vLLM's torch.compile fusion). `standalone`: every FP8 linear layer quantizes its input with kernels of its own, as the framework's measured FP8 layers do (the kernel profile's `fp8_quantize_reads` and `fp8_quantize_fixed_s`: TRT-LLM's a per-tensor scale computed each call, vLLM's and SGLang's one per-token kernel), for a checkpoint without activation scales or a release without the fusion", choices=("fused", "standalone")),
        "kv_cache_dtype": Key(str, "auto", "what the KV cache holds (vLLM's `--kv-cache-dtype`): `auto` (dtype_bytes) or `fp8` (one byte a K or V element: twice the tokens in the same memory; decode attention reads half the bytes at the kernel profile's own FP8-KV decode fit, prefill attention at its 16-bit one)", choices=("auto", "fp8")),
    },
    "speculation": {
        "method": Key(str, "medusa", "`none` (autoregressive only), `medusa` (heads + tree), `draft_model` (a separate model's chain), `eagle` / `eagle3` (one-layer draft head per depth, chain or tree), `mtp` (multi-token-prediction modules, chain) or `ngram` (prompt lookup, no GPU drafting)", choices=METHODS),
        "num_speculative_tokens": Key(int, 3, "`eagle`, `eagle3`, `mtp`, `ngram`: tokens drafted per step (a chain's length, a tree's depth; vLLM's name); for `draft_model` it sets `gamma` when `gamma` is not given", minimum=1, maximum=MAX_GAMMA),
        "eagle_topk": Key(int, 1, "`eagle`/`eagle3`: 1 = a chain (vLLM); k > 1 = EAGLE-2's dynamic tree: each pass expands the top-k nodes by their top-k children, the best candidate_tokens - 1 are verified (SGLang's speculative_eagle_topk)", minimum=1, maximum=64),
        "draft_vocab_size": Key(int, 0, "`eagle3`: the draft head's own vocabulary (0 = 32,000, as released heads); `eagle` uses the target's lm_head", minimum=0, maximum=2**24),
        "mtp_modules": Key(int, 1, "`mtp`: modules with weights of their own (one transformer block each); more tokens reuse the last", minimum=1, maximum=MAX_GAMMA),
        "ngram_match_probability": Key(float, 0.3, "`ngram`: probability that a step finds its suffix earlier in the context and drafts; otherwise it drafts nothing", minimum=0.0, maximum=1.0),
        "propose_time_s": Key(float, 5e-5, "`ngram`: CPU time of the lookup per step (s), charged as its draft stage", minimum=0.0, maximum=1.0),
        "draft_cost_ratio": Key(float, 0.0, "`draft_model`: Leviathan's c, each draft pass costs c x the target's decode step at the same batch and context (0 = the draft model's own roofline cost)", minimum=0.0, maximum=100.0),
        "acceptance_spread": Key(float, 0.0, "standard deviation between requests of the first drafted token's acceptance rate: each request draws its level from a Beta with the model's mean and scales its per-position rates by it (0 = every request alike)", minimum=0.0, maximum=0.5),
        "acceptance_trace": Key(str, "", "CSV/Parquet/JSONL of measured acceptance to replay: columns request_id, num_accepted_tokens (draft tokens accepted per step), optionally step; request i replays the (i mod n)-th traced request"),
        "policy": Key(str, "fixed", "speculation length per step: `fixed` (the longest, always), `batch_threshold` (off, or reduced_length, at batch >= disable_by_batch_size or queue >= disable_by_queue_length) or `goodput` (the length of most expected tokens per second of step time, each step)", choices=("fixed", "batch_threshold", "goodput")),
        "disable_by_batch_size": Key(int, 0, "`batch_threshold`: steps with at least this many decoding sequences run at reduced_length (vLLM's speculative_disable_by_batch_size; 0 = not used)", minimum=0, maximum=MAX_BATCH),
        "disable_by_queue_length": Key(int, 0, "`batch_threshold`: steps taken while at least this many requests wait run at reduced_length (0 = not used)", minimum=0, maximum=MAX_REQUESTS),
        "reduced_length": Key(int, 0, "`batch_threshold`: the length above the threshold (0 = speculation off)", minimum=0, maximum=MAX_GAMMA),
        "candidate_tokens": Key(int, 64, "query tokens per sequence in a verify step, root included (1 = plain decoding)", minimum=1, maximum=MAX_CANDIDATES),
        "acceptance": Key(str, "curve", "Medusa: `curve` (random tokens per step with the curve's mean), `tree` (each head's correct rank drawn from `head_accuracy`, the longest matching tree path accepted) or `fixed` (always `accepted_tokens`)", choices=("curve", "tree", "fixed")),
        "head_accuracy": Key(str, "", "cumulative top-k accuracies: Medusa `tree`: per head, `vicuna-7b`, `vicuna-13b`, `vicuna-33b` (bundled) or a CSV with columns head,top1,top2,... (empty = the target model's bundled table); `eagle`/`eagle3` trees: per draft depth, the same CSV format (head = depth - 1)"),
        "tree": Key(str, "", "for `tree`: a bundled Medusa tree (`mc_sim_7b_63`, `vicuna_7b_stage2`, ...), of which the first `candidate_tokens - 1` nodes are used; empty = the greedy tree of `candidate_tokens` (root + the nodes of highest path probability)"),
        "tree_paths": Key(list, [], "for `tree`: the tree as paths of ranks, e.g. `[[0], [0, 0], [1]]` (prefix-closed); overrides `tree`, and the verify width becomes `len + 1`", check=_tree_paths_problem),
        "draft_model": Key(str, "llama-68m", "for `draft_model`: the draft model, named as `model.model` is (catalog, `[model.define.NAME]` or config.json)"),
        "gamma": Key(int, 4, "for `draft_model`: tokens drafted per iteration, one draft forward pass each; the target verifies `gamma + 1`; `num_speculative_tokens`, when given without `gamma`, sets it", minimum=1, maximum=MAX_GAMMA),
        "alpha": Key(float, 0.7, "chains (`draft_model`, `eagle`/`eagle3` with eagle_topk 1, `mtp`; `ngram` given a match): probability that each drafted token is accepted given the ones before it were", minimum=0.0, maximum=1.0),
        "alpha_per_position": Key(list, [], "chains: acceptance probability of the 1st, 2nd, ... drafted token given the previous ones were accepted (at least gamma, or num_speculative_tokens, entries: the first are used; overrides alpha)", check=_probabilities_problem),
        "acceptance_curve": Key(str, "medusa-sim", "`medusa-sim` (bundled) or a CSV file with columns `candidate_tokens,acceptance_rate`"),
        "accepted_tokens": Key(int, 1, "tokens per verify step when `acceptance = \"fixed\"`", minimum=1, maximum=MAX_CANDIDATES),
        "max_accepted": Key(int, 0, "most tokens one verify step yields (tree depth + 1); 0 = `min(candidate_tokens, num_heads + 1)`", minimum=0, maximum=MAX_CANDIDATES),
        "num_heads": Key(int, 5, "Medusa heads", minimum=1, maximum=MAX_HEADS),
        "include_head_cost": Key(bool, True, "charge the Medusa heads' compute as a `draft` stage"),
    },
    "workload": {
        "arrival": Key(str, "closed", "`closed` (all wait at time 0), `closed_loop` (`clients` clients with think time), `poisson`, `gamma` (bursty, `cv`) or `trace` (`trace_file`)", choices=("closed", "closed_loop", "poisson", "gamma", "trace")),
        "num_requests": Key(int, 32, "requests per arm (not for `trace`)", minimum=1, maximum=MAX_REQUESTS),
        "rate_per_s": Key(float, 1.0, "mean arrival rate, requests per second (`poisson`, `gamma`)", check=lambda v: None if v > 0 else f"must be > 0, got {v!r}", maximum=1e9),
        "cv": Key(float, 1.0, "coefficient of variation of inter-arrival times (`gamma`; 1 = Poisson)", check=lambda v: None if v > 0 else f"must be > 0, got {v!r}", maximum=100.0),
        "clients": Key(int, 4, "concurrent clients (`closed_loop`)", minimum=1, maximum=MAX_CLIENTS),
        "think_time_s": Key(float, 0.0, "mean think time between a client's requests, exponential (`closed_loop`)", minimum=0.0, maximum=1e9),
        "trace_file": Key(str, "", "a trace of requests: with `arrival = \"trace\"` its arrivals and lengths; with another arrival process only its lengths (its rows in order, `num_requests` of them, repeated if fewer); formats: `trace_format`"),
        "trace_format": Key(str, "auto", "`servesim` (CSV/Parquet/JSON lines with `arrival_s`, `prompt_len`, `output_len`, optional `prefix_id`, `prefix_len`), `azure` (the Azure LLM inference trace CSV: `TIMESTAMP`, `ContextTokens`, `GeneratedTokens`), `sharegpt` (JSON conversations: first turn = prompt, second = output; tokens estimated as ceil(characters / 4); no times), `vllm_result` (`vllm bench serve --save-result --save-detailed`: `input_lens`, `output_lens`, `start_times`; failed requests left out) or `auto` (by content)", choices=("auto", "servesim", "azure", "sharegpt", "vllm_result")),
        "trace_columns": Key(dict, {}, "column mapping for other CSV/Parquet layouts, e.g. `{arrival_s = \"ts\", prompt_len = \"input_tokens\", output_len = \"output_tokens\"}` (an arrival column of date-times is read as seconds from the first)", check=_trace_columns_problem),
        "seq_len": Key(int, 512, "prompt length in tokens: the value (`fixed`), median (`lognormal`) or mean (`geometric`)", minimum=1, maximum=MAX_TOKENS),
        **_length_keys("prompt", "seq_len", 1024),
        "shared_prefix_tokens": Key(int, 0, "tokens of a shared prefix every prompt begins with (a system prompt, few-shot examples; at most the prompt); 0 = none", minimum=0, maximum=MAX_TOKENS),
        "num_prefixes": Key(int, 1, "distinct shared prefixes, one drawn uniformly per request", minimum=1, maximum=MAX_REQUESTS),
        "output_len": Key(int, 64, "output tokens, the first one from prefill: the value (`fixed`), median (`lognormal`) or mean (`geometric`)", minimum=1, maximum=MAX_TOKENS),
        **_length_keys("output", "output_len", 256),
    },
    "serving": {
        "framework": Key(str, "vllm", "serving framework whose per-step overhead and kernels are charged: `vllm`, `sglang`, `trtllm` or `none` (kernels only); values and sources in `servesim list`", choices=framework_names),
        "step_overhead_s": Key(float, -1.0, "the framework's fixed time per forward step (s); -1 = `framework`'s value", minimum=-1.0, maximum=1.0, check=lambda v: None if v == -1.0 or v >= 0 else f"must be -1 or in [0, 1], got {v!r}"),
        "step_overhead_per_seq_s": Key(float, -1.0, "the framework's time per sequence in a forward step (s), on top of `step_overhead_s`; -1 = `framework`'s value", minimum=-1.0, maximum=0.01, check=lambda v: None if v == -1.0 or v >= 0 else f"must be -1 or in [0, 0.01], got {v!r}"),
        "batching": Key(str, "static", "`static` (a batch runs until all its requests finish) or `continuous` (iteration-level; policy: `scheduler`)", choices=("static", "continuous")),
        "batch_size": Key(int, 4, "requests per static batch, or most running requests (continuous)", minimum=1, maximum=MAX_BATCH),
        "max_wait_s": Key(float, math.inf, "static: start a partial batch once its oldest request waited this long (s)", minimum=0.0, infinite=True, maximum=1e9),
        "scheduler": Key(str, "", "continuous batching's policy: `vllm` (vLLM V1: decodes first, then prefill chunks within max_num_batched_tokens, mixed into one step), `prefill_first` (each new request's prefill as a step of its own first) or `sglang` (SGLang: a prefill batch within max_num_batched_tokens whenever one can start, never mixed with decodes; decodes otherwise); empty = `framework`'s own (`sglang` for sglang, `vllm` for the others)", choices=("vllm", "prefill_first", "sglang")),
        "enable_prefix_caching": Key(bool, False, "`paged`: keep the full KV blocks of shared prefixes and reuse them instead of prefilling those tokens (vLLM's automatic prefix caching; LRU eviction of unused ones)"),
        "kv_cache": Key(str, "reserve", "KV-cache management: `reserve` (a request reserves prompt + output + lookahead when admitted; no preemption) or `paged` (with scheduler `vllm`: vLLM's blocks allocated as tokens are appended; a request that cannot grow preempts the most recently admitted one, recomputed later)", choices=("reserve", "paged")),
        "block_size": Key(int, 16, "`paged`: tokens per KV block (vLLM's name and default)", minimum=1, maximum=1024),
        "preemption_mode": Key(str, "recompute", "`paged`: what preemption does to a running request's KV: `recompute` (freed; the request re-prefills its prompt and the tokens it generated) or `swap` (copied to CPU memory over the GPU's host link and back when blocks free up; swapped requests resume before new ones are admitted; a victim still in its prefill, or one that does not fit in `swap_space`, is recomputed) (vLLM's `preemption_mode`)", choices=("recompute", "swap")),
        "swap_space": Key(float, 4.0, "`preemption_mode = \"swap\"`: CPU memory for swapped KV blocks per GPU, in GiB (vLLM's `swap_space` and default)", minimum=0.0, maximum=1e6),
        "long_prefill_token_threshold": Key(int, 0, "`vllm`: most tokens of one prompt per step (vLLM's name; 0 = only the budget limits it)", minimum=0, maximum=2**31),
        "max_num_batched_tokens": Key(int, -1, "continuous batching's token budget per step (vLLM's name; 0 = no limit; -1 = `framework`'s default on the GPU: vLLM 8192, 2048 on A100, L40S and A10G; SGLang's chunked_prefill_size 8192, 16384 on B200, 2048 on A10G; TRT-LLM and none 8192): `vllm` counts decode, verify and prefill-chunk tokens and must exceed `batch_size` x the verify width; `prefill_first` and `sglang` count the prompt tokens of a prefill step (a longer prompt runs alone)", minimum=-1, maximum=2**31),
        "gpu_memory_utilization": Key(float, 0.9, "fraction of GPU memory for weights + KV cache; the rest is the activation reserve", check=lambda v: None if 0 < v <= 1 else f"must be in (0, 1], got {v!r}"),
        "kv_capacity_tokens": Key(int, 0, "KV-cache capacity in tokens; 0 = what memory leaves after weights", minimum=0, maximum=2**40),
        "max_sim_time_s": Key(float, math.inf, "stop each arm at this simulated time (s); unfinished requests are reported", check=lambda v: None if v > 0 else f"must be > 0, got {v!r}", infinite=True, maximum=1e12),
        "ttft_slo_s": Key(float, math.inf, "time-to-first-token target for goodput (s)", minimum=0.0, infinite=True, maximum=1e9),
        "tpot_slo_s": Key(float, math.inf, "time-per-output-token target for goodput (s)", minimum=0.0, infinite=True, maximum=1e9),
    },
    "output": {
        "dir": Key(str, "", "output folder (default `outputs/<name>/`); `--out` overrides"),
        "write_steps": Key(bool, True, "write `steps.parquet` (one row per GPU stage)"),
        "write_requests": Key(bool, True, "write `requests.parquet` (one row per request and arm)"),
        "percentiles": Key(list, [50, 90, 95, 99], "latency percentiles of the summary (`<arm>_<metric>_p<q>_s`) and of `summary.json` (`p<q>_<metric>_ms`, as `vllm bench serve --metric-percentiles`); 50 and 99 are always added", check=_percentiles_problem),
        "sample_every": Key(int, 1, "keep the rows of every n-th request and every n-th GPU stage in requests/steps.parquet (the summary is always exact)", minimum=1, maximum=10**9),
    },
}

PROFILE_SECTION = "hardware.profile"
"""Optional table of kernel-profile overrides, keys as in ``KernelProfile``."""
MODEL_SECTION = "model.define"
"""Optional tables of inline model definitions, ``[model.define.NAME]``, with the fields
of a Hugging Face config.json (``servesim.models``)."""

SECTION_OF: dict[str, str] = {k: s for s, keys in SCHEMA.items() for k in keys if s}
"""Section of every bare key (bare keys are unique across sections)."""


@dataclass(frozen=True)
class Point:
    """One sweep point: every key resolved to a value, plus which keys were swept."""

    point_id: int
    values: dict[str, Any]
    swept: tuple[str, ...]
    profile_overrides: dict[str, float]
    model_definitions: tuple = ()
    """Inline models, as :func:`servesim.models.frozen_definitions` gives them."""

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


@dataclass(frozen=True)
class Scenario:
    """A validated scenario: fixed values, sweep lists, and the text it came from."""

    source: str
    text: str
    name: str
    seed: int
    values: dict[str, Any]
    sweep: dict[str, list]
    profile_overrides: dict[str, float]
    model_definitions: tuple = ()
    gamma_from_num_speculative_tokens: bool = False
    """``num_speculative_tokens`` was given and ``gamma`` was not: a draft model drafts
    that many tokens (vLLM's one name for every method)."""

    def points(self) -> list[Point]:
        keys = list(self.sweep)
        points = []
        for i, combo in enumerate(itertools.product(*(self.sweep[k] for k in keys))):
            values = dict(self.values)
            values.update(zip(keys, combo))
            if self.gamma_from_num_speculative_tokens:
                values["gamma"] = values["num_speculative_tokens"]
            values["scheduler"] = scheduler_of(values)
            points.append(Point(i, values, tuple(keys), self.profile_overrides, self.model_definitions))
        return points


def _type_name(t) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a table",
             list: "a list"}
    return names.get(t, getattr(t, "__name__", str(t)))


def check_value(source: str, dotted: str, key: Key, value: Any) -> Any:
    """Check one value against its key; return it (ints widened to float where needed)."""
    ok = isinstance(value, key.type) and not (key.type is not bool and isinstance(value, bool))
    if key.type is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ScenarioError(source, dotted, f"expected {_type_name(key.type)}, got {value!r}")
    if isinstance(value, str) and dotted != "description" and any(ord(c) < 32 and c != "\t" for c in value):
        raise ScenarioError(source, dotted, f"contains a control character (NUL, newline, ...): {value!r}")
    if isinstance(value, str) and len(value) > 4096:
        raise ScenarioError(source, dotted, f"is {len(value)} characters long; at most 4096")
    if key.type is float and (math.isnan(value) or (math.isinf(value) and not key.infinite)):
        raise ScenarioError(source, dotted, f"must be a finite number{' or inf' if key.infinite else ''}, "
                                            f"got {value!r}")
    if key.minimum is not None and value < key.minimum:
        raise ScenarioError(source, dotted, f"must be >= {key.minimum:g}, got {value!r}")
    maximum = key.maximum if key.maximum is not None else (MAX_INT if key.type is int else None)
    if maximum is not None and value > maximum and not (key.infinite and math.isinf(value)):
        raise ScenarioError(source, dotted, f"must be <= {maximum:g}, got {value!r}")
    allowed = key.allowed()
    if allowed is not None and value not in allowed:
        raise ScenarioError(source, dotted, f"{value!r} is not allowed; allowed: {', '.join(allowed)}")
    if key.check is not None:
        problem = key.check(value)
        if problem:
            raise ScenarioError(source, dotted, problem)
    return value


def resolve_key(source: str, name: str) -> tuple[str, str]:
    """(section, key) for a bare or dotted key name; ScenarioError if unknown."""
    if "." in name:
        section, _, key = name.rpartition(".")
        if section in SCHEMA and section and key in SCHEMA[section]:
            return section, key
    elif name in SECTION_OF:
        return SECTION_OF[name], name
    elif name in SCHEMA[""]:
        return "", name
    known = sorted(f"{s}.{k}" if s else k for s, keys in SCHEMA.items() for k in keys)
    raise ScenarioError(source, name, f"unknown key; known keys: {', '.join(known)}")


def _check_profile(source: str, table: Any) -> dict[str, float]:
    """Kernel-profile overrides: fields of ``[hardware.profile]``, and of its variant tables
    (``[hardware.profile.fp8_gemm]``, ``.fp8_kv_decode``, ``.fp8_kv_prefill``) as
    ``"table.field"`` keys."""
    if not isinstance(table, dict):
        raise ScenarioError(source, PROFILE_SECTION, "expected a table")
    flat = {}
    for k, v in table.items():
        if k in VARIANTS and isinstance(v, dict):
            for name, problem in variant_problems(k, v).items():
                raise ScenarioError(source, f"{PROFILE_SECTION}.{k}.{name}", problem)
            flat.update({f"{k}.{name}": value for name, value in v.items()})
            continue
        if k not in PROFILE_FIELDS:
            raise ScenarioError(source, f"{PROFILE_SECTION}.{k}",
                                f"unknown kernel-profile key; allowed: {', '.join(PROFILE_FIELDS)}, or a table "
                                f"{', '.join(VARIANTS)} of FP8 kernels' fields")
        flat[k] = v
    for k, problem in profile_problems({k: v for k, v in flat.items() if "." not in k}).items():
        raise ScenarioError(source, f"{PROFILE_SECTION}.{k}", problem)
    return flat


def _check_definitions(source: str, table: Any) -> dict[str, dict]:
    from servesim.models import ModelError, model_from_fields
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ScenarioError(source, MODEL_SECTION, "expected tables [model.define.NAME] of config fields")
    for name, fields in table.items():
        try:
            model_from_fields(name, fields, f"{MODEL_SECTION}.{name}")
        except ModelError as e:
            raise ScenarioError(source, f"{MODEL_SECTION}.{name}", str(e).split(": ", 1)[1]) from None
    return {name: dict(fields) for name, fields in table.items()}


def parse_override(source: str, assignment: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from ``--set``; VALUE is TOML (bare words are taken as strings)."""
    if "=" not in assignment:
        raise ScenarioError(source, None, f"--set expects KEY=VALUE, got {assignment!r}")
    key, _, text = assignment.partition("=")
    key, text = key.strip(), text.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return key, value


def _apply_override(source: str, raw: dict, key: str, value: Any) -> None:
    """Write one ``--set`` into the raw TOML dict; a fixed value removes that sweep entry."""
    where = f"{source} (--set {key})"

    def table(parent: dict, name: str, dotted: str) -> dict:
        """``parent[name]``, which must be a table (or absent: then a new one)."""
        entry = parent.setdefault(name, {})
        if not isinstance(entry, dict):
            raise ScenarioError(where, dotted, f"is {entry!r} in the file, not a table; cannot set a key inside it")
        return entry

    if key.startswith("sweep."):
        table(raw, "sweep", "sweep")[key.removeprefix("sweep.")] = value
        return
    if key.startswith(PROFILE_SECTION + "."):
        target = table(table(raw, "hardware", "hardware"), "profile", PROFILE_SECTION)
        *inner, name = key.removeprefix(PROFILE_SECTION + ".").split(".")
        for part in inner:  # a variant table: hardware.profile.fp8_gemm.compute_efficiency
            target = table(target, part, f"{PROFILE_SECTION}.{part}")
        target[name] = value
        return
    section, bare = resolve_key(where, key)
    check_value(where, f"{section}.{bare}" if section else bare, SCHEMA[section][bare], value)
    target = table(raw, section, section) if section else raw
    target[bare] = value
    sweep = raw.get("sweep", {})
    for name in list(sweep if isinstance(sweep, dict) else ()):
        if name in (bare, f"{section}.{bare}"):
            del sweep[name]


def load_scenario(path: str | Path, overrides: list[str] = (), text: str | None = None) -> Scenario:
    """Read, override and validate a scenario file; ScenarioError on any bad input."""
    source = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ScenarioError(source, None, f"cannot read file: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise ScenarioError(source, None, f"not UTF-8 text (byte {e.start}); a scenario file is UTF-8 TOML") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(source, None, f"not valid TOML: {e}") from None
    for assignment in overrides:
        _apply_override(source, raw, *parse_override(source, assignment))

    values: dict[str, Any] = {}
    profile: dict[str, float] = {}
    definitions: dict[str, dict] = {}
    for name, entry in raw.items():
        if name == "sweep":
            continue
        if isinstance(entry, dict):
            if name not in SCHEMA or not name:
                sections = [s for s in SCHEMA if s] + ["sweep"]
                raise ScenarioError(source, name, f"unknown section; allowed: {', '.join(sections)}")
            for k, v in entry.items():
                if name == "hardware" and k == "profile":
                    profile = _check_profile(source, v)
                    continue
                if name == "model" and k == "define":
                    definitions = _check_definitions(source, v)
                    continue
                if k not in SCHEMA[name]:
                    raise ScenarioError(source, f"{name}.{k}",
                                        f"unknown key; allowed in [{name}]: {', '.join(SCHEMA[name])}")
                values[k] = check_value(source, f"{name}.{k}", SCHEMA[name][k], v)
        elif name in SCHEMA[""]:
            values[name] = check_value(source, name, SCHEMA[""][name], entry)
        elif name in SCHEMA:
            raise ScenarioError(source, name, f"is a section: expected a table [{name}] of keys, "
                                              f"got {entry!r}, which is not a table")
        else:
            raise ScenarioError(source, name, f"unknown top-level key; allowed: {', '.join(SCHEMA[''])} "
                                "and the sections " + ", ".join(s for s in SCHEMA if s))
    given = set(values)
    for section, keys in SCHEMA.items():
        for k, key in keys.items():
            values.setdefault(k, key.default)
    if values["name"] is None:
        values["name"] = Path(source).stem
    _resolve_paths(source, values)

    sweep: dict[str, list] = {}
    raw_sweep = raw.get("sweep", {})
    if not isinstance(raw_sweep, dict):
        raise ScenarioError(source, "sweep", "expected a table of KEY = [values]")
    for name, entries in raw_sweep.items():
        section, bare = resolve_key(source, name)
        where = f"sweep.{name}"
        if not section or section == "output":
            raise ScenarioError(source, where, "only simulation keys can be swept "
                                "(hardware, model, speculation, workload, serving)")
        if not isinstance(entries, list) or not entries:
            raise ScenarioError(source, where, f"expected a non-empty list, got {entries!r}")
        if bare in sweep:
            raise ScenarioError(source, where, "swept twice")
        sweep[bare] = [check_value(source, where, SCHEMA[section][bare], v) for v in entries]

    from servesim.models import frozen_definitions
    alias = "num_speculative_tokens" in given | set(sweep) and "gamma" not in given | set(sweep)
    scenario = Scenario(source, text, values["name"], values["seed"], values, sweep, profile,
                        frozen_definitions(definitions), alias)
    for point in scenario.points():
        check_point(source, point)
    return scenario


PATH_KEYS = ("trace_file", "prompt_file", "output_file", "acceptance_curve", "head_accuracy", "kernel_profile",
             "acceptance_trace", "model", "draft_model")
"""Keys that may name files; relative paths are tried next to the scenario file first."""


def _resolve_paths(source: str, values: dict) -> None:
    base = Path(source).parent
    for key in PATH_KEYS:
        value = values.get(key)
        if value and not Path(value).is_absolute() and not Path(value).exists():
            candidate = base / value
            if candidate.exists():
                values[key] = str(candidate)


def draft_params(values: dict, definitions: tuple = ()) -> int:
    """Parameters a point's speculation adds to the GPU: Medusa heads, a draft model,
    an EAGLE/EAGLE-3 head or MTP modules (n-gram: none)."""
    from servesim.models import resolve_model
    m = resolve_model(values["model"], definitions)
    method = values["method"]
    d, layer, qkv = m.hidden, m.layer_params, m.q_dim + 2 * m.kv_dim
    if method == "medusa":
        return values["num_heads"] * (d * d + d * m.vocab)
    if method == "draft_model":
        return resolve_model(values["draft_model"], definitions).params
    if method == "eagle":
        return layer + 2 * d * d
    if method == "eagle3":
        return layer + 3 * d * d + d * qkv + (values["draft_vocab_size"] or 32000) * d
    if method == "mtp":
        return values["mtp_modules"] * (layer + 2 * d * d)
    return 0


def weights_bytes(values: dict, definitions: tuple = ()) -> float:
    """Bytes of all weights a point puts on the GPU: the target and its drafter."""
    from servesim.models import resolve_model
    m = resolve_model(values["model"], definitions)
    # FP8 layers: one byte a linear-layer weight (their per-tensor scales are a few bytes)
    quantized = m.linear_params * (values["dtype_bytes"] - 1) if values.get("quantization") == "fp8" else 0
    return (m.params + draft_params(values, definitions)) * values["dtype_bytes"] - quantized


def verify_width(values: dict, definitions: tuple = ()) -> int:
    """Query tokens per sequence of a point's longest verify step."""
    method = values["method"]
    if method == "none":
        return 1
    if method == "draft_model":
        return values["gamma"] + 1
    if method in ("mtp", "ngram"):
        return values["num_speculative_tokens"] + 1
    if method in ("eagle", "eagle3"):
        if values["tree_paths"]:
            return len(values["tree_paths"]) + 1
        k, depth = values["eagle_topk"], values["num_speculative_tokens"]
        if k == 1:
            return depth + 1
        return min(values["candidate_tokens"], 1 + k + (depth - 1) * k * k)
    return len(values["tree_paths"]) + 1 if values["tree_paths"] else values["candidate_tokens"]


def _check_models(source: str, v: dict, definitions: tuple) -> None:
    """The target (and draft) model must resolve: catalog, inline or config.json."""
    from servesim.models import ModelError, model_names, resolve_model
    keys = [("model.model", "model")] + ([("speculation.draft_model", "draft_model")]
                                         if v["method"] == "draft_model" else [])
    for dotted, key in keys:
        try:
            resolve_model(v[key], definitions)
        except KeyError:
            inline = [k for k, _ in definitions]
            raise ScenarioError(source, dotted, f"unknown model {v[key]!r}; allowed: "
                                f"{', '.join(model_names())} (the catalog), an inline model "
                                f"({', '.join(inline) if inline else 'none defined: [model.define.NAME]'}) "
                                "or the path of a Hugging Face config.json") from None
        except ModelError as e:
            raise ScenarioError(source, dotted, str(e)) from None


def _check_quantization(source: str, v: dict) -> None:
    """FP8 linear layers need a GPU with FP8 tensor cores; how their input is quantized
    applies to them only."""
    from servesim.catalog import data_toml
    gpus = data_toml("gpus.toml")
    if v["fp8_activation_quantization"] != "fused" and v["quantization"] != "fp8":
        raise ScenarioError(source, "model.fp8_activation_quantization",
                            f"{v['fp8_activation_quantization']} applies to FP8 linear layers only; set "
                            "model.quantization = \"fp8\" too, or leave it at fused")
    if v["quantization"] == "fp8" and not gpus[v["gpu"]].get("peak_fp8_flops_per_s"):
        able = [name for name, entry in gpus.items() if entry.get("peak_fp8_flops_per_s")]
        raise ScenarioError(source, "model.quantization",
                            f"fp8 needs FP8 tensor cores, which {v['gpu']} has not; GPUs with them: {', '.join(able)}")


def _check_weights_fit(source: str, v: dict, definitions: tuple = ()) -> None:
    """Weights must fit in GPU memory x gpu_memory_utilization (per GPU: 1/tp of them),
    whatever the KV override; the model's heads and MLP width must split over tp."""
    from servesim.catalog import data_toml
    from servesim.models import resolve_model
    tp = v["tensor_parallel_size"]
    m = resolve_model(v["model"], definitions)
    if m.heads % tp or m.intermediate % tp:
        raise ScenarioError(source, "hardware.tensor_parallel_size",
                            f"{tp} does not divide {v['model']}'s {m.heads} attention heads and MLP width "
                            f"{m.intermediate}")
    memory = data_toml("gpus.toml")[v["gpu"]]["memory_bytes"]
    usable = memory * v["gpu_memory_utilization"]
    weights = weights_bytes(v, definitions)
    if weights / tp > usable:
        what = {"medusa": " with its Medusa heads", "draft_model": f" with draft model {v['draft_model']}",
                "eagle": " with its EAGLE head", "eagle3": " with its EAGLE-3 head",
                "mtp": " with its MTP modules"}.get(v["method"], "")
        fitting = [n for n in (1, 2, 4, 8) if weights / n <= usable and not m.heads % n and not m.intermediate % n]
        advice = (f"the smallest tensor_parallel_size that fits on {v['gpu']} is {fitting[0]}" if fitting else
                  f"it does not fit on 8 x {v['gpu']}")
        raise ScenarioError(source, "model.model",
                            f"{v['model']}{what} has {weights / 1e9:.1f} GB of weights "
                            f"({v['dtype_bytes']} bytes per parameter"
                            f"{', FP8 linear layers' if v['quantization'] == 'fp8' else ''}), "
                            f"{weights / tp / 1e9:.1f} GB per GPU at "
                            f"tensor_parallel_size {tp}: more than {v['gpu']}'s {memory / 1e9:.0f} GB x "
                            f"gpu_memory_utilization {v['gpu_memory_utilization']:g} = {usable / 1e9:.1f} GB; {advice}")


def _check_speculation(source: str, v: dict) -> None:
    """Rules of the newer speculation keys (proposers, spread, replay, policies)."""
    method = v["method"]
    if method in ("eagle", "eagle3") and (v["eagle_topk"] > 1 or v["tree_paths"]) and not v["head_accuracy"]:
        raise ScenarioError(source, "speculation.head_accuracy",
                            "an EAGLE tree (eagle_topk > 1 or tree_paths) needs per-depth top-k accuracies: a CSV "
                            "with columns head,top1,top2,... (head = draft depth - 1); chains use alpha")
    if method in ("eagle", "eagle3") and v["head_accuracy"]:
        from servesim.inputs import read_head_accuracy
        if not Path(v["head_accuracy"]).is_file():
            raise ScenarioError(source, "speculation.head_accuracy", f"no such file: {v['head_accuracy']!r}")
        try:
            table = read_head_accuracy(v["head_accuracy"])
        except InputError as e:
            raise ScenarioError(source, "speculation.head_accuracy", str(e)) from None
        depth = max((len(p) for p in v["tree_paths"]), default=0) or v["num_speculative_tokens"]
        if table.shape[0] < depth:
            raise ScenarioError(source, "speculation.head_accuracy",
                                f"has {table.shape[0]} depths; the tree drafts {depth}")
    if v["acceptance_spread"] > 0 and v["acceptance_trace"]:
        raise ScenarioError(source, "speculation.acceptance_spread", "set either acceptance_spread or "
                            "acceptance_trace (a replayed trace carries its own spread)")
    if v["acceptance_trace"]:
        from servesim.inputs import read_acceptance_trace
        try:
            read_acceptance_trace(v["acceptance_trace"])
        except InputError as e:
            raise ScenarioError(source, "speculation.acceptance_trace", str(e)) from None
    if v["policy"] == "batch_threshold" and not (v["disable_by_batch_size"] or v["disable_by_queue_length"]):
        raise ScenarioError(source, "speculation.policy", "`batch_threshold` needs disable_by_batch_size or "
                            "disable_by_queue_length > 0")
    if v["policy"] != "fixed" and v["batching"] != "continuous":
        raise ScenarioError(source, "speculation.policy", f"`{v['policy']}` chooses a length per step of "
                            "continuous batching; set serving.batching = \"continuous\" (or policy = \"fixed\")")


def _check_spread(source: str, point: Point) -> None:
    """A between-request spread must be one a Beta distribution can have."""
    if point["acceptance_spread"] <= 0 or point["method"] == "none":
        return
    from servesim.runner import build_speculator
    from servesim.speculation.acceptance import RequestLevels
    try:
        RequestLevels(build_speculator(point).survival(), point["acceptance_spread"])
    except ValueError as e:
        raise ScenarioError(source, "speculation.acceptance_spread", str(e)) from None


def scheduler_of(values: dict) -> str:
    """The continuous-batching policy a point runs: ``serving.scheduler``, or, where it
    names none, the serving framework's own (``FrameworkProfile.scheduler``)."""
    if values["scheduler"]:
        return values["scheduler"]
    from servesim.hardware import get_framework
    return get_framework(values["framework"]).scheduler


def token_budget_of(values: dict) -> int:
    """A point's token budget of a step: ``serving.max_num_batched_tokens``, or, at -1,
    the serving framework's default on the point's GPU
    (``FrameworkProfile.token_budget``)."""
    if values["max_num_batched_tokens"] >= 0:
        return values["max_num_batched_tokens"]
    from servesim.hardware import get_framework
    return get_framework(values["framework"]).token_budget(values["gpu"])


def check_point(source: str, point: Point) -> None:
    """Rules that involve more than one key, checked for every sweep point."""
    v = point.values
    _check_models(source, v, point.model_definitions)
    _check_quantization(source, v)
    _check_weights_fit(source, v, point.model_definitions)
    _check_speculation(source, v)
    if v["enable_prefix_caching"] and v["kv_cache"] != "paged":
        raise ScenarioError(source, "serving.enable_prefix_caching", "needs kv_cache = \"paged\"")
    if v["preemption_mode"] == "swap" and v["kv_cache"] != "paged":
        raise ScenarioError(source, "serving.preemption_mode", "`swap` needs kv_cache = \"paged\" (with "
                                                               "`reserve` nothing is ever preempted)")
    scheduler = scheduler_of(v)
    if v["kv_cache"] == "paged" and not (v["batching"] == "continuous" and scheduler == "vllm"):
        raise ScenarioError(source, "serving.kv_cache", "`paged` needs batching = \"continuous\" and "
                            f"scheduler = \"vllm\"; this point runs \"{v['batching']}\" batching under "
                            f"\"{scheduler}\" (serving.scheduler, or where it names none serving.framework "
                            f"\"{v['framework']}\"'s own)")
    budget = token_budget_of(v)
    if v["batching"] == "continuous" and scheduler == "vllm" and budget:
        width = verify_width(v, point.model_definitions)
        if budget <= v["batch_size"] * width:
            whose = (f" (serving.framework \"{v['framework']}\"'s default on {v['gpu']})"
                     if v["max_num_batched_tokens"] < 0 else "")
            raise ScenarioError(source, "serving.max_num_batched_tokens",
                                f"{budget}{whose} must exceed batch_size {v['batch_size']} x "
                                f"{width} tokens per sequence per step, so that every running request's "
                                "decode fits in a step with room for prefill")
    if v["kernel_profile"]:
        from servesim.hardware import ProfileError, get_profile, profile_names
        try:
            profile, _ = get_profile(v["kernel_profile"])
        except KeyError:
            raise ScenarioError(source, "hardware.kernel_profile",
                                f"unknown kernel profile {v['kernel_profile']!r}; allowed: "
                                f"{', '.join(profile_names())} or the path of a profile TOML file") from None
        except ProfileError as e:
            raise ScenarioError(source, "hardware.kernel_profile", str(e)) from None
    if v["method"] == "medusa" and v["acceptance"] == "fixed":
        if v["accepted_tokens"] > v["candidate_tokens"]:
            raise ScenarioError(source, "speculation.accepted_tokens",
                                f"{v['accepted_tokens']} exceeds candidate_tokens {v['candidate_tokens']}")
    if v["method"] == "medusa" and v["acceptance"] == "curve":
        from servesim.speculation import acceptance_curve
        if v["acceptance_curve"] != "medusa-sim" and not Path(v["acceptance_curve"]).is_file():
            raise ScenarioError(source, "speculation.acceptance_curve",
                                f"no such file: {v['acceptance_curve']!r}; use 'medusa-sim' or a CSV path")
        try:
            curve = acceptance_curve(v["acceptance_curve"])
        except InputError as e:
            raise ScenarioError(source, "speculation.acceptance_curve", str(e)) from None
        if not min(curve) <= v["candidate_tokens"] <= max(curve):
            raise ScenarioError(source, "speculation.candidate_tokens",
                                f"{v['candidate_tokens']} is outside the acceptance curve's range "
                                f"{min(curve)}..{max(curve)} ({v['acceptance_curve']})")
    if v["method"] == "draft_model" and v["alpha_per_position"] and len(v["alpha_per_position"]) < v["gamma"]:
        raise ScenarioError(source, "speculation.alpha_per_position",
                            f"has {len(v['alpha_per_position'])} entries, gamma is {v['gamma']} (the first gamma "
                            "are used)")
    if (v["method"] in CHAIN_METHODS and v["method"] != "draft_model" and v["alpha_per_position"]
            and len(v["alpha_per_position"]) < v["num_speculative_tokens"]):
        raise ScenarioError(source, "speculation.alpha_per_position",
                            f"has {len(v['alpha_per_position'])} entries, num_speculative_tokens is "
                            f"{v['num_speculative_tokens']} (the first num_speculative_tokens are used)")
    if v["method"] == "draft_model" and not v["alpha"] < 1:
        raise ScenarioError(source, "speculation.alpha", f"must be in [0, 1), got {v['alpha']!r}")
    if v["method"] == "medusa" and v["acceptance"] == "tree":
        from servesim.speculation.trees import BUNDLED_ACCURACY, bundled_tree_names
        table = v["head_accuracy"] or v["model"]
        if table not in BUNDLED_ACCURACY and not Path(table).is_file():
            raise ScenarioError(source, "speculation.head_accuracy",
                                f"{table!r} is neither a bundled table "
                                f"({', '.join(BUNDLED_ACCURACY)}) nor a CSV file"
                                + ("" if v["head_accuracy"] else " (empty means the model's own table)"))
        if table not in BUNDLED_ACCURACY:
            from servesim.inputs import read_head_accuracy
            try:
                read_head_accuracy(table)
            except InputError as e:
                raise ScenarioError(source, "speculation.head_accuracy", str(e)) from None
        if v["tree"] and v["tree"] not in bundled_tree_names():
            raise ScenarioError(source, "speculation.tree",
                                f"unknown tree {v['tree']!r}; allowed: {', '.join(bundled_tree_names())} or empty (greedy)")
        if v["tree"]:
            from servesim.speculation.trees import published_tree
            size = len(published_tree(v["tree"])) + 1
            if v["candidate_tokens"] > size:
                raise ScenarioError(source, "speculation.candidate_tokens",
                                    f"{v['candidate_tokens']} exceeds the {size} tokens of tree {v['tree']!r}")
    if v["arrival"] == "trace" and not v["trace_file"]:
        raise ScenarioError(source, "workload.trace_file", "required when arrival = 'trace'")
    if v["trace_file"]:
        from servesim.inputs import read_trace_columns
        try:
            arrivals = read_trace_columns(v["trace_file"], v["trace_format"], v["trace_columns"] or None)[0]
        except InputError as e:
            raise ScenarioError(source, "workload.trace_file", str(e)) from None
        if v["arrival"] == "trace" and arrivals is None:
            raise ScenarioError(source, "workload.arrival", f"'trace', but {v['trace_file']} has no arrival times "
                                "(a ShareGPT file, or a vLLM result without start_times): use poisson, gamma, "
                                "closed or closed_loop to take only its lengths")
    for kind in ("prompt", "output"):
        if v[f"{kind}_dist"] == "uniform" and v[f"{kind}_min"] > v[f"{kind}_max"]:
            raise ScenarioError(source, f"workload.{kind}_min", f"{v[kind + '_min']} exceeds {kind}_max {v[kind + '_max']}")
        if v[f"{kind}_dist"] == "empirical":
            from servesim.inputs import length_column
            try:
                length_column(v[f"{kind}_file"], v[f"{kind}_column"])
            except InputError as e:
                raise ScenarioError(source, f"workload.{kind}_file", str(e)) from None
    if v["max_accepted"] > v["candidate_tokens"]:
        raise ScenarioError(source, "speculation.max_accepted",
                            f"{v['max_accepted']} exceeds candidate_tokens {v['candidate_tokens']}")
    _check_spread(source, point)
