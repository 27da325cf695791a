"""Where the cluster room sits: beside the server (never the CLI or fine-tuning above it, never torch), and Ray is
imported only when a command needs it (``kaiyuan serve --help`` stays light)."""

from __future__ import annotations

import subprocess
import sys

from tests.test_import_boundaries import imported_after, top_level


def test_the_cluster_imports_neither_the_cli_nor_tuning() -> None:
    loaded = imported_after("kaiyuan.cluster")
    assert not {m for m in loaded if m.startswith(("kaiyuan.cli", "kaiyuan.tune", "kaiyuan.export"))}
    assert "torch" not in top_level(loaded) and "ray" in top_level(loaded)


def test_serve_help_does_not_import_ray() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from kaiyuan.cli._app import cli;"
        "r = CliRunner().invoke(cli, ['serve', '--help']); assert '--replicas' in r.output, r.output;"
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
