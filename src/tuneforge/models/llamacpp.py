"""llama.cpp's own tools, from the llama-cpp-python sdist's vendored sources: the HF → GGUF converter,
`llama-quantize` (GGUF export) and `llama-server` (the serving benchmark's peer).

Nothing is committed or downloaded beyond the package index: `pip download` fetches the sdist, cmake
builds only the target asked for (a few minutes on 2 cores, once; cached under ~/.cache/tuneforge/llama.cpp).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from tuneforge.core.errors import TuneforgeError
from tuneforge.core.paths import cache_dir
from tuneforge.core.progress import console

LLAMA_CPP_PYTHON = "0.3.36"


def llama_cpp_source(version: str = LLAMA_CPP_PYTHON) -> Path:
    """llama.cpp's source tree (converter scripts, gguf-py, CMake project), from the llama-cpp-python sdist."""
    root = cache_dir() / "llama.cpp" / version
    source = root / "src"
    if (source / "convert_hf_to_gguf.py").is_file():
        return source
    root.mkdir(parents=True, exist_ok=True)
    sdist_dir = root / "sdist"
    console.print(f"fetching llama.cpp sources (llama-cpp-python {version} sdist), once…")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    f"llama-cpp-python=={version}", "-d", str(sdist_dir)], check=True)
    archive = next(sdist_dir.glob("llama_cpp_python-*.tar.gz"))
    extract = root / "extract"
    shutil.rmtree(extract, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(extract, filter="data")
    if source.is_symlink():
        source.unlink()
    shutil.rmtree(source, ignore_errors=True)
    shutil.move(str(next(extract.glob("llama_cpp_python-*")) / "vendor" / "llama.cpp"), str(source))
    shutil.rmtree(extract, ignore_errors=True)
    return source


def llama_cpp_tool(name: str, version: str = LLAMA_CPP_PYTHON) -> Path:
    """Path of a built llama.cpp program (`llama-server`, `llama-quantize`), building it first if needed."""
    root = cache_dir() / "llama.cpp" / version
    # Built without Intel AMX: on VMs that advertise it (Firecracker here) the first tile instruction of a
    # -march=native build dies with SIGILL although the kernel grants the AMX state.
    build = root / "build-noamx"
    binary = build / "bin" / name
    if binary.is_file():
        return binary
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise TuneforgeError(f"building {name} needs {tool} (apt-get install -y cmake g++)")
    source = llama_cpp_source(version)
    console.print(f"building {name} from llama.cpp sources (once, a few minutes)…")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    no_amx = " ".join(f"-mno-{feature}" for feature in ("amx-tile", "amx-int8", "amx-bf16"))
    flags = [f"-DCMAKE_C_FLAGS={no_amx}", f"-DCMAKE_CXX_FLAGS={no_amx}"]
    subprocess.run(["cmake", "-S", str(source), "-B", str(build), *generator, "-DCMAKE_BUILD_TYPE=Release",
                    "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                    "-DLLAMA_BUILD_EXAMPLES=OFF", "-DGGML_NATIVE=ON", *flags], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "--target", name, "-j"], check=True, stdout=subprocess.DEVNULL)
    return binary


def start_llama_server(gguf: Path, port: int, parallel: int, ctx_per_slot: int, threads: int,
                       log: Path) -> subprocess.Popen:
    """`llama-server` on loopback with `parallel` slots (continuous batching is its default)."""
    command = [str(llama_cpp_tool("llama-server")), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
               "-np", str(parallel), "-c", str(parallel * ctx_per_slot), "-t", str(threads), "--no-webui"]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
