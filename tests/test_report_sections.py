"""A report says which sections it lacks, why, and the command that adds each (no Ray, no models)."""
from __future__ import annotations

from bassray.eval.report import sections_markdown
from bassray.eval.sections import SECTIONS, report_key, skipped_sections

COMMAND = "bassray evaluate B D --out R"


def test_a_fit_only_report_names_every_other_section_with_its_command():
    skipped = skipped_sections({"per_song": []}, asked=["fit"], contrastive=None, failed={}, command=COMMAND)
    assert set(skipped) == set(SECTIONS) - {"fit"}
    assert skipped["matching"]["reason"] == "needs a contrastive model, and none was given"
    assert "train_contrastive.py" in skipped["matching"]["command"]
    assert "--contrastive" in skipped["matching"]["command"]
    for section in ("fad-steps", "fad-guidance", "style", "length"):
        assert skipped[section]["reason"] == "not asked for (--only fit)"
        assert skipped[section]["command"] == f"{COMMAND} --only {section}"
    text = sections_markdown({"skipped": skipped})
    assert "## Sections not in this report" in text and "Fig. 3" in text and text.count("--only") >= 5


def test_failures_and_the_contrastive_model_are_told_apart():
    report = {report_key(s): {} for s in SECTIONS if s not in ("style", "matching")}
    skipped = skipped_sections(report, asked=None, contrastive="/bundles/contrastive",
                               failed={"style": "the style section needs train songs of at least two programs"},
                               command=COMMAND)
    assert set(skipped) == {"style", "matching"}
    assert "two programs" in skipped["style"]["reason"]
    assert skipped["matching"]["reason"] == "not run"  # a model was given: nothing else to say
    assert skipped_sections({report_key(s): {} for s in SECTIONS}, asked=None, contrastive=None, failed={},
                            command=COMMAND) == {}


def test_a_sweep_lists_every_baseline_with_its_own_figure():
    """FAD and chord-tone baselines name different basses: each is printed, none as nan."""
    from bassray.eval.report import sweep_markdown
    section = {"songs": 4, "fit_songs": 2, "embedding": "chroma-mfcc", "plot": "p.png",
               "points": [{"steps": 8, "sampler": "ddim", "fad": 10.0, "chord_tone": 0.5, "harmony": 1.0}],
               "baselines": {"fad": {"other songs' true bass": 1.0, "unconditional model": 20.0},
                             "chord_tone": {"true bass": 0.9, "another song's bass": 0.2, "unconditional model": 0.3}}}
    text = "\n".join(sweep_markdown("t", section, "steps", "sampler"))
    assert "nan" not in text
    for figure in ("1.000", "20.000", "0.90", "0.20", "0.30"):
        assert figure in text
