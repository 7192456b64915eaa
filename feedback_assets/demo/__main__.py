"""`python -m feedback_assets.demo` runs the quick start."""

from __future__ import annotations

import sys

from feedback_assets.demo.quickstart import main

if __name__ == "__main__":
    sys.exit(main())
