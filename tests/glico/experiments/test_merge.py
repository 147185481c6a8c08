"""glico merge: pieces of a grid run in separate processes give the table the single command writes,
and pieces that do not belong together are refused."""
import json
import shutil

import pytest

from glico.cli import main
from glico.experiments.merge import merge_results

TINY = ["--epochs", "1", "--fit-epochs", "2", "--classifier", "weak", "--loss", "pixel", "--code-dim", "8",
        "--max-test", "60", "--quiet", "--data", "digits", "--spc", "2"]


def _ablate(out, *extra):
    assert main(["ablate", "--table", "2", "--out", str(out)] + TINY + list(extra)) == 0
    return json.loads((out / "results.json").read_text())


def _strip(runs):
    # wall-clock seconds are the only thing allowed to differ between two runs of the same work
    return [{k: v for k, v in r.items() if k != "seconds"} | {"fit": {k: v for k, v in (r["fit"] or {}).items()
                                                                     if k != "seconds"}} for r in runs]


def _edited_copy(src, dst, edit):
    """A copy of the result folder ``src`` at ``dst`` with ``edit(results)`` applied to its results.json."""
    shutil.copytree(src, dst)
    r = json.loads((dst / "results.json").read_text())
    edit(r)
    (dst / "results.json").write_text(json.dumps(r))
    return dst


@pytest.fixture(scope="module")
def pieces(tmp_path_factory):
    """Table II's GLICO, Baseline and Lerp rows for seeds 0 and 1: once as one command, once as three
    pieces (seed 0 / seed 1's Lerp apart from its other rows, in another order)."""
    d = tmp_path_factory.mktemp("merge")
    whole = _ablate(d / "whole", "--seeds", "0,1", "--only", "GLICO,Baseline,Lerp")
    _ablate(d / "a", "--seeds", "0", "--only", "Lerp,GLICO,Baseline")
    _ablate(d / "b", "--seeds", "1", "--only", "Lerp")
    _ablate(d / "c", "--seeds", "1", "--only", "Baseline,GLICO")
    return d, whole


def test_merged_pieces_equal_the_single_run(pieces, capsys):
    d, whole = pieces
    assert main(["merge", str(d / "c"), str(d / "a"), str(d / "b" / "results.json"), "--out", str(d / "merged")]) == 0
    merged = json.loads((d / "merged" / "results.json").read_text())
    assert _strip(merged["runs"]) == _strip(whole["runs"])  # same numbers, same (paper) order
    assert merged["summary"] == whole["summary"]
    assert merged["settings"] == whole["settings"]
    assert [v["name"] for v in merged["variants"]] == ["GLICO", "Baseline", "Lerp"]
    assert merged["markdown"] == whole["markdown"]
    assert (d / "merged" / "results.md").read_text() == whole["markdown"]
    assert (d / "merged" / "results.png").stat().st_size > 0
    assert len(merged["merged_from"]) == 3
    assert "mean ± STE over seeds [0, 1]" in capsys.readouterr().out


def test_overlapping_pieces_are_refused(pieces):
    d, _ = pieces
    with pytest.raises(ValueError, match=r"seed 0, variant 'GLICO' is in both"):
        merge_results([d / "a", d / "whole"])


def test_pieces_with_other_settings_are_refused(pieces, tmp_path):
    d, _ = pieces
    other = _edited_copy(d / "b", tmp_path / "other", lambda r: r["settings"].update(fit_epochs=300))
    with pytest.raises(ValueError, match=r"other settings.*fit_epochs: 2 vs 300"):
        merge_results([d / "a", other])


def test_a_data_path_spelled_differently_merges_but_other_data_is_refused(pieces, tmp_path):
    # Pieces run on other machines name the same data by other paths; what was loaded must agree.
    d, _ = pieces
    moved = _edited_copy(d / "b", tmp_path / "moved", lambda r: r["settings"].update(data="folder:/elsewhere/digits/"))
    c = d / "c"
    merged = merge_results([d / "a", moved, c])
    assert merged["settings"]["data"] == "digits"  # the first piece's spelling
    other = _edited_copy(d / "b", tmp_path / "other-data", lambda r: r["data"].update(n_test=59))
    with pytest.raises(ValueError, match=r"data\.n_test: 60 vs 59"):
        merge_results([d / "a", other, c])


def test_a_grid_with_holes_is_refused(pieces):
    d, _ = pieces
    # seed 0 ran GLICO, Baseline and Lerp; seed 1 only Lerp: seed 1's GLICO and Baseline are missing
    with pytest.raises(ValueError, match=r"leave 2 run\(s\) of the grid out \(spc 2, seed 1, 'GLICO'; spc 2, seed 1, 'Baseline'\)"):
        merge_results([d / "a", d / "b"])


def test_pieces_resolved_differently_are_refused(pieces, tmp_path):
    d, _ = pieces
    # 'auto' resolved to bf16 on a GPU with bf16 tensor cores
    other = _edited_copy(d / "b", tmp_path / "gpu", lambda r: r["recipe"].update(precision="bf16"))
    with pytest.raises(ValueError, match="recipe.precision: 'fp32' vs 'bf16'"):
        merge_results([d / "a", d / "c", other])


def test_out_must_not_be_an_input(pieces):
    d, _ = pieces
    before = (d / "a" / "results.json").read_text()
    with pytest.raises(ValueError, match="overwrite"):
        merge_results([d / "a", d / "b", d / "c"], out=d / "a")
    assert (d / "a" / "results.json").read_text() == before


def test_bad_inputs_say_what_is_expected(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    assert main(["merge", str(tmp_path / "x"), str(tmp_path / "x"), "--out", str(tmp_path / "m")]) == 2
    assert "no results.json there" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable results.json"):
        merge_results([tmp_path / "junk.json", tmp_path / "junk.json"])
    with pytest.raises(ValueError, match="at least two"):
        merge_results([tmp_path / "junk.json"])


def test_evaluate_pieces_merge_too(tmp_path):
    common = ["--data", "digits", "--spc", "2", "--classifier", "weak", "--epochs", "1", "--max-test", "60", "--quiet"]
    assert main(["evaluate", "--seeds", "0,1", "--methods", "baseline,cutout", "--out", str(tmp_path / "w")] + common) == 0
    assert main(["evaluate", "--seeds", "0", "--methods", "baseline,cutout", "--out", str(tmp_path / "p0")] + common) == 0
    assert main(["evaluate", "--seeds", "1", "--methods", "cutout", "--out", str(tmp_path / "p1c")] + common) == 0
    assert main(["evaluate", "--seeds", "1", "--methods", "baseline", "--out", str(tmp_path / "p1b")] + common) == 0
    merged = merge_results([tmp_path / "p0", tmp_path / "p1c", tmp_path / "p1b"], out=tmp_path / "m")
    whole = json.loads((tmp_path / "w" / "results.json").read_text())
    assert _strip(merged["runs"]) == _strip(whole["runs"])
    assert merged["summary"] == whole["summary"] and merged["config"] == whole["config"]
    assert (tmp_path / "m" / "results.md").read_text() == (tmp_path / "w" / "results.md").read_text()
    ablate = tmp_path / "abl"
    _ablate(ablate, "--seeds", "0", "--only", "Baseline")
    with pytest.raises(ValueError, match="cannot merge 'glico evaluate' results with 'glico ablate'"):
        merge_results([tmp_path / "p0", ablate])


def test_a_piece_without_glico_may_differ_in_glico_only_settings(tmp_path):
    # The baseline never reads the GLICO flags, so its piece merges with GLICO pieces run with other ones;
    # the merged settings are those of the GLICO pieces, which must still agree with each other.
    common = ["--data", "digits", "--spc", "2", "--classifier", "weak", "--epochs", "1", "--max-test", "60", "--quiet",
              "--loss", "pixel", "--code-dim", "8", "--seeds", "0"]
    assert main(["evaluate", "--methods", "baseline", "--out", str(tmp_path / "b")] + common) == 0
    glico_flags = ["--fit-epochs", "3", "--glico-p", "0.75", "--glico-t", "0.1,0.5", "--glico-refresh", "2"]
    assert main(["evaluate", "--methods", "glico", "--out", str(tmp_path / "g")] + common + glico_flags) == 0
    merged = merge_results([tmp_path / "b", tmp_path / "g"], out=tmp_path / "m")
    assert merged["config"]["methods"] == ["baseline", "glico"]
    assert (merged["config"]["glico_p"], merged["config"]["glico_t"], merged["config"]["fit_epochs"],
            merged["config"]["glico_refresh"]) == (0.75, [0.1, 0.5], 3, 2)
    other = _edited_copy(tmp_path / "g", tmp_path / "g2", lambda r: r["config"].update(glico_p=0.5, methods=["cutout", "glico"]))
    with pytest.raises(ValueError, match=r"glico_p: 0.75 vs 0.5"):
        merge_results([tmp_path / "b", tmp_path / "g", other])
    # Settings every method reads still have to agree.
    lr = _edited_copy(tmp_path / "b", tmp_path / "b2", lambda r: r["config"].update(lr=0.01))
    with pytest.raises(ValueError, match=r"lr: 0.1 vs 0.01"):
        merge_results([lr, tmp_path / "g"])


def test_method_specific_settings_merge_from_the_pieces_that_read_them(tmp_path):
    # Only MixMatch reads --unlabeled (and refuses to run without it; the others refuse it), so a MixMatch piece
    # and a baseline piece merge, with the MixMatch piece's source and settings in the merged results.
    common = ["--data", "digits", "--spc", "2", "--classifier", "weak", "--epochs", "1", "--max-test", "60", "--quiet",
              "--seeds", "0"]
    assert main(["evaluate", "--methods", "baseline", "--out", str(tmp_path / "b")] + common) == 0
    assert main(["evaluate", "--methods", "mixmatch", "--unlabeled", "split", "--out", str(tmp_path / "m")] + common) == 0
    merged = merge_results([tmp_path / "b", tmp_path / "m"], out=tmp_path / "all")
    assert merged["config"]["methods"] == ["baseline", "mixmatch"] and merged["config"]["unlabeled"] == "split"
    assert merged["recipe"]["mixmatch"]["temperature"] == 0.5
    assert "MixMatch's unlabelled images: split" in (tmp_path / "all" / "results.md").read_text()
    # two MixMatch pieces must agree on where the unlabelled images came from
    rest = _edited_copy(tmp_path / "m", tmp_path / "m2", lambda r: (r["config"].update(unlabeled="rest", seeds=[1]),
                                                                    [x.update(seed=1) for x in r["runs"]]))
    with pytest.raises(ValueError, match=r"unlabeled: 'split' vs 'rest'"):
        merge_results([tmp_path / "m", rest])
    # ... also when the first piece runs no MixMatch (three pieces: the reference is the baseline's)
    base01 = _edited_copy(tmp_path / "b", tmp_path / "b01", lambda r: (
        r["config"].update(seeds=[0, 1]), r["runs"].append({**r["runs"][0], "seed": 1})))
    with pytest.raises(ValueError, match=r"unlabeled: 'split' vs 'rest'"):
        merge_results([base01, tmp_path / "m", rest])
    # cdcgan reads the fit budget and the replacement probability: it may not differ from a GLICO piece's
    def as_cdcgan(p):
        def edit(r):
            r["config"].update(methods=["cdcgan"], unlabeled=None, glico_p=p)
            r["recipe"] = {k: v for k, v in r["recipe"].items() if k not in ("mixmatch", "unlabeled", "transductive")}
            for x in r["runs"]:
                x.update(method="cdcgan")
        return edit
    glico = _edited_copy(tmp_path / "b", tmp_path / "g", lambda r: (
        r["config"].update(methods=["glico"]), [x.update(method="glico") for x in r["runs"]]))
    same = _edited_copy(tmp_path / "m", tmp_path / "c1", as_cdcgan(0.5))
    merge_results([glico, same])
    other = _edited_copy(tmp_path / "m", tmp_path / "c2", as_cdcgan(0.9))
    with pytest.raises(ValueError, match=r"glico_p: 0.5 vs 0.9"):
        merge_results([glico, other])


def test_ablate_pieces_may_differ_in_settings_only_some_rows_read(tmp_path):
    # ablate has MixMatch rows too (--add-methods): a piece without one never reads --unlabeled.
    base = _ablate(tmp_path / "a", "--seeds", "0", "--only", "Baseline")
    mm = _ablate(tmp_path / "b", "--seeds", "0", "--only", "GLICO", "--add-methods", "mixmatch", "--unlabeled", "split")
    assert base["settings"]["unlabeled"] is None and mm["settings"]["unlabeled"] == "split"
    merged = merge_results([tmp_path / "a", tmp_path / "b"])
    assert merged["settings"]["unlabeled"] == "split" and {r["variant"] for r in merged["runs"]} == {
        "Baseline", "GLICO", "mixmatch"}
    assert merged["recipe"]["mixmatch"] == mm["recipe"]["mixmatch"]
    other = _edited_copy(tmp_path / "b", tmp_path / "c", lambda r: r["settings"].update(unlabeled="rest"))
    with pytest.raises(ValueError, match="unlabeled"):  # two readers must agree
        merge_results([tmp_path / "b", other])


def test_results_that_name_a_part_by_its_old_name_merge_with_todays(pieces, tmp_path):
    # f's 'wrn' is 'wrn-28-2' now; a piece written with the old name is read with the new one.
    def rename(name):
        def edit(r):
            for v in r["variants"]:
                if v["model"] is not None:
                    v["model"] = {**v["model"], "classifier": name}
            r["settings"]["base_model"] = {**r["settings"]["base_model"], "classifier": name}
        return edit

    d, _ = pieces
    old = _edited_copy(d / "a", tmp_path / "old", rename("wrn"))
    new = [_edited_copy(d / x, tmp_path / f"new-{x}", rename("wrn-28-2")) for x in ("b", "c")]
    merged = merge_results([old, *new])
    assert {v["model"]["classifier"] for v in merged["variants"] if v["model"] is not None} == {"wrn-28-2"}
