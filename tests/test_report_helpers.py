"""Written answers: claims that the run's data do not support are shown as warnings, never silently."""

from diffusion_lib.report import CLAIM_WARNING_CLASS, claim, fmt


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
