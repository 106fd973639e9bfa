"""Typed, frozen configuration: one dataclass per stage, with the seed's names and defaults.

The YAML file a user passes to ``--config`` holds any of the sections ``synthesis``,
``sampling``, ``network`` and ``training``; each key is a field below. Unknown keys and values
out of range are rejected before any work starts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from regnet.errors import UsageError, bad_setting

DEFORM_METHODS = (0, 1, 2, 3, 4, 5)  # the seed's low, medium, high; respiratory, mixed, affine


@dataclass(frozen=True)
class SynthesisConfig:
    """Artificial DVFs and deformed images (seed README §2.3). Lengths in voxels, values in mm."""

    Dim: str = "3D"  # '2D' or '3D'
    DistanceDeform: int = 40  # min distance (max-norm, voxels) between blob peaks
    DistanceArea: int = 20  # half-size (voxels) of the "deformed area" around a blob peak
    sigmaNL: float = 1.0  # noise added to a Dsmooth ("next fixed") image
    Border: int = 33  # no peak within Border voxels of a face
    sigmaN: float = 5.0  # noise added after deformation
    MaxDeform: tuple = (20.0, 15.0, 15.0)  # mm, per D (low, medium, high frequency)
    sigmaB: tuple = (35.0, 25.0, 20.0)  # voxels, per D
    Np: tuple = (100, 100, 100)  # number of random peaks, per D
    Dsmooth: tuple = (0,)  # which "next fixed" variants to make; 0 = the image itself
    DsmoothMaxDeform: float = 4.0  # mm, amplitude of the smooth field making a Dsmooth>0 image
    spacing_mm: float = 1.0  # isotropic spacing that images are resampled to (seed: 1 mm)
    deformMethod: tuple = (0, 1, 2)  # which D to generate; 3-5: ours (synthesis/motion.py)
    RespiratoryMinDeform: float = 10.0  # mm, D3: inferior motion of the lung base, drawn in
    RespiratoryMaxDeform: float = 30.0  # [min, max]
    RespiratoryAPShare: float = 0.3  # D3: anterior chest-wall motion, share of the above
    RespiratoryDecay: float = 60.0  # mm, D3: decay length above the apex / below the base
    MixedMaxDeform: tuple = (15.0, 8.0)  # mm, D4: low- and high-frequency amplitudes
    AffineMaxTranslation: float = 30.0  # mm per axis, D5
    AffineMaxRotation: float = 10.0  # degrees per axis, D5
    AffineMaxScale: float = 0.1  # D5: scaling within 1 +- this, per axis

    def validate(self, where="synthesis") -> None:
        if self.Dim not in ("2D", "3D"):
            raise bad_setting(where, f"Dim must be '2D' or '3D', got {self.Dim!r}")
        for name in ("MaxDeform", "sigmaB", "Np"):
            if len(getattr(self, name)) != 3:
                raise bad_setting(where, f"{name} needs 3 values (one per D), got "
                                  f"{getattr(self, name)}")
        if min(self.sigmaB) <= 0 or min(self.Np) < 3 or self.spacing_mm <= 0:
            raise bad_setting(where, "sigmaB and spacing_mm must be > 0 and Np >= 3")
        for name in ("sigmaN", "sigmaNL", "DsmoothMaxDeform"):
            if getattr(self, name) < 0:
                raise bad_setting(where, f"{name} must be >= 0, got {getattr(self, name)}")
        if min(self.MaxDeform) < 0 or self.Border < 0:
            raise bad_setting(where, f"MaxDeform and Border must be >= 0, got "
                              f"{list(self.MaxDeform)} and {self.Border}")
        if not self.deformMethod or not self.Dsmooth:
            raise bad_setting(where, "deformMethod and Dsmooth need at least one value")
        if any(d not in DEFORM_METHODS for d in self.deformMethod) or min(self.Dsmooth) < 0:
            raise bad_setting(where, f"deformMethod takes {DEFORM_METHODS} and Dsmooth indices "
                              "are >= 0")
        if len(self.MixedMaxDeform) != 2 or min(self.MixedMaxDeform) < 0:
            raise bad_setting(where, "MixedMaxDeform needs 2 values >= 0 (low, high) mm")
        if not 0 <= self.RespiratoryMinDeform <= self.RespiratoryMaxDeform:
            raise bad_setting(where, "RespiratoryMinDeform must lie in [0, RespiratoryMaxDeform]")
        if min(self.RespiratoryDecay, self.AffineMaxTranslation, self.AffineMaxRotation,
               self.AffineMaxScale, self.RespiratoryAPShare) < 0 or self.RespiratoryDecay == 0:
            raise bad_setting(where, "the respiratory and affine settings must be >= 0 (decay "
                              "> 0)")


@dataclass(frozen=True)
class SamplingConfig:
    """Patch sampling (seed README §2.4). Radii in voxels, thresholds in mm."""

    Resolution: str = "multi"  # 'single' or 'multi'
    deformMethod: tuple = (0, 1, 2)
    classBalanced: tuple = (1.5, 4.0, 8.0)
    class_rule: str = "maxnorm"  # 'maxnorm' (ours) or 'seed'; see docs/training.md
    K: int = 65  # margin: centres lie more than K voxels from every face
    R: int = 14  # full-resolution radius: (2R+1) patch
    Rlow: int = 26  # low-resolution radius, stride 2: (Rlow+1) patch
    Ry: int = 0  # output radius (only 0 is supported by the seed's network)
    numberOfImagesPerChunk: int = 5
    samplesPerImage: int = 10000
    valSamplesPerImage: int = 3000
    normalization: str = "ct"  # 'ct': (HU+1000)/4095; 'robust': 1st..99th percentile -> 0..1

    def validate(self, where="sampling") -> None:
        if self.Resolution not in ("single", "multi"):
            raise bad_setting(where, f"Resolution must be 'single' or 'multi', got "
                              f"{self.Resolution!r}")
        t = list(self.classBalanced)
        if not t or any(b <= a for a, b in zip([0.0] + t, t, strict=False)):
            raise bad_setting(where, f"classBalanced thresholds must be > 0 and increasing, "
                              f"got {t}")
        if self.class_rule not in ("maxnorm", "seed"):
            raise bad_setting(where, f"class_rule must be 'maxnorm' or 'seed', got "
                              f"{self.class_rule!r}")
        if self.Ry != 0:
            raise bad_setting(where, "Ry must be 0: the seed's network regresses the centre voxel")
        if self.R < 1 or self.Rlow < 2 or self.Rlow % 2:
            raise bad_setting(where, "R must be >= 1 and Rlow an even number >= 2")
        reach = self.Rlow if self.Resolution == "multi" else self.R
        if self.K < reach:
            raise bad_setting(where, f"K={self.K} must be at least the patch reach {reach} "
                              "(Rlow or R)")
        if min(self.numberOfImagesPerChunk, self.samplesPerImage, self.valSamplesPerImage) < 1:
            raise bad_setting(where, "numberOfImagesPerChunk, samplesPerImage and "
                              "valSamplesPerImage must be >= 1")
        if not self.deformMethod or any(d not in DEFORM_METHODS for d in self.deformMethod):
            raise bad_setting(where, f"deformMethod takes {DEFORM_METHODS}, got "
                              f"{list(self.deformMethod)}")
        if self.normalization not in ("ct", "robust"):
            raise bad_setting(where, f"normalization must be 'ct' or 'robust', got "
                              f"{self.normalization!r}")


NORMS = ("batch", "instance", "group", "none")


@dataclass(frozen=True)
class NetworkConfig:
    """Which architecture (see ``regnet.network.registry``) and its width."""

    name: str = "regnet_multi"
    dim: int = 3
    width: float = 1.0  # multiplies every layer's filter count (1.0 = the seed's Figure 1)
    crop: int = 64  # dense networks: training crop edge in voxels, a multiple of 16
    norm: str = "batch"  # dense networks: "batch", "instance", "group" or "none"
    radius: int = 3  # corrnet: the cost volume's reach, in quarter-resolution cells per axis
    fine_radius: int = 0  # corrnet: a second cost volume at 1/2 after warping (0: none)
    full_width: int = 0  # corrnet: channels of a refinement at full resolution (0: none)
    full_radius: int = 0  # corrnet: a cost volume on full-resolution voxels (needs full_width)
    full_match_width: int = 0  # corrnet: channels that cost volume matches (0: full_width)

    def validate(self, where="network") -> None:
        if self.dim not in (2, 3) or not 0 < self.width <= 8:
            raise bad_setting(where, f"dim must be 2 or 3 and width in (0, 8], got dim "
                              f"{self.dim}, width {self.width}")
        if self.crop < 16 or self.crop % 16:
            raise bad_setting(where, f"crop must be a multiple of 16, got {self.crop}")
        dense = self.name in ("unet", "corrnet")
        if self.norm not in NORMS or (self.norm != "batch" and not dense):
            raise bad_setting(where, f"norm must be one of {NORMS} (other than 'batch' only "
                              f"for unet and corrnet), got {self.norm!r} for {self.name!r}")
        if not 1 <= self.radius <= 6:
            raise bad_setting(where, f"radius must be 1..6 cells, got {self.radius}")
        if not 0 <= self.fine_radius <= 3:
            raise bad_setting(where, f"fine_radius must be 0..3 cells, got {self.fine_radius}")
        if not 0 <= self.full_width <= 32:
            raise bad_setting(where, f"full_width must be 0..32 channels, got {self.full_width}")
        if not 0 <= self.full_radius <= 2 or (self.full_radius and not self.full_width):
            raise bad_setting(where, f"full_radius must be 0..2 voxels, and needs full_width, "
                              f"got {self.full_radius} with full_width {self.full_width}")
        if not 0 <= self.full_match_width <= 32:
            raise bad_setting(where, f"full_match_width must be 0..32 channels, got "
                              f"{self.full_match_width}")


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation and bookkeeping. The seed: Adam, lr 1e-3, batch 50, Huber loss."""

    lr: float = 1e-3
    batch_size: int = 50
    steps: int = 10000
    val_every: int = 1000
    log_every: int = 25
    checkpoint_every: int = 500
    val_fraction: float = 0.2  # share of cases (patients) held out, at least one
    val_cases: tuple = ()  # explicit validation cases; overrides val_fraction
    val_max_patches: int = 1500  # validation patches in all (spread over the validation pairs)
    augment_flips: bool = False
    augment_permute: bool = False  # random axis permutations (90-degree rotations/reflections)
    augment_intensity: bool = False  # random monotone contrast per image (intensity.py)
    intensity_bias_max: float = 0.0  # with it: bias field, log-slope per 50 voxels, up to
    intensity_blur_max_vox: float = 0.0  # with it: Gaussian blur, sigma up to (voxels)
    intensity_slab_blur_max_vox: float = 0.0  # with it: blur along one random axis (thick slices)
    lr_schedule: str = "constant"  # or "cosine": lr * (1 + cos(pi * progress)) / 2
    num_workers: int = 1
    # the forward pass's arithmetic: "fp32"; "auto": bf16 on a CPU that computes it natively
    # and on GPUs (regnet.devices.inference_dtype), else fp32; "bf16" anywhere. GPUs train
    # in bf16 with any of them.
    precision: str = "fp32"
    # > 0: validate and keep an exponential moving average of the weights, each step
    # ema = decay * ema + (1 - decay) * weights; the checkpoints' "model" is the average
    ema_decay: float = 0.0

    def intensity_augmentation(self) -> dict | None:
        """:func:`regnet.intensity.random_contrast`'s options, or None when it is off."""
        if not self.augment_intensity:
            return None
        return {"bias_max": self.intensity_bias_max, "blur_max_vox": self.intensity_blur_max_vox,
                "slab_blur_max_vox": self.intensity_slab_blur_max_vox}

    def validate(self, where="training") -> None:
        if min(self.intensity_bias_max, self.intensity_blur_max_vox,
               self.intensity_slab_blur_max_vox) < 0:
            raise bad_setting(where, "intensity_bias_max, intensity_blur_max_vox and "
                              "intensity_slab_blur_max_vox must be >= 0")
        if self.lr <= 0 or self.steps < 0 or min(self.batch_size, self.val_every, self.log_every,
                                                 self.checkpoint_every) < 1:
            raise bad_setting(where, "lr, batch_size, val_every, log_every and checkpoint_every "
                              "must be positive, steps >= 0")
        if self.lr_schedule not in ("constant", "cosine"):
            raise bad_setting(where, f"lr_schedule must be 'constant' or 'cosine', got "
                       f"{self.lr_schedule!r}")
        if self.num_workers < 0:
            raise bad_setting(where, f"num_workers must be >= 0, got {self.num_workers}")
        if self.precision not in ("fp32", "auto", "bf16"):
            raise bad_setting(where, f"precision must be 'fp32', 'auto' or 'bf16', got "
                              f"{self.precision!r}")
        if not 0 <= self.ema_decay < 1:
            raise bad_setting(where, f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.val_max_patches < 1:
            raise bad_setting(where, f"val_max_patches must be >= 1, got {self.val_max_patches}")
        if not 0 < self.val_fraction < 1:
            raise bad_setting(where, f"val_fraction must lie in (0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class Config:
    """Everything a run needs; stored inside every checkpoint."""

    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def validate(self, where="config") -> Config:
        self.synthesis.validate(f"{where} [synthesis]")
        self.sampling.validate(f"{where} [sampling]")
        self.network.validate(f"{where} [network]")
        self.training.validate(f"{where} [training]")
        if self.sampling.Resolution == "single" and self.network.name == "regnet_multi":
            raise bad_setting(where, "Resolution 'single' needs network name 'regnet_single'")
        return self

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _check_value(key, value, default, where):
    """``value`` converted to the type of ``default`` (lists to tuples, ints to floats)."""
    def number(v):
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    if isinstance(default, tuple):
        if not isinstance(value, list | tuple):
            raise bad_setting(where, f"{key} must be a list, got {value!r}")
        if default and not all(number(v) for v in value):
            raise bad_setting(where, f"{key} must be a list of finite numbers, got {value!r}")
        if not default and not all(isinstance(v, str) for v in value):
            raise bad_setting(where, f"{key} must be a list of names, got {value!r}")
        return tuple(value)
    if isinstance(default, bool) or isinstance(default, str):
        if not isinstance(value, type(default)):
            raise bad_setting(where, f"{key} must be {type(default).__name__}, got {value!r}")
        return value
    if isinstance(default, int) and not (number(value) and isinstance(value, int)):
        raise bad_setting(where, f"{key} must be int, got {value!r}")
    if isinstance(default, float):
        if not number(value):
            raise bad_setting(where, f"{key} must be a finite number, got {value!r}")
        return float(value)
    return value


def _section(cls, values, where: str):
    if not isinstance(values, dict):
        raise bad_setting(where, f"a section must be a mapping of settings, got {values!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in values if k not in known)
    if unknown:
        raise bad_setting(where, f"unknown key(s) {unknown}; known: {sorted(known)}")
    kwargs = {key: _check_value(key, value, known[key].default, where)
              for key, value in values.items()}
    return cls(**kwargs)


def config_from_dict(values: dict | None, where="config") -> Config:
    """Build and validate a :class:`Config` from nested plain values (missing = seed default)."""
    values = values or {}
    if not isinstance(values, dict):
        raise bad_setting(where, "a config must be a mapping of sections")
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    unknown = sorted(str(k) for k in values if k not in sections)
    if unknown:
        raise bad_setting(where, f"unknown section(s) {unknown}; known: {sorted(sections)}")
    classes = {"synthesis": SynthesisConfig, "sampling": SamplingConfig,
               "network": NetworkConfig, "training": TrainingConfig}
    parts = {name: _section(cls, {} if values.get(name) is None else values[name],
                            f"{where} [{name}]")
             for name, cls in classes.items()}
    return Config(**parts).validate(where)


def _read_yaml(path: Path):
    if not path.is_file():
        raise bad_setting(path, "config file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid YAML ({exc.__class__.__name__})") from exc


def load_config(path: str | Path | None, stage: int | None = None) -> Config:
    """Read a YAML config with ``yaml.safe_load``; ``None`` gives the seed's defaults.

    A multi-stage config holds ``stages:``, a list (coarse to fine) whose items are config
    files (relative to it) or inline configs; ``stage`` picks one (0 = the coarsest)."""
    if path is None:
        if stage is not None:
            raise UsageError("--stage needs a multi-stage --config (a YAML with 'stages:')")
        return Config().validate()
    path = Path(path)
    values = _read_yaml(path)
    stages = values.get("stages") if isinstance(values, dict) else None
    if stages is None:
        if stage is not None:
            raise bad_setting(path, "--stage needs a multi-stage config: this one has no "
                              "'stages:' list")
        return config_from_dict(values, str(path))
    if not isinstance(stages, list) or not stages or set(values) != {"stages"}:
        raise bad_setting(path, "a multi-stage config holds only 'stages:', a non-empty list "
                          "of config files or configs")
    if stage is None or not 0 <= stage < len(stages):
        raise bad_setting(path, f"a multi-stage config of {len(stages)} stages: pass --stage "
                          f"K with 0 <= K < {len(stages)} (0 = the coarsest)")
    item, where = stages[stage], f"{path} stage {stage}"
    if isinstance(item, str):
        where = str(path.parent / item)
        item = _read_yaml(path.parent / item)
    return config_from_dict(item, where)


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
