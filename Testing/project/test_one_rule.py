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
