"""Rules that must live once: where a torch-free module restates one for its import time, the
restatement is checked against the one rule here.
"""
from __future__ import annotations

import ast
from pathlib import Path

WIDGET = Path(__file__).resolve().parents[2] / "XAIExplain" / "XAIExplain.py"


def _choices(parser, subcommand: str, option: str) -> tuple:
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    action = next(a for a in sub.choices[subcommand]._actions if option in a.option_strings)
    return tuple(action.choices)


def test_modes_and_orientations_come_from_the_engine_and_imaging():
    from XAIExplainLib.cli.main import build_parser
    from XAIExplainLib.cli.options import AXIS_NAMES
    from XAIExplainLib.engine.modes import MODES
    from XAIExplainLib.imaging.orientation import ORIENTATIONS
    from XAIExplainLib.logic import explain_logic

    assert explain_logic.MODES == MODES + ORIENTATIONS
    assert AXIS_NAMES == ORIENTATIONS
    parser = build_parser()
    assert _choices(parser, "explain", "--mode") == MODES
    assert _choices(parser, "explain", "--axis") == ORIENTATIONS
    widget_modes = next(ast.literal_eval(node.value) for node in ast.parse(WIDGET.read_text("utf-8")).body
                        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "MODES")
    assert {value for _, value in widget_modes} - {""} <= set(explain_logic.MODES)  # "": the model's default


def test_out_of_memory_is_recognised_once():
    """The engine's batch halving and the Slicer job's advice ask engine.devices.is_out_of_memory."""
    import torch

    from XAIExplainLib.engine.devices import is_out_of_memory
    from XAIExplainLib.logic.explain_job import out_of_memory_message

    cuda = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    for error, expected in ((cuda, True), (RuntimeError("CUDA error: out of memory"), True),
                            (RuntimeError("shape mismatch"), False), (ValueError("bad"), False)):
        assert is_out_of_memory(error) is expected
        assert (out_of_memory_message(error) is not None) is expected


def test_progress_reports_are_read_once():
    from XAIExplainLib.engine.progress import progress_fraction

    assert progress_fraction(3, 4) == 0.75
    assert progress_fraction(3, 4, "windows") == 0.75
    assert progress_fraction(0.4) == 0.4
    assert progress_fraction(0.4, "message") == 0.4
    assert progress_fraction(5, 0) == 1.0  # nothing to do: clamped
    assert progress_fraction(True, 2) == 1.0  # a bool is not a count: 2 alone reads as a fraction, clamped
    assert progress_fraction() == 0.0


def test_one_trial_input_shape_for_the_load_check_and_the_layer_list():
    """Failed before: the loader probed a 2D model without size at 64 x 64, the catalogue at 32 x 32,
    and the catalogue preferred input.size over patch_size."""
    import dataclasses

    import torch

    from XAIExplainLib.logic.model_catalogue import ModelCatalogue
    from XAIExplainLib.models.card import trial_input_shape
    from XAIExplainLib.models.plain_module import module_model

    loaded = module_model(torch.nn.Conv2d(1, 2, 3))
    card = loaded.card
    for spec in (dict(size=None, patch_size=None), dict(size=(40, 48), patch_size=(24, 24)),
                 dict(size=(40, 48), patch_size=None)):
        described = dataclasses.replace(loaded, card=dataclasses.replace(
            card, input=dataclasses.replace(card.input, **spec)))
        assert tuple(ModelCatalogue.example_input(described).shape[2:]) == trial_input_shape(described.card)
    assert trial_input_shape(dataclasses.replace(card, input=dataclasses.replace(card.input, size=None,
                                                                                 patch_size=None))) == (64, 64)
