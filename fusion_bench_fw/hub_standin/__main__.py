"""``python -m fusion_bench_fw.hub_standin``: see the package docstring."""

import sys

from . import main

sys.exit(main())
