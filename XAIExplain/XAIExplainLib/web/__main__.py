"""``python -m XAIExplainLib.web ARGS``: what ``xaiexplain serve ARGS`` runs."""
import sys

from .server import main

sys.exit(main())
