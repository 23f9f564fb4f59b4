"""Command-line entry points. Imports stay light: Hydra loads when its app starts (``--help`` answers without it),
torch and lightning inside train()."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnlab.errorlines import one_line_error

if TYPE_CHECKING:
    from omegaconf import DictConfig


def _find_conf() -> Path:
    from rnnlab.specs import find_conf

    return find_conf()


def config_dir() -> str:
    """conf/ of a source checkout, or the copy a wheel carries inside the package, ready to compose: rnnlab's
    schemas, which its YAML files extend, are registered with Hydra's ConfigStore (rnnlab.config)."""
    import rnnlab.config  # noqa: F401

    return str(_find_conf())


# Hydra prints its own multi-line message for an error (and a hint to set HYDRA_FULL_ERROR=1); under HYDRA_FULL_ERROR=1
# it raises the error instead. train_main sets it for the process, and for the processes that inherit its environment
# (Lightning's DDP processes, joblib workers, submitit jobs), with this marker beside it: the errors come back to
# rnnlab, which prints one line for a user error and the whole traceback for a bug.
REPORTING_ENV = "RNNLAB_REPORTS_ERRORS"


def full_error_wanted() -> bool:
    """The user set HYDRA_FULL_ERROR=1: Hydra's behaviour, tracebacks included, instead of one line."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" and os.environ.get(REPORTING_ENV) != "1"


@contextlib.contextmanager
def _hydra_raises() -> Iterator[None]:
    """While Hydra runs: HYDRA_FULL_ERROR=1 (unless the user set it), so that every error reaches train_main."""
    saved = {key: os.environ.get(key) for key in ("HYDRA_FULL_ERROR", REPORTING_ENV)}
    if not full_error_wanted():
        os.environ.update({"HYDRA_FULL_ERROR": "1", REPORTING_ENV: "1"})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _hydra_train() -> None:
    """Hydra's app: composes the config from the command line (sys.argv) and runs :func:`_task` once, or for
    every job of a sweep (``-m``)."""
    import hydra

    hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")(_task)()


def _task(cfg: DictConfig) -> float | None:
    """Hydra's task function: one run, or one job of a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from rnnlab.errors import ConfigError
    from rnnlab.runtime import rundir

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    claim = None
    try:
        # before anything is written into the run's directory: claim it (one run or job owns it), then write
        # Hydra's record of the run (.hydra/), which Hydra itself is told not to write (hydra.output_subdir: null).
        # A job of a resumed sweep may instead be skipped, or take its earlier attempt's directory back
        try:
            if multirun and cfg.get("resume_sweep") is not None:
                from rnnlab.runtime.sweep_resume import start_job

                start = start_job(cfg, hydra_cfg)
                if start.skipped:
                    return start.value
                claim = start.claim
            else:
                claim = rundir.claim_job_dir(hydra_cfg, multirun)
        except ConfigError as err:
            raise rundir.DirectoryTaken(str(err)) from None
        if claim is not None:
            record = _record_subdir(hydra_cfg)
            rundir.write_hydra_record(cfg, HydraConfig.instance().cfg, claim.path, record)
        from rnnlab.runtime.search import job_callbacks
        from rnnlab.train import train

        return train(cfg, callbacks=job_callbacks(cfg, hydra_cfg) if multirun else ()).value
    except BaseException as ex:
        if claim is not None and not multirun and not claim.holds_results():
            claim.release()  # a single run that never trained gives its directory back
        if not isinstance(ex, Exception):
            raise  # RunInterrupted, SystemExit, KeyboardInterrupt: train_main reports them
        # A single run ends here with one line; in a sweep the error goes back to Hydra so the other jobs go on.
        line = one_line_error(ex)
        if line is None or full_error_wanted():
            raise
        if not multirun:
            sys.stderr.write(f"rnnlab: error: {line}\n")
            sys.exit(1)
        if not str(hydra_cfg.launcher.get("_target_", "")).endswith(".BasicLauncher"):
            # the job runs in a worker (joblib) or its own process (submitit): its stderr, the job's log, says why
            sys.stderr.write(f"rnnlab: error: {line}\n")
        raise


def _record_subdir(hydra_cfg: Any) -> str | None:
    """Where the run writes Hydra's record of itself: RunDirGuard's ``record_subdir`` (``.hydra``)."""
    guard = (hydra_cfg.get("callbacks") or {}).get("run_dir_guard")
    if guard is None:
        return str(hydra_cfg.output_subdir) if hydra_cfg.get("output_subdir") else None
    return guard.get("record_subdir", ".hydra")


# ------------------------------------------------------------------------------------------------ --help
HELP_FLAGS = ("-h", "--help")
# the help template's option lists: the resolver rnnlab.config.help_options when Hydra renders it
OPTIONS = re.compile(r"\$\{rnnlab_options:([\w/]+)\}")
_HELP_ALSO = ("-m", "--multirun")  # flags that Hydra's own --help accepts beside it, and ignores


def app_help(argv: list[str]) -> str | None:
    """``rnnlab-train --help``: rnnlab's help template (``help`` in conf/hydra/default.yaml, the one place the text
    lives) rendered without starting Hydra, whose ``--help`` first composes the config and lists every config group
    and plugin (together about 0.5 s, for a text that shows neither). The template may interpolate the other
    ``hydra.help`` keys (``${hydra.help.header}``) and list a group's options (``${rnnlab_options:data}``: the
    registries for model, task and data, conf/ for the rest). None when Hydra should answer: no --help; another flag
    (``--hydra-help``, ``--resolve``, ``--config-dir``, ...); an override of Hydra's config (``hydra.help.*``); or a
    template that asks Hydra for more ($CONFIG, $FLAGS_HELP, $APP_CONFIG_GROUPS, $HYDRA_CONFIG_GROUPS, other
    interpolations)."""
    flags = [a for a in argv if a.startswith("-")]
    if not any(f in HELP_FLAGS for f in flags) or any(f not in HELP_FLAGS + _HELP_ALSO for f in flags):
        return None
    if any(a.lstrip("+~").startswith("hydra") for a in argv if not a.startswith("-")):
        return None
    import string

    import yaml

    with open(_find_conf() / "hydra" / "default.yaml", encoding="utf-8") as fh:
        hydra_conf = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    help_conf = hydra_conf.get("help") or {}
    if not isinstance(help_conf.get("template"), str):
        return None
    text = re.sub(r"\$\{hydra\.help\.(\w+)\}", lambda m: str(help_conf.get(m.group(1), m.group(0))),
                  help_conf["template"])  # fmt: skip
    if OPTIONS.search(text):
        from rnnlab.specs import group_options

        text = OPTIONS.sub(lambda m: group_options(m.group(1), _find_conf()), text)
    template = string.Template(text)
    if "${" in text or template.get_identifiers():
        return None
    return template.substitute()


# ---------------------------------------------------------------------------------------------- plug-ins
PLUGINS = re.compile(r"^\+{0,2}plugins=(.*)$")


def plugins_in(argv: list[str]) -> list[str]:
    """The modules named by ``plugins=[a,b]`` (or ``plugins=a``, ``+plugins=...``) on the command line, read
    without Hydra: they must be imported before Hydra composes the config, so that the schemas and group options
    of the cells, tasks and datasets they register exist (and before ``--help`` lists the options)."""
    names: list[str] = []
    for arg in argv:
        found = PLUGINS.match(arg)
        if found:
            value = found.group(1).strip().strip("[]")
            names += [part.strip().strip("'\"") for part in value.split(",") if part.strip().strip("'\"")]
    return list(dict.fromkeys(names))


CKPT_PATH = re.compile(r"^\+{0,2}ckpt_path=(.*)$")


def with_checkpoint_plugins(argv: list[str]) -> list[str]:
    """A resume (``ckpt_path=...``) without ``plugins=`` loads the plug-ins its checkpoint records: argv with a
    ``plugins=[...]`` naming them (so that the config composes with what they register, and records them again);
    a recorded module that cannot be imported is one line naming it. Unchanged when ``plugins=`` is given, when
    the checkpoint records none, or when it cannot be read (the run then says why, in one line)."""
    paths = [found.group(1).strip().strip("'\"") for found in map(CKPT_PATH.match, argv) if found]
    path = paths[-1] if paths else ""
    if any(map(PLUGINS.match, argv)) or path in ("", "null") or not Path(path).expanduser().is_file():
        return argv
    from rnnlab.checks import load_checkpoint
    from rnnlab.runtime.resume import import_recorded_plugins

    try:
        saved = load_checkpoint(path)
    except Exception:
        return argv
    recorded = import_recorded_plugins(saved, path)
    return [*argv, f"plugins=[{','.join(recorded)}]"] if recorded else argv


def load_plugins(names: list[str]) -> None:
    """Import the plug-in modules (as ``python -m`` would: the working directory is on the path) and, once the
    config module is loaded, store what they registered in Hydra's ConfigStore; a module that cannot be imported is
    a one-line ConfigError."""
    if not names:
        return
    from rnnlab.registry import import_plugins, working_directory_on_path
    from rnnlab.specs import discover_builtins

    working_directory_on_path()
    discover_builtins()
    import_plugins(names)
    if "rnnlab.config" in sys.modules:
        sys.modules["rnnlab.config"].register_configs()


# ------------------------------------------------------------------------------------------------ sweeps
def defer_swept_group_keys(argv: list[str]) -> list[str]:
    """``-m data=imdb,rt_sentences data.limit_samples=2000``: each job composes with its own data option, but
    Hydra first composes the sweep's base config, with the group's default option (data=shakespeare), and applies
    every override that is not a sweep to it, so a key of imdb's schema that shakespeare's lacks fails before any
    job starts (by design: hydra issues #283, #2888). An override of a key inside a group that the command line
    sweeps over is therefore passed as a one-value sweep (``data.limit_samples=choice(2000)``): the base config
    leaves it alone and every job gets ``data.limit_samples=2000``, checked against that job's own schema (a
    misspelt key still fails, with one line, when the first job is composed). Other arguments are unchanged."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    parser = OverridesParser.create()
    conf = _find_conf()
    parsed = {}
    for i, arg in enumerate(argv):
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            parsed[i] = parser.parse_override(arg)
        except Exception:  # Hydra reports a malformed override itself
            continue
    swept = {
        o.key_or_group
        for o in parsed.values()
        if o.is_sweep_override() and o.package is None and (conf / o.key_or_group).is_dir()
    }
    out = list(argv)
    for i, o in parsed.items():
        group = o.key_or_group.split(".", 1)[0]
        if group not in swept or "." not in o.key_or_group or o.is_sweep_override():
            continue
        value = argv[i].partition("=")[2]
        if o.type != OverrideType.CHANGE or o.package is not None or not value.strip():
            continue
        deferred = f"{o.key_or_group}=choice({value})"
        try:
            parser.parse_override(deferred)
        except Exception:
            continue
        out[i] = deferred
    return out


def _report_failed_jobs(interrupted: bool = False) -> bool:
    """After a sweep: print its failed and interrupted jobs (directory and one line each) to stderr; True if
    there were any. ``interrupted``: a signal stopped the sweep (the jobs not started are not listed; the line
    after them is the command that resumes the sweep). A resumed sweep first says how many jobs it skipped,
    resumed and started afresh."""
    from rnnlab.runtime.sweeps import finish_sweep, format_failures, resume_command

    end = finish_sweep()
    if end.resumed:
        sys.stderr.write(end.resumed + "\n")
    if end.failed:
        sys.stderr.write(format_failures(end.total, end.failed, interrupted=interrupted))
        if interrupted and end.resumable is not None:
            sys.stderr.write(f"rnnlab: resume the sweep: {resume_command(end.resumable, _COMMAND)}\n")
    return bool(end.failed)


_COMMAND: list[str] = []  # rnnlab-train's arguments as given, before it rewrites any (train_main)


def expand_home(argv: list[str]) -> list[str]:
    """``key=~/x`` -> ``key=/home/me/x``: the shell expands ``~`` only at the start of a word, and Hydra's grammar
    refuses an unquoted ``~`` in a value. Other arguments unchanged."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and not arg.startswith("-") and (value == "~" or value.startswith("~/")) and "'" not in value:
            expanded = os.path.expanduser(value)
            arg = f"{key}={expanded}" if re.fullmatch(r"[\w./:+-]*", expanded) else f"{key}='{expanded}'"
        out.append(arg)
    return out


def train_main() -> None:
    """``rnnlab-train``: the Hydra app. A user error ends in one line (``rnnlab: error: ...``) and exit status 1, a
    bug in its traceback; a sweep with failed jobs lists them and exits with status 1; a signal ends a run (or a
    sweep) with the signal contract's line and exit status 128 + the signal's number. HYDRA_FULL_ERROR=1 gives
    Hydra's own error output instead."""
    from rnnlab.runtime.distributed import quiet_argv, started_by_lightning, wait_for_parent

    # ranks > 0 of torchrun/srun/DDP: no Hydra files of their own
    argv = quiet_argv(expand_home(sys.argv[1:]))
    sys.argv = [sys.argv[0], *argv]
    _COMMAND[:] = argv  # the command as given, for the line that resumes an interrupted sweep
    try:
        _main(argv)
    except SystemExit as done:
        if done.code not in (None, 0) and started_by_lightning(argv):
            wait_for_parent()  # Lightning's launcher kills rank 0 as soon as another rank fails: rank 0 ends first
        raise


def _main(argv: list[str]) -> None:
    from rnnlab.runtime.distributed import launch_rank
    from rnnlab.runtime.signals import RunInterrupted

    try:
        with _hydra_raises():
            resumed = with_checkpoint_plugins(argv)
            if resumed != argv:
                argv = resumed
                sys.argv = [sys.argv[0], *argv]
            load_plugins(plugins_in(argv))
            text = app_help(argv)
            if text is not None:
                print(text)
                return
            if any(flag in argv for flag in ("-m", "--multirun")):
                argv = defer_swept_group_keys(argv)
                sys.argv = [sys.argv[0], *argv]
            _hydra_train()
    except RunInterrupted as stop:
        if not _report_failed_jobs(interrupted=True) and launch_rank() == 0:  # every process of a DDP run stops
            sys.stderr.write(f"rnnlab: {stop.message}\n")  # with this line: rank 0 prints it
        sys.exit(stop.exit_code)
    except Exception as ex:
        if full_error_wanted():
            raise
        line = one_line_error(ex)
        if _report_failed_jobs():  # a sweep raised its first failure (or, Optuna, ran out of completed trials):
            sys.exit(1)  # every failure is listed above, each with its line
        if line is None:
            raise  # a bug: its traceback
        sys.stderr.write(f"rnnlab: error: {line}\n")
        sys.exit(1)
    if _report_failed_jobs():  # the sweeper went on past its failures (Optuna's max_failure_rate)
        sys.exit(1)
