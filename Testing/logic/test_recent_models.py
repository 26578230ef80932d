"""Recently used models: newest first, no duplicates, a bounded list, vanished paths dropped, a readable line."""
from __future__ import annotations

from XAIExplainLib.logic import recent_models


def test_remember_moves_to_front_deduplicates_and_bounds(tmp_path):
    folders = [tmp_path / f"m{i}" for i in range(recent_models.LIMIT + 2)]
    for folder in folders:
        folder.mkdir()
    recent = []
    for folder in folders:
        recent = recent_models.remember(recent, str(folder))
    assert recent == [str(f) for f in reversed(folders)][:recent_models.LIMIT]
    recent = recent_models.remember(recent, str(folders[-3]) + "/")  # same folder, other spelling
    assert recent[0] == str(folders[-3]) and len(recent) == len(set(recent)) == recent_models.LIMIT


def test_read_recent_accepts_what_qsettings_returns_and_drops_missing_paths(tmp_path):
    card = tmp_path / "card.json"
    card.write_text("{}")
    assert recent_models.read_recent(None) == []
    assert recent_models.read_recent(str(card)) == [str(card)]  # QSettings gives one string for one entry
    assert recent_models.read_recent([str(tmp_path / "gone"), "", str(card), str(card)]) == [str(card)]


def test_describe_names_task_classes_and_input():
    line = recent_models.describe({"name": "lung-nodule-2d", "task": "classification", "spatialDims": 2,
                                   "classes": ["no_nodule", "nodule"], "input": "1 channel(s), spacing 1.8 x 1.8 mm"})
    assert line == ("lung-nodule-2d: classification (2D); classes: no_nodule, nodule; "
                    "input: 1 channel(s), spacing 1.8 x 1.8 mm")
