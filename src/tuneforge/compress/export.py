"""Export: a model artifact (or HF folder, or built-in) → GGUF for llama.cpp / Ollama, parity-checked.

Route, offline: llama.cpp's own `convert_hf_to_gguf.py` (from the llama-cpp-python sdist's vendored
sources, with its `gguf-py`) writes F16 or Q8_0; 4-bit types go through `llama-quantize` built from
the same sources. The result is checked before anything is written: the GGUF's chat template must
equal the model's, and llama.cpp (through llama-cpp-python) must answer like the parent on the
parity prompts (greedy agreement, teacher-forced |Δlogit|).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tuneforge.compress.parity import check, describe
from tuneforge.core.artifacts import Artifact, create_artifact, is_artifact, load_artifact
from tuneforge.core.config import CompressConfig
from tuneforge.core.errors import CompressError
from tuneforge.core.progress import console
from tuneforge.models import load
from tuneforge.models.chat_template import template_hash, tokenizer_hash

# outtype → (converter --outtype, llama-quantize type or None)
GGUF_TYPES = {"f16": ("f16", None), "q8_0": ("q8_0", None), "q4_k_m": ("f16", "Q4_K_M"), "q4_0": ("f16", "Q4_0")}
GGUF_FILE = "model.gguf"


def hf_folder(model_ref: str) -> Path:
    """The Hugging Face folder behind a model artifact, an HF folder or the built-in smollm2-135m."""
    from tuneforge.models.loader import SMOLLM2, smollm2_model_dir

    if model_ref == SMOLLM2:
        return smollm2_model_dir()
    path = Path(model_ref)
    if is_artifact(path):
        artifact = load_artifact(path)
        if artifact.kind == "adapter":
            raise CompressError(f"{path} is an adapter; export its merged model: tuneforge compress merge {path} "
                                "-o MERGED, then export MERGED")
        if artifact.kind != "model":
            raise CompressError(f"{path} is a {artifact.kind} artifact, not a model")
        if artifact.manifest.get("compression", {}).get("operation") == "quantize":
            raise CompressError(f"{path} is int8-quantized for tuneforge's engine; export its parent (the GGUF "
                                "types quantize on their own: --type q8_0 or q4_k_m)")
        return path
    if (path / "config.json").is_file():
        return path
    raise CompressError(f"cannot export {model_ref!r}: not a model artifact, a Hugging Face folder or smollm2-135m")


def supported_architectures(source: Path) -> list[str]:
    """The `architectures` names llama.cpp's converter registers (parsed from its sources)."""
    names: set[str] = set()
    for file in [source / "convert_hf_to_gguf.py", *sorted((source / "conversion").glob("*.py"))]:
        if file.is_file():
            for group in re.findall(r"ModelBase\.register\(([^)]*)\)", file.read_text(encoding="utf-8")):
                names.update(re.findall(r"\"([A-Za-z0-9_]+)\"", group))
    return sorted(names)


class GGUFSide:
    """A GGUF run by llama.cpp, for the parity check: greedy continuation and teacher-forced logits."""

    def __init__(self, gguf: Path, context: int = 2048) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf), n_ctx=context, logits_all=True, verbose=False)

    def greedy(self, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
        self.llm.reset()
        out: list[int] = []
        for token in self.llm.generate(prompt_ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
            out.append(int(token))
            if len(out) == max_new_tokens or token == self.llm.token_eos():
                break
        return out

    def logits(self, ids: list[int]):
        import torch

        self.llm.reset()
        self.llm.eval(ids)
        return torch.from_numpy(self.llm.scores[: len(ids)].copy()).float()

    def close(self) -> None:
        self.llm.close()


def gguf_chat_template(path: Path) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(str(path)).fields.get("tokenizer.chat_template")
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def export_gguf(model_ref: str, output: str | Path, cfg: CompressConfig, outtype: str = "q8_0") -> Artifact:
    """Write a GGUF model artifact (`model.gguf`) of `model_ref`, parity-checked through llama.cpp."""
    from tuneforge.models.llamacpp import llama_cpp_source, llama_cpp_tool

    if outtype not in GGUF_TYPES:
        raise CompressError(f"GGUF type {outtype!r} is not one of {', '.join(GGUF_TYPES)}")
    folder = hf_folder(model_ref)
    architecture = (json.loads((folder / "config.json").read_text()).get("architectures") or ["?"])[0]
    source = llama_cpp_source()
    known = supported_architectures(source)
    if architecture not in known:
        raise CompressError(f"llama.cpp's converter does not know {architecture}; it converts {len(known)} "
                            f"architectures, e.g. {', '.join(n for n in known if 'Llama' in n or 'Qwen' in n)}")
    parent = load(model_ref)
    convert_type, quant_type = GGUF_TYPES[outtype]
    with tempfile.TemporaryDirectory(prefix="tuneforge-gguf-") as tmp:
        converted = Path(tmp) / f"model-{convert_type}.gguf"
        env = {**os.environ, "PYTHONPATH": str(source / "gguf-py")}
        with console.status(f"converting {folder.name} to GGUF ({convert_type}) with llama.cpp's converter"):
            run = subprocess.run([sys.executable, str(source / "convert_hf_to_gguf.py"), str(folder), "--outfile",
                                  str(converted), "--outtype", convert_type], env=env, capture_output=True, text=True)
        if run.returncode != 0:
            raise CompressError(f"llama.cpp's converter failed on {folder}:\n{run.stderr[-2000:]}")
        final = converted
        if quant_type is not None:
            final = Path(tmp) / f"model-{outtype}.gguf"
            with console.status(f"llama-quantize → {quant_type}"):
                run = subprocess.run([str(llama_cpp_tool("llama-quantize")), str(converted), str(final), quant_type],
                                     capture_output=True, text=True)
            if run.returncode != 0:
                raise CompressError(f"llama-quantize failed:\n{run.stderr[-2000:]}")
        template = gguf_chat_template(final)
        if template != parent.tokenizer.chat_template:
            raise CompressError("the GGUF's chat template differs from the model's; nothing written "
                                f"(GGUF: {str(template)[:80]!r}…)")
        side = GGUFSide(final)
        try:
            with console.status(f"parity check: GGUF {outtype} through llama.cpp vs {folder.name}"):
                report = check(parent, side, cfg.parity, "lossy")
        finally:
            side.close()
        console.print(describe(report))
        if not report["passed"]:
            raise CompressError(f"GGUF export failed its parity check, nothing written:\n{describe(report)}")
        spec: dict[str, Any] = {"operation": "export", "format": "gguf", "type": outtype,
                                "converter": "llama.cpp convert_hf_to_gguf.py", "quantizer": quant_type,
                                "architecture": architecture}
        parents = [load_artifact(folder).ref()] if is_artifact(folder) else []
        config = {"compress": cfg.model_dump(mode="json"), **spec}
        with create_artifact(output, "model", config=config, parents=parents) as writer:
            shutil.copyfile(final, writer.path / GGUF_FILE)
            parent.tokenizer.save_pretrained(writer.path)
            record_export(writer, report, spec, parents, model_ref, parent.tokenizer, final.stat().st_size)
    return load_artifact(output, kind="model")


def record_export(writer: Any, report: dict[str, Any], spec: dict[str, Any], parents: list[Any], model_ref: str,
                  tokenizer: Any, size: int) -> None:
    """What an export artifact records besides its file: the parity report, size, spec, parent, template."""
    (writer.path / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    writer.metrics.update({"parity": {k: v for k, v in report.items() if k != "disagreements"}, "size_bytes": size})
    writer.extra.update({
        "base_model": str(model_ref),
        "compression": {**spec, "parent": parents[0].content_hash if parents else str(model_ref)},
        "chat_template_hash": template_hash(tokenizer), "tokenizer_hash": tokenizer_hash(tokenizer)})
