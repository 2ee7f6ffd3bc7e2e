"""The scenario reference, written from :data:`servesim.scenario.SCHEMA` (its one source).

``servesim schema`` prints it (Markdown, or JSON with ``--format json``); README's
reference table and ``docs/reference.md`` are this output, and a test keeps them so.
"""

from __future__ import annotations

import json
import math

from servesim.scenario import MODEL_SECTION, PROFILE_SECTION, SCHEMA, Key

TYPE_NAMES = {str: "str", int: "int", float: "float", bool: "bool", list: "list", dict: "table"}

EXTRA_ROWS = {
    "hardware.kernel_profile": (f"{PROFILE_SECTION}.*", "number", "catalog",
                                "kernel-profile overrides, e.g. `bandwidth_efficiency = 0.8` (the fields of "
                                "`KernelProfile`, servesim/hardware/kernel_profile.py); the FP8 kernels' own in "
                                f"`[{PROFILE_SECTION}.fp8_gemm]`, `.fp8_kv_decode`, `.fp8_kv_prefill` "
                                "(`--set hardware.profile.fp8_gemm.compute_efficiency=0.7`)"),
    "model.model": (f"{MODEL_SECTION}.NAME.*", "table", "—",
                    "an inline model `NAME` with Hugging Face config.json fields (`hidden_size`, "
                    "`num_hidden_layers`, `num_attention_heads`, `num_key_value_heads`, `intermediate_size`, "
                    "`vocab_size`, `head_dim`, `tie_word_embeddings`), usable as `model.model` or "
                    "`speculation.draft_model`"),
}
"""Tables that are not keys of their own, listed after the key they belong with."""

BEGIN, END = "<!-- scenario reference: begin (servesim schema) -->", "<!-- scenario reference: end -->"


def _default(name: str, key: Key) -> str:
    value = key.default
    if value is None:
        return "(file name)" if name == "name" else "—"
    if isinstance(value, bool):
        return f"`{'true' if value else 'false'}`"
    if isinstance(value, float):
        return "`inf`" if math.isinf(value) else f"`{value!r}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{json.dumps(value)}`"
    return f"`{json.dumps(value)}`"


def reference_rows() -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) for every key, in schema order."""
    rows = []
    for section, keys in SCHEMA.items():
        for name, key in keys.items():
            dotted = f"{section}.{name}" if section else name
            types = key.type if isinstance(key.type, tuple) else (key.type,)
            rows.append((dotted, "/".join(TYPE_NAMES.get(t, t.__name__) for t in types), _default(name, key),
                         key.doc))
            if dotted in EXTRA_ROWS:
                rows.append(EXTRA_ROWS[dotted])
    return rows


def reference_markdown() -> str:
    """The reference as a Markdown table (between the README markers)."""
    lines = ["| key | type | default | meaning (units) |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {t} | {d} | {doc} |" for k, t, d, doc in reference_rows()]
    return "\n".join(lines) + "\n"


def reference_json() -> str:
    """The schema as JSON: per key its type, default, meaning and bounds or choices."""
    out = {}
    for section, keys in SCHEMA.items():
        for name, key in keys.items():
            types = key.type if isinstance(key.type, tuple) else (key.type,)
            default = key.default
            if isinstance(default, float) and math.isinf(default):
                default = "inf"
            entry = {"type": "/".join(TYPE_NAMES.get(t, t.__name__) for t in types), "default": default,
                     "doc": key.doc}
            if key.allowed() is not None:
                entry["choices"] = key.allowed()
            if key.minimum is not None:
                entry["minimum"] = key.minimum
            if key.maximum is not None:
                entry["maximum"] = key.maximum
            out[f"{section}.{name}" if section else name] = entry
    return json.dumps(out, indent=1) + "\n"
