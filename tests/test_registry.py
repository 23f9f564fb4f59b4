"""The registries of cells, tasks and datasets (rnnlab.registry), and everything derived from them: the config
groups (ConfigStore), validate()'s checks, plug-ins loaded with plugins=[...], --help, the docs tables, the
catalogue, the sweep of a group with a shared key, and the coverage of the guard and the presets."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException

import rnnlab.cli
from rnnlab.cli import app_help, config_dir, defer_swept_group_keys, load_plugins, plugins_in
from rnnlab.config import register_configs, validate
from rnnlab.errorlines import one_line_error
from rnnlab.errors import ConfigError
from rnnlab.registry import CELLS, DATASETS, TASKS, Registry, RegistryError
from rnnlab.specs import datasets_of, discover_builtins

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
CONF = Path(config_dir())


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_rnnlab_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def isolated():
    """Whatever a test registers (in the registries, the ConfigStore, sys.modules) is gone after it."""
    discover_builtins()
    saved = {registry: dict(registry._entries) for registry in (CELLS, TASKS, DATASETS)}
    store = ConfigStore.instance()
    repo = copy.deepcopy(store.repo)
    modules = set(sys.modules)
    path = list(sys.path)
    yield
    for registry, entries in saved.items():
        registry._entries.clear()
        registry._entries.update(entries)
    store.repo = repo
    for name in set(sys.modules) - modules:
        if name.startswith("rnnlab_test_plugin"):
            del sys.modules[name]
    sys.path[:] = path


def line_of(err: BaseException) -> str:
    line = one_line_error(err)
    assert line is not None, f"{type(err).__name__} is treated as a bug: {err}"
    assert "\n" not in line
    return line


# ----------------------------------------------------------------------------------------- the Registry
def test_duplicate_registration_is_refused_unless_replaced():
    reg = Registry("widget")
    reg.add("a", target="json:dumps")
    with pytest.raises(RegistryError) as info:
        reg.add("a", target="json:loads")
    message = str(info.value)
    assert "widget a is registered twice" in message
    assert "json" in message
    assert "replace=True" in message
    reg.add("a", target="json:loads", replace=True)
    assert reg.get("a").load() is json.loads


def test_unknown_name_lists_the_names_and_the_closest():
    reg = Registry("widget")
    for name in ("alpha", "beta", "gamma"):
        reg.add(name, target="json:dumps")
    with pytest.raises(RegistryError) as info:
        reg.get("betta")
    assert str(info.value) == "unknown widget 'betta': choose one of alpha, beta, gamma; did you mean beta?"
    with pytest.raises(RegistryError) as info:
        reg.get("zzz")
    assert "did you mean" not in str(info.value)
    assert isinstance(info.value, KeyError)


def test_variants():
    reg = Registry("cell")
    reg.add("lstm", target="json:dumps", variant="peephole")
    reg.add("lstm", target="json:loads")
    reg.add("gru", target="json:dumps")
    assert reg.names() == ["lstm", "gru"]
    assert reg.variants("lstm") == ["standard", "peephole"]
    assert reg.get("lstm", "peephole").key == "lstm/peephole"
    assert reg.get("lstm").load() is json.loads
    with pytest.raises(RegistryError) as info:
        reg.get("lstm", "peepholes")
    assert str(info.value) == (
        "cell lstm has no variant 'peepholes': choose one of standard, peephole; did you mean peephole?"
    )


def test_a_target_is_imported_only_when_loaded(tmp_path, monkeypatch):
    (tmp_path / "rnnlab_test_plugin_lazy.py").write_text("IMPORTED = True\nclass Thing:\n    '''A thing.'''\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("widget")
    entry = reg.add("thing", target="rnnlab_test_plugin_lazy:Thing", doc="a registered thing")
    assert "rnnlab_test_plugin_lazy" not in sys.modules
    assert (entry.doc, reg.names(), "thing" in reg) == ("a registered thing", ["thing"], True)
    assert "rnnlab_test_plugin_lazy" not in sys.modules  # listing, describing: no import
    assert entry.load().__name__ == "Thing"
    assert sys.modules["rnnlab_test_plugin_lazy"].IMPORTED
    del sys.modules["rnnlab_test_plugin_lazy"]


def test_declaration_modules_are_light():
    """Listing every registry imports neither torch, lightning, pandas nor Hydra and OmegaConf (--help does it)."""
    code = (
        "import sys; from rnnlab.specs import group_options, docs_table; from pathlib import Path; "
        "[docs_table(k) for k in ('tasks', 'datasets', 'cells')]; "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'lightning', 'pandas', 'hydra', 'omegaconf', 'matplotlib')); print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# ----------------------------------------------------------------------------------------- the built-ins
def test_builtin_entries_declare_what_the_rest_derives_from():
    import pkgutil

    import rnnlab.tasks.specs

    declared = {m.name for m in pkgutil.iter_modules(rnnlab.tasks.specs.__path__)}
    assert declared, "no declaration module found"
    assert declared <= set(TASKS.names())  # each declaration module registers the task it is named after
    kinds = {entry.meta["kind"] for entry in DATASETS.entries()}
    for task in TASKS.entries():
        assert task.schema is not None, task
        assert task.target.startswith(f"rnnlab.tasks.{task.name}:"), task
        assert task.meta["accepts"] in kinds, task  # every task has data to train on
        assert task.schema().name == task.name
        assert importlib.util.find_spec(task.target.partition(":")[0]) is not None
    for data in DATASETS.entries():
        assert data.schema is not None, data
        assert data.doc, data
        assert any(task.meta["accepts"] == data.meta["kind"] for task in TASKS.entries()), data
        module, _, attr = data.target.partition(":")
        assert importlib.util.find_spec(module) is not None, data
        assert attr.startswith("build_"), data


def test_every_registered_task_has_a_guard_entry():
    from test_guard import TASKS as GUARDED

    assert sorted(GUARDED) == sorted(TASKS.names())


def test_every_registered_dataset_has_a_preset_or_a_test():
    tests = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py"))
    for name in DATASETS.names():
        preset = (CONF / "data" / f"{name}.yaml").is_file()
        assert preset or f"data={name}" in tests, f"data={name} has no conf/data/{name}.yaml and no test"


def test_every_builtin_preset_is_registered():
    for group, registry in (("task", TASKS), ("data", DATASETS), ("model", CELLS)):
        for path in (CONF / group).glob("*.yaml"):
            assert path.stem in registry, f"conf/{group}/{path.name} names no registered {registry.kind}"


# ------------------------------------------------------------------------------------- derived listings
def test_help_lists_the_registries():
    text = app_help(["--help"])
    assert text is not None
    lines = dict(re.findall(r"^(model|task|data):\s+(.*)$", text, re.MULTILINE))
    assert re.sub(r" \([^)]*\)", "", lines["model"]) == ", ".join(CELLS.names())
    for name in CELLS.names():  # a cell with several forms names them
        if len(CELLS.variants(name)) > 1:
            assert f"{name} (model.variant={'|'.join(CELLS.variants(name))})" in lines["model"]
    assert lines["task"] == ", ".join(TASKS.names())
    listed = re.findall(r"[a-z0-9_]+", re.sub(r"\([^)]*\)", "", lines["data"]))
    assert sorted(listed) == sorted(DATASETS.names())
    classify = TASKS.get("classify")  # data grouped by their kind, named by the tasks that take it
    takers = ", ".join(t.name for t in TASKS.entries() if t.meta["accepts"] == classify.meta["accepts"])
    assert f"{', '.join(d.name for d in datasets_of(classify))} ({takers})" in lines["data"]
    assert "${" not in text


def test_docs_tables_are_up_to_date():
    """scripts/gen_docs_tables.py would leave every page as committed: run it after adding a task or dataset."""
    gen = _script("gen_docs_tables")
    pages = [page for page in gen.PAGES if gen.MARKER.search(page.read_text(encoding="utf-8"))]
    assert {p.name for p in pages} >= {"tasks-and-data.md", "configuration.md"}
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert gen.render(text) == text, f"{page.name} is out of date: python scripts/gen_docs_tables.py"
    table = gen.generated("tasks")
    for name in TASKS.names():
        assert f"| `{name}` |" in table


def test_the_catalogue_covers_every_task_and_data_pair():
    rows = _script("check_catalogue").catalogue()
    covered = {(task, data) for task, datas, _, _ in rows for data in datas.split(",")}
    wanted = {(task.name, data.name) for task in TASKS.entries() for data in datasets_of(task)}
    assert covered == wanted
    assert ("classify", "imdb,rt_sentences", ["data.limit_samples=600"], None) in rows  # one sweep, a shared key


# ------------------------------------------------------------------------------------------- validate
@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["task.name=clasify"], ["task.name=clasify: unknown task 'clasify'", "classify, forecast",
                                 "did you mean classify?"]),
        (["data.name=shakespear"], ["data.name=shakespear: unknown dataset", "did you mean shakespeare?"]),
        (["model.cell=lstmm"], ["model.cell=lstmm: unknown cell 'lstmm': choose one of gru, lstm, rnn",
                                "did you mean lstm?"]),
        (["model.variant=peepole"], ["model.variant=peepole: cell lstm has no variant 'peepole'",
                                     ", ".join(CELLS.variants("lstm")), "did you mean peephole?"]),
        (["data.name=imdb"], ["data.name=imdb", "CharCorpusConfig", "ReviewsConfig", "data=imdb"]),
        (["data.kind=tagging"], ["data.kind=tagging: data=shakespeare yields char_corpus batches"]),
        (["plugins=[rnnlab_test_plugin_missing]"], ["plugins: cannot import 'rnnlab_test_plugin_missing'"]),
    ],
)  # fmt: skip
def test_validate_names_the_key_in_one_line(raw_compose, overrides, fragments):
    cfg = raw_compose(*overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    line = line_of(info.value)
    for fragment in fragments:
        assert fragment in line, (fragment, line)


@dataclass
class _Fake:
    """A NumPy cell stand-in: it reads model.nonlinearity, as rnn does."""

    options = ("nonlinearity",)


def test_a_fake_cell_its_variants_and_its_options(isolated, raw_compose):
    """model.cell is any registered cell, model.variant one of its variants; model=NAME selects a cell without a
    YAML file; a key only some cells read (their ``options``) is refused for the others."""
    CELLS.register("fakecell", doc="a test cell")(_Fake)
    CELLS.register("fakecell", variant="wide", doc="a wider test cell")(_Fake)
    register_configs()
    cfg = raw_compose("model=fakecell", "model.variant=wide", "model.nonlinearity=relu")
    assert (cfg.model.cell, cfg.model.variant, cfg.model.hidden_size) == ("fakecell", "wide", 128)
    validate(cfg)
    with pytest.raises(ConfigError) as info:
        validate(raw_compose("model=fakecell", "model.variant=narrow"))
    assert line_of(info.value) == (
        "model.variant=narrow: cell fakecell has no variant 'narrow': choose one of standard, wide"
    )
    with pytest.raises(ConfigError) as info:
        validate(raw_compose("model=gru", "model.nonlinearity=relu"))
    assert line_of(info.value) == "model.nonlinearity applies to model=rnn, fakecell only, not model=gru"
    with pytest.raises(ConfigError) as info:
        validate(raw_compose("model.cell=fakecel"))
    assert "choose one of gru, lstm, rnn, fakecell; did you mean fakecell?" in line_of(info.value)


PLUGIN = """
from dataclasses import dataclass
from typing import Any

from rnnlab.data.specs.synthetic_text import SyntheticTextConfig
from rnnlab.errors import ConfigError
from rnnlab.registry import DATASETS, TASKS
from rnnlab.tasks.specs import TaskConfig


@dataclass
class TinyTextConfig(SyntheticTextConfig):
    num_samples: int = 100
    flavour: str = "plain"


def check_tiny(cfg: Any) -> None:
    if cfg.data.flavour not in ("plain", "spicy"):
        raise ConfigError(f"data.flavour must be plain or spicy, got {cfg.data.flavour}")


@dataclass
class CountTaskConfig(TaskConfig):
    name: str = "count"
    monitor: str = "val/mse"
    scale: float = 1.0


def check_count(cfg: Any) -> None:
    if cfg.task.scale <= 0:
        raise ConfigError(f"task.scale must be > 0, got {cfg.task.scale}")


DATASETS.add("tiny_text", target="rnnlab.data.datamodules:build_synthetic_text", schema=TinyTextConfig,
             kind="classification", check=check_tiny, doc="a small synthetic_text")
DATASETS.add("counts", target="rnnlab_test_plugin_mod:build_counts", kind="counting", doc="numbers to count")
TASKS.add("count", target="rnnlab_test_plugin_mod:CountTask", schema=CountTaskConfig, accepts="counting",
          check=check_count, doc="count things")
"""


@pytest.fixture
def plugin(isolated, tmp_path, monkeypatch):
    (tmp_path / "rnnlab_test_plugin_mod.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.chdir(tmp_path)  # the command line imports plug-ins from the working directory
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    argv = ["plugins=[rnnlab_test_plugin_mod]", "task=count", "data=counts"]
    assert plugins_in(argv) == ["rnnlab_test_plugin_mod"]
    load_plugins(plugins_in(argv))
    return argv


def test_a_plugin_task_and_dataset_compose_without_yaml(plugin, raw_compose):
    cfg = raw_compose(*plugin, "task.scale=2.5")
    assert (cfg.task.name, cfg.task.scale, cfg.task.monitor, cfg.data.name, cfg.data.kind) == (
        "count",
        2.5,
        "val/mse",
        "counts",
        "counting",
    )
    assert list(cfg.plugins) == ["rnnlab_test_plugin_mod"]
    validate(cfg)
    assert cfg.optimized_metric == "val/mse"
    tiny = raw_compose("plugins=[rnnlab_test_plugin_mod]", "task=classify", "data=tiny_text", "data.flavour=spicy")
    assert (tiny.data.num_samples, tiny.data.flavour, tiny.data.kind) == (100, "spicy", "classification")
    validate(tiny)


def test_a_plugin_is_checked_like_a_builtin(plugin, raw_compose):
    for overrides, expected in [
        ((*plugin, "task.scale=0"), "task.scale must be > 0, got 0.0"),
        (("plugins=[rnnlab_test_plugin_mod]", "task=count", "data=tiny_text"),
         "task=count cannot train on data=tiny_text (it yields classification batches, the task needs counting)"),
        (("plugins=[rnnlab_test_plugin_mod]", "task=classify", "data=tiny_text", "data.flavour=sour"),
         "data.flavour must be plain or spicy, got sour"),
        (("plugins=[rnnlab_test_plugin_mod]", "task=classify", "data=counts"),
         "task=classify cannot train on data=counts (it yields counting batches, the task needs classification)"),
    ]:  # fmt: skip
        with pytest.raises(ConfigError) as info:
            validate(raw_compose(*overrides))
        assert line_of(info.value) == expected
    with pytest.raises(HydraException) as info:  # a typed plug-in schema refuses a misspelt key while composing
        raw_compose("plugins=[rnnlab_test_plugin_mod]", "task=classify", "data=tiny_text", "data.flavor=x")
    assert line_of(info.value).startswith("data.flavor: ")
    assert "did you mean flavour?" in line_of(info.value)


def test_a_plugin_is_listed_and_cannot_take_a_builtin_name(plugin):
    lines = dict(re.findall(r"^(task|data):\s+(.*)$", app_help(["--help"]), re.MULTILINE))
    assert lines["task"].endswith(", tag, count")  # the built-ins first
    assert "counts (count)" in lines["data"]
    assert re.search(r"\btiny_text\b[^;(]*\([^)]*\bclassify\b", lines["data"])  # in classify's group
    (Path.cwd() / "rnnlab_test_plugin_dup.py").write_text(
        "from rnnlab.registry import TASKS\nTASKS.add('classify', target='x:y')\n"
    )
    with pytest.raises(ConfigError) as info:
        load_plugins(["rnnlab_test_plugin_dup"])
    assert line_of(info.value).startswith("plugins: rnnlab_test_plugin_dup: task classify is registered twice")


def test_task_class_comes_from_the_registry():
    from rnnlab.tasks import task_class

    assert task_class("regress").__name__ == "RegressTask"
    with pytest.raises(RegistryError, match="did you mean regress"):
        task_class("regres")


# ----------------------------------------------------------------------------------- sweeps of a group
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-m", "data=imdb,rt_sentences", "data.limit_samples=2000", "task=classify"],
         ["-m", "data=imdb,rt_sentences", "data.limit_samples=choice(2000)", "task=classify"]),
        (["data.limit_samples=2000", "--multirun", "data=choice(imdb,rt_sentences)", "seed=1,2", "model.hidden_size=8"],
         ["data.limit_samples=choice(2000)", "--multirun", "data=choice(imdb,rt_sentences)", "seed=1,2",
          "model.hidden_size=8"]),
        (["-m", "task=seq2seq", "data=dates,cmudict", "data.locales=[en,fr]", "+data.x=1", "data.val_fraction=0.2,0.3"],
         ["-m", "task=seq2seq", "data=dates,cmudict", "data.locales=choice([en,fr])", "+data.x=1",
          "data.val_fraction=0.2,0.3"]),
        (["-m", "data=imdb", "data.limit_samples=2000"], ["-m", "data=imdb", "data.limit_samples=2000"]),  # no sweep
        (["-m", "model=rnn,gru", "data.limit_samples=2000"], ["-m", "model=rnn,gru", "data.limit_samples=2000"]),
    ],
)  # fmt: skip
def test_keys_of_a_swept_group_go_to_the_jobs(argv, expected):
    assert defer_swept_group_keys(argv) == expected


def test_plugins_in_reads_every_spelling():
    assert plugins_in(["plugins=a", "x=1"]) == ["a"]
    assert plugins_in(["+plugins=[a, b.c]", "++plugins='d'", "plugins=[a]"]) == ["a", "b.c", "d"]
    assert plugins_in(["model=gru", "--help"]) == []
    assert rnnlab.cli.PLUGINS.match("myplugins=[x]") is None
