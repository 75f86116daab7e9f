"""`python -m app`: the Crystalline CLLM studio."""

import os
import sys

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # our output is the app's, not pygame's

from .studio import main  # noqa: E402  (after the environment is set)

if __name__ == "__main__":  # not when a training process (spawned) imports this as its main
    sys.exit(main())
