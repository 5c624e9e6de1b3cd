"""Configuration of the neural-collapse control of one network."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

PROJECTOR_TYPES = ("etf", "learnable", "random")


@dataclass(frozen=True)
class NCConfig:
    """What sits between the encoder and the linear classifier.

    - ``output_dim > 0 and hidden_mlp > 0``: a projector ``Linear(d, hidden_mlp) -> ReLU ->
      Linear(hidden_mlp, output_dim)`` (no biases) whose output is L2-normalized (eps 1e-8).
      ``projector='etf'`` fixes both weights to the simplex-ETF formula (the method);
      ``projector='learnable'`` trains the same shapes from the default ``nn.Linear`` init
      (ablation); ``projector='random'`` fixes them to trunc_normal(0.02) draws, never trained:
      the projector the official ViT code actually trains with (its ETF weights are overwritten
      by ``_init_vit_weights``; see :func:`nc_control.etf.random_projector`). The official recipe
      uses ``hidden_mlp = 4 d`` and ``output_dim = d``.
    - ``output_dim == 0 or hidden_mlp == 0``: no projector (the baseline); the classifier reads
      the encoder embedding directly.
    - ``l2_features=True`` (only without a projector): the classifier reads the L2-normalized
      encoder embedding (eps 1e-12), the feature-normalization ablation of Haas, Yolland &
      Rabus, "Linking Neural Collapse and L2 Normalization with Improved Out-of-Distribution
      Detection in Deep Neural Networks", TMLR 2022.
    """

    output_dim: int = 0
    hidden_mlp: int = 0
    projector: str = "etf"
    l2_features: bool = False

    def __post_init__(self) -> None:
        for name in ("output_dim", "hidden_mlp"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"NCConfig.{name} must be an integer >= 0 (0 = no projector), got {value!r}")
        if self.projector not in PROJECTOR_TYPES:
            raise ValueError(f"NCConfig.projector must be one of {PROJECTOR_TYPES}, got {self.projector!r}")
        if not isinstance(self.l2_features, bool):
            raise ValueError(f"NCConfig.l2_features must be True or False, got {self.l2_features!r}")
        if self.l2_features and self.has_projector:
            raise ValueError("NCConfig.l2_features=True normalizes the encoder embedding and excludes a projector; "
                             "set output_dim=0 and hidden_mlp=0, or l2_features=False")
        if self.has_projector and self.projector == "etf" and self.output_dim < 2:
            raise ValueError(f"the simplex-ETF projector needs output_dim >= 2 (it scales by sqrt(c/(c-1))), "
                             f"got output_dim={self.output_dim}")

    @property
    def has_projector(self) -> bool:
        """True when both projector widths are set."""
        return self.output_dim > 0 and self.hidden_mlp > 0

    @property
    def head_layer(self) -> str:
        """The named layer of :class:`ControlledNet` whose output the classifier reads."""
        if self.has_projector:
            return "projector"
        return "head_input" if self.l2_features else "encoder"

    def to_dict(self) -> dict:
        """Plain JSON-able dict of the fields (``NCConfig(**cfg.to_dict()) == cfg``)."""
        return asdict(self)

    @classmethod
    def from_any(cls, value: "NCConfig | dict | None") -> "NCConfig":
        """Accept an ``NCConfig``, a dict of its fields, or ``None`` (the baseline)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"unknown NCConfig field(s) {unknown}; valid fields are {sorted(known)}")
            return cls(**value)
        raise ValueError(f"nc_control must be an NCConfig, a dict of its fields or None, got {type(value).__name__}")
