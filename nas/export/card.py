"""The model card (``README.md``) of an exported model directory."""
from __future__ import annotations

from typing import Any

from nas.export.config import ModelConfig
from nas.export.formats import FILE_NAMES
from nas.mixer_registry import get_mixer

__all__ = ["model_card"]


def _fmt(value: Any, unit: str = "", digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def _stage_rows(config: ModelConfig) -> list[str]:
    rows = ["| stage | depth | dim | stride | mixer | heads | mlp ratio | norm | act |",
            "|---:|---:|---:|---:|---|---:|---:|---|---|"]
    for i, s in enumerate(config.arch.stages):
        spec = get_mixer(s.mixer)
        mixer = s.mixer + (f" ({s.pattern})" if "pattern" in spec.dims else "")
        if s.keep_ratio < 1:
            mixer += f", keep {s.keep_ratio} ({s.reduce_method})"
        heads = s.heads if spec.attention else "-"
        rows.append(f"| {i} | {s.depth} | {s.embed_dim} | {s.stride} | {mixer} | {heads} | "
                    f"{s.mlp_ratio:g} | {s.norm} | {s.act} |")
    return rows


def _malloc_note() -> list[str]:
    from nas.latency.allocator import MALLOC_ENV, PINNED, malloc_regime

    if malloc_regime() != PINNED:  # NAS_MALLOC=default, or not glibc: timed as deployed
        return []
    env = " ".join(f"{k}={v}" for k, v in MALLOC_ENV.items())
    return ["", f"CPU latencies were timed with glibc malloc's page reuse pinned; run inference "
            f"with `{env}` in the environment (or jemalloc/tcmalloc) to get them: with glibc's "
            "adaptive default, a forward that creates multi-MiB tensors can fault in fresh pages "
            "on every call (`nas/latency/allocator.py`)."]


def model_card(config: ModelConfig, checks: dict[str, float]) -> str:
    """Markdown model card: what the model is, how well and how fast, how to use it."""
    m, src, p = config.metrics, config.source, config.preprocessing
    files = [f"- `{FILE_NAMES['safetensors']}`: weights (safetensors)", "- `config.json`: "
             "architecture, preprocessing, provenance (also read by timm)"]
    for name, diff in checks.items():
        files.append(f"- `{FILE_NAMES[name]}`: {name}, checked against the eager model "
                     f"(max abs diff {diff:.1e})")
    lat = m.get("latency_ms", {})
    lines = [
        f"# vitnas model `{src.get('name', 'model')}`",
        "",
        f"A vision transformer found by hardware-aware NAS in search space "
        f"`{config.space_name}` (fingerprint `{config.space_fingerprint}`), exported by "
        f"`nas export`. {config.num_classes} classes, {p.resolution}x{p.resolution} "
        f"{config.in_chans}-channel input.",
        "",
        "## Figures",
        "",
        "| | |",
        "|---|---|",
        f"| parameters | {_fmt(m.get('params'))} |",
        f"| MACs (batch 1) | {_fmt(m.get('macs'))} |",
        f"| validation accuracy | {_fmt(m.get('val_acc'))} ({src.get('data', '?')}, "
        f"{_fmt(m.get('val_images'))} images) |",
        f"| accuracy with inherited weights | {_fmt(m.get('inherited_acc'))} |",
        f"| predicted latency (table) | {_fmt(lat.get('predicted'), ' ms')} |",
        f"| measured latency (this machine) | {_fmt(lat.get('measured'), ' ms')} "
        f"({lat.get('setting', 'n/a')}) |",
        "",
        f"Fine-tuning: {src.get('finetune_epochs', 0)} epoch(s) of distillation from the "
        f"supernet's largest subnet. BatchNorm folded: {config.bn_folded}; attention "
        f"projections fused: {config.qkv_fused}; oneDNN linears: {config.onednn_linears}"
        + (" (each kept if it made the model more than 2% faster, as timed at export; "
           "time with / without: "
           + ", ".join(f"{k} {v:.3f}" for k, v in lat["rewrite_effects"].items()) + ")"
           if lat.get("rewrite_effects") else "") + ".",
        *(_malloc_note() if str(lat.get("setting", "")).startswith("cpu") else []),
        "",
        "## Architecture",
        "",
        f"Stem `{config.arch.stem}` (stride {config.arch.stem_stride}), then:",
        "",
        *_stage_rows(config),
        "",
        "## Preprocessing",
        "",
        f"Resize to {p.resolution}x{p.resolution} ({p.interpolation}), scale to [0, 1], "
        f"normalise with mean {list(p.mean)} and std {list(p.std)} (dataset `{p.data}`).",
        "",
        "## Usage",
        "",
        "```python",
        "import nas, nas.export, timm, torch  # nas.export registers the timm name 'vitnas'",
        "model = nas.load_model('.')  # safetensors + JSON, no pickle",
        f"logits = model(torch.randn(1, {config.in_chans}, {p.resolution}, {p.resolution}))",
        "model = timm.create_model('local-dir:.', pretrained=True)",
        "cfg = timm.data.resolve_data_config(model=model)  # timm's transforms apply",
        "```",
        "",
        "## Files",
        "",
        *files,
        "",
        "## Provenance",
        "",
        f"- supernet run: `{src.get('run_dir', '?')}` (epoch {src.get('epoch', '?')})",
        f"- command: `{src.get('command', '?')}`",
        f"- exported: {src.get('date', '?')}, torch {src.get('torch', '?')}",
        "",
    ]
    return "\n".join(lines)
