"""llama.cpp's `llama-server`, built from the llama-cpp-python sdist's vendored sources, for benchmarks.

Nothing is committed or downloaded beyond the package index: `pip download` fetches the sdist, cmake
builds the one target (a few minutes on 2 cores, once; cached under ~/.cache/tuneforge/llama.cpp).
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


def llama_server_binary(version: str = LLAMA_CPP_PYTHON) -> Path:
    """Path of a built `llama-server`, building it first if needed."""
    root = cache_dir() / "llama.cpp" / version
    binary = root / "build" / "bin" / "llama-server"
    if binary.is_file():
        return binary
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise TuneforgeError(f"building llama-server needs {tool} (apt-get install -y cmake g++)")
    root.mkdir(parents=True, exist_ok=True)
    sdist_dir = root / "sdist"
    console.print(f"building llama-server from llama-cpp-python {version} sources (once, a few minutes)…")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    f"llama-cpp-python=={version}", "-d", str(sdist_dir)], check=True)
    archive = next(sdist_dir.glob("llama_cpp_python-*.tar.gz"))
    source = root / "src"
    if not source.exists():
        with tarfile.open(archive) as tar:
            tar.extractall(root / "extract", filter="data")
        shutil.move(next((root / "extract").glob("llama_cpp_python-*")) / "vendor" / "llama.cpp", source)
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(["cmake", "-S", str(source), "-B", str(root / "build"), *generator, "-DCMAKE_BUILD_TYPE=Release",
                    "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                    "-DLLAMA_BUILD_EXAMPLES=OFF", "-DGGML_NATIVE=ON"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(root / "build"), "--target", "llama-server", "-j"], check=True,
                   stdout=subprocess.DEVNULL)
    shutil.rmtree(root / "extract", ignore_errors=True)
    return binary


def start_llama_server(gguf: Path, port: int, parallel: int, ctx_per_slot: int, threads: int,
                       log: Path) -> subprocess.Popen:
    """`llama-server` on loopback with `parallel` slots (continuous batching is its default)."""
    command = [str(llama_server_binary()), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
               "-np", str(parallel), "-c", str(parallel * ctx_per_slot), "-t", str(threads), "--no-webui"]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
