"""Training, data sets and validation of the bundled demo models (phantom-trained, reproducible on CPU).

    python -m XAIExplainLib.models.training.train lung-nodule-2d
    python -m XAIExplainLib.models.training.validate --data DIR
"""
