"""`python -m app`: the Crystalline CLLM studio."""

import sys

from .studio import main

sys.exit(main())
