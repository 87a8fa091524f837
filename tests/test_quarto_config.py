"""_quarto.yml and its profiles, checked against Quarto's documented options where Quarto cannot run."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

# the subset of Quarto's documented schema this project uses
# (quarto.org/docs/reference/projects/books.html, .../formats/html.html, .../formats/typst.html, projects/profiles)
ALLOWED = {
    "project": {"type", "output-dir", "pre-render", "post-render", "render", "execute-dir", "resources"},
    "bibliography": None,
    "profile": {"default", "group"},
    "book": {"title", "subtitle", "author", "date", "search", "chapters", "appendices", "downloads", "output-file"},
    "execute": {"enabled", "freeze", "echo", "warning"},
    "crossref": {"chapters", "fig-prefix", "tbl-prefix"},
    "format.html": {"toc", "number-sections", "code-fold", "code-tools", "theme", "css"},
    "format.typst": {"toc", "number-sections", "papersize", "margin", "fontsize", "section-numbering", "columns"},
}


def _check_keys(cfg: dict, where: str):
    for section, keys in cfg.items():
        if section == "format":
            for fmt, opts in keys.items():
                assert f"format.{fmt}" in ALLOWED, f"{where}: format {fmt!r} not used by this project's schema subset"
                assert set(opts) <= ALLOWED[f"format.{fmt}"], f"{where}: unknown {fmt} options {set(opts) - ALLOWED[f'format.{fmt}']}"
        else:
            assert section in ALLOWED, f"{where}: unknown top-level key {section!r}"
            if ALLOWED[section] is not None:  # a mapping of options; None: a plain value
                assert set(keys) <= ALLOWED[section], f"{where}: unknown {section} keys {set(keys) - ALLOWED[section]}"


def test_base_config():
    cfg = yaml.safe_load((ROOT / "_quarto.yml").read_text())
    _check_keys(cfg, "_quarto.yml")
    assert cfg["project"]["type"] == "book"
    assert cfg["execute"]["enabled"] is False  # executed notebooks are rendered, never re-executed
    assert (ROOT / cfg["project"]["pre-render"]).exists()
    assert (ROOT / cfg["bibliography"]).exists()
    assert cfg["execute"]["echo"] is False  # code is shown only where a cell asks for it
    assert cfg["profile"]["default"] in ("cpu", "gpu")
    assert "chapters" not in cfg.get("book", {})  # arrays merge across profiles: each profile lists its own


@pytest.mark.parametrize("profile", ["quick", "cpu", "gpu"])
def test_profile_lists_every_chapter_in_order(profile):
    cfg = yaml.safe_load((ROOT / f"_quarto-{profile}.yml").read_text())
    _check_keys(cfg, f"_quarto-{profile}.yml")
    chapters = cfg["book"]["chapters"]
    assert chapters[0] == "index.qmd" and (ROOT / "index.qmd").exists()
    expected = [f"results/{profile}/{p.stem}.ipynb" for p in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py"))]
    assert chapters[1:] == expected + ["answers.qmd", "references.qmd"]
    assert cfg["project"]["output-dir"] == f"_book/{profile}"


def test_reference_profile_chapters_exist():
    default = yaml.safe_load((ROOT / "_quarto.yml").read_text())["profile"]["default"]
    cfg = yaml.safe_load((ROOT / f"_quarto-{default}.yml").read_text())
    missing = [c for c in cfg["book"]["chapters"] if not (ROOT / c).exists()]
    assert not missing, f"the default profile's book lists chapters that were not executed: {missing}"


def test_index_includes_the_generated_headline():
    text = (ROOT / "index.qmd").read_text()
    assert "{{< include _headline.md >}}" in text
    for sec in ("sec-unet", "sec-process", "sec-train", "sec-schedules", "sec-recipe", "sec-interpolation", "sec-gan",
                "sec-cifar10", "sec-ddim"):
        assert f"@{sec}" in text
