"""python -m benchmarks [--quick] [--only NAME] [--report]: see benchmarks/runner.py."""

import sys

from benchmarks.runner import main

sys.exit(main())
