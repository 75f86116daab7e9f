"""`python -m cllm.train`: see cllm.cli.train."""

import sys

from cllm.cli.train import main

sys.exit(main())
