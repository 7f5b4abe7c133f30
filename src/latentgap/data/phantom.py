"""Built-in phantom: seeded, long-tailed, medical-looking images whose classes differ at a chosen frequency.

Each image is a soft elliptical "organ" with smooth tissue texture and noise on a dark background, holding
one lesion (several for multi-label). Every lesion has three attributes, each set by a level ``t`` in [0, 1]:

* ``coarse``    lesion size (radius 0.16..0.32 of the half-side) and lobulated outline (0..30 % radius ripple);
* ``intensity`` lesion contrast against the organ (+0.10..+0.30);
* ``fine``      orientation of a stripe texture inside the lesion at 0.30..0.45 cycles/pixel (period 2-3 px).

The attribute named by ``feature`` carries the class (``t = c / (K-1)``, with jitter so neighbouring classes
overlap); the other two are drawn at random for every image, so all images look alike and only the chosen
attribute separates classes. ``coarse``/``intensity`` survive blurring and downsampling; ``fine`` lives near
the Nyquist limit and is exactly what an x8 autoencoder may fail to keep (the learnability-gap question).

Class counts are geometric (head/tail = ``imbalance``), like the long-tailed benchmarks of the paper.
Image ``i`` depends only on ``(seed, i)`` and the parameters: its random numbers come from a generator
seeded with ``splitmix64(seed, i)``, so any batch composition yields identical bytes, and only the labels
(``n`` int64) are kept in RAM. The draws use torch's CPU generator, so bytes are reproducible for a given
``PHANTOM_VERSION`` and torch's CPU generator (unchanged across releases so far). With ``patients=k`` the
images are spread over ``k`` patients who share their organ anatomy, so patient-grouped folds matter;
labels stay per image.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from .base import ImageDataset

PHANTOM_VERSION = 1
FEATURES = ("coarse", "intensity", "fine")
DEFAULTS = dict(n=10000, size=64, feature="fine", classes=5, imbalance=50.0, channels=1, seed=0, multilabel=0,
                patients=0)
_TAG_LABELS, _TAG_PATIENT = 0x4C4142, 0x504154  # separate seed streams for labels and patient anatomy
_CHUNK = 128  # images rendered at once: temporaries (chunk x size^2 float32) stay in cache
_N_U = 8       # uniforms per lesion slot


def parse_phantom_spec(spec: str) -> dict:
    """``"phantom:n=2000,feature=coarse"`` -> full parameter dict (defaults filled in)."""
    params = dict(DEFAULTS)
    _, _, rest = spec.partition(":")
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, val = item.partition("=")
        key = key.strip().lower()
        if not eq or key not in DEFAULTS:
            raise UserError(f"phantom option '{item}' is not one of {', '.join(DEFAULTS)}",
                            "write phantom:key=value,... e.g. phantom:n=2000,size=32,feature=coarse")
        try:
            params[key] = type(DEFAULTS[key])(val.strip()) if key != "feature" else val.strip().lower()
        except ValueError:
            raise UserError(f"phantom option {key}='{val}' is not a {type(DEFAULTS[key]).__name__}",
                            f"give {key} as a number, e.g. {key}={DEFAULTS[key]}") from None
    return params


def _geometric_counts(n: int, k: int, imbalance: float) -> np.ndarray:
    w = imbalance ** (-np.arange(k) / max(k - 1, 1))
    exact = n * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]] += 1  # largest remainder
    return counts


class PhantomDataset(ImageDataset):
    """The phantom generator behind ``open_dataset("phantom:...")``.

    Args:
        n: number of images. size: side in pixels (>= 16). feature: ``coarse``, ``intensity`` or ``fine``.
        classes: number of classes (labels for multi-label). imbalance: head/tail count (or prevalence) ratio.
        channels: 1 (grey) or 3 (tinted RGB). seed: generator seed. multilabel: 1 for independent findings
        with long-tailed prevalence (40 % for the head finding) as a 0/1 matrix. patients: 0, or the number
        of patients the images are spread over. resize: optional square output side.
    """

    def __init__(self, resize: int | None = None, **params):
        p = {**DEFAULTS, **params}
        self.params = p
        n, k = int(p["n"]), int(p["classes"])
        checks = [(p["feature"] in FEATURES, f"feature must be one of {', '.join(FEATURES)}"),
                  (k >= 2, "classes must be >= 2"), (n >= k, "n must be >= classes"),
                  (int(p["size"]) >= 16, "size must be >= 16"), (float(p["imbalance"]) >= 1, "imbalance must be >= 1"),
                  (int(p["channels"]) in (1, 3), "channels must be 1 or 3"),
                  (int(p["multilabel"]) in (0, 1), "multilabel must be 0 or 1"),
                  (0 <= int(p["patients"]) <= n, "patients must be between 0 and n")]
        for ok, msg in checks:
            if not ok:
                raise UserError(f"bad phantom parameters {p}: {msg}", "fix the option in phantom:key=value,...")
        self.resize, self.channels, self.multilabel = resize, int(p["channels"]), bool(p["multilabel"])
        self.native_size = (int(p["size"]), int(p["size"]))
        changed = [f"{key}{p[key]:g}" if isinstance(p[key], float) else f"{key}{p[key]}"
                   for key in DEFAULTS if p[key] != DEFAULTS[key]]
        self.name = "-".join(["phantom", *changed])
        self.source = "phantom:" + ",".join(f"{key}={p[key]}" for key in DEFAULTS)
        rng = np.random.default_rng([int(p["seed"]), _TAG_LABELS])
        if self.multilabel:
            prevalence = 0.4 * float(p["imbalance"]) ** (-np.arange(k) / (k - 1))
            self.labels = (rng.random((n, k)) < prevalence).astype(np.int64)
            self.class_names = [f"finding{j}" for j in range(k)]
        else:
            self.labels = rng.permutation(np.repeat(np.arange(k), _geometric_counts(n, k, float(p["imbalance"]))))
            self.class_names = [f"class{j}" for j in range(k)]
        self.patient_ids = None
        if int(p["patients"]):
            pid = rng.permutation(np.arange(n) % int(p["patients"]))
            self.patient_ids = np.char.add("P", np.char.zfill(pid.astype(str), 6))
            self._pid = pid

    def _content_key(self) -> dict:
        return {"kind": "phantom", "version": PHANTOM_VERSION, "params": self.params}

    # ------------------------------------------------------------------ rendering
    def _draw(self, idx: np.ndarray, slots: int) -> tuple[np.ndarray, ...]:
        """Per-image random numbers, each from that image's own generator (batch-independent).

        A torch CPU generator re-seeded per image costs ~25 us, a quarter of numpy's ``default_rng``
        (SeedSequence hashing) for the same draws, which matters at 100k images.
        """
        s, seed = self.native_size[0], int(self.params["seed"])
        u = torch.empty((len(idx), 8 + _N_U * slots), dtype=torch.float64)
        coarse = torch.empty((len(idx), 8, 8))
        noise = torch.empty((len(idx), self.channels, s, s))
        g = torch.Generator()
        for j, i in enumerate(idx.tolist()):
            g.manual_seed(_mix(seed, i))
            torch.rand(u.shape[1], generator=g, dtype=torch.float64, out=u[j])
            torch.randn((8, 8), generator=g, out=coarse[j])
            torch.randn((self.channels, s, s), generator=g, out=noise[j])
            if self.patient_ids is not None:  # organ anatomy belongs to the patient, not the image
                g.manual_seed(_mix(seed, _TAG_PATIENT, int(self._pid[i])))
                torch.rand(8, generator=g, dtype=torch.float64, out=u[j, :8])
        return u.numpy(), coarse.numpy(), noise.numpy()

    def _load_native(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), *self.native_size, self.channels), np.uint8)
        for a in range(0, len(idx), _CHUNK):
            out[a:a + _CHUNK] = self._render(idx[a:a + _CHUNK])
        return out

    def _render(self, idx: np.ndarray) -> np.ndarray:
        s, k, feature = self.native_size[0], self.num_classes, self.params["feature"]
        slots = k if self.multilabel else 1
        u, coarse, noise = self._draw(idx, slots)
        col = lambda a: a[:, None, None].astype(np.float32)  # (B,) -> (B, 1, 1)
        r = (np.arange(s, dtype=np.float32) + 0.5) / s * 2 - 1  # pixel centres in [-1, 1]
        yy, xx = r[None, :, None], r[None, None, :]

        # Organ: soft ellipse, brightness 0.40-0.55, smooth texture from 8x8 noise (size-independent look).
        cx, cy, th = col(0.2 * u[:, 0] - 0.1), col(0.2 * u[:, 1] - 0.1), col(np.pi * u[:, 2])
        ax, by = col(0.60 + 0.15 * u[:, 3]), col(0.45 + 0.15 * u[:, 4])
        xr = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
        yr = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
        organ = _soft(0.5 * (1 - (xr / ax) ** 2 - (yr / by) ** 2), 0.03)  # (1 - d^2)/2 ~ 1 - d at the edge; no sqrt
        w = _upsample_matrix(s)  # (S, 8): bicubic upsampling as a separable matrix product
        tex = w @ coarse @ w.T   # (B, S, S)
        img = 0.08 + organ * (col(0.40 + 0.15 * u[:, 5]) + 0.04 * tex)

        labels = self.labels[idx]
        pix = (r + 1) * s / 2  # pixel coordinates for stripe frequencies in cycles/pixel
        # A lesion never reaches past 0.47 (half-side units) from its centre, so it is drawn in a window of
        # +-0.5 around it and added into the frame: ~1/4 of the full-frame work.
        win = min(s, 2 * int(np.ceil(0.25 * s)) + 2)
        bi = np.arange(len(idx))[:, None, None]
        for j in range(slots):
            v = u[:, 8 + _N_U * j: 8 + _N_U * (j + 1)]
            level = np.full(len(idx), j / (k - 1)) if self.multilabel else labels / (k - 1)
            active = labels[:, j] if self.multilabel else np.ones(len(idx))
            # each attribute: class level where it is the feature, else a random level (same marginal)
            t = {f: (level if f == feature else v[:, 4 + n]) for n, f in enumerate(FEATURES)}
            jit = v[:, 7] - 0.5  # shared jitter in [-0.5, 0.5): keeps neighbouring classes overlapping
            rad = (0.16 + 0.16 * t["coarse"]) * (1 + 0.25 * jit)
            lob = 0.3 * t["coarse"]
            contrast = 0.10 + 0.20 * t["intensity"] + 0.04 * jit
            ang = np.pi * (k - 1) / k * t["fine"] + np.pi / k * 0.5 * jit
            # lesion centre inside the organ, at up to half its radius
            rho, phi, o = 0.5 * v[:, 0], 2 * np.pi * v[:, 1], th[:, 0, 0]
            a_, b_ = ax[:, 0, 0] * np.cos(phi), by[:, 0, 0] * np.sin(phi)
            lx = cx[:, 0, 0] + rho * (a_ * np.cos(o) - b_ * np.sin(o))
            ly = cy[:, 0, 0] + rho * (a_ * np.sin(o) + b_ * np.cos(o))
            # window rows/cols (B, win), clipped to the frame
            x0 = np.clip(np.round((lx + 1) * s / 2).astype(np.int64) - win // 2, 0, s - win)
            y0 = np.clip(np.round((ly + 1) * s / 2).astype(np.int64) - win // 2, 0, s - win)
            cols, rows = x0[:, None] + np.arange(win), y0[:, None] + np.arange(win)
            dx = r[cols][:, None, :] - col(lx)  # (B, 1, win)
            dy = r[rows][:, :, None] - col(ly)  # (B, win, 1)
            dist = np.sqrt(dx * dx + dy * dy) + 1e-6
            c = (dx * col(np.cos(2 * np.pi * v[:, 2])) + dy * col(np.sin(2 * np.pi * v[:, 2]))) / dist
            c2 = c * c  # cos(5 phi) = T5(cos phi), Horner form: five lobes without atan2 or slow float pow
            ripple = c * (c2 * (16 * c2 - 20) + 5)
            lesion = _soft(1 - dist / (col(rad) * (1 + col(lob) * ripple)), 0.02) * col(active)
            freq, phase = 0.30 + 0.15 * v[:, 3], 2 * np.pi * v[:, 2]
            # cos(a x + b y + p) = cos(a x + p) cos(b y) - sin(a x + p) sin(b y): separable, only (B, win) transcendentals
            ux = (2 * np.pi * freq * np.cos(ang))[:, None] * pix[cols] + phase[:, None]
            uy = (2 * np.pi * freq * np.sin(ang))[:, None] * pix[rows]
            f32 = lambda a: a.astype(np.float32)
            wave = (f32(np.cos(ux))[:, None, :] * f32(np.cos(uy))[:, :, None]
                    - f32(np.sin(ux))[:, None, :] * f32(np.sin(uy))[:, :, None])
            img[bi, rows[:, :, None], cols[:, None, :]] += lesion * (col(contrast) + 0.08 * wave)

        if self.channels == 3:  # skin-like tint, slightly different per image
            tint = np.stack([0.95 + 0.05 * u[:, 6], 0.75 + 0.1 * u[:, 7], 0.62 + 0.1 * u[:, 6] * u[:, 7]], 1)
            img = img[:, None] * tint[:, :, None, None].astype(np.float32)
        else:
            img = img[:, None]
        img = img + 0.03 * noise  # (B, C, S, S)
        return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)


def _mix(*keys: int) -> int:
    """splitmix64 of a tuple of ints -> 63-bit seed (distinct, well-spread seeds per image / patient)."""
    z = 0
    for k in keys:
        z = (z + k + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        z ^= z >> 31
    return z >> 1


@functools.lru_cache(maxsize=8)
def _upsample_matrix(s: int) -> np.ndarray:
    """(S, 8) matrix W with ``W @ a @ W.T == bicubic upsampling of an 8x8 array a`` (torch's kernel)."""
    eye = torch.eye(8)[:, None, None, :]  # 8 one-hot rows, as (8, 1, 1, 8) images
    w = F.interpolate(eye, size=(1, s), mode="bicubic", align_corners=False)[:, 0, 0, :]  # (8, S)
    return w.T.contiguous().numpy()


def _soft(signed: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-indicator of a region with signed (normalised) distance, edge ``width`` wide."""
    return 0.5 * (1 + np.tanh(signed / width))
