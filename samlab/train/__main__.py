"""``python -m samlab.train --job JOB.json``: one configuration, under torchrun for multi-GPU DDP."""
import sys

from .job import main

if __name__ == "__main__":
    sys.exit(main())
