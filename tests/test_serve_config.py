"""Serve configs and build args, without Ray: what `tta serve --config` validates before anything starts."""

from __future__ import annotations

import pytest
import yaml

from deployments.config import ServeConfigError, read_config, shipped_config, tta_application, validate, with_overrides


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_shipped_configs_are_valid_serve_configs(kind):
    config = read_config(shipped_config(kind))
    schema = validate(config)
    deployments = {d.name: d for d in schema.applications[0].deployments}
    assert set(deployments) == {"Ingress", "Generator", "Reranker", "Rewriter"}
    generator = deployments["Generator"]
    # @serve.batch holds at most 16 waveforms; max_ongoing_requests must let a full batch form
    assert generator.max_ongoing_requests >= 16 and 0 < generator.max_queued_requests < 1000
    gpus = sum(deployments[name].ray_actor_options.num_gpus for name in ("Generator", "Reranker", "Rewriter"))
    assert gpus == pytest.approx(0 if kind == "cpu" else 1), "on GPU hosts one worker's GPU holds one Generator, one Reranker and one Rewriter"
    if kind == "gpu":
        auto = generator.autoscaling_config.model_dump() if hasattr(generator.autoscaling_config, "model_dump") else generator.autoscaling_config
        assert auto["min_replicas"] >= 1 and auto["max_replicas"] > auto["min_replicas"] and auto["target_ongoing_requests"] > 0


def test_overrides_replace_address_args_and_deployment_options():
    base = read_config(shipped_config("cpu"))
    config = with_overrides(base, host="0.0.0.0", port=9000, args={"device": "cuda", "checkpoint": None}, deployments={"Generator": {"max_queued_requests": 2}})
    app = tta_application(config)
    assert config["http_options"] == {**base["http_options"], "host": "0.0.0.0", "port": 9000}
    assert app["args"]["device"] == "cuda" and "checkpoint" not in app["args"], "None leaves the config's value"
    assert next(d for d in app["deployments"] if d["name"] == "Generator")["max_queued_requests"] == 2
    assert tta_application(base)["args"]["device"] == "cpu", "the original is not modified"
    with pytest.raises(ServeConfigError, match="no deployment named 'Generater'"):
        with_overrides(base, deployments={"Generater": {}})


def test_a_bad_config_is_refused_naming_the_field(tmp_path):
    config = read_config(shipped_config("cpu"))
    tta_application(config)["deployments"][1]["max_ongoing_requests"] = -1
    with pytest.raises(ServeConfigError, match=r"applications\.0\.deployments\.1\.max_ongoing_requests"):
        validate(config)
    tta_application(config)["deployments"][1]["max_ongoing_requests"] = 16
    tta_application(config)["deployments"].append({"name": "Rewritter"})  # a typo
    with pytest.raises(ServeConfigError, match="Rewritter"):
        validate(config)
    (tmp_path / "x.yaml").write_text(yaml.safe_dump({"http_options": {"port": 1}}))
    with pytest.raises(ServeConfigError, match="needs an `applications` list"):
        read_config(tmp_path / "x.yaml")


def test_build_app_refuses_unknown_or_bad_args():
    from deployments.app import build_app

    with pytest.raises(ValueError, match="unknown build_app args \\['chekpoint'\\]"):
        build_app({"chekpoint": "x"})
    with pytest.raises(ValueError, match="dtype must be"):
        build_app({"dtype": "fp8"})
    with pytest.raises(ValueError, match="reranker must be"):
        build_app({"reranker": "laion"})
    with pytest.raises(ValueError, match="rewriter must be"):
        build_app({"rewriter": "gpt"})
    build_app(read_config(shipped_config("gpu"))["applications"][0]["args"])  # the shipped args all exist
    assert build_app({"reranker": "clap", "rerank_by_stretch": True}) is not None
    assert build_app({"reranker": "clap"}) is not None  # CLAP cosine picks: services.reward.load_reranker tests it
    assert build_app({"reranker": "clap", "rerank_known_words": True}) is not None
    with pytest.raises(ValueError, match="rerank_known_words: 'no/such/dir'"):
        build_app({"rerank_known_words": "no/such/dir"})


def test_a_reranker_in_known_words_names_its_wording():
    """The version a response reports names the wording the judge read the prompt in (the class, without Ray)."""
    from deployments.app import Reranker
    from services.checkpoints import shipped
    from services.manifest import checkpoint_version

    replica = Reranker.func_or_class(kind="clap", by_stretch=True, wording=str(shipped("wording")))
    assert replica.version == f"{checkpoint_version(shipped('clap'))}+{checkpoint_version(shipped('wording'))}"
    assert replica.info()["backend"] == "clap-cosine+known-words+by-stretch"


def test_tta_serve_refuses_a_bad_config_before_starting_ray(tmp_path):
    from click.testing import CliRunner

    from tta.cli import main

    config = read_config(shipped_config("cpu"))
    tta_application(config)["deployments"][1]["max_queued_requests"] = "many"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(main, ["serve", "--config", str(path)])
    assert result.exit_code != 0 and "max_queued_requests" in result.output, result.output
    tta_application(config)["deployments"][1]["max_queued_requests"] = 32
    tta_application(config)["args"]["chekpoint"] = "/models/x"  # a typo in the builder args
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(main, ["serve", "--config", str(path)])
    assert result.exit_code != 0 and "unknown args ['chekpoint']" in result.output, result.output
