"""pipeline.config: TOML in, frozen dataclasses out; every mistake is a
ConfigError naming the key (and the file), and data_dir follows the
documented precedence."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from pipeline import config as config_mod
from pipeline import paths
from pipeline.config import (
    BookSection,
    Config,
    FeedConfig,
    RingConfig,
    SupervisorSection,
    WalSection,
)
from pipeline.errors import ConfigError, FatalError

pytestmark = pytest.mark.unit

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"

VALID = """\
data_dir = "somewhere"

[ring]
capacity = 4096
full_wait_ms = 250

[wal]
fsync = "always"
fsync_interval_ms = 20
cpu = 3

[book]
depth = 7
max_instruments = 1024
checkpoint_interval_s = 2.5

[supervisor]
heartbeat_timeout_s = 4
restart_backoff_ms = 100

[[feeds]]
name = "alpha"
adapter = "pipeline.synthetic:factory"
[feeds.params]
instruments = 5
rate = 1000.5

[[feeds]]
name = "beta_2"
adapter = "some.module:make"

[[feeds]]
name = "gamma-3"
adapter = "other.mod:f"
src = 9
[feeds.params]
symbols = ["A", "B"]
"""


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of the test runner must not decide data_dir."""
    monkeypatch.delenv(paths.ENV_DATA_DIR, raising=False)


def write(tmp_path: Path, text: str, name: str = "pipeline.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_text(tmp_path: Path, text: str, **kwargs: object) -> Config:
    return config_mod.load(write(tmp_path, text), **kwargs)  # type: ignore[arg-type]


def minimal_feed(name: str = "feed", adapter: str = "pkg.mod:factory", extra: str = "") -> str:
    return f'[[feeds]]\nname = "{name}"\nadapter = "{adapter}"\n{extra}\n'


# -- a valid file ----------------------------------------------------------------


def test_load_valid_file_gives_the_values_written(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    cfg = config_mod.load(path)

    assert isinstance(cfg, Config)
    assert cfg.source == str(path)
    assert cfg.data_dir == Path("somewhere")

    assert cfg.ring == RingConfig(capacity=4096, full_wait_ms=250.0)
    assert isinstance(cfg.ring.full_wait_ms, float)

    assert cfg.wal.fsync == "always"
    assert cfg.wal.fsync_interval_ms == 20.0
    assert isinstance(cfg.wal.fsync_interval_ms, float)
    assert cfg.wal.cpu == 3
    assert cfg.wal.segment_bytes == WalSection().segment_bytes  # default kept
    assert cfg.wal.writer_config().fsync == "always"

    assert cfg.book == BookSection(depth=7, max_instruments=1024, checkpoint_interval_s=2.5)

    assert cfg.supervisor.heartbeat_timeout_s == 4.0
    assert cfg.supervisor.restart_backoff_ms == 100.0
    assert cfg.supervisor.drain_timeout_s == SupervisorSection().drain_timeout_s

    assert isinstance(cfg.feeds, tuple)
    assert [f.name for f in cfg.feeds] == ["alpha", "beta_2", "gamma-3"]
    alpha, beta, gamma = cfg.feeds
    assert all(isinstance(f, FeedConfig) for f in cfg.feeds)
    assert alpha.adapter == "pipeline.synthetic:factory"
    assert dict(alpha.params) == {"instruments": 5, "rate": 1000.5}
    assert beta.adapter == "some.module:make"
    assert dict(beta.params) == {}
    assert dict(gamma.params) == {"symbols": ["A", "B"]}
    # src defaults to the position (1-based); an explicit one is kept.
    assert (alpha.src, beta.src, gamma.src) == (1, 2, 9)


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "")
    assert cfg.ring == RingConfig()
    assert cfg.wal == WalSection()
    assert cfg.book == BookSection()
    assert cfg.supervisor == SupervisorSection()
    assert cfg.feeds == ()
    assert cfg.data_dir == Path("data")


def test_src_defaults_to_position_for_every_feed(tmp_path: Path) -> None:
    text = "".join(minimal_feed(f"f{i}") for i in range(5))
    cfg = load_text(tmp_path, text)
    assert [f.src for f in cfg.feeds] == [1, 2, 3, 4, 5]


def test_src_zero_means_assigned_by_position(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, minimal_feed("a") + minimal_feed("b", extra="src = 0"))
    assert [f.src for f in cfg.feeds] == [1, 2]


def test_feed_name_of_fifteen_characters_is_accepted(tmp_path: Path) -> None:
    name = "a" * 15
    cfg = load_text(tmp_path, minimal_feed(name))
    assert cfg.feeds[0].name == name


def test_int_accepted_for_float_fields_and_converted(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "[book]\ncheckpoint_interval_s = 3\n")
    assert cfg.book.checkpoint_interval_s == 3.0
    assert type(cfg.book.checkpoint_interval_s) is float


# -- unknown keys --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "place"),
    [
        ("bogus = 1\n", "bogus", None),
        ("[ring]\ncapacty = 4096\n", "capacty", "ring"),
        ("[wal]\nfsyncc = 'always'\n", "fsyncc", "wal"),
        ("[book]\ndepht = 5\n", "depht", "book"),
        ("[supervisor]\nheartbeat = 5\n", "heartbeat", "supervisor"),
        ('[[feeds]]\nname = "a"\nadapter = "m:f"\nparam = 1\n', "param", "feeds[0]"),
    ],
    ids=["top", "ring", "wal", "book", "supervisor", "feeds"],
)
def test_unknown_key_is_an_error_naming_key_and_place(
    tmp_path: Path, text: str, key: str, place: str | None
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "unknown key" in msg
    if place is None:
        assert repr(key) in msg
    else:
        assert f"{place}.{key}" in msg


def test_unknown_key_in_second_feed_names_its_index(tmp_path: Path) -> None:
    text = minimal_feed("a") + minimal_feed("b", extra="colour = 'red'")
    with pytest.raises(ConfigError, match=r"feeds\[1\]\.colour"):
        load_text(tmp_path, text)


def test_unknown_params_are_left_to_the_adapter(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, minimal_feed(extra="[feeds.params]\nwhatever = 1\n"))
    assert dict(cfg.feeds[0].params) == {"whatever": 1}


# -- wrong types ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[ring]\ncapacity = "x"\n', "ring.capacity"),
        ("[ring]\ncapacity = 4096.0\n", "ring.capacity"),
        ("[ring]\nfull_wait_ms = true\n", "ring.full_wait_ms"),
        ("[wal]\nfsync = 1\n", "wal.fsync"),
        ('[wal]\ncpu = "1"\n', "wal.cpu"),
        ("[book]\ndepth = true\n", "book.depth"),
        ('[book]\ncheckpoint_interval_s = "10"\n', "book.checkpoint_interval_s"),
        ("[supervisor]\nheartbeat_timeout_s = [1]\n", "supervisor.heartbeat_timeout_s"),
        ("data_dir = 5\n", "data_dir"),
        ('[[feeds]]\nname = 5\nadapter = "m:f"\n', "feeds[0].name"),
        ('[[feeds]]\nname = "a"\n', "feeds[0].adapter"),
        ('[[feeds]]\nname = "a"\nadapter = "m:f"\nsrc = "1"\n', "feeds[0].src"),
        ('[[feeds]]\nname = "a"\nadapter = "m:f"\nsrc = true\n', "feeds[0].src"),
        ('[[feeds]]\nname = "a"\nadapter = "m:f"\nparams = 3\n', "feeds[0].params"),
        ("ring = 5\n", "ring"),
        ("feeds = 5\n", "feeds"),
    ],
)
def test_wrong_type_is_an_error_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    assert key in str(info.value)
    assert str(path) in str(info.value)


# -- invalid values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[ring]\ncapacity = 5000\n", "ring.capacity"),
        ("[ring]\ncapacity = 512\n", "ring.capacity"),
        ("[ring]\nfull_wait_ms = -1\n", "ring.full_wait_ms"),
        ('[wal]\nfsync = "sometimes"\n', "wal.fsync"),
        ("[wal]\nfsync_interval_ms = 0\n", "wal.fsync_interval_ms"),
        ("[wal]\ncpu = -2\n", "wal.cpu"),
        ("[book]\ndepth = 0\n", "book.depth"),
        ("[book]\ndepth = 1001\n", "book.depth"),
        ("[book]\nmax_instruments = 0\n", "book.max_instruments"),
        ("[book]\ncheckpoint_interval_s = 0\n", "book.checkpoint_interval_s"),
        ("[supervisor]\ndrain_timeout_s = 0\n", "supervisor.drain_timeout_s"),
        ("[supervisor]\nrestart_backoff_ms = -5\n", "supervisor.restart_backoff_ms"),
    ],
)
def test_invalid_section_value_is_a_config_error(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    assert key in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "name",
    ["has space", "Upper", "UPPER", "a" * 16, "-leading", "_leading", "", "dot.ted", "slash/x"],
)
def test_invalid_feed_name_is_a_config_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, minimal_feed(name))
    assert repr(name) in str(info.value)


def test_adapter_without_colon_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"adapter") as info:
        load_text(tmp_path, minimal_feed("a", adapter="pkg.module.factory"))
    assert "pkg.module.factory" in str(info.value)


@pytest.mark.parametrize("src", [256, -1, 1000])
def test_src_out_of_range_is_a_config_error(tmp_path: Path, src: int) -> None:
    with pytest.raises(ConfigError, match=r"src"):
        load_text(tmp_path, minimal_feed("a", extra=f"src = {src}"))


def test_src_255_is_accepted(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, minimal_feed("a", extra="src = 255"))
    assert cfg.feeds[0].src == 255


def test_duplicate_feed_names_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unique") as info:
        load_text(tmp_path, minimal_feed("same") + minimal_feed("same"))
    assert "same" in str(info.value)


def test_duplicate_explicit_src_is_a_config_error(tmp_path: Path) -> None:
    text = minimal_feed("a", extra="src = 7") + minimal_feed("b", extra="src = 7")
    with pytest.raises(ConfigError, match=r"src"):
        load_text(tmp_path, text)


def test_explicit_src_colliding_with_a_positional_one_is_a_config_error(tmp_path: Path) -> None:
    # The first feed claims 2; the second feed's default by position is also 2.
    text = minimal_feed("a", extra="src = 2") + minimal_feed("b")
    with pytest.raises(ConfigError, match=r"src"):
        load_text(tmp_path, text)


def test_config_error_is_a_fatal_error() -> None:
    assert issubclass(ConfigError, FatalError)


# -- unreadable files ----------------------------------------------------------------


def test_missing_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "missing.toml"
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "text",
    ["[ring\ncapacity = 1\n", "capacity = \n", "a = 1\na = 2\n", "[ring]\ncapacity = 0x\n"],
)
def test_invalid_toml_is_a_config_error_naming_the_path(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    assert str(path) in str(info.value)
    assert "TOML" in str(info.value)


def test_non_utf8_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b'data_dir = "\xff\xfe"\n')
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    assert str(path) in str(info.value)


# -- frozen --------------------------------------------------------------------------


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = config_mod.load(write(tmp_path, VALID))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.data_dir = Path("elsewhere")  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.ring.capacity = 1 << 20  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.wal.fsync = "never"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.book.depth = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.supervisor.drain_timeout_s = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.feeds[0].name = "other"  # type: ignore[misc]
    assert cfg.ring.capacity == 4096
    assert cfg.feeds[0].name == "alpha"


def test_replace_gives_a_changed_copy(tmp_path: Path) -> None:
    cfg = config_mod.load(write(tmp_path, VALID))
    other = config_mod.replace(cfg, data_dir=Path("x"))
    assert other.data_dir == Path("x")
    assert cfg.data_dir == Path("somewhere")
    assert other.feeds == cfg.feeds


# -- data_dir precedence ------------------------------------------------------------------


def test_data_dir_explicit_argument_wins_over_env_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(paths.ENV_DATA_DIR, str(tmp_path / "from-env"))
    path = write(tmp_path, 'data_dir = "from-file"\n')
    assert config_mod.load(path, data_dir=tmp_path / "explicit").data_dir == tmp_path / "explicit"
    assert config_mod.load(path, data_dir="as-str").data_dir == Path("as-str")


def test_data_dir_env_wins_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.ENV_DATA_DIR, str(tmp_path / "from-env"))
    path = write(tmp_path, 'data_dir = "from-file"\n')
    assert config_mod.load(path).data_dir == tmp_path / "from-env"


def test_data_dir_env_used_when_file_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(paths.ENV_DATA_DIR, str(tmp_path / "from-env"))
    assert load_text(tmp_path, "").data_dir == tmp_path / "from-env"


def test_data_dir_file_used_without_argument_or_env(tmp_path: Path) -> None:
    path = write(tmp_path, 'data_dir = "from-file"\n')
    assert config_mod.load(path).data_dir == Path("from-file")


def test_data_dir_defaults_to_data(tmp_path: Path) -> None:
    assert load_text(tmp_path, "").data_dir == Path("data")


def test_data_dir_explicit_argument_wins_without_env(tmp_path: Path) -> None:
    path = write(tmp_path, 'data_dir = "from-file"\n')
    assert config_mod.load(path, data_dir=tmp_path / "x").data_dir == tmp_path / "x"


# -- the shipped files ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["synthetic.toml", "default.toml"])
def test_shipped_config_is_valid(name: str) -> None:
    path = CONFIG_DIR / name
    cfg = config_mod.load(path)
    assert cfg.source == str(path)
    assert cfg.feeds, f"{name} has no feeds"
    synthetic = [f for f in cfg.feeds if f.adapter == "pipeline.synthetic:factory"]
    assert synthetic, f"{name} has no feed using pipeline.synthetic:factory"
    assert cfg.feed(synthetic[0].name) is synthetic[0]
    assert all(1 <= f.src <= 255 for f in cfg.feeds)
    assert cfg.ring.capacity >= 1024
    assert cfg.ring.capacity & (cfg.ring.capacity - 1) == 0
    assert cfg.data_dir == Path("data")  # no data_dir in the file, no env, no argument


@pytest.mark.parametrize("name", ["synthetic.toml", "default.toml"])
def test_shipped_synthetic_params_are_accepted_by_the_adapter(name: str, tmp_path: Path) -> None:
    from pipeline.adapter import AdapterContext, load_factory

    cfg = config_mod.load(CONFIG_DIR / name)
    feed = next(f for f in cfg.feeds if f.adapter == "pipeline.synthetic:factory")
    factory = load_factory(feed.adapter)
    source = factory(feed.params, AdapterContext(feed.name, feed.src, tmp_path))
    assert len(source.instruments()) == feed.params.get("instruments", 100)


# -- Config.feed ---------------------------------------------------------------------


def test_feed_by_name(tmp_path: Path) -> None:
    cfg = config_mod.load(write(tmp_path, VALID))
    assert cfg.feed("beta_2") is cfg.feeds[1]
    assert cfg.feed("gamma-3").src == 9


def test_feed_unknown_name_is_an_error_listing_the_known_feeds(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    cfg = config_mod.load(path)
    with pytest.raises(ConfigError) as info:
        cfg.feed("delta")
    msg = str(info.value)
    assert "'delta'" in msg
    assert str(path) in msg
    for known in ("alpha", "beta_2", "gamma-3"):
        assert known in msg


def test_from_dict_matches_load(tmp_path: Path) -> None:
    import tomllib

    path = write(tmp_path, VALID)
    from_file = config_mod.load(path)
    from_raw = config_mod.from_dict(tomllib.loads(VALID), source=str(path))
    assert from_raw == from_file


def test_wal_cpu_auto_pins_the_last_core_and_none_pins_nothing() -> None:
    import os

    from pipeline.config import WalSection

    cores = sorted(os.sched_getaffinity(0))
    assert WalSection().cpu == "auto"
    assert WalSection().pin_cpu() == (cores[-1] if len(cores) > 1 else None)
    assert WalSection(cpu="none").pin_cpu() is None
    assert WalSection(cpu=0).pin_cpu() == 0
    with pytest.raises(ConfigError, match=r"wal\.cpu"):
        WalSection(cpu="fast")
