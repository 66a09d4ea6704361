"""The extraction orchestrator's records: the counts a resumed store continues, the error for a word kept nowhere."""

from mmconcepts.extract.extraction import Counts, StorePart
from mmconcepts.extract.settings import RUN_COUNTS, WORD_COUNTS
from mmconcepts.records import changed_setting


def test_counts_continue_what_a_store_committed():
    done = {"scanned": 7, "skipped_images": 1, "tokens": {"dog": {"kept": 3, "not_generated": 4}}}
    counts = Counts.resumed(done, ("dog", "cat"))
    assert counts.run == {k: {"scanned": 7, "skipped_images": 1}.get(k, 0) for k in RUN_COUNTS}
    assert counts.words["dog"]["kept"] == 3 and counts.words["dog"]["not_generated"] == 4
    assert counts.words["cat"] == {k: 0 for k in WORD_COUNTS}
    assert counts.record()["tokens"]["dog"]["kept"] == 3
    error = counts.none_kept()
    assert error is not None and str(error).startswith("the token 'cat' was kept in no image (scanned 7,")
    assert "\n" not in str(error)
    counts.words["cat"]["kept"] = 1
    assert counts.none_kept() is None


def test_a_store_part_defaults_to_a_new_store(tmp_path):
    part = StorePart(tmp_path, 0, 10)
    assert (part.resume, part.overwrite) == (False, False)


def test_changed_setting_skips_what_may_differ_and_reads_tuples_as_lists():
    old = {"layers": ["0", "norm"], "model_options": {"device": "cpu", "model": "m"}, "counts": {"kept": 1}}
    new = {"layers": ("0", "norm"), "model_options": {"device": "cuda", "model": "m"}, "counts": {"kept": 9}}
    assert changed_setting(old, new, {"model_options.device", "counts"}) is None
    assert changed_setting(old, new, {"counts"}) == ("model_options.device", "cpu", "cuda")
    assert changed_setting(old, {**new, "mode": "teacher"}, {"model_options.device", "counts"}) == \
        ("mode", None, "teacher")
