"""Report from fixture rows: tables, figures, CSV; self-contained HTML checked in headless Chromium."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from scipy import stats

from latentgap.cli import main
from latentgap.reports import build_report, load_rows
from latentgap.reports.build import learning_curves


N_TEST, N_TRAIN = 50, 135  # per fold: 3-fold CV of 200 images, 15 of the 150 training images for validation
GAPS = {"aeX": .10, "aeY": .03}  # recon - latent
UNCONVERGED = ("dsB", "aeY", "latent", 2, 1)  # dataset, autoencoder, space, fold, seed of the one unconverged cell


def _write_fixture(study):
    """3 folds x 2 seeds; image cells shared by two autoencoders; aeY's reconstructions track the images
    closely (equivalent), aeX's are 1 point lower with more noise; one latent cell of dsB x aeY did not converge."""
    rng = np.random.default_rng(0)
    rows = []
    common = dict(kind="result", n_test=N_TEST, n_train=N_TRAIN, n_val=15, k=3, splits_digest="5f1d",
                  image_size=[16, 16], auc=.9, mcc=.6, pretrained=False, epochs=5)

    def curve(final, converged):
        val = [final - .3 + .3 * e / 4 for e in range(5)] if converged else [final - .3 + .06 * e for e in range(5)]
        return {"epoch": [1, 2, 3, 4, 5], "train_loss": [1.0, .8, .6, .5, .45], "train_acc": [.5, .6, .7, .75, .8],
                "val_bacc": val}

    for ds in ("dsA", "dsB"):
        for fold in range(3):
            fold_effect = rng.normal(0, .02)
            for seed in (0, 1):
                image = .80 + fold_effect + rng.normal(0, .01)
                rows.append(dict(common, dataset=ds, autoencoder="none", space="image", variant="plain", fold=fold,
                                 seed=seed, bacc=image, recall_per_class=[.9, .7, .8], converged=True,
                                 curve=curve(image, True)))
                for ae, gap in GAPS.items():
                    recon = image + (rng.normal(0, .002) if ae == "aeY" else -.01 + rng.normal(0, .02))
                    for space, variant, shift in (("recon", "plain", 0), ("latent", "plain", gap),
                                                  ("latent", "noise-conditioned", gap / 2)):
                        b = recon - shift + (rng.normal(0, .02) if shift else 0)
                        conv = (ds, ae, space, fold, seed) != UNCONVERGED
                        r = dict(common, dataset=ds, autoencoder=ae, space=space, variant=variant, fold=fold, seed=seed,
                                 bacc=b, auc=.88, mcc=.55, recall_per_class=[.8, .6, .7], converged=conv,
                                 curve=curve(b, conv))
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


def _p(p: float) -> str:
    """The report's p display convention: 3 decimals, scientific below 0.001."""
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def _expected_tests(rows: list[dict], margin: float = 0.02) -> dict:
    """Every number of the tests table, computed here from the raw rows with numpy / scipy.stats."""
    df = pd.DataFrame([r for r in rows if r["kind"] == "result" and r["variant"] == "plain"])
    fold_mean = df.groupby(["dataset", "autoencoder", "space", "fold"])["bacc"].mean()  # seeds averaged per fold
    out = {}
    for ds in ("dsA", "dsB"):
        for ae in GAPS:
            img = fold_mean[(ds, "none", "image")].to_numpy()
            rec, lat = fold_mean[(ds, ae, "recon")].to_numpy(), fold_mean[(ds, ae, "latent")].to_numpy()
            for name, a, b in (("recon-latent", rec, lat), ("image-recon", img, rec)):
                d = a - b
                J = len(d)
                se = np.sqrt((1 / J + N_TEST / N_TRAIN) * d.var(ddof=1))
                t = d.mean() / se
                half = stats.t.ppf(0.975, J - 1) * se
                p_tost = max(stats.t.sf((d.mean() + margin) / se, J - 1), stats.t.sf((margin - d.mean()) / se, J - 1))
                out[(ds, ae, name)] = dict(J=J, mean=d.mean(), lo=d.mean() - half, hi=d.mean() + half, t=t,
                                           p=2 * stats.t.sf(abs(t), J - 1), p_plain=stats.ttest_rel(a, b).pvalue,
                                           p_wilcoxon=stats.wilcoxon(a, b).pvalue, p_tost=p_tost)
    # Holm over the table: k-th smallest p times (m - k + 1), running maximum, capped at 1
    keys = sorted(out, key=lambda k: out[k]["p"])
    running = 0.0
    for i, k in enumerate(keys):
        running = max(running, min(1.0, (len(keys) - i) * out[k]["p"]))
        out[k]["p_holm"] = running
    return out


def test_report_files_from_rows(tmp_path):
    rows = _write_fixture(tmp_path)
    paths = build_report(tmp_path)
    md = paths["md"].read_text()
    titles = re.findall(r"^## (.+)$", md, flags=re.M)
    assert titles[:3] == ["Findings", "Study", "Main results"]  # the report opens with the findings
    for title in ("Mean bACC per space", "Paired tests", "Across all autoencoder", "Reconstruction fidelity",
                  "Latent classifier ablation", "Fidelity vs. learnability gap", "Originals, reconstructions",
                  "Per-class recall", "Validation learning curves", "Accuracy against noise level"):
        assert any(t.startswith(title) for t in titles), title
    # the main table holds mean ± std over folds and seeds from the rows, and how many cells converged
    df = pd.DataFrame(rows)
    lat = df[(df.dataset == "dsA") & (df.autoencoder == "aeX") & (df.space == "latent") & (df.variant == "plain")].bacc
    assert f"| dsA | aeX | LS | {lat.mean():.3f} ± {lat.std(ddof=1):.3f}" in md
    assert re.search(r"\| dsB \| aeY \| LS \| [^|]*§ \| [^|]* \| [^|]* \| 6 \| 5/6 \|", md)  # budget-limited
    assert "| 31.00 ± 2.00 | 0.900 ± 0.020 | 100 |" in md
    for f in re.findall(r"\]\((report_files/[^)]+\.png)\)", md):
        assert (tmp_path / f).stat().st_size > 1000
    html = paths["html"].read_text()
    # figures: bACC per space, learning curves of 2 datasets, PSNR vs gap, 4 example grids, noise curves
    assert html.count("<table") == 6 and html.count("data:image/png;base64,") == 1 + 2 + 1 + 4 + 1
    assert not re.search(r"(src|href)=['\"](?!data:)", html)  # self-contained: no external assets
    # learning curves: one line per plain cell (image cells under both autoencoders), the unconverged one marked
    curves = learning_curves(load_rows(tmp_path))
    assert len(curves) == 5 * 2 * 3 * 2 * 3 * 2  # epochs x datasets x folds x seeds x (IS, RS, LS) x autoencoders
    ds, ae, space, fold, seed = UNCONVERGED
    cell = curves[(curves.dataset == ds) & (curves.autoencoder == ae) & (curves.space == space) &
                  (curves.fold == fold) & (curves.seed == seed)]
    assert len(cell) == 5 and (cell["converged"] == False).all()  # noqa: E712
    assert (curves.drop(cell.index)["converged"] == True).all()  # noqa: E712
    csv = pd.read_csv(paths["csv"])
    assert len(csv) == len(rows) and set(csv["kind"]) == {"result", "fidelity"}
    assert {tuple(json.loads(v)) for v in csv["recall_per_class"].dropna()} == {(.9, .7, .8), (.8, .6, .7)}


def test_report_numbers_match_independent_computation(tmp_path):
    rows = _write_fixture(tmp_path)
    md = build_report(tmp_path)["md"].read_text()
    exp = _expected_tests(rows)
    for (ds, ae, name), e in exp.items():
        line = (f"| {ds} | {ae} | {name} | {e['J']} | {e['mean']:+.3f} | [{e['lo']:+.3f}, {e['hi']:+.3f}] | "
                f"{N_TEST / N_TRAIN:.3f} | {e['t']:.2f} | {_p(e['p'])} | {_p(e['p_holm'])} | {_p(e['p_plain'])} | "
                f"{_p(e['p_wilcoxon'])} | {_p(e['p_tost'])} | "
                f"{'equivalent' if e['p_tost'] < 0.05 else 'not shown equivalent'} |")
        assert line in md, line
    assert sum(e["p_tost"] < 0.05 for e in exp.values()) >= 1  # both verdicts occur in the fixture
    # one sentence per autoencoder x dataset, with the same numbers
    findings = md.split("## Findings")[1].split("## Study")[0]
    for ds in ("dsA", "dsB"):
        for ae in GAPS:
            ir, rl = exp[(ds, ae, "image-recon")], exp[(ds, ae, "recon-latent")]
            eq = "equivalent to images (±2 pts)" if ir["p_tost"] < 0.05 else \
                "not shown equivalent to images (±2 pts;"
            side = "below" if rl["mean"] > 0 else "above"
            gap = f"latents {100 * abs(rl['mean']):.1f} pts {side} reconstructions, " \
                  f"corrected p = {_p(rl['p'])} (Holm {_p(rl['p_holm'])})"
            if rl["p_tost"] < 0.05:  # a latent gap shown small says so
                gap += f", equivalent within ±2 pts (TOST p = {_p(rl['p_tost'])})"
            conv = "1 of 18 cells did not converge: budget-limited" if (ds, ae) == UNCONVERGED[:2] else \
                "all cells converged"
            assert re.search(rf"^- {ae} on {ds}: reconstructions {re.escape(eq)}.*; {re.escape(gap)}; {conv}\.$",
                             findings, flags=re.M), (ds, ae, findings)
    assert findings.count("\n- ") == 4


def test_significance_legend_survives_markdown_and_html(tmp_path):
    _write_fixture(tmp_path)
    paths = build_report(tmp_path)
    md, html = paths["md"].read_text(), paths["html"].read_text()
    assert r"marked \* / \*\* / \*\*\* when LS differs" in md  # escaped: markdown shows the asterisks
    assert "marked * / ** / *** when LS differs" in html  # HTML shows them as typed
    assert "* /  / *" not in html
    # marks inside markdown table cells are escaped too; HTML tables carry them as typed
    marked = re.findall(r"\| LS \| [0-9.]+ ± [0-9.]+((?:\\\*)+) \|", md)
    assert marked and all(m.count("\\*") in (1, 2, 3) for m in marked)
    assert re.search(r"<td>[0-9.]+ ± [0-9.]+\*{1,3}</td>", html)


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
    assert total == 9 and ok == total, "every embedded image decodes"
    assert tables == 6 and rows > 20
    assert "Main results" in dom and "dsA" in dom
    assert "marked * / ** / *** when" in dom  # the legend as rendered by the browser
    shot = tmp_path / "shot.png"
    subprocess.run(CHROMIUM + [f"--user-data-dir={tmp_path / 'chrome2'}", f"--screenshot={shot}",
                               "--window-size=1200,2000", probe.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape[1] == 1200 and img.std() > 10  # a rendered page, not a blank one


def test_baseline_check_says_when_the_plain_recipe_wins(tmp_path):
    """Rows where the baseline recipe is ahead by 5 points on every fold: the check flags it, the numbers match
    a hand computation of the corrected test, and the report's findings say so."""
    from scipy import stats as st

    from latentgap.reports import build_report
    from latentgap.study import stats as S

    recipe = [0.60, 0.62, 0.58, 0.61, 0.59]
    gain = [0.05, 0.04, 0.06, 0.05, 0.05]
    rows = []
    for f in range(5):
        common = dict(kind="result", dataset="dsX", autoencoder="none", space="image", fold=f, seed=0, n_test=20,
                      n_train=80, k=5, splits_digest="d", image_size=[16, 16], converged=True)
        rows.append({**common, "variant": "plain", "bacc": recipe[f]})
        rows.append({**common, "variant": "baseline", "bacc": recipe[f] + gain[f]})
    b = S.baseline_check(pd.DataFrame(rows))
    d = np.array(gain)
    se = math.sqrt((1 / 5 + 20 / 80) * d.var(ddof=1))
    p = 2 * st.t.sf(d.mean() / se, 4)
    assert b["mean_diff"].iloc[0] == pytest.approx(0.05) and b["p"].iloc[0] == pytest.approx(p)
    assert bool(b["baseline_wins"].iloc[0]) and b["verdict"].iloc[0].startswith("baseline better")
    (tmp_path / "rows").mkdir()
    for i, r in enumerate(rows):
        (tmp_path / "rows" / f"c{i}.json").write_text(json.dumps(r))
    md = build_report(tmp_path)["md"].read_text()
    assert "## Baseline check" in md and "dsX: the plain baseline recipe beats the study's image recipe by 5.0 pts" in md


def test_cli_report_margin_reaches_the_equivalence_verdicts(tmp_path, capsys):
    """`latentgap report --margin`: a wider margin turns "not shown equivalent" into "equivalent"."""
    rows = []
    for f, (img, rec) in enumerate([(0.80, 0.77), (0.82, 0.80), (0.78, 0.75), (0.81, 0.78), (0.79, 0.77)]):
        common = dict(kind="result", dataset="dsY", variant="plain", fold=f, seed=0, n_test=20, n_train=80, k=5,
                      splits_digest="d", image_size=[16, 16], converged=True)
        rows += [{**common, "autoencoder": "none", "space": "image", "bacc": img},
                 {**common, "autoencoder": "aeY", "space": "recon", "bacc": rec}]
    (tmp_path / "rows").mkdir()
    for i, r in enumerate(rows):
        (tmp_path / "rows" / f"c{i}.json").write_text(json.dumps(r))
    main(["report", str(tmp_path)])
    assert "reconstructions not shown equivalent to images" in (tmp_path / "report.md").read_text()
    main(["report", str(tmp_path), "--margin", "0.1"])
    assert "reconstructions equivalent to images (±10 pts" in (tmp_path / "report.md").read_text()
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path), "--margin", "5"])
    assert e.value.code == 2 and "--margin 5.0 is not a bACC difference" in capsys.readouterr().err


def test_findings_say_when_the_latent_gap_is_shown_small(tmp_path):
    """RS and LS within a fraction of a point on every fold: the findings sentence gives the TOST verdict with the
    p of two one-sided corrected t-tests computed here with SciPy."""
    from scipy import stats as st

    from latentgap.reports import build_report

    rec = [0.700, 0.712, 0.695, 0.705, 0.708]
    lat = [0.702, 0.709, 0.697, 0.703, 0.710]
    rows = []
    for f in range(5):
        common = dict(kind="result", dataset="dsZ", variant="plain", fold=f, seed=0, n_test=20, n_train=80, k=5,
                      splits_digest="d", image_size=[16, 16], converged=True)
        rows += [{**common, "autoencoder": "none", "space": "image", "bacc": rec[f] + 0.01},
                 {**common, "autoencoder": "aeZ", "space": "recon", "bacc": rec[f]},
                 {**common, "autoencoder": "aeZ", "space": "latent", "bacc": lat[f]}]
    (tmp_path / "rows").mkdir()
    for i, r in enumerate(rows):
        (tmp_path / "rows" / f"c{i}.json").write_text(json.dumps(r))
    d = np.array(rec) - np.array(lat)
    se = math.sqrt((1 / 5 + 20 / 80) * d.var(ddof=1))
    p_tost = max(st.t.sf((d.mean() + 0.02) / se, 4), st.t.cdf((d.mean() - 0.02) / se, 4))
    assert p_tost < 0.05
    md = build_report(tmp_path)["md"].read_text()
    assert f"equivalent within ±2 pts (TOST p = {_p(p_tost)})" in md.split("## Findings")[1].split("## Study")[0]
