"""``python -m prune_env.tasks.zoo build|list`` (see :mod:`prune_env.tasks.zoo.build`)."""

import sys

from prune_env.tasks.zoo.build import main

sys.exit(main())
