"""Written answers: claims that the run's data do not support are shown as warnings, never silently."""

import pytest

from diffusion_lib.chapter.claims import CLAIM_WARNING_CLASS, claim, fmt


def test_supported_claim_is_plain_text():
    out = claim("Cosine beats linear.", True)._repr_markdown_()
    assert out == "Cosine beats linear." and CLAIM_WARNING_CLASS not in out


def test_contradicted_claim_becomes_a_visible_warning():
    out = claim("Cosine beats <linear> & more.", 3.1 < 2.0)._repr_markdown_()
    assert CLAIM_WARNING_CLASS in out and "not supported by this run" in out
    assert "&lt;linear&gt; &amp; more" in out  # the claim's text is shown, escaped


def test_altering_a_result_flips_the_claim():
    fid = {"cosine": 12.0, "linear": 15.0}
    text = "The cosine schedule reaches a lower FID than linear."
    assert CLAIM_WARNING_CLASS not in claim(text, fid["cosine"] < fid["linear"])._repr_markdown_()
    fid["cosine"] = 20.0  # a rerun that contradicts the prose
    assert CLAIM_WARNING_CLASS in claim(text, fid["cosine"] < fid["linear"])._repr_markdown_()


def test_fmt():
    assert fmt(1234.5) == "1,234" or fmt(1234.5) == "1,235"
    assert fmt(0.012345) == "0.0123" and fmt(3.14159) == "3.14"


def test_headline_is_built_from_the_results_files():
    import json
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "tools"))
    from headline import CHAPTER_TITLES, headline

    text = headline("cpu")
    summary = json.loads((root / "results/cpu/03_train/summary.json").read_text())
    assert f"{summary['train_seconds'] / 60:.1f} on {summary['device_name']}" in text  # training time, done once
    timings = json.loads((root / "results/cpu/timings.json").read_text())
    for stem, t in timings.items():
        assert f"| {CHAPTER_TITLES[stem]} | {t['seconds'] / 60:.1f} |" in text
    assert "DDPM-1000 | " in text and "faster than DDPM)" in text
    ddpm_row = next(line for line in text.splitlines() if "DDPM-1000 |" in line)
    assert "faster than DDPM" not in ddpm_row
    assert "No results yet" in headline("no-such-profile")


def test_report_tools_take_one_profile_name_and_reject_anything_else(capsys):
    """A flag or a second argument is one error line and exit 2, with nothing written; --help prints the usage; a
    profile whose recipe study has not run leaves the README alone."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "tools"))
    import headline
    import prerender
    import recipe_readme

    written = {f: (root / f).read_bytes() if (root / f).exists() else None
               for f in ("_headline.md", "_answers.md", "README.md")}
    for main in (headline.main, prerender.main, recipe_readme.main):
        for args, status in ((["--profile", "cpu"], 2), (["cpu", "gpu"], 2), (["--help"], 0)):
            with pytest.raises(SystemExit) as exit_:
                main(args)
            assert exit_.value.code == status
        out, err = capsys.readouterr()
        assert "unrecognized arguments: --profile" in err and "unrecognized arguments: gpu" in err
        assert "profile" in out and err.count("error:") == 2
    assert recipe_readme.main(["no-such-profile"]) == 2
    assert "results/no-such-profile/05_recipe/ lacks ranking.csv and runs.csv" in capsys.readouterr().err
    assert {f: (root / f).read_bytes() if (root / f).exists() else None for f in written} == written


def test_tables_fold_intervals_into_one_column():
    import pandas as pd

    from diffusion_lib.chapter.tables import format_number, with_intervals

    df = pd.DataFrame({"model": ["a", "b"], "FID": [4.2967, 12.0], "FID lo": [3.3676, 10.5], "FID hi": [5.2258, 13.5],
                       "N": [400, 400]})
    out = with_intervals(df)
    assert list(out.columns) == ["model", "FID [95% CI]", "N"]
    assert out["FID [95% CI]"].tolist() == ["4.3 [3.37, 5.23]", "12 [10.5, 13.5]"]
    assert format_number(684866.0) == "684,866" and format_number(400.0) == "400"


def test_the_ema_setting_says_whether_the_average_warms_up():
    from types import SimpleNamespace

    from diffusion_lib.chapter.overview import ema_setting

    assert ema_setting(SimpleNamespace(ema_decay=0.998, ema_warmup=True)) == "0.998 with warm-up"
    assert ema_setting(SimpleNamespace(ema_decay=0.995, ema_warmup=False)) == "0.995"


def test_recipe_section_reads_the_sampler_check(tmp_path):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    from recipe_readme import section

    study = tmp_path / "p" / "05_recipe"
    study.mkdir(parents=True)
    (study / "ranking.csv").write_text(",FID,FID - base,FID - base lo,FID - base hi,verdict\n"
                                       "base,20.0,0,0,0,base\nwider,25.0,5.0,1.0,9.0,worse\n")
    (study / "runs.csv").write_text("arm,seed,minutes\nbase,0,3.0\nwider,0,4.0\n")
    text = section("p", tmp_path)
    assert "What hurts:** a 1.5 times wider network" in text and "(+5.00 [1.00, 9.00])" in text
    assert "Sampling" not in text  # chapter 09 has not run: no line, rather than an invented one
    (tmp_path / "p" / "09_ddim").mkdir()
    check = {"n": 2000, "steps": 50, "best": "DDIM-50 (eta=1)", "base": "DDIM-50 (eta=0)", "difference": [-0.5, -0.8, -0.2]}
    (tmp_path / "p" / "09_ddim" / "confirm.json").write_text(json.dumps(check))
    line = next(x for x in section("p", tmp_path).splitlines() if "Sampling" in x)
    assert "DDIM-50 (eta=1) is better than DDIM-50 (eta=0) in FID-MNIST (-0.5 [-0.8, -0.2])" in line
    check["difference"] = [0.1, -0.2, 0.4]
    (tmp_path / "p" / "09_ddim" / "confirm.json").write_text(json.dumps(check))
    assert "are indistinguishable in FID-MNIST at N = 2000 (+0.1 [-0.2, 0.4])" in section("p", tmp_path)


def test_the_front_page_says_first_what_a_reader_must_know(monkeypatch):
    """A quick book says that it is a smoke run; a chapter executed against other code is named with the command
    that re-executes it; an up-to-date reference book says nothing."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    import prerender

    assert "This is a smoke run" in prerender.status("quick")
    monkeypatch.setattr(prerender.staleness, "stale_chapters", lambda profile: {})
    assert prerender.status("cpu").strip() == ""
    monkeypatch.setattr(prerender.staleness, "stale_chapters", lambda profile: {"09_ddim": "changed"})
    text = prerender.status("cpu")
    assert "Out of date" in text and "@sec-ddim (last executed in" in text
    assert "tools/run_chapters.py --profile cpu --only 09_ddim" in text and "smoke run" not in text


def test_the_schedule_results_say_how_long_their_models_trained():
    """The schedule study's models trained far less than the reference model: the front page's rows and the
    Limitations say so, from the runs' own summaries and the chapter's recorded parameters."""
    import json
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "tools"))
    import headline
    import prerender

    res = root / "results" / "cpu"
    runs = [json.loads(p.read_text()) for p in (res / "04_schedules").glob("*/seed*/summary.json")]
    steps = {r["steps"] for r in runs}
    assert len(steps) == 1 and steps != {json.loads((res / "03_train/summary.json").read_text())["steps"]}
    sampler = headline.parameters(res, "04_schedules")["eval_sampler"]
    rows = [v for k, v in headline.result_rows(res) if "schedule (chapter 04)" in k]
    assert len(rows) == 3
    (n,) = steps
    assert all(f"models of {n:,} training steps" in v and f"DDIM-{sampler['steps']} at matched log-SNR" in v
               for v in rows)
    assert f"trained only {n:,} steps" in prerender.limitations("cpu")
