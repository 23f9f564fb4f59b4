"""Command-line entry points. Imports stay light: torch and lightning load inside train()."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

import rnnlab.config  # noqa: F401  (registers the schemas with Hydra's ConfigStore)


def config_dir() -> str:
    """conf/ of a source checkout, or the copy a wheel carries inside the package."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"rnnlab's conf/ directory not found next to {here}")


# ------------------------------------------------------------------------------------ error lines
def one_line_error(ex: BaseException) -> str | None:
    """One readable line for a user error (bad override, bad value, bad file), or None for a bug."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    from rnnlab.errors import RnnlabError

    # an error raised inside the job arrives as itself; look through wrappers for the user's error
    seen: BaseException | None = ex
    while seen is not None:
        if isinstance(seen, RnnlabError):
            return str(seen).splitlines()[0]
        seen = seen.__cause__

    from rnnlab.launchers import submitit_error_line  # no srun; a job that SLURM killed (hydra/launcher=slurm_*)

    submitit_line = submitit_error_line(ex)
    if submitit_line is not None:
        return submitit_line

    if isinstance(ex, MissingConfigException):
        text = str(ex)
        first = re.sub(r"^In '[^']*': ", "", text.splitlines()[0])
        options = [ln.strip() for ln in text.splitlines() if ln.startswith("\t") and "provider=" not in ln]
        if options:
            group = re.search(r"Available options in '([^']+)'", text)
            where = f" in '{group.group(1)}'" if group else ""
            return f"{first} Available options{where}: {', '.join(options)}"
        return first

    omega = ex if isinstance(ex, OmegaConfBaseException) else ex.__cause__
    if isinstance(omega, OmegaConfBaseException):
        key = getattr(omega, "full_key", None)
        reason = str(omega).splitlines()[0] if str(omega) else type(omega).__name__
        hint = _did_you_mean(omega) if "not in" in reason else ""
        prefix = f"{key}: " if key else ""
        return f"{prefix}{reason}{hint}"
    lexer = "LexerNoViableAltException: "
    if isinstance(ex, OverrideParseException) and str(ex).startswith(lexer) and "^" in str(ex):
        # Hydra's "LexerNoViableAltException: key=va|ue" and a caret under the character it cannot read
        caret = str(ex).splitlines()[1].index("^") - len(lexer)
        override = str(ex).splitlines()[0][len(lexer) :]
        bad = override[caret] if 0 <= caret < len(override) else "?"
        return (
            f"cannot parse the override {override!r}: {bad!r} is not allowed in an unquoted value; "
            f"quote it, e.g. {override.partition('=')[0]}='{override.partition('=')[2]}'"
        )
    if isinstance(ex, HydraException):
        return " ".join(str(ex).split())
    return None


def _did_you_mean(err: Any) -> str:
    """' (did you mean hidden_size?)' for a misspelt key of a typed config, else ''."""
    import dataclasses
    import difflib

    schema, key = getattr(err, "object_type", None), getattr(err, "key", None)
    if not (dataclasses.is_dataclass(schema) and isinstance(key, str)):
        return ""
    names = [f.name for f in dataclasses.fields(schema)]
    close = difflib.get_close_matches(key, names, n=1)
    return f" (did you mean {close[0]}?)" if close else f" (valid keys: {', '.join(names)})"


def _install_error_reporter() -> None:
    """Hydra prints multi-line messages and tracebacks; users get one line and exit status 1 instead.

    Genuine bugs (anything but a config, override or data error) keep Hydra's traceback, and
    HYDRA_FULL_ERROR=1 restores Hydra's behaviour entirely.
    """
    import hydra._internal.utils as hydra_utils

    original = hydra_utils.run_and_report
    if getattr(original, "_rnnlab", False):
        return

    def run_and_report(func: Any) -> Any:
        try:
            return func()
        except Exception as ex:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            line = one_line_error(ex)
            if _report_failed_jobs() and line is not None:  # a sweep raised its first failure: all are listed
                sys.exit(1)
            if line is None:

                def reraise(err: Exception = ex) -> Any:
                    raise err

                return original(reraise)
            sys.stderr.write(f"rnnlab: error: {line}\n")
            sys.exit(1)

    run_and_report._rnnlab = True  # type: ignore[attr-defined]
    hydra_utils.run_and_report = run_and_report


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def _hydra_train(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from rnnlab.train import train

    try:
        return train(cfg)
    except Exception as ex:
        # A single run ends here with one line; in a sweep the error goes back to Hydra so the other jobs go on.
        line = one_line_error(ex)
        if line is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode != RunMode.MULTIRUN:
            sys.stderr.write(f"rnnlab: error: {line}\n")
            sys.exit(1)
        if not str(hydra_cfg.launcher.get("_target_", "")).endswith(".BasicLauncher"):
            # the job runs in a worker (joblib) or its own process (submitit): its stderr, the job's log, says why
            sys.stderr.write(f"rnnlab: error: {line}\n")
        raise


def _lazy_help_groups() -> None:
    """Hydra lists every config group for ``--help`` (about 0.5 s) although rnnlab's help template never
    shows that list; skip it unless the template asks for it (``--hydra-help`` does)."""
    try:
        from hydra._internal.hydra import Hydra

        original = Hydra.get_help
    except (ImportError, AttributeError):  # a Hydra without this private hook: keep its behaviour
        return
    if getattr(original, "_rnnlab", False):
        return

    def get_help(self: Any, help_cfg: Any, cfg: Any, args_parser: Any, resolve: bool) -> str:
        if "CONFIG_GROUPS" in help_cfg.template:
            return original(self, help_cfg, cfg, args_parser, resolve)
        self.format_config_groups = lambda predicate, compact=True: ""
        try:
            return original(self, help_cfg, cfg, args_parser, resolve)
        finally:
            del self.format_config_groups

    get_help._rnnlab = True  # type: ignore[attr-defined]
    Hydra.get_help = get_help  # type: ignore[method-assign]


def _report_failed_jobs() -> bool:
    """After a sweep: print its failed jobs (directory and one line each) to stderr; True if there were any."""
    from rnnlab.sweeps import finish_sweep, format_failures

    total, failed = finish_sweep()
    if failed:
        sys.stderr.write(format_failures(total, failed))
    return bool(failed)


def train_main() -> None:
    """``rnnlab-train``: the Hydra app. A sweep with failed jobs lists them and exits with status 1."""
    from rnnlab.distributed import quiet_argv

    _install_error_reporter()
    _lazy_help_groups()
    sys.argv = [sys.argv[0], *quiet_argv(sys.argv[1:])]  # ranks > 0 of torchrun/srun/DDP: no Hydra files of their own
    _hydra_train()
    if _report_failed_jobs():  # the sweeper went on past its failures (Optuna's max_failure_rate)
        sys.exit(1)
