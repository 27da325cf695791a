"""``python -m kaiyuan``: the same as the ``kaiyuan`` command."""

from kaiyuan.cli import main

main()
