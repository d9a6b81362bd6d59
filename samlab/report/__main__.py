"""``python -m samlab.report RUN_DIR [--out figures]``: the same command as ``samlab figures``."""
import sys

from ..cli import main

sys.exit(main(["figures", *sys.argv[1:]]))
