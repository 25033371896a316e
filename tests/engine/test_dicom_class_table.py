"""The class table: TG-263 names and SNOMED CT codes per organ, stored in checkpoints and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from synthetic import tiny_checkpoint

from cgs_engine.checkpoint import ModelCheckpoint, load_checkpoint, load_payload, save_checkpoint
from cgs_engine.classes.checks import ClassTableError
from cgs_engine.classes.files import class_file_candidates, read_class_table
from cgs_engine.classes.organs import openkbp_class_names
from cgs_engine.classes.table import checkpoint_class_table, derive_class_table
from cgs_engine.cli.class_source import resolve_class_table

BUNDLED_MODEL = Path(__file__).resolve().parents[2] / "napari_cgs" / "models" / "default.pt"
OPENKBP_TG263 = {
    "Brainstem": ("Brainstem", "119238007", None),
    "SpinalCord": ("SpinalCord", "2748008", None),
    "RightParotid": ("Parotid_R", "45289007", "24028007"),
    "LeftParotid": ("Parotid_L", "45289007", "7771000"),
    "Esophagus": ("Esophagus", "32849002", None),
    "Larynx": ("Larynx", "4596009", None),
    "Mandible": ("Bone_Mandible", "91609006", None),
}


def test_openkbp_organs_get_their_tg263_names_and_snomed_codes():
    table = derive_class_table(openkbp_class_names(), [[0, 0, 0]] + [[10 * i, 20, 30] for i in range(1, 8)])
    assert table.ids == list(range(1, 8)) and table.derived
    for entry in table.entries:
        name, code, side = OPENKBP_TG263[entry.name]
        assert (entry.structure_name, entry.code.value, entry.code.scheme) == (name, code, "SCT")
        assert (entry.laterality.value if entry.laterality else None) == side
        assert entry.category.value == "91723000"
        assert entry.color == (10 * entry.id, 20, 30)


def test_unknown_organs_keep_their_name_and_get_no_code():
    entry = derive_class_table(["background", "tumour bed"]).by_id(1)
    assert entry.structure_name == "tumour bed" and entry.code is None and entry.tg263 is None


def test_matching_by_alias_name_or_code():
    table = derive_class_table(openkbp_class_names())
    assert table.match("Parotid_Lt").name == "LeftParotid"
    assert table.match("BRAINSTEM").name == "Brainstem"
    assert table.match("Bone_Mandible").name == "Mandible"
    right = table.by_id(3)
    assert table.match("Glandula parotis dextra", right.code, right.laterality).name == "RightParotid"
    assert table.match("Glandula parotis", right.code, None) is None  # side unknown: no guess
    assert table.match("PTV_70") is None


def test_names_in_any_script_match_only_themselves():
    """Only a-z and 0-9 were compared: every Cyrillic or CJK name was "", so a body outline "Тело"
    was imported as the table's first such class (here the brainstem), over the real one."""
    table = derive_class_table(["background", "Ствол мозга", "Спинной мозг", "脊髄", "Rückenmark"])
    assert table.match("Тело") is None and table.match("外部") is None and table.match("---") is None
    assert table.match("СПИННОЙ_МОЗГ").name == "Спинной мозг"
    assert table.match("ствол-мозга").name == "Ствол мозга"
    assert table.match("脊髄").name == "脊髄"
    assert table.match("Ruckenmark").name == "Rückenmark"  # an accent dropped by an export
    assert derive_class_table(openkbp_class_names()).match("Тело") is None
    # marks change the word outside Latin, Greek and Cyrillic: kana voicing, Indic vowel signs
    kana = derive_class_table(["background", "しんぞう", "कन"])
    assert kana.match("じんぞう") is None and kana.match("कान") is None
    assert kana.match("しんぞう").name == "しんぞう"
    pointed = derive_class_table(["background", "الكبد", "כליה"])  # vowel points are optional there
    assert pointed.match("الكَبِد").name == "الكبد" and pointed.match("כִּלְיָה").name == "כליה"
    hamza = derive_class_table(["background", "ا"])
    assert hamza.match("أ") is None  # a hamza is a consonant, not an optional point


def _checkpoint(**extra) -> ModelCheckpoint:
    return tiny_checkpoint(["background", "RightParotid", "liver"], **extra)


def test_new_checkpoints_carry_the_table_and_old_ones_derive_it(tmp_path):
    path = save_checkpoint(_checkpoint(), tmp_path / "new.pt")
    stored = load_payload(path)["class_table"]
    assert [item["tg263"] for item in stored] == ["Parotid_R", None]
    table = checkpoint_class_table(load_checkpoint(path))
    assert not table.derived and table.by_id(1).laterality.meaning == "Right"
    payload = load_payload(path)
    del payload["class_table"]  # a checkpoint saved before the table existed
    torch.save(payload, tmp_path / "old.pt")
    old = checkpoint_class_table(load_checkpoint(tmp_path / "old.pt"))
    assert old.derived and old == table


def test_a_custom_table_in_a_checkpoint_wins_over_the_names(tmp_path):
    custom = derive_class_table(["background", "RightParotid", "liver"]).to_list()
    custom[1].update(tg263="Liver", snomed={"value": "10200004", "scheme": "SCT", "meaning": "Liver"})
    path = save_checkpoint(_checkpoint(class_table=custom), tmp_path / "custom.pt")
    assert checkpoint_class_table(load_checkpoint(path)).by_id(2).structure_name == "Liver"


def test_the_bundled_model_gets_the_openkbp_table():
    checkpoint = load_checkpoint(BUNDLED_MODEL)
    table = checkpoint_class_table(checkpoint)
    assert table.derived == (not checkpoint.class_table)  # derived until default.pt is re-saved with one
    assert [entry.structure_name for entry in table.entries] == [v[0] for v in OPENKBP_TG263.values()]
    assert [list(entry.color) for entry in table.entries] == checkpoint.class_colors[1:]


def test_class_table_files_and_the_predict_sidecar(tmp_path):
    table = derive_class_table(openkbp_class_names())
    ours = tmp_path / "table.json"
    ours.write_text(table.to_json())
    assert read_class_table(ours) == table
    sidecar = tmp_path / "scan_classes.json"  # what cgs predict writes: id, name, colour
    sidecar.write_text(
        json.dumps({"classes": [{"id": 0, "name": "background"}, {"id": 1, "name": "Mandible"}]})
    )
    assert sidecar in class_file_candidates(tmp_path / "scan_labels.nii.gz")
    found, origin = resolve_class_table(None, tmp_path / "scan_labels.nii.gz")
    assert found.by_id(1).structure_name == "Bone_Mandible" and str(sidecar) in origin
    fallback, origin = resolve_class_table(None, tmp_path / "other.nii.gz")
    assert fallback == table and "OpenKBP" in origin


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("not json", "not a readable class table"),
        ('{"classes": []}', "no 'classes' list"),
        ('{"classes": [{"id": 1}]}', "malformed class entry"),
        ('{"classes": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}', "listed twice"),
        ('{"classes": [{"id": 1, "name": "a", "color": [300, 0, 0]}]}', "malformed class entry"),
        # numbered from 0: every organ would be exported one id off, Brainstem dropped in silence
        (
            '{"classes": [{"id": 0, "name": "Brainstem"}, {"id": 1, "name": "SpinalCord"}]}',
            "organ ids start at 1",
        ),
    ],
)
def test_bad_class_tables_are_one_line_errors(tmp_path, content, problem):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ClassTableError) as error:
        read_class_table(path)
    assert str(error.value).startswith(str(path)) and problem in str(error.value)
    assert "\n" not in str(error.value)


def test_id_0_may_be_called_background_in_the_usual_ways(tmp_path):
    for name in ("background", "Background", "Clear Label", "Hintergrund", "фон"):
        path = tmp_path / "ok.json"
        path.write_text(json.dumps({"classes": [{"id": 0, "name": name}, {"id": 1, "name": "Liver"}]}))
        assert [entry.name for entry in read_class_table(path).entries] == ["Liver"]


def test_a_model_whose_background_has_another_name_writes_a_class_file_it_can_read(tmp_path):
    from cgs_engine.classes.files import class_file_entries, read_class_file, write_class_file

    path = tmp_path / "scan_classes.json"
    write_class_file(path, class_file_entries(["Exterior of body", "Liver"]), tmp_path / "scan_labels.nii.gz")
    table = read_class_file(path).table
    assert [entry.name for entry in table.entries] == ["Liver"]
    assert json.loads(path.read_text())["classes"][0]["name"] == "background"
