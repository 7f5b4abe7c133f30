"""Report from fixture rows: tables, figures, CSV; self-contained HTML checked in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from latentgap.cli import main
from latentgap.reports import build_report, load_rows
from latentgap.study import stats as S


def _write_fixture(study):
    rng = np.random.default_rng(0)
    rows = []
    for ds in ("dsA", "dsB"):
        for fold in range(3):
            rows.append(dict(kind="result", dataset=ds, autoencoder="none", space="image", variant="plain", fold=fold,
                             seed=0, bacc=0.80 + rng.normal(0, .02), auc=.9, mcc=.6, recall_per_class=[.9, .7, .8]))
            for ae, gap in (("aeX", .10), ("aeY", .03)):
                for space, variant, shift in (("recon", "plain", 0), ("latent", "plain", gap),
                                              ("latent", "noise-conditioned", gap / 2)):
                    r = dict(kind="result", dataset=ds, autoencoder=ae, space=space, variant=variant, fold=fold, seed=0,
                             bacc=0.79 - shift + rng.normal(0, .02), auc=.88, mcc=.55, recall_per_class=[.8, .6, .7],
                             pretrained=False, epochs=5)
                    if variant == "noise-conditioned":
                        r.update({f"acc_q{q}": .8 - .1 * q + rng.normal(0, .01) for q in range(4)})
                    rows.append(r)
    for ds in ("dsA", "dsB"):
        for ae, psnr in (("aeX", 31.0), ("aeY", 27.5)):
            rows.append(dict(kind="fidelity", dataset=ds, autoencoder=ae, n=100, psnr_mean=psnr, psnr_std=2.0,
                             ssim_mean=.9, ssim_std=.02))
            d = study / "pairs" / f"p{ds}{ae}"
            d.mkdir(parents=True)
            orig = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
            np.savez(d / "examples.npz", original=orig, recon=orig // 2, labels=np.arange(4), dataset=ds, autoencoder=ae)
    (study / "rows").mkdir(parents=True)
    for i, r in enumerate(rows):
        (study / "rows" / f"c{i:04d}.json").write_text(json.dumps(r))
    return rows


def test_report_files_from_rows(tmp_path):
    rows = _write_fixture(tmp_path)
    paths = build_report(tmp_path)
    md = paths["md"].read_text()
    for title in ("Main results", "Paired tests", "Across all autoencoder", "Reconstruction fidelity",
                  "Latent classifier ablation", "Fidelity vs. learnability gap", "Originals, reconstructions",
                  "Per-class recall", "Accuracy against noise level"):
        assert f"## {title}" in md
    # the main table holds mean ± std from the rows, with the gap marked for the large-gap autoencoder
    df = pd.DataFrame(rows)
    lat = df[(df.dataset == "dsA") & (df.autoencoder == "aeX") & (df.space == "latent") & (df.variant == "plain")].bacc
    assert f"| dsA | aeX | LS | {lat.mean():.3f} ± {lat.std(ddof=1):.3f}" in md
    assert "| 31.00 ± 2.00 | 0.900 ± 0.020 | 100 |" in md
    for f in re.findall(r"\]\((report_files/[^)]+\.png)\)", md):
        assert (tmp_path / f).stat().st_size > 1000
    html = paths["html"].read_text()
    assert html.count("<table") == 6 and html.count("data:image/png;base64,") == 1 + 4 + 1
    assert not re.search(r"(src|href)=['\"](?!data:)", html)  # self-contained: no external assets
    csv = pd.read_csv(paths["csv"])
    assert len(csv) == len(rows) and set(csv["kind"]) == {"result", "fidelity"}
    assert {tuple(json.loads(v)) for v in csv["recall_per_class"].dropna()} == {(.9, .7, .8), (.8, .6, .7)}


def test_report_tables_match_stats(tmp_path):
    _write_fixture(tmp_path)
    rows = load_rows(tmp_path)
    tests = S.pair_tests(rows)
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    for r in tests.itertuples():
        assert f"| {r.dataset} | {r.autoencoder} | {r.comparison} | {r.n} | {r.mean_diff:+.3f} |" in md


def test_report_cli_and_missing_rows(tmp_path, capsys):
    _write_fixture(tmp_path / "s")
    main(["report", str(tmp_path / "s"), "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "report.html").exists()
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "empty")])
    assert e.value.code == 2 and "no result rows" in capsys.readouterr().err


CHROMIUM = ["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
_CHECK_JS = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const rows = document.querySelectorAll('table tbody tr').length;
  const out = document.createElement('div');
  out.id = 'lg-check';
  out.textContent = `images ${ok}/${imgs.length} tables ${document.querySelectorAll('table').length} rows ${rows}`;
  document.body.appendChild(out);
});
</script></body>"""


@pytest.mark.browser
def test_report_renders_in_headless_chromium(tmp_path):
    assert shutil.which("chromium") or shutil.os.path.exists(CHROMIUM[0]), \
        "headless Chromium missing: apt-get install -y chromium (.ci/run installs it)"
    _write_fixture(tmp_path)
    html = build_report(tmp_path)["html"].read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", _CHECK_JS))
    res = subprocess.run(CHROMIUM + [f"--user-data-dir={tmp_path / 'chrome'}", "--virtual-time-budget=5000",
                                     "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    dom = res.stdout
    m = re.search(r"images (\d+)/(\d+) tables (\d+) rows (\d+)", dom)
    assert m, f"check script did not run; chromium stderr: {res.stderr[-500:]}"
    ok, total, tables, rows = map(int, m.groups())
    assert total == 6 and ok == total, "every embedded image decodes"
    assert tables == 6 and rows > 20
    assert "Main results" in dom and "dsA" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(CHROMIUM + [f"--user-data-dir={tmp_path / 'chrome2'}", f"--screenshot={shot}",
                               "--window-size=1200,2000", probe.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape[1] == 1200 and img.std() > 10  # a rendered page, not a blank one
