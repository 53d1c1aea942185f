"""What a user can say on a command line or in the Action's inputs, and the one place it is
laid over the config.

``modelgate check`` and ``python -m modelgate.action`` each turn their arguments into an
:class:`Options`; :func:`load` reads the config file the options name and :func:`apply`
merges them into it. An option left unset (``None`` or empty) keeps what the config says;
the defaults are the config's (:class:`modelgate.config.Config`) and are not repeated here.
Errors are :class:`~modelgate.config.ConfigError` or
:class:`~modelgate.registry.UnknownRule` (exit 2).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from modelgate import config as cfg
from modelgate.checks.settings import CheckSettings
from modelgate.config import Config, ConfigError, InputSpec, RuleSetting
from modelgate.limits import Limit, budgeted_targets
from modelgate.targets import REGISTRY as TARGETS

# Budget figures a static check measures (the file, its weights, its parameters); size_mb
# first, since it means the file only when nothing is converted.
STATIC_BUDGET = ("size_mb", "file_mb", "weights_mb", "parameters")


@dataclass(frozen=True)
class Options:
    """Options of one run, as ``modelgate check`` flags or the Action's inputs give them."""

    config: str | None = None  # config file; None: the one discovered
    select: tuple[str, ...] = ()  # rule ids or names: only these run
    ignore: tuple[str, ...] = ()  # rule ids or names that do not run
    targets: tuple[str, ...] = ()  # converters the model must pass
    fail_on: str | None = None  # lowest severity that fails the gate
    convert: tuple[str, ...] = ()  # converters to run and measure
    compress: tuple[str, ...] = ()  # compression presets (a target's); the first is budgeted
    static: bool = False  # no conversions, only the budget figures the file shows
    baseline: bool = False  # an older version is compared: --static keeps growth limits
    input_shapes: tuple[str, ...] = ()  # NAME=1x3x224x224, where the model records none
    jobs: int | None = None  # models checked at once (None: the CPU count)
    timeout: float | None = None  # seconds per model
    no_cache: bool = False  # neither read nor write the result cache
    cache_dir: str | None = None  # the result cache's folder (None: the config's)


def load(options: Options) -> tuple[Config, tuple[InputSpec, ...]]:
    """The config the options name (or the one discovered) with the options applied, and
    the input shapes they give. Errors come in that order: the config file, the shapes,
    the rules, the checks."""
    config = cfg.load(options.config)
    inputs = tuple(cfg.parse_input_shape(s) for s in options.input_shapes)
    # the environment's cache folder stands between the flags and the config
    # (MODELGATE_CACHE_DIR; MODELGATE_NO_CACHE is read where the cache opens: modelgate.cache)
    if options.cache_dir is None and os.environ.get("MODELGATE_CACHE_DIR"):
        options = replace(options, cache_dir=os.environ["MODELGATE_CACHE_DIR"])
    return apply(config, options), inputs


def apply(config: Config, options: Options) -> Config:
    """``config`` with ``options`` merged in: the only place the two meet."""
    from modelgate.rules import REGISTRY

    rules = dict(config.rules)
    selected = {REGISTRY.get(key).ID for key in options.select}
    for key in options.ignore:
        rules[REGISTRY.get(key).ID] = RuleSetting(enabled=False)
    if selected:
        for module in REGISTRY:
            if module.ID not in selected:
                rules[module.ID] = RuleSetting(enabled=False)
    merged = replace(
        config,
        rules=rules,
        targets=options.targets or config.targets,
        asked_targets=tuple(dict.fromkeys(options.targets)) or config.asked_targets,
        fail_on=options.fail_on or config.fail_on,
        timeout=config.timeout if options.timeout is None else options.timeout,
        checks=_checks(config.checks, options),
        cache=config.cache and not options.no_cache,
        cache_dir=os.path.abspath(options.cache_dir) if options.cache_dir else config.cache_dir,
    )
    if options.static:  # metadata only: no torch, so no build either
        merged = replace(merged, budget=_static_budget(config, options.baseline), build=False)
    return merged


def _checks(settings: CheckSettings, options: Options) -> CheckSettings:
    """The config's check settings with ``convert`` / ``compress`` applied; refuses presets
    it does not know, and conversions asked for with ``static``."""
    if options.static:
        if options.convert or options.compress:
            raise ConfigError("--static skips conversions: drop --convert / --compress")
        return replace(settings, convert=(), compress=())
    presets = TARGETS.presets()
    for preset in options.compress:
        if preset not in presets:
            raise ConfigError(f"--compress {preset}: unknown preset (known: {', '.join(presets)})")
    if options.convert:
        settings = replace(settings, convert=tuple(dict.fromkeys(options.convert)))
    if options.compress:
        settings = replace(settings, compress=tuple(dict.fromkeys(options.compress)))
    return settings


def _static_budget(config: Config, baseline: bool) -> dict[str, Limit]:
    """The limits a static check can judge: on what the file shows; growth limits only with
    a baseline to grow from."""
    # size_mb is the file's size only where the config converts nothing (a limit on a
    # target's own figures converts to it); otherwise it budgets a converted package, which
    # --static does not make. The targets' own figures are never static.
    converts = config.checks.active or bool(budgeted_targets(config.budget))
    static = STATIC_BUDGET if not converts else STATIC_BUDGET[1:]
    return {
        k: v if baseline else Limit(max=v.max)
        for k, v in config.budget.items()
        if k in static and (baseline or v.max is not None)
    }
