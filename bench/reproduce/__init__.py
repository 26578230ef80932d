"""The seed papers' findings on the bundled models: ``python -m bench.reproduce [--quick] [--data DIR]``."""
