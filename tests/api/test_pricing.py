"""The price table (bundled default, a file or IPFS_ACCEL_PRICES, overrides) and the cost of
the usage backends report, against the emulator."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from ipfs_accelerate_api.emulator import anthropic, gemini, groq, openai
from ipfs_accelerate_api.errors import ConfigurationError
from ipfs_accelerate_api.pricing import PRICES_ENV, cost_table, load_prices, price_for

from .conftest import MSG


@pytest.fixture(autouse=True)
def _no_price_file(monkeypatch):
    monkeypatch.delenv(PRICES_ENV, raising=False)


def _write(tmp_path, data, name="prices.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_the_bundled_table_loads_and_is_dated() -> None:
    raw = json.loads(resources.files("ipfs_accelerate_api").joinpath("data")
                     .joinpath("prices.json").read_text("utf-8"))
    assert raw["as_of"] and raw["currency"] == "USD" and raw["unit"] == "per million tokens"
    assert "edit" in raw["_about"]
    prices = load_prices()
    assert set(prices) == set(raw["models"])
    assert prices["gpt-4o-mini"] == {"input": 0.15, "output": 0.6}
    for price in prices.values():
        assert set(price) == {"input", "output"}
        assert all(isinstance(v, float) and v >= 0 for v in price.values())


def test_the_emulators_hosted_models_are_priced() -> None:
    served = [*openai.CHAT_MODELS, *openai.EMBED_DIMS, *anthropic.MODELS, *gemini.CHAT_MODELS,
              *(m for m in groq.CHAT_MODELS if not m.startswith("groq/"))]
    prices = load_prices()
    assert [m for m in served if m not in prices] == []


def test_a_file_overrides_side_by_side(tmp_path) -> None:
    path = _write(tmp_path, {"gpt-4o-mini": {"output": 1.0}, "my-llama": {"input": 2},
                             "gpt-4o": None})
    prices = load_prices(path)
    assert prices["gpt-4o-mini"] == {"input": 0.15, "output": 1.0}  # input kept
    assert prices["my-llama"] == {"input": 2.0, "output": 0.0}  # a new model: missing side 0
    assert "gpt-4o" not in prices  # None removes
    assert prices["gpt-4.1"] == load_prices()["gpt-4.1"]  # the rest untouched


def test_the_bundled_shape_is_accepted_in_a_file(tmp_path) -> None:
    path = _write(tmp_path, {"as_of": "2030-01-01", "models": {"gpt-4o-mini": {"input": 9}}})
    assert load_prices(path)["gpt-4o-mini"] == {"input": 9.0, "output": 0.6}


def test_the_environment_names_a_file_and_a_path_wins(tmp_path, monkeypatch) -> None:
    env = _write(tmp_path, {"gpt-4o-mini": {"input": 1}}, "env.json")
    given = _write(tmp_path, {"gpt-4o-mini": {"input": 2}}, "given.json")
    monkeypatch.setenv(PRICES_ENV, str(env))
    assert load_prices()["gpt-4o-mini"]["input"] == 1.0
    assert load_prices(given)["gpt-4o-mini"]["input"] == 2.0


def test_overrides_come_last(tmp_path) -> None:
    path = _write(tmp_path, {"gpt-4o-mini": {"input": 1, "output": 1}})
    prices = load_prices(path, overrides={"gpt-4o-mini": {"output": 3}, "local": {"input": 0}})
    assert prices["gpt-4o-mini"] == {"input": 1.0, "output": 3.0}
    assert prices["local"] == {"input": 0.0, "output": 0.0}


@pytest.mark.parametrize("bad", [{"m": {"input": -1}}, {"m": {"input": "1"}},
                                 {"m": {"input": float("nan")}}, {"m": {"input": True}},
                                 {"m": {"inptu": 1}}, {"m": 3}, {"m": {}}, ["m"]])
def test_a_bad_price_is_refused(bad, tmp_path) -> None:
    with pytest.raises(ConfigurationError):
        load_prices(_write(tmp_path, bad))
    if isinstance(bad, dict):
        with pytest.raises(ConfigurationError):
            load_prices(overrides=bad)


def test_an_unreadable_file_is_a_configuration_error(tmp_path, monkeypatch) -> None:
    with pytest.raises(ConfigurationError, match="missing.json"):
        load_prices(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    monkeypatch.setenv(PRICES_ENV, str(broken))
    with pytest.raises(ConfigurationError, match=PRICES_ENV):
        load_prices()


def test_a_dated_name_is_priced_as_its_undated_one() -> None:
    prices = load_prices()
    assert price_for("gpt-4o-mini-2024-07-18", prices) == prices["gpt-4o-mini"]
    assert price_for("claude-haiku-4-5-20991231", prices) == prices["claude-haiku-4-5"]
    assert price_for("no-such-model", prices) is None


def test_cost_is_tokens_times_price(make, emu) -> None:
    emu.config("openai").models = ["ft:gpt-4o-mini:acme::abc123"]
    ai = make(api_keys=["sk-a", "sk-b"])
    for model in ("gpt-4o-mini", "gpt-4o-mini", "gpt-4o", "ft:gpt-4o-mini:acme::abc123"):
        ai.chat(MSG, model=model)
    ai.list_models()  # no model, no tokens: costs nothing and is not "unpriced"
    usage = ai.stats()["usage"]
    prices = load_prices()
    cost = cost_table(usage, prices)
    assert cost["unpriced"] == ["ft:gpt-4o-mini:acme::abc123"]
    assert set(cost["by_model"]) == {"gpt-4o-mini", "gpt-4o"}
    total = 0.0
    for model in ("gpt-4o-mini", "gpt-4o"):
        p = prices[model]
        for key, row in usage[model].items():
            want = (row["prompt_tokens"] * p["input"]
                    + row["completion_tokens"] * p["output"]) / 1e6
            assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
            assert cost["by_model"][model]["by_key"][key] == pytest.approx(want)
            total += want
        assert cost["by_model"][model]["total"] == pytest.approx(
            sum(cost["by_model"][model]["by_key"].values()))
    assert set(cost["by_model"]["gpt-4o-mini"]["by_key"]) == {"openai-key-1", "openai-key-2"}
    assert cost["total"] == pytest.approx(total)


def test_cost_of_nothing() -> None:
    assert cost_table({}, load_prices()) == {"total": 0.0, "by_model": {}, "unpriced": []}
