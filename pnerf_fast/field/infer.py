"""No-grad evaluation of a field for rendering, split in two so that the renderer can
run the color network only on the samples that matter:

    ev = evaluator(field)
    sigma = ev.geometry(x)          # density network on every sample   -> [m]
    ...composite, pick the samples whose weight counts...
    rgb = ev.color(sel, d[sel])     # color network on those only       -> [k, 3]

``color`` takes indices into the last ``geometry`` call's samples (their features are
kept in between). Three ways to get there, chosen per field:

- a hash-grid :class:`RadianceField` whose MLPs are our :class:`MLP` (nn.Linear
  weights), on the CPU: the hash-grid kernel on all samples, then the MLPs by blocks of
  ``block`` samples through ``addmm``, into buffers that are kept between calls, chunks
  and frames (a fresh large
  tensor costs page faults on these machines: 6-8 ms to fill 26 MB against 2 ms for a
  reused one), ReLU and sigmoid in place. The MLP runs as ``addmm`` whatever the
  field's backend: the fused kernel is written for the backward (it recomputes the
  forward inside), and its forward alone measured 7x slower than blocked ``addmm``
  here (benchmarks/README.md, "Rendering");
- any other field with ``geometry(x)`` and ``color(feat, d)`` (a GPU, tcnn, the paper
  preset): the two calls, features kept;
- a field with only ``forward(x, d)``: the whole field on every sample; ``color`` picks.

Every path gives the field's own values (up to the rounding of a different kernel for
the fused backend's MLPs).
"""
from __future__ import annotations

import weakref

import torch

from .._native import native
from .mlp import MLP, shifted_biases

_EVALUATORS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def evaluator(field, block: int = 8192) -> "FieldEvaluator":
    """The evaluator of ``field``, kept (with its buffers) as long as the field lives."""
    ev = _EVALUATORS.get(field)
    if ev is None or ev.block != block:
        ev = _EVALUATORS[field] = FieldEvaluator(field, block)
    return ev


class FieldEvaluator:
    def __init__(self, field, block: int = 8192):
        if block < 1:
            raise ValueError(f"FieldEvaluator: argument 'block' must be >= 1, got {block}")
        self.field, self.block = field, int(block)
        self._bufs: dict[str, torch.Tensor] = {}
        self._feat = self._rgb = None

    # -- buffers ------------------------------------------------------------------
    def buffer(self, name: str, rows: int, cols: int, like: torch.Tensor, zero: bool = False) -> torch.Tensor:
        """A [rows, cols] view of a kept buffer, grown when too small: contents undefined,
        or (``zero``) all zero, which callers must then leave so."""
        b = self._bufs.get(name)
        if b is None or b.shape[0] < rows or b.shape[1] != cols or b.dtype != like.dtype or b.device != like.device:
            b = (torch.zeros if zero else torch.empty)(max(rows, 1), cols, dtype=like.dtype, device=like.device)
            self._bufs[name] = b
        return b[:rows]

    def zeros(self, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        return self.buffer("zeros", rows, cols, like, zero=True)

    # -- which path ---------------------------------------------------------------
    def _blocked_ok(self, x: torch.Tensor) -> bool:
        f = self.field
        return (x.device.type == "cpu" and x.dtype == torch.float32 and getattr(f, "hashgrid", False)
                and isinstance(f.density_net, MLP) and isinstance(f.color_net, MLP)
                and f.encoding.params.dtype == torch.float32 and f.encoding.impl in ("auto", "native")
                and native() is not None)

    def _path(self, x: torch.Tensor) -> str:
        """How ``geometry(x, d)`` evaluates: "blocked", "split" (the field's geometry and
        color) or "forward" (the whole field, colours included)."""
        if self._blocked_ok(x):
            return "blocked"
        f = self.field
        return "split" if hasattr(f, "geometry") and hasattr(f, "color") else "forward"

    def colors_in_geometry(self, x: torch.Tensor) -> bool:
        """Whether ``geometry(x, d)`` evaluates the colours too (a field with only
        ``forward``), so that it needs their directions ``d`` already."""
        return self._path(x) == "forward"

    # -- evaluation ---------------------------------------------------------------
    @torch.no_grad()
    def geometry(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:  # [m, 3], [m, 3] -> sigma [m]
        """sigma of every sample; the features (or, for a field with only ``forward``,
        the colors: that is where it needs ``d``) are kept for ``color``."""
        f = self.field
        self._feat = self._rgb = None
        path = self._path(x)
        if path == "blocked":
            dn = f.density_net
            feat = self.buffer("feat", x.shape[0], dn.out_dim, x)
            g = f.encoding
            # The hash grid on all samples at once (its pass per level wants many points:
            # 1.9x slower in blocks of 8,192), the MLP by blocks that stay in cache.
            e = native().hashgrid_forward(x.contiguous(), g.params, g.resolutions, g.log2_table, list(g.aabb),
                                          out=self.buffer("enc", x.shape[0], g.out_dim, x))
            vf = f.volume_features(x) if hasattr(f, "volume_features") else None
            layers = _layers(dn, f._shift("density_z"))
            for i in range(0, x.shape[0], self.block):
                j = min(i + self.block, x.shape[0])
                # The volume's features are the first layer's last inputs: their columns are
                # added by a second addmm, not concatenated (a copy of every sample's inputs).
                self._mlp(e[i:j], layers, None, feat[i:j], extra=None if vf is None else vf[i:j])
            self._feat = feat
            return f._sigma(feat[:, 0])
        if path == "split":
            sigma, self._feat = f.geometry(x)
            return sigma
        sigma, self._rgb = f(x, d)
        return sigma

    @torch.no_grad()
    def color(self, sel: torch.Tensor, d: torch.Tensor) -> torch.Tensor:  # [k] int64, [k, 3] -> [k, 3]
        """rgb of the last ``geometry`` call's samples ``sel`` (directions ``d``)."""
        if self._rgb is not None:
            return self._rgb[sel]
        f, feat = self.field, self._feat
        if feat is None:
            raise RuntimeError("FieldEvaluator.color: call geometry() first")
        if not self._blocked_ok(d) or feat.device.type != "cpu":
            return f.color(feat[sel], d)
        cn = f.color_net
        k, D, G = sel.shape[0], f.dir_encoding.out_dim, feat.shape[1]
        out = torch.empty(k, 3, dtype=feat.dtype, device=feat.device)
        layers = _layers(cn, f._shift("color_z"))
        for i in range(0, k, self.block):
            j = min(i + self.block, k)
            c_in = self.buffer("c_in", j - i, D + G, feat)
            c_in[:, :D] = f.dir_encoding(d[i:j])
            torch.index_select(feat, 0, sel[i:j], out=self.buffer("gather", j - i, G, feat))
            c_in[:, D:] = self._bufs["gather"][: j - i]
            self._mlp(c_in, layers, cn.output_activation, out[i:j])
        return out

    @torch.no_grad()
    def _mlp(self, h, layers, act, out, extra=None):
        """nn.Linear layers with ReLU between, into ``out``; hidden rows in kept buffers.
        ``extra`` [rows, k]: more inputs of the first layer, after ``h``'s."""
        last = len(layers) - 1
        for l, (W, b) in enumerate(layers):
            o = out if l == last else self.buffer(f"h{l % 2}", h.shape[0], W.shape[0], h)
            if l == 0 and extra is not None:
                n = h.shape[1]
                torch.addmm(b, h, W[:, :n].t(), out=o)
                o.addmm_(extra, W[:, n:].t())
            else:
                torch.addmm(b, h, W.t(), out=o)
            if l < last or act == "relu":
                o.clamp_(min=0)
            h = o
        if act == "sigmoid":
            out.sigmoid_()
        return out


def _layers(mlp: MLP, bias_shift):
    """(weight, bias) per layer, the shifts added to the biases as MLP.forward does."""
    return [(l.weight, b) for l, b in zip(mlp.layers, shifted_biases(mlp, bias_shift))]
