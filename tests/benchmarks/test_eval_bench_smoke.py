"""benchmarks/eval_bench.py's logic: arguments, reading llama-perplexity's output, the tables and their targets.
No timing is asserted (the figures depend on the machine); the side-by-side figures themselves are checked against
llama-perplexity in tests/eval/test_against_reference.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import _perplexity_peer as peer
from benchmarks import eval_bench

# What llama-perplexity prints (llama.cpp of llama-cpp-python 0.3.36), cut to the lines the benchmark reads.
PLAIN = """\
0.00.368.786 I perplexity: tokenizing the input ..
0.00.370.288 I perplexity: tokenization took 1.495 ms
0.00.370.321 I perplexity: calculating perplexity over 4 chunks, n_ctx=512, batch_size=2048, n_seq=4
0.01.144.974 I perplexity: 0.77 seconds per pass - ETA 0.00 minutes
[1]19.8823,[2]22.4532,[3]21.2011,[4]21.5237,
1.02.157.960 I Final estimate: PPL = 21.5237 +/- 1.74372
"""

KL = """\
kl_divergence: computing over 4 chunks, n_ctx=512, batch_size=2048, n_seq=4
====== Perplexity statistics ======
Mean PPL(Q)                   :  21.499012 ±   1.742403
Mean PPL(base)                :  21.523700 ±   1.743720
Cor(ln(PPL(Q)), ln(PPL(base))):  99.87%
Mean ln(PPL(Q)/PPL(base))     :  -0.001148 ±   0.002310
Mean PPL(Q)/PPL(base)         :   0.998853 ±   0.002307
Mean PPL(Q)-PPL(base)         :  -0.024688 ±   0.049666

====== KL divergence statistics ======
Mean    KLD:   0.002712 ±   0.000081
Maximum KLD:   0.022651
99.9%   KLD:   0.018212
99.0%   KLD:   0.010601
95.0%   KLD:   0.006611
Median  KLD:   0.002301

====== Token probability statistics ======
Same top p:  96.765 ±  0.554 %
"""


def test_a_plain_run_is_read() -> None:
    run = peer.parse(["llama-perplexity"], 11.0, 0, PLAIN)
    assert run.ok
    assert (run.ppl, run.ppl_stderr, run.chunks) == (21.5237, 1.74372, 4)
    assert run.scoring_s == pytest.approx(61.787639)  # 1 min 2.157960 s - 0.370321 s
    assert run.kl == {} and run.same_top_p is None


def test_a_kl_divergence_run_is_read() -> None:
    run = peer.parse(["llama-perplexity"], 11.0, 0, KL)
    assert run.ok
    assert (run.ppl, run.base_ppl, run.ppl_ratio) == (21.499012, 21.5237, 0.998853)
    assert run.kl == {"mean": 0.002712, "max": 0.022651, "p99": 0.010601, "median": 0.002301}
    assert run.same_top_p == pytest.approx(0.96765) and run.chunks == 4


def test_a_failed_run_is_not_ok_and_keeps_its_output() -> None:
    out = "main: error: unable to load model\n" * 3
    run = peer.parse(["llama-perplexity"], 0.5, 1, out)
    assert not run.ok and run.ppl is None and "unable to load model" in run.tail(1)
    # too few scored tokens for statistics: llama-perplexity prints no KL, which is not a success
    assert not peer.parse(["x"], 1.0, 0, "kl_divergence: computing over 1 chunks\n").ok


def test_the_command_lines_match_kaiyuan_s_conditions(tmp_path: Path) -> None:
    model, text = tmp_path / "m.gguf", tmp_path / "t.txt"
    plain = peer.command(model, text, ctx=512, threads=1)
    assert plain[1:] == [
        "-m",
        str(model),
        "-f",
        str(text),
        "-c",
        "512",
        "-t",
        "1",
        "-tb",
        "1",
        "--no-repack",
    ]
    base = peer.command(model, text, ctx=64, threads=2, base_file=tmp_path / "b.kld")
    assert base[-2:] == ["--kl-divergence-base", str(tmp_path / "b.kld")]
    kl = peer.command(
        model, text, ctx=64, threads=2, base_file=tmp_path / "b.kld", kl=True, extra=["-b", "64"]
    )
    assert kl[-3:] == ["--kl-divergence", "-b", "64"]


def test_the_text_loses_only_its_final_newline(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    source = tmp_path / "in" / "t.txt"
    source.write_bytes(b"one\ntwo\n\n")
    assert eval_bench.same_text_for_both(source, tmp_path).read_bytes() == b"one\ntwo\n"


def test_arguments() -> None:
    args = eval_bench.parse_args(["--quick", "--quants", "q8_0,Q4_K_M"])
    assert (args.rounds, args.quants, args.threads, args.ctx) == (1, ["Q8_0", "Q4_K_M"], 1, 512)
    assert eval_bench.parse_args([]).quants == ["Q4_0", "Q4_1", "Q5_K_M", "Q8_0"]


@pytest.mark.parametrize(
    "argv", [["--quants", "Q3_X"], ["--quants", "F32"], ["--ctx", "15"], ["--threads", "0"]]
)
def test_bad_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        eval_bench.parse_args(argv)
    assert exc.value.code == 2 and "error:" in capsys.readouterr().err


def _row(ppl: float, peer_ppl: float, kl: float, peer_kl: float) -> dict[str, object]:
    return {
        "kaiyuan": {
            "ppl": ppl,
            "ppl_ratio": ppl / 20,
            "kl": {"mean": kl, "median": kl, "p99": kl * 3, "max": kl * 9},
            "top1": 0.97,
        },
        "llama-perplexity": {"ppl": peer_ppl, "kl": {"mean": peer_kl}, "top1": 0.968},
    }


def test_the_figures_table_checks_the_targets() -> None:
    figures = {
        "rows": {
            "F32": _row(
                20.0, 20.0, 0.0, 0.000004
            ),  # against itself: no KL verdict, the peer's is its rounding
            "Q4_1": _row(21.0, 21.1, 0.0030, 0.0029),  # 0.5% and 3.4%: both within target
            "Q4_0": _row(27.0, 27.5, 0.30, 0.25),  # 1.8% and 20%: both missed
        }
    }
    lines = eval_bench.figures_table(figures).splitlines()
    f32, q41, q40 = lines[2], lines[3], lines[4]
    assert f32.endswith("| yes | — |")
    assert q41.endswith("| yes | yes |")
    assert q40.endswith("| NO | NO |")
    assert "| Q4_1 |" in eval_bench.quant_table(figures) and "0.0717" in eval_bench.quant_table(figures)


def test_the_throughput_table_is_the_median_ratio() -> None:
    def entry(k: float, p: float) -> dict[str, object]:
        return {
            "kaiyuan": {"rate": k, "wall_s": 5.0},
            "llama-perplexity": {"rate": p, "wall_s": 4.0},
            "ratio": k / p,
        }

    table = eval_bench.throughput_table({"F32": [entry(90, 100), entry(95, 100), entry(200, 100)]})
    row = table.splitlines()[2]
    assert row.startswith("| F32 | 95 | 100 | 0.950 | yes |")
