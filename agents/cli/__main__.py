"""``python -m agents.cli``: the ``prune-rnn`` command line."""

import sys

from agents.cli.main import main

sys.exit(main())
