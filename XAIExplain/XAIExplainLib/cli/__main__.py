"""``python -m XAIExplainLib.cli``: the same as the ``xaiexplain`` console script."""
import sys

from .main import main

sys.exit(main())
