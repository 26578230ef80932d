"""Which metrics ``evaluate`` runs by default, and which need only a map and a mask."""
import torch

from XAIExplainLib.evaluation import METRICS, ON_REQUEST, evaluate

from Testing.evaluation.metric_models import WeightMapClassifier, region_mask


def test_evaluate_runs_the_costly_and_duplicate_metrics_only_when_named():
    region = region_mask(2)
    model = WeightMapClassifier(region.float().expand(2, 8, 8) * torch.tensor([1.0, -1.0]).view(2, 1, 1))
    x = torch.rand(1, 1, 8, 8)
    columns = evaluate(model, x, region.float()[None], mask=region, method="saliency")
    assert "sanity_spearman_top" in columns and "deletion_auc" in columns
    assert not set(columns) & {"road_morf", "road_morf_accuracy", "faithfulness_correlation", "max_sensitivity",
                               "infidelity", "relevance_mass", "relevance_rank", "random_logit",
                               "parameter_randomization", "average_drop", "increase_in_confidence"}
    assert ON_REQUEST <= set(METRICS)
    named = evaluate(model, x, region.float()[None], mask=region, metrics=["relevance_mass"])
    assert named == {"relevance_mass": [1.0]}
