"""benchmarks/serve_bench.py's logic: arguments, SSE parsing, rates, paired ratios, targets, batched-bench parsing,
and (slow) one tiny end-to-end run against a real ``kaiyuan serve``. No timing is asserted: the figures depend on
the machine."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from benchmarks._machine import cpu_info

from benchmarks import _serve_client as client
from benchmarks import _serve_peers as peers
from benchmarks import _serve_report as report
from benchmarks import serve_bench

# -- arguments -----------------------------------------------------------------------------------------------


def test_quick_preset_fills_only_what_was_not_given() -> None:
    args = serve_bench.parse_args(["--quick", "--max-tokens", "8"])
    assert (args.rounds, args.max_tokens, args.single_runs) == (1, 8, 1)
    full = serve_bench.parse_args([])
    assert (full.rounds, full.max_tokens, full.threads, full.parallel) == (3, 128, 2, 8)
    assert full.peers == ["kaiyuan", "llama-server", "llama-cpp-python"]


@pytest.mark.parametrize(
    "argv", [["--peers", "kaiyuan,vllm"], ["--max-tokens", "1"], ["--rounds", "0"], ["--threads", "0"]]
)
def test_bad_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        serve_bench.parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_round_order_rotates() -> None:
    items = ["a", "b", "c"]
    orders = [serve_bench.round_order(items, r) for r in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert {o[0] for o in orders} == set(items)


def test_system_prompt_reaches_the_length_and_starts_with_its_tag() -> None:
    def words(text: str) -> int:
        return len(text.split())

    text = serve_bench.system_prompt("t-1", 300, words)
    assert text.startswith("Session t-1.")
    assert 300 <= words(text) < 300 + 40
    assert serve_bench.system_prompt("t-2", 300, words)[len("Session t-2") :] == text[len("Session t-1") :]


# -- client: SSE and rates -----------------------------------------------------------------------------------


def _feed(lines: list[str], times: list[float]) -> client.StreamResult:
    result = client.StreamResult(sent=0.0)
    for line, t in zip(lines, times, strict=True):
        obj = client.parse_sse_data(line)
        if obj is not None:
            client.absorb_chunk(result, obj, t)
    return result


def _chunk(content: str | None = None, finish: str | None = None, role: bool = False) -> str:
    delta: dict[str, str] = {"role": "assistant"} if role else {}
    if content is not None:
        delta["content"] = content
    return "data: " + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def test_sse_role_chunk_is_not_a_token_and_usage_wins_over_chunk_count() -> None:
    lines = [
        _chunk("", role=True),
        "",
        _chunk("Hel"),
        _chunk("lo"),
        ": keep-alive comment",
        _chunk(finish="length"),
        'data: {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3, '
        '"prompt_tokens_details": {"cached_tokens": 4}}}',
        "data: [DONE]",
    ]
    result = _feed(lines, [0.1, 0.1, 0.5, 1.5, 1.5, 1.6, 1.6, 1.6])
    assert result.token_times == [0.5, 1.5]
    assert result.ttft == 0.5
    assert (result.completion_tokens, result.prompt_tokens, result.cached_tokens) == (3, 9, 4)
    assert result.finish_reason == "length"
    assert result.decode_rate == pytest.approx(
        2 / 1.0
    )  # (3 tokens - 1) over 1 s between first and last chunk


def test_without_usage_each_content_chunk_counts_as_a_token() -> None:
    result = _feed([_chunk("a"), _chunk("b"), _chunk("c")], [1.0, 1.25, 1.5])
    assert result.tokens == 3
    assert result.decode_rate == pytest.approx(4.0)
    assert client.StreamResult(sent=0.0).decode_rate is None


def test_request_body_bans_end_tokens_and_asks_for_usage() -> None:
    body = client.chat_body("m", [{"role": "user", "content": "hi"}], 16, [0, 2])
    assert body["logit_bias"] == {"0": -100, "2": -100}
    assert body["temperature"] == 0.0 and body["max_tokens"] == 16
    assert body["stream_options"] == {"include_usage": True}
    assert "stream_options" not in client.chat_body("m", [], 1, [], stream=False)


def _flaky_transport(failures: int, calls: list[int]) -> httpx.MockTransport:
    """A server whose first ``failures`` requests hit a connection it had closed; then it streams 2 tokens."""
    sse = "\n\n".join([_chunk("a"), _chunk("b"), _chunk(finish="length"), "data: [DONE]"]) + "\n\n"

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) <= failures:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        if request.url.path == "/bad":
            return httpx.Response(500, text="boom")
        return httpx.Response(200, content=sse.encode(), headers={"content-type": "text/event-stream"})

    return httpx.MockTransport(handle)


@pytest.mark.parametrize(
    ("failures", "sends", "error"), [(0, 1, None), (1, 2, None), (2, 2, "RemoteProtocolError")]
)
def test_a_dead_kept_alive_connection_is_retried_once(failures: int, sends: int, error: str | None) -> None:
    calls: list[int] = []

    async def go() -> client.StreamResult:
        async with httpx.AsyncClient(transport=_flaky_transport(failures, calls)) as http:
            return await client.stream_chat(http, "http://test/v1/chat/completions", {"stream": True})

    result = asyncio.run(go())
    assert len(calls) == sends
    if error is None:
        assert result.error is None and result.tokens == 2 and result.finish_reason == "length"
    else:
        assert result.error is not None and result.error.startswith(error)


def test_an_http_error_is_recorded_not_retried() -> None:
    calls: list[int] = []

    async def go() -> client.StreamResult:
        async with httpx.AsyncClient(transport=_flaky_transport(0, calls)) as http:
            return await client.complete_chat(http, "http://test/bad", {})

    result = asyncio.run(go())
    assert len(calls) == 1
    assert result.error == "HTTP 500: boom" and result.tokens == 0


def _stream(times: list[float]) -> client.StreamResult:
    return client.StreamResult(sent=0.0, end=times[-1], token_times=times)


def test_concurrent_rates_overlapping_and_one_at_a_time() -> None:
    together = client.ConcurrentResult([_stream([1.0, 2.0, 3.0]), _stream([1.0, 2.0, 3.0])], 0.0, 3.0)
    assert together.aggregate_rate == pytest.approx(6 / 3.0)
    assert together.steady_rate == pytest.approx(4 / 2.0)  # the 4 chunks after both first tokens, over 2 s
    queued = client.ConcurrentResult([_stream([1.0, 2.0]), _stream([3.0, 4.0])], 0.0, 4.0)
    assert queued.aggregate_rate == pytest.approx(1.0)
    assert queued.steady_rate is None  # the streams never ran together
    failed = client.ConcurrentResult(
        [_stream([1.0, 2.0]), client.StreamResult(0.0, 1.0, error="HTTP 503")], 0.0, 2.0
    )
    assert failed.aggregate_rate is None


def test_server_cpu_per_token_skips_failed_requests() -> None:
    ok = _stream([1.0, 2.0, 3.0, 4.0])
    failed = client.StreamResult(0.0, 1.0, token_times=[0.5], error="HTTP 500")
    assert serve_bench.per_token_ms(2.0, [ok, failed]) == pytest.approx(500.0)
    assert serve_bench.per_token_ms(0.0, [ok]) is None  # CPU time unknown (server gone)
    assert serve_bench.per_token_ms(1.0, [failed]) is None


# -- report --------------------------------------------------------------------------------------------------


def _round(
    ky: dict[str, float], ls: dict[str, float], bb: dict[str, float] | None = None
) -> dict[str, object]:
    peers_ = {"kaiyuan": ky, "llama-server": ls}
    if bb:
        peers_["batched-bench"] = bb
    return {"peers": peers_}


def test_ratios_are_paired_within_rounds_then_medianed() -> None:
    rounds = [
        _round({"single_tps": 100}, {"single_tps": 100}),
        _round({"single_tps": 50}, {"single_tps": 100}),  # a slow minute for kaiyuan only
        _round({"single_tps": 200}, {"single_tps": 200}),  # a fast minute for both
    ]
    ratio = report.paired_ratio(rounds, ("kaiyuan", "single_tps"), ("llama-server", "single_tps"), {})
    assert ratio == pytest.approx(1.0)
    assert report.medians(rounds)["kaiyuan"]["single_tps"] == 100
    assert report.median([None, 3.0, None, 1.0]) == 2.0
    assert report.median([None]) is None
    two = [_round({"single_tps": 80, "errors": []}, {"single_tps": 90}), _round({"single_tps": 100}, {})]
    # an even number of rounds (a median of two is a mean), and lists are not figures
    assert report.medians(two)["kaiyuan"] == {"single_tps": 90}


def test_verdicts_met_missed_and_not_measured() -> None:
    rounds = [
        _round(
            {"single_tps": 90, "agg_tps": 170, "ttft_warm_s": 0.02, "ttft_cold_s": 1.0, "rss_mb": 700},
            {"single_tps": 100, "agg_tps": 150},
            {"agg_tps": 190},
        )
    ]
    got = {v["target"]: v for v in report.verdicts(rounds, {"rss_mb": 675})}
    assert got["single-stream decode ≥ 0.95× llama-server"]["met"] is False
    assert got["8 streams ≥ 1.0× llama-server -np 8"]["met"] is True
    assert got["8 streams ≥ 0.85× batched-bench 8-seq decode"]["ratio"] == pytest.approx(170 / 190)
    assert got["warm TTFT ≤ 0.05× cold TTFT"]["met"] is True
    assert got["peak RSS ≤ model + KV + 200 MB"]["met"] is False
    assert got["8 streams ≥ 2× llama-cpp-python"]["met"] is None
    text = report.table(rounds, {"rss_mb": 675})
    assert "| single-stream decode (tok/s) | 90.0 | 100.0 | – | – | 0.90× | – |" in text
    assert "MISSED" in text and "not measured" in text


# -- peers ---------------------------------------------------------------------------------------------------


def test_batched_bench_gets_the_servers_per_slot_context() -> None:
    cfg = peers.PeerConfig(Path("/m/x.gguf"), threads=2, ctx_per_slot=2048, parallel=8)
    argv = peers.batched_bench_argv(cfg, 128, 128, [1, 8])
    assert argv[argv.index("-c") + 1] == str(8 * 2048)  # 8 buffers of 2048 cells, as the servers' 8 slots
    assert argv[argv.index("-npl") + 1] == "1,8" and argv[argv.index("-t") + 1] == "2"
    short = peers.PeerConfig(Path("/m/x.gguf"), threads=2, ctx_per_slot=128, parallel=8)
    small = peers.batched_bench_argv(short, 128, 128, [8])
    assert small[small.index("-c") + 1] == str(8 * 256)  # never less than a sequence needs


def test_batched_bench_jsonl_parsing() -> None:
    out = "\n".join(
        [
            "main: n_kv_max = 2048",
            '{"n_kv_max": 2048, "pp": 128, "tg": 128, "pl": 1, "n_kv": 256, "speed_tg": 120.5}',
            '{"n_kv_max": 2048, "pp": 128, "tg": 128, "pl": 8, "n_kv": 2048, "speed_tg": 190.25}',
        ]
    )
    assert peers.parse_batched_bench(out) == {1: 120.5, 8: 190.25}
    with pytest.raises(RuntimeError, match="no results"):
        peers.parse_batched_bench("error: model not found")


def test_command_lines_share_model_threads_and_context() -> None:
    cfg = peers.PeerConfig(Path("/m/x.gguf"), threads=3, ctx_per_slot=1024, parallel=4)
    ls = peers.server_spec("llama-server", cfg, 9000).argv
    assert ls[ls.index("-c") + 1] == "4096" and ls[ls.index("-np") + 1] == "4"
    assert ls[ls.index("-t") + 1] == "3" and ls[ls.index("-fa") + 1] == "off"
    lcp = peers.server_spec("llama-cpp-python", cfg, 9001).argv
    assert lcp[lcp.index("--n_ctx") + 1] == "1024" and lcp[lcp.index("--n_threads") + 1] == "3"
    assert lcp[lcp.index("--interrupt_requests") + 1] == "false"
    ky = peers.server_spec("kaiyuan", cfg, 9002).argv
    assert ky[ky.index("--ctx") + 1] == "1024" and ky[ky.index("--parallel") + 1] == "4"
    assert ky[ky.index("--flash-attn") + 1] == "off"
    with pytest.raises(ValueError, match="unknown peer"):
        peers.server_spec("vllm", cfg, 9003)


@pytest.mark.parametrize("flash", ["on", "off"])
def test_identical_flash_attention_reaches_every_peer(flash: str) -> None:
    cfg = peers.PeerConfig(Path("/m/x.gguf"), threads=2, ctx_per_slot=512, parallel=2, flash_attn=flash)
    ls = peers.server_spec("llama-server", cfg, 9000).argv
    ky = peers.server_spec("kaiyuan", cfg, 9001).argv
    lcp = peers.server_spec("llama-cpp-python", cfg, 9002).argv
    assert ls[ls.index("-fa") + 1] == flash and ky[ky.index("--flash-attn") + 1] == flash
    assert lcp[lcp.index("--flash_attn") + 1] == ("true" if flash == "on" else "false")


def test_each_peer_at_its_defaults_gets_no_flash_flag() -> None:
    cfg = peers.PeerConfig(Path("/m/x.gguf"), threads=2, ctx_per_slot=512, parallel=2, flash_attn="defaults")
    for name, flag in (
        ("llama-server", "-fa"),
        ("kaiyuan", "--flash-attn"),
        ("llama-cpp-python", "--flash_attn"),
    ):
        assert flag not in peers.server_spec(name, cfg, 9000).argv
    # on an AMX CPU llama.cpp's tools need --no-repack to run at all (kaiyuan loads weights that way there)
    ls = peers.server_spec("llama-server", cfg, 9000).argv
    assert ("--no-repack" in ls) == cpu_info().has_amx


def test_kv_size_of_the_bundled_model() -> None:
    # SmolLM2-135M: 30 layers x 3 KV heads x (64 + 64) dims x 2 bytes (f16)
    assert peers.kv_bytes_per_cell(peers.bundled_model()) == 30 * 3 * 128 * 2


# -- end to end (real kaiyuan serve) -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tiny_run_against_kaiyuan_serve(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    argv = ["--peers", "kaiyuan", "--no-batched-bench", "--threads", "1", "--ctx", "512", "--parallel", "2"]
    argv += ["--rounds", "1", "--max-tokens", "4", "--concurrency", "2", "--single-runs", "1"]
    argv += ["--latency-runs", "1", "--ttft-pairs", "1", "--system-tokens", "64", "--out", str(out)]
    assert serve_bench.main(argv) == 0
    result = json.loads(out.read_text())
    ky = result["rounds"][0]["peers"]["kaiyuan"]
    assert ky["errors"] == []
    for key in (
        "single_tps",
        "agg_tps",
        "ttft_cold_s",
        "ttft_warm_s",
        "latency_1tok_s",
        "rss_mb",
        "agg_cpu_ms",
    ):
        assert ky[key] is not None and ky[key] > 0, key
    assert ky["ttft_prompt_tokens"] >= 64
    assert ky["ttft_warm_cached_tokens"] >= 64  # the second request reused the system prompt's KV
    assert result["conditions"]["kv_mb"] == pytest.approx(23040 * 512 * 2 / 1e6)
    assert "| target | measured | verdict |" in result["table"]
