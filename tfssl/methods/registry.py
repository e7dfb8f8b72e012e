"""The method registry: a method's name -> its class and its options dataclass.

Each method file defines its options (`MethodOptions` subclass: the paper's defaults, their validation,
the view recipe and the heads the method is built with) and `tfssl/methods/__init__.py` registers it in
one line. Every options field is a flag `--<method>_<field>` (e.g. `--swav_prototypes`), grouped under
the method in `--helpfull`; `TrainConfig` keeps only run, data, encoder and optimiser settings.
"""
import dataclasses
import typing

REGISTRY = {}


@dataclasses.dataclass
class BuildContext:
    """What a method may need from the run besides its options.

    Fields:
      num_classes: classes of the online probe (None: no probe).
      total_steps: optimizer steps of the whole run (EMA schedules); None when rebuilt to evaluate / export.
      steps_per_epoch: steps of one epoch (freezing for an epoch, temperature warm-ups); None likewise.
      num_examples: size of the pre-training split (InstDis' memory bank); None likewise.
    """

    num_classes: typing.Optional[int] = None
    total_steps: typing.Optional[int] = None
    steps_per_epoch: typing.Optional[int] = None
    num_examples: typing.Optional[int] = None


@dataclasses.dataclass
class MethodOptions:
    """Base of a method's options. Subclasses are dataclasses whose fields carry `help` metadata.

    Class attributes:
      ARCHITECTURE: fields that define the network (a resumed run must not change them).
      LEGACY: `{field: flag name}` for fields whose flag had another name before per-method options
        (read from the flags.json of older runs); other fields kept their name.
      OWN_ENCODER: the method builds its own backbone(s) (CPC's patch ResNet, AMDIM's encoder, CMC's two
        channel-group encoders): `build` then gets `encoder=None`; `reads_encoder_flags()` says whether
        `--encoder` / `--width_multiplier` still apply (CMC: yes, to both of its encoders).
    """

    NAME: typing.ClassVar[str] = ""
    ARCHITECTURE: typing.ClassVar[tuple] = ()
    LEGACY: typing.ClassVar[dict] = {}
    OWN_ENCODER: typing.ClassVar[bool] = False

    def reads_encoder_flags(self):
        """Whether `--encoder` / `--width_multiplier` shape this method's network."""
        return not self.OWN_ENCODER

    def flag(self, field):
        """`--<method>_<field>`, for messages."""
        return f"--{flag_name(self.NAME, field)}"

    def check_positive(self, *names):
        """One-line ValueError unless every named option is a finite number > 0."""
        for name in names:
            value = getattr(self, name)
            if not (value > 0 and value < float("inf")):
                raise ValueError(f"{self.flag(name)} must be > 0, got {value}")

    def check_range(self, name, low, high, paper=None):
        """One-line ValueError unless low <= option <= high."""
        value = getattr(self, name)
        if not low <= value <= high:
            hint = f" (paper: {paper})" if paper is not None else ""
            raise ValueError(f"{self.flag(name)} must be in [{low}, {high}]{hint}, got {value}")

    def area_range(self, name):
        """The `(min, max)` of the "min,max" option `name` (one-line error unless 0 < min <= max <= 1)."""
        text = getattr(self, name)
        try:
            low, high = (float(x) for x in text.split(","))
        except ValueError:
            low = high = None
        if low is None or not 0 < low <= high <= 1:
            raise ValueError(f"{self.flag(name)}={text!r} must be min,max with 0 < min <= max <= 1, e.g. 0.05,0.14")
        return low, high

    def validate(self, train, num_replicas=1):
        """Raises ValueError with a one-line message (flag names `--<method>_<field>`) for a bad setting."""

    def augment(self, train):
        """The method's view recipe for `train` (a `TrainConfig`): a `ViewRecipe` or a per-image recipe."""
        raise NotImplementedError

    def build(self, train, encoder, context, **common):
        """The method, built from its options, `encoder` (None with `OWN_ENCODER`) and the `SSLMethod`
        arguments in `common`."""
        raise NotImplementedError

    @classmethod
    def from_legacy(cls, flat):
        """Options from an older run's flat flags.json dict (fields absent there keep their defaults)."""
        names = {f.name: cls.LEGACY.get(f.name, f.name) for f in dataclasses.fields(cls)}
        return cls(**{field: flat[old] for field, old in names.items() if old in flat})


def option(default, help_text, choices=None):
    """A `MethodOptions` field: its default, its flag's help and (for an enum flag) its choices."""
    metadata = {"help": help_text, **({"choices": tuple(choices)} if choices else {})}
    return dataclasses.field(default=default, metadata=metadata)


def register(name, method_class, options_class):
    """Makes `name` a `--method`: trained by `method_class`, configured by `options_class`."""
    if name in REGISTRY:
        raise ValueError(f"method {name!r} is registered twice")
    if not (isinstance(options_class, type) and issubclass(options_class, MethodOptions)):
        raise ValueError(f"{name}: the options class must subclass MethodOptions, got {options_class!r}")
    if options_class.NAME != name:
        raise ValueError(f"{options_class.__name__}.NAME is {options_class.NAME!r}, registered as {name!r}")
    REGISTRY[name] = (method_class, options_class)


def _load():
    import tfssl.methods  # noqa: F401  (its import registers the built-in methods)


def method_names():
    _load()
    return sorted(REGISTRY)


def options_class(name):
    """The options dataclass of method `name` (one-line error for an unknown name)."""
    _load()
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(method_names())}")
    return REGISTRY[name][1]


def method_class(name):
    options_class(name)
    return REGISTRY[name][0]


def flag_name(method, field):
    """The flag of option `field` of `method`, e.g. ("swav", "prototypes") -> "swav_prototypes"."""
    return f"{method}_{field}"
