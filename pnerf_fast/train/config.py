"""Training configuration: small dataclasses, loaded from YAML and validated. An
unknown key or a bad value is a ValueError that names the key (e.g. ``meta.alpha.grid``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from .._config import build_config
from .._io import safe_yaml_load
from ..render.renderer import RenderConfig

METHODS = ("meta", "joint", "latent", "random")
OPTIMIZERS = ("sgd", "adam")


@dataclass
class GroupLR:
    """Learning rates per parameter group: the hash-grid tables and the MLPs. Plain SGD
    needs a grid rate ~1e5 times the MLP's (sparse, small table gradients)."""
    grid: float = 3e4
    mlp: float = 0.3
    latent: float = 0.0       # the per-subject code (latent-conditioned fields only)


@dataclass
class GridConfig:
    res: int = 64
    levels: int = 1
    decay: float = 0.95
    threshold: float = 0.01   # occupied when sigma * render step > min(mean, this)
    update_every: int = 4      # meta: subjects between grid updates from θ_p; joint: steps / 16
    warmup_updates: int = 2    # grid stays all-occupied for this many updates
    hull: bool = True          # restrict the grid to the union of the subjects' visual hulls (needs masks)
    hull_dilate: int = 2       # cells of margin around the hull
    hull_min_fraction: float = 0.25  # a cell is in the union when inside this fraction of the hulls
    # the grid's box lowered by this much (canonical units) below the field's: the hash grid
    # gives points below its box the features of its floor, so the field goes on down as the
    # neck's cross-section there; set by finetune's grid_down, stored with the portrait
    floor_drop: float = 0.0


@dataclass
class MetaConfig:
    optimizer: str = "sgd"
    alpha: GroupLR = field(default_factory=GroupLR)                  # inner (support) lr
    beta: GroupLR = field(default_factory=lambda: GroupLR(3e4, 0.3))  # query lr, applied to θ_m and θ_p
    n_support: int = 8
    n_query: int = 8
    epochs: int = 10
    batch: int = 1          # subjects per (batched first-order) meta update; >= the world size under torchrun


@dataclass
class JointConfig:
    optimizer: str = "adam"
    lr: GroupLR = field(default_factory=lambda: GroupLR(1e-2, 1e-3))
    steps: int = 2000


@dataclass
class LatentConfig:
    """Auto-decoder pretraining (method: latent): shared weights and one code per
    training subject, fitted jointly to all views with Adam (Preface / Cafca)."""
    steps: int = 20000
    lr: GroupLR = field(default_factory=lambda: GroupLR(1e-2, 2e-3, 1e-2))
    lr_final: float = 0.1       # learning rates decay exponentially to this fraction
    code_reg: float = 1e-4      # weight of mean(z^2) in the loss
    code_init_std: float = 0.01
    # > 0: the codes learn from each subject's frontal view only, this many rays a step with
    # the shared weights frozen (as the finetune's code stage fits a new subject), and the
    # shared weights learn all views from those codes (CAVIA's split of inner and outer
    # parameters, first-order): the code holds what one view can tell, the decoder the rest
    front_rays: int = 0


@dataclass
class FinetuneConfig:
    optimizer: str = "sgd"
    lr: GroupLR | None = None   # None: the meta inner-loop rates (alpha)
    steps: int = 32
    rays_per_step: int = 2048
    update_grid: bool = False   # refresh the grid from the field every 32 steps
    cover: bool = False         # unite the grid with the input mask's visual cone (the whole subject)
    carve: bool = False         # with cover: also empty the cells the input view sees as background
    # latent-conditioned priors: first fit only the code, then all weights
    code_steps: int = 0
    code_lr: float = 3e-2
    code_reg: float = 1e-3      # pull of the code towards the training codes' mean (per std^2)
    code_rays: int = 0          # rays per code step (32 numbers need fewer than all weights); 0: rays_per_step
    prior_pull: float = 0.0     # L2 pull of all weights towards the prior, as decay per step (x lr)
    # weight of the mean opacity (per render step) at random points of the cells that
    # `cover` added: the prior never learned those cells, so they start with whatever
    # density it happens to have there; this empties them unless the input needs matter
    empty_reg: float = 0.0
    # the input side (pixels) that ``steps`` is meant for: a larger input (a 256x256
    # photo) gets proportionally more stage-2 steps, by side (2x at twice the side, at most
    # 4x), when no budget is given; 0: always ``steps``
    steps_res: int = 0
    # the fraction of each step's rays that are mirrored across the face's plane of
    # symmetry (from its landmarks), with the colour of the ray they mirror: a second,
    # virtual view of the face from the mirrored camera, for single-view fits only
    mirror: float = 0.0
    mirror_stop: float = 1.0    # stage 2 mirrors only in this first fraction of its steps (or seconds)
    # a mirrored ray's loss: its opacity against the mask it mirrors (the silhouette seen
    # from the mirrored camera), plus this weight times its colour error (1: the colour
    # counts as much as a real ray's; shading is rarely symmetric)
    mirror_rgb: float = 1.0
    # only rays passing within this distance of the head's centre are mirrored (landmark
    # template units, ex-ex = 0.9: the skull and hair, not the neck and shoulders, whose
    # pose is not symmetric); 0: any ray
    mirror_radius: float = 0.0
    # one surface per input ray: the weight, in stage 2, of each ray's depth spread (the
    # weighted variance of where it ends, times its opacity, in canonical units^2) inside
    # the mask. One view can be matched by colour spread over several depths, which shows
    # as ghost layers from any other angle; single-view fits only; 0: off
    spread: float = 0.0
    spread_stop: float = 1.0    # stage 2 penalises the spread only in this first fraction of its steps (or seconds)
    # lower the occupancy grid's floor by this much (canonical units; the default box,
    # geometry.CANONICAL_AABB, is +-1.5, the chin at y = -0.85) before the fit: a
    # light-stage view from below sees the neck go on past the box, which clipped it; the
    # field there is its floor's cross-section; 0: off
    grid_down: float = 0.0
    # an input ray that the code stage's head leaves transparent (hair or shoulders beyond
    # the prior's head) has no depth cue: stage 2 would put its surface at the front of the
    # grid, a sheet that swings in front of the face from the side. This weight pulls its
    # mean depth (times its opacity, canonical units^2, inside the mask, times how
    # transparent the code stage left it) to its point nearest the head's centre, where a
    # round head's rim lies; single-view fits only; 0: off
    rim: float = 0.0
    # a field with the code's feature volume (field latent_volume_res): stage 2 leaves the
    # volume as the prior has it (the code still chooses from it). Fitted from one view it
    # turns into that view's billboard: on 8 validation subjects novel 21.40 dB finetuned,
    # 22.63 frozen (session 11, a 2,239-step prior)
    freeze_volume: bool = False
    # stage 2 leaves the hash grid's coarsest ``keep_levels`` levels as the code stage left
    # them (their table rows get no update): the coarse shape and colours that the code
    # chose from the prior's manifold stay, and the input view is sharpened by the finer
    # levels and the MLPs; 0: every level learns
    keep_levels: int = 0
    # per-pixel stop-depth cache (single-view fits only): every step's rays are pixels of the
    # one input image, so each pixel keeps the depth where its ray last turned opaque (from
    # that step's own forward pass), and its next ray is marched only to there plus
    # ``stop_margin`` render steps; the samples behind carry zero weight and gradient. A ray
    # still not opaque by then (the surface moved back) is marched again in full, in the same
    # step. On: the same fit in about half the time (benchmarks/README.md, "stop-depth cache")
    stop_cache: bool = True
    stop_margin: float = 4.0    # render steps beyond the cached stop depth (covers the jitter: >= 1)
    # the fraction of stage 2's rays drawn from virtual side views of the code stage's head
    # (pnerf_fast/train/anchor.py): the pixels whose surface the input view does not see keep
    # the colour the code gave them, so fitting the input does not drag the unseen side of
    # the head along; single-view fits with a code stage only; 0: off
    anchor: float = 0.0
    anchor_stop: float = 1.0    # stage 2 anchors only in this first fraction of its steps (or seconds)
    # an anchor ray's loss: its opacity's squared error, plus anchor_rgb times its colour's,
    # plus anchor_depth times its depth's (canonical units^2: where the code put the surface)
    anchor_rgb: float = 1.0
    anchor_depth: float = 0.0


@dataclass
class TrainConfig:
    method: str = "meta"
    coordinates: str = "canonical"
    field: str = "fast"
    seed: int = 0
    rays_per_step: int = 2048
    image_scale: float = 0.5
    background: str = "random"          # random | white | black
    render: dict = dataclasses.field(default_factory=dict)
    grid: GridConfig = dataclasses.field(default_factory=GridConfig)
    meta: MetaConfig = dataclasses.field(default_factory=MetaConfig)
    joint: JointConfig = dataclasses.field(default_factory=JointConfig)
    latent: LatentConfig = dataclasses.field(default_factory=LatentConfig)
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    checkpoint_every_s: float = 60.0

    def render_config(self) -> RenderConfig:
        return RenderConfig.from_dict(self.render)

    def validate(self) -> "TrainConfig":
        def bad(key, msg):
            raise ValueError(f"config: {key}: {msg}")

        if self.method not in METHODS:
            bad("method", f"must be one of {METHODS}, got {self.method!r}")
        if self.coordinates not in ("canonical", "world"):
            bad("coordinates", f"must be 'canonical' or 'world', got {self.coordinates!r}")
        if self.background not in ("random", "white", "black"):
            bad("background", f"must be random, white or black, got {self.background!r}")
        if self.rays_per_step <= 0:
            bad("rays_per_step", f"must be > 0, got {self.rays_per_step}")
        if not 0 < self.image_scale <= 1:
            bad("image_scale", f"must be in (0, 1], got {self.image_scale}")
        for k in ("meta", "joint", "finetune"):
            opt = getattr(self, k).optimizer
            if opt not in OPTIMIZERS:
                bad(f"{k}.optimizer", f"must be one of {OPTIMIZERS}, got {opt!r}")
        for k, v in (("meta.n_support", self.meta.n_support), ("meta.n_query", self.meta.n_query),
                     ("meta.epochs", self.meta.epochs), ("meta.batch", self.meta.batch), ("joint.steps", self.joint.steps),
                     ("finetune.steps", self.finetune.steps), ("grid.res", self.grid.res),
                     ("grid.update_every", self.grid.update_every), ("latent.steps", self.latent.steps)):
            if v < (0 if k == "meta.n_support" else 1):
                bad(k, f"must be positive, got {v}")
        for name, g in (("meta.alpha", self.meta.alpha), ("meta.beta", self.meta.beta), ("joint.lr", self.joint.lr),
                        ("finetune.lr", self.finetune.lr), ("latent.lr", self.latent.lr)):
            if g is None:
                continue
            for grp in ("grid", "mlp", "latent"):
                if not 0 <= getattr(g, grp) < float("inf"):
                    bad(f"{name}.{grp}", f"must be a finite number >= 0, got {getattr(g, grp)}")
        for k, v in (("latent.lr_final", self.latent.lr_final), ("latent.code_reg", self.latent.code_reg),
                     ("latent.code_init_std", self.latent.code_init_std), ("finetune.code_lr", self.finetune.code_lr),
                     ("finetune.code_reg", self.finetune.code_reg), ("finetune.prior_pull", self.finetune.prior_pull),
                     ("finetune.empty_reg", self.finetune.empty_reg)):
            if not 0 <= v < float("inf"):
                bad(k, f"must be a finite number >= 0, got {v}")
        if not isinstance(self.latent.front_rays, int) or self.latent.front_rays < 0:
            bad("latent.front_rays", f"must be an integer >= 0, got {self.latent.front_rays!r}")
        if self.finetune.code_steps < 0:
            bad("finetune.code_steps", f"must be >= 0, got {self.finetune.code_steps}")
        if not isinstance(self.finetune.code_rays, int) or self.finetune.code_rays < 0:
            bad("finetune.code_rays", f"must be an integer >= 0, got {self.finetune.code_rays!r}")
        if not isinstance(self.finetune.keep_levels, int) or self.finetune.keep_levels < 0:
            bad("finetune.keep_levels", f"must be an integer >= 0, got {self.finetune.keep_levels!r}")
        if not isinstance(self.finetune.steps_res, int) or self.finetune.steps_res < 0:
            bad("finetune.steps_res", f"must be an integer >= 0, got {self.finetune.steps_res!r}")
        if not 1 <= self.finetune.stop_margin < float("inf"):
            bad("finetune.stop_margin", f"must be a finite number of render steps >= 1 (the jitter moves samples by "
                                        f"up to one step), got {self.finetune.stop_margin}")
        if self.finetune.rays_per_step <= 0:
            bad("finetune.rays_per_step", f"must be > 0, got {self.finetune.rays_per_step}")
        g = self.grid
        for k, v, ok in (("grid.decay", g.decay, 0 <= g.decay <= 1), ("grid.threshold", g.threshold, 0 <= g.threshold < float("inf")),
                         ("grid.levels", g.levels, 1 <= g.levels <= 8), ("grid.res", g.res, g.res <= 1024),
                         ("grid.warmup_updates", g.warmup_updates, g.warmup_updates >= 0),
                         ("grid.hull_dilate", g.hull_dilate, g.hull_dilate >= 0),
                         ("grid.hull_min_fraction", g.hull_min_fraction, 0 <= g.hull_min_fraction <= 1),
                         ("grid.floor_drop", g.floor_drop, 0 <= g.floor_drop < float("inf")),
                         ("checkpoint_every_s", self.checkpoint_every_s, 0 <= self.checkpoint_every_s < float("inf")),
                         ("latent.lr_final", self.latent.lr_final, self.latent.lr_final <= 1)):
            if not ok:
                bad(k, f"out of range, got {v}")
        self.render_config()
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def config_from_dict(d: dict) -> TrainConfig:
    """A validated TrainConfig from a mapping (a recipe file's, a checkpoint's); a bad key
    or value is a ValueError naming it (``config: meta.alpha.grid: ...``)."""
    return build_config(TrainConfig, d or {}, "config").validate()


def load_train_config(path: str | Path | None = None, overrides: dict | None = None) -> TrainConfig:
    """A validated TrainConfig from a YAML file (or the defaults), then ``overrides``. A
    file may start from another one: ``base: OTHER.yaml`` (relative to the file) is read
    first and this file's keys are merged over it, section by section."""
    data = _read_config_file(Path(path)) if path is not None else {}
    if overrides:
        data = _merge(data, overrides)
    return config_from_dict(data)


def _read_config_file(p: Path, seen: tuple = ()) -> dict:
    if not p.exists():
        raise FileNotFoundError(f"config file not found: {p}")
    if not p.is_file():
        raise ValueError(f"config file {p}: is not a file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"config file {p}: cannot be read ({e})") from None
    data = safe_yaml_load(text, f"config file {p}") or {}
    if not isinstance(data, dict):
        return data  # config_from_dict names what is wrong with the top level
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise ValueError(f"config file {p}: base: must be the path of another config file, got {base!r}")
    chain = seen + (p.resolve(),)
    bp = (p.parent / base).resolve()
    if bp in chain:
        raise ValueError(f"config file {p}: base: {base} leads back to itself")
    parent = _read_config_file(bp, chain)
    if not isinstance(parent, dict):
        raise ValueError(f"config file {bp} (the base of {p}): top level: must be a mapping, got {type(parent).__name__}")
    return _merge(parent, data)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        old = out.get(k)
        out[k] = _merge(old if isinstance(old, dict) else {}, v) if isinstance(v, dict) else v
    return out
