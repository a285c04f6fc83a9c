"""Check a composed ``prune-landscape`` config before any work, without importing torch.

Every CLI key with a fixed set of names or a range is checked here and reported in one line:
``<key>: expected <what>, got <value>``. The CLI runs this on the composed config before Hydra makes the run
directory, so a mistake costs well under a second and leaves no folder behind. The names below are the
built-in ones (methods and their options, probes, data sets, models, losses, optimizers); a test keeps them
equal to the live registries.

Adapter module: it reads omegaconf configs (imported lazily); the core never imports it.

Example:
    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.create({"data": {"name": "digits", "batch_size": 0}})
    >>> check_config(cfg, "audit")
    Traceback (most recent call last):
    ...
    prune_landscape.integrations.config_check.ConfigError: data.batch_size: expected a positive int, got 0
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prune_landscape.checks import deprecation_message

if TYPE_CHECKING:  # omegaconf loads when a config is checked: importing the package never pulls it in
    from omegaconf import DictConfig

__all__ = [
    "ConfigError",
    "DATASET_OPTIONS",
    "DEPRECATED_PRUNER_KEYS",
    "METHOD_OPTIONS",
    "MODEL_OPTIONS",
    "PROBE_NAMES",
    "audit_policies",
    "check_config",
]

#: Built-in pruning methods -> the option names ``prune`` accepts for each (``PrunerSpec.valid_options()``).
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "grasp": ("batch_size", "iterations", "loss_fn", "num_batches", "prune_samples", "temperature"),
    "magnitude": ("iterations",),
    "ntk_sap": ("batch_size", "batchnorm", "channels_last", "double", "eps", "fold_batchnorm", "init_fn", "input_shape",
                "iterations", "num_batches", "prune_samples", "repeats"),
    "random": ("iterations",),
    "snip": ("batch_size", "iterations", "loss_fn", "num_batches", "prune_samples"),
    "synflow": ("double", "fold_batchnorm", "input_shape", "iterations"),
}
#: ``prune_landscape.probes.PROBES``.
PROBE_NAMES: tuple[str, ...] = ("final_layer_gap", "hessian", "restart_spread", "surface")
_TORCHVISION_OPTIONS = ("augment", "channels", "download", "image_size", "max_samples", "root")
#: ``prune_landscape.data`` data sets -> their options.
DATASET_OPTIONS: dict[str, tuple[str, ...]] = {
    "digits": ("channels", "image_size", "max_samples", "seed", "test_fraction"),
    "teacher_student": ("activation", "d", "n", "n_test", "noise", "outputs", "seed", "task", "widths"),
    **{name: _TORCHVISION_OPTIONS for name in ("mnist", "fashion_mnist", "cifar10", "cifar100")},
}
#: ``prune_landscape.models.MODELS`` -> the builder's keyword arguments.
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "mlp": ("activation", "bias", "widths"),
    "lenet": ("image_size", "in_channels", "num_classes"),
    "resnet20": ("in_channels", "num_classes"),
    "vgg16_bn": ("in_channels", "num_classes"),
    "resnet18": ("num_classes", "small_input"),
    "resnet50": ("num_classes", "small_input"),
}
_LOADER_KEYS = ("_target_", "batch_size", "num_workers", "val_fraction", "seed", "root", "download", "name")
_FIT_KEYS = ("batch_size", "epochs", "loss", "lr", "momentum", "optimizer", "shuffle", "weight_decay")
_AUDIT_KEYS = ("dense_baseline", "final_layer_policies", "final_layers", "method_options", "methods", "n_samples", "progress", "scope",
               "seeds", "sparsities", "sparsity")
_LOSSES = ("cross_entropy", "mse")
#: Renamed pruner keys: old -> new. The old one still works, with a DeprecationWarning naming the new one.
DEPRECATED_PRUNER_KEYS: dict[str, str] = {"final_layer": "final_layer_policy"}
_SCOPES = ("global", "layerwise", "erk")
_BUILD_MODEL = "prune_landscape.models.build_model"


class ConfigError(ValueError):
    """One wrong key: ``<key>: expected <what>, got <value>``."""

    def __init__(self, key: str, expected: str, given: Any):
        super().__init__(f"{key}: expected {expected}, got {given!r}")
        self.key = key


def _section(cfg: DictConfig, key: str, *, resolve: bool = True) -> Any:
    """``cfg.<key>`` as plain data (None when absent); ``???`` becomes a one-line error naming the key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    node = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    if node is None:
        return None
    if OmegaConf.is_missing(cfg, key):
        raise ConfigError(key, "a value (the key is mandatory)", "???")
    if not OmegaConf.is_config(node):
        return node
    try:
        return OmegaConf.to_container(node, resolve=resolve, throw_on_missing=True)
    except OmegaConfBaseException as error:
        full_key = getattr(error, "full_key", None) or key
        raise ConfigError(str(full_key), "a value (the key is mandatory)", "???") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _names(key: str, value: Any, choices: tuple[str, ...] | list[str], *, allow_one: bool = False) -> list[str]:
    if allow_one and isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, f"a list of names from {sorted(choices)}", value)
    for name in value:
        if name not in choices:
            raise ConfigError(key, f"names from {sorted(choices)}", name)
    return list(value)


def _unknown_keys(prefix: str, given: Mapping[str, Any], allowed: tuple[str, ...] | list[str]) -> None:
    for key in given:
        if key not in allowed:
            raise ConfigError(f"{prefix}.{key}", f"a key from {sorted(allowed)} (unknown key)", given[key])


def _check_policy(value: Any, key: str = "audit.final_layer_policies") -> None:
    if isinstance(value, str) and value in ("prune", "dense"):
        return
    number = value
    if isinstance(value, str) and value.startswith("min_density="):
        try:
            number = float(value.split("=", 1)[1])
        except ValueError:
            number = None
    if not _is_number(number) or not 0.0 < float(number) <= 1.0:
        raise ConfigError(key, "'prune', 'dense' or a min density in (0, 1] ('min_density=0.3' or 0.3)", value)


def _check_audit(cfg: DictConfig) -> None:
    audit = _section(cfg, "audit") or {}
    _unknown_keys("audit", audit, _AUDIT_KEYS)
    methods = _names("audit.methods", audit.get("methods"), tuple(METHOD_OPTIONS))
    if not methods:
        raise ConfigError("audit.methods", f"at least one name from {sorted(METHOD_OPTIONS)}", [])
    sparsities = [audit["sparsity"]] if audit.get("sparsity") is not None else audit.get("sparsities")
    key = "audit.sparsity" if audit.get("sparsity") is not None else "audit.sparsities"
    if not isinstance(sparsities, list) or not sparsities:
        raise ConfigError(key, "a non-empty list of numbers in [0, 1)", sparsities)
    for value in sparsities:
        if not _is_number(value) or not 0.0 <= value < 1.0:
            raise ConfigError(key, "numbers in [0, 1)", value)
    key, policies = audit_policies(audit)
    if key == "audit.final_layers":
        # A FutureWarning, not a DeprecationWarning: Python shows it to CLI users by default.
        warnings.warn(deprecation_message("audit.final_layers", "audit.final_layer_policies"), FutureWarning, stacklevel=2)
    if not isinstance(policies, list) or not policies:
        raise ConfigError(key, "a non-empty list of 'prune', 'dense' or min densities", policies)
    for policy in policies:
        _check_policy(policy, key)
    seeds = audit.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(_is_int(s) and s >= 0 for s in seeds):
        raise ConfigError("audit.seeds", "a non-empty list of non-negative ints", seeds)
    if audit.get("scope", "global") not in _SCOPES:
        raise ConfigError("audit.scope", f"one of {list(_SCOPES)}", audit.get("scope"))
    options = audit.get("method_options") or {}
    if not isinstance(options, dict):
        raise ConfigError("audit.method_options", "a mapping method -> {option: value}", options)
    for method, given in options.items():
        if method not in METHOD_OPTIONS:
            raise ConfigError("audit.method_options", f"method names from {sorted(METHOD_OPTIONS)}", method)
        if not isinstance(given, dict):
            raise ConfigError(f"audit.method_options.{method}", "a mapping of option names to values", given)
        for option in given:
            if option not in METHOD_OPTIONS[method]:
                raise ConfigError(f"audit.method_options.{method}", f"option names from {list(METHOD_OPTIONS[method])}",
                                  option)
    n_samples = audit.get("n_samples")
    if n_samples is not None and not (_is_int(n_samples) and n_samples >= 1):
        raise ConfigError("audit.n_samples", "a positive int or null", n_samples)
    for flag in ("dense_baseline", "progress"):
        if flag in audit and not isinstance(audit[flag], bool):
            raise ConfigError(f"audit.{flag}", "true or false", audit[flag])
    fit = _section(cfg, "fit") or {}
    _unknown_keys("fit", fit, _FIT_KEYS)
    if not (_is_int(fit.get("epochs", 0)) and fit.get("epochs", 0) >= 0):
        raise ConfigError("fit.epochs", "an int >= 0", fit.get("epochs"))
    _check_training("fit", fit, ("sgd", "adam"))
    _probe_names("probes.names", _section(cfg, "probes.names"))


def _check_training(prefix: str, section: Mapping[str, Any], optimizers: tuple[str, ...]) -> None:
    if "lr" in section and not (_is_number(section["lr"]) and section["lr"] > 0):
        raise ConfigError(f"{prefix}.lr", "a finite number > 0", section["lr"])
    if section.get("optimizer", optimizers[0]) not in optimizers:
        raise ConfigError(f"{prefix}.optimizer", f"one of {sorted(optimizers)}", section.get("optimizer"))
    if section.get("loss", "cross_entropy") not in _LOSSES:
        raise ConfigError(f"{prefix}.loss", f"one of {list(_LOSSES)}", section.get("loss"))
    for key in ("momentum", "weight_decay"):
        if key in section and not (_is_number(section[key]) and section[key] >= 0):
            raise ConfigError(f"{prefix}.{key}", "a finite number >= 0", section[key])
    batch_size = section.get("batch_size")
    if batch_size is not None and not (_is_int(batch_size) and batch_size >= 1):
        raise ConfigError(f"{prefix}.batch_size", "a positive int", batch_size)


def _probe_names(key: str, value: Any) -> None:
    if value is not None:
        _names(key, value, PROBE_NAMES, allow_one=True)


def _check_data(cfg: DictConfig) -> None:
    data = _section(cfg, "data")
    if data is None:
        return
    if not isinstance(data, dict):
        raise ConfigError("data", "a data config (pick one with data=<name>)", data)
    name = data.get("name")
    if name not in DATASET_OPTIONS:
        raise ConfigError("data.name", f"one of {list(DATASET_OPTIONS)}", name)
    # the image keys of the shared data configs are dropped when null (dataset_options does the same)
    given = {k: v for k, v in data.items() if not (v is None and k in ("max_samples", "image_size", "channels"))}
    _unknown_keys("data", given, sorted({*_LOADER_KEYS, *DATASET_OPTIONS[name]}))
    batch_size = data.get("batch_size", 128)
    if not (_is_int(batch_size) and batch_size >= 1):
        raise ConfigError("data.batch_size", "a positive int", batch_size)
    workers = data.get("num_workers", 0)
    if not (_is_int(workers) and workers >= 0):
        raise ConfigError("data.num_workers", "an int >= 0", workers)
    fraction = data.get("val_fraction", 0.0)
    if not (_is_number(fraction) and 0.0 <= fraction < 1.0):
        raise ConfigError("data.val_fraction", "a number in [0, 1)", fraction)
    max_samples = data.get("max_samples")
    if max_samples is not None and not (_is_int(max_samples) and max_samples >= 1):
        raise ConfigError("data.max_samples", "a positive int or null", max_samples)


def _check_model(cfg: DictConfig) -> None:
    model = _section(cfg, "model", resolve=False)  # sizes read from the data (${data_info:...}) resolve later
    if not isinstance(model, dict) or model.get("_target_") != _BUILD_MODEL:
        return  # a user's own _target_: Hydra instantiates it and reports its errors
    name = model.get("name")
    if name not in MODEL_OPTIONS:
        raise ConfigError("model.name", f"one of {sorted(MODEL_OPTIONS)}", name)
    _unknown_keys("model", model, ("_target_", "name", *MODEL_OPTIONS[name]))


def _interpolated(value: Any) -> bool:
    return isinstance(value, str) and "${" in value  # resolved later by OmegaConf; checked by the callback


def _check_pruner(cfg: DictConfig) -> None:
    """The pruner callback's policy, scope and sparsity; the old key ``final_layer`` warns, naming the new one."""
    pruner = _section(cfg, "pruner", resolve=False)
    if not isinstance(pruner, dict) or "_target_" not in pruner:
        return
    for old, new in DEPRECATED_PRUNER_KEYS.items():
        if old in pruner and new in pruner:
            raise ConfigError(f"pruner.{old}", f"no value: give pruner.{new} only ({old} is its deprecated name)", pruner[old])
        if old in pruner:
            # A FutureWarning, not a DeprecationWarning: Python shows it to CLI users by default.
            warnings.warn(f"pruner.{old} is deprecated; use pruner.{new} (same values)", FutureWarning, stacklevel=2)
    policy_key = next((k for k in ("final_layer_policy", "final_layer") if k in pruner), None)
    if policy_key is not None and not _interpolated(pruner[policy_key]):
        _check_policy(pruner[policy_key], f"pruner.{policy_key}")
    scope = pruner.get("scope")
    if scope is not None and not _interpolated(scope) and scope not in _SCOPES:
        raise ConfigError("pruner.scope", f"one of {list(_SCOPES)}", scope)
    sparsity = pruner.get("sparsity")
    if sparsity is not None and not _interpolated(sparsity) and not (_is_number(sparsity) and 0.0 <= sparsity < 1.0):
        raise ConfigError("pruner.sparsity", "a number in [0, 1)", sparsity)
    method = pruner.get("method")
    if method is not None and method not in METHOD_OPTIONS:
        raise ConfigError("pruner.method", f"one of {sorted(METHOD_OPTIONS)}", method)


def _check_train(cfg: DictConfig) -> None:
    _check_pruner(cfg)
    module = _section(cfg, "module") or {}
    _check_training("module", module, ("sgd", "adam", "adamw"))
    audit = _section(cfg, "landscape_audit", resolve=False) or {}
    _probe_names("probes.names", _section(cfg, "probes.names"))
    n_samples = audit.get("n_samples")
    if n_samples is not None and not (_is_int(n_samples) and n_samples >= 1):
        raise ConfigError("landscape_audit.n_samples", "a positive int or null", n_samples)
    epochs = _section(cfg, "trainer.max_epochs")
    if epochs is not None and not (_is_int(epochs) and epochs >= -1):
        raise ConfigError("trainer.max_epochs", "an int >= 1 (or -1: no limit)", epochs)
    seed = _section(cfg, "seed")
    if seed is not None and not _is_int(seed):
        raise ConfigError("seed", "an int", seed)


def audit_policies(audit: Any) -> tuple[str, Any]:
    """``(key, value)`` of the audit's final-layer policies: the deprecated ``audit.final_layers`` when an old
    recipe or command line sets it, else ``audit.final_layer_policies`` (``audit`` a dict or a DictConfig)."""
    if audit.get("final_layers") is not None:
        return "audit.final_layers", audit.get("final_layers")
    return "audit.final_layer_policies", audit.get("final_layer_policies", ["prune"])


def check_config(cfg: DictConfig, command: str) -> None:
    """Raise :class:`ConfigError` (one line: key, expected, given) for the first wrong key of ``cfg``.

    Args:
        cfg: the composed config of ``command`` (``hydra.compose`` or the app's own).
        command: ``"audit"`` or ``"train"``.
    """
    threads = _section(cfg, "torch_threads")
    if threads is not None and not (_is_int(threads) and threads >= 1):
        raise ConfigError("torch_threads", "a positive int or null", threads)
    _check_data(cfg)
    _check_model(cfg)
    if command == "audit":
        _check_audit(cfg)
    elif command == "train":
        _check_train(cfg)
