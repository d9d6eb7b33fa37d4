"""The config.json format: parsing (JSONC), every validation rule, runtimes, JSON Schema."""

from __future__ import annotations

import copy
import json
import re
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from app.errors import Invalid
from app.trainings.config import (
    MAX_CONFIG_BYTES,
    RESERVED_ENV_NAMES,
    RESERVED_ENV_PREFIXES,
    InputRef,
    TrainingConfig,
    config_json_schema,
    parse_config_text,
    parse_input_url,
    validate_config,
)
from app.trainings.runtimes import (
    CPU_STANDARD,
    MINDSPORE_CPU,
    get_runtime,
    list_flavors,
    list_runtimes,
    resolve_flavor,
    resolve_runtime,
)

SEED_CONFIG = (  # the ```json block of the seed tutorial, byte for byte
    '     {\t\n'
    '     "SDK": "ModelArts",               \t//训练平台，目前支持ModelArts\n'
    '     "code_dir": "train/train_dir/",\t  \t//模型训练相关代码以及配置需求文件所在目'
    '录\t\n'
    '     "boot_file": "train.py",\t\t\t//启动文件\n'
    '     "outputs": [{\t\t\t\t\t\t//训练过程需要输出的一些文件的路径设置\n'
    '         "output_dir": "train/output/",\t\n'
    '         "name": "output_url"\n'
    '     }],\n'
    '     "hypeparameters": [{                  //超参数，模型训练的超参数的值可以在该'
    '模块进行更改，如需添加超参数，需要更改train.py源代码\n'
    '     \t"name": "epochs",\n'
    '     \t\t"value": "30"\n'
    '     }],\n'
    '     "frameworks": {\t\t\t\t\t\t//模型所需的深度学习框架，目前支持MindSpore\n'
    '         "framework_type": "MPI",\n'
    '         "framework_version": "mindspore_1.3.0-cuda_10.1-py_3.7-ubuntu_1804-x86_64'
    '",\n'
    '     },\n'
    '     "train_instance_type": "modelarts.p3.large.public",\t//计算资源\n'
    '     "log_url": "train/log/",\t\t\t//日志文件的保存路径\n'
    '     "env_variables": {\t\t\t\t\t//环境变量\n'
    '     },\n'
    '     "job_description": "训练resnet50，epoch=100",    //对当前训练实例的描述\n'
    '     "inputs": [{\t\t\t\t\t\t//输入\n'
    '         "input_url": "datasets/drizzlezyk/cifar10/resnet50_224.ckpt",\n'
    '     \t\t"name": "pretrain_url"},\n'
    '     \t\t{"input_url": "datasets/drizzlezyk/cifar10/",\n'
    '     \t\t"name": "data_url"\n'
    '     \t\t}],\n'
    '     "job_name": "test1"               //训练名称\n'
    '     }\n'
    '     '
)

SEED_FILE = Path(__file__).resolve().parents[2] / "shared" / "seeds"

VALID: dict[str, Any] = {
    "SDK": "ModelArts",
    "code_dir": "train/train_dir/",
    "boot_file": "train.py",
    "outputs": [{"output_dir": "train/output/", "name": "output_url"}],
    "hypeparameters": [{"name": "epochs", "value": "30"}],
    "frameworks": {"framework_type": "MPI",
                   "framework_version": "mindspore_1.3.0-cuda_10.1-py_3.7-ubuntu_1804-x86_64"},
    "train_instance_type": "modelarts.p3.large.public",
    "log_url": "train/log/",
    "env_variables": {},
    "job_description": "train resnet50, epoch=100",
    "inputs": [{"input_url": "datasets/drizzlezyk/cifar10/resnet50_224.ckpt",
                "name": "pretrain_url"},
               {"input_url": "datasets/drizzlezyk/cifar10/", "name": "data_url"}],
    "job_name": "test1",
}


def config(**changes: Any) -> dict[str, Any]:
    """A valid config with top-level keys replaced (None removes the key)."""
    out = copy.deepcopy(VALID)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def problems(data: Any) -> dict[str, str]:
    """The `{field: message}` of the Invalid that validating `data` raises."""
    with pytest.raises(Invalid) as info:
        validate_config(data)
    assert info.value.status == 422
    assert info.value.fields, "an Invalid from validation must name its fields"
    return {f["field"]: f["message"] for f in info.value.fields}


# --- the seed -------------------------------------------------------------------------

@pytest.mark.shared_data
def test_seed_copy_is_verbatim() -> None:
    seeds = sorted(SEED_FILE.glob("000_*.txt"))
    if not seeds:
        pytest.skip("the shared seed is not next to this checkout")
    block = re.search(r"```json\n(.*?)```", seeds[0].read_text(encoding="utf-8"), re.DOTALL)
    assert block is not None and block[1] == SEED_CONFIG


def test_seed_config_parses_validates_and_maps_to_the_installed_runtime() -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(SEED_CONFIG)  # comments and a trailing comma: not strict JSON
    cfg = validate_config(parse_config_text(SEED_CONFIG))
    assert cfg.job_name == "test1"
    assert cfg.job_description == "训练resnet50，epoch=100"
    assert cfg.boot_path == "train/train_dir/train.py"
    assert [(h.name, h.value) for h in cfg.hypeparameters] == [("epochs", "30")]
    assert cfg.runtime is MINDSPORE_CPU
    major_minor = ".".join(version("mindspore").split(".")[:2])
    assert cfg.runtime.name == f"mindspore-{major_minor}-cpu"
    assert cfg.runtime.python == sys.executable
    assert cfg.flavor is CPU_STANDARD and cfg.flavor.queue == "trainings.cpu"
    assert cfg.input_refs() == [
        ("pretrain_url", InputRef("datasets", "drizzlezyk", "cifar10", "resnet50_224.ckpt")),
        ("data_url", InputRef("datasets", "drizzlezyk", "cifar10", "")),
    ]
    stored = cfg.to_json()
    assert list(stored) == list(VALID)  # Xihe's keys, in Xihe's order, `hypeparameters` sic
    assert stored["frameworks"]["framework_version"].startswith("mindspore_1.3.0")
    assert json.loads(json.dumps(stored)) == stored
    assert validate_config(stored) == cfg


def test_strict_json_and_bytes_and_bom_parse() -> None:
    text = json.dumps(VALID)
    assert parse_config_text(text) == VALID
    assert parse_config_text(text.encode()) == VALID
    assert parse_config_text("\ufeff" + text) == VALID
    assert validate_config(parse_config_text(SEED_CONFIG.encode())).job_name == "test1"


# --- syntax errors --------------------------------------------------------------------

def syntax_error(text: str | bytes) -> dict[str, Any]:
    with pytest.raises(Invalid) as info:
        parse_config_text(text)
    assert info.value.status == 422
    assert info.value.fields is not None and info.value.fields[0]["field"] == "config"
    assert info.value.fields[0]["message"] == info.value.detail
    return info.value.fields[0]


def test_syntax_error_names_line_and_column() -> None:
    broken = SEED_CONFIG.replace('"boot_file": "train.py",', '"boot_file": "train.py"')
    field = syntax_error(broken)
    assert (field["line"], field["column"]) == (5, 6)
    assert "line 5, column 6" in field["message"]
    assert "comma missing at the end of the previous line" in field["message"]
    assert '"outputs": [{' in field["message"]  # the offending line is quoted


def test_syntax_error_in_strict_json_uses_the_clearer_message() -> None:
    field = syntax_error('{\n  "job_name": "test1"\n  "boot_file": "train.py"\n}')
    assert (field["line"], field["column"]) == (3, 3)
    assert "Expecting ',' delimiter" in field["message"]


def test_unquoted_text_and_truncated_file() -> None:
    field = syntax_error(SEED_CONFIG.replace('"job_name": "test1"', '"job_name": test1'))
    assert field["line"] == 28 and "double quotes" in field["message"]
    field = syntax_error(SEED_CONFIG.rstrip()[:-1])  # the closing brace is gone
    assert "end of input" in field["message"] and field["line"] == 29


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "is empty"),
    ("  \n // nothing\n", "not valid JSON"),
    ('{"job_name": "a", "job_name": "b"}', "'job_name' twice"),
    (b"\xff\xfe{}", "not UTF-8"),
    ("[" * 5000, "nested too deeply"),
    ("x" * (MAX_CONFIG_BYTES + 1), f"larger than {MAX_CONFIG_BYTES} bytes"),
])
def test_unusable_text_is_refused(text: str | bytes, fragment: str) -> None:
    assert fragment in syntax_error(text)["message"]


def test_source_name_is_used_in_messages() -> None:
    with pytest.raises(Invalid, match=r"^train/config\.json is not valid JSON"):
        parse_config_text("{", source="train/config.json")


# --- every rule has a failing case ----------------------------------------------------

def hyper(name: str = "epochs", value: Any = "30") -> list[dict[str, Any]]:
    return [{"name": name, "value": value}]


RULES: list[tuple[dict[str, Any], str, str]] = [
    # job_name
    (config(job_name=None), "job_name", "required"),
    (config(job_name="abcd"), "job_name", "5-50 characters"),
    (config(job_name="a" * 51), "job_name", "5-50 characters"),
    (config(job_name="test 1"), "job_name", "letters, digits, _ and -"),
    (config(job_name="训练实例一二"), "job_name", "letters, digits"),
    (config(job_name=12345), "job_name", "must be a string, got a number"),
    # job_description
    (config(job_description="x" * 101), "job_description", "at most 100 characters"),
    (config(job_description="a\x00b"), "job_description", "control characters"),
    # SDK
    (config(SDK=""), "SDK", "must not be empty"),
    (config(SDK=["ModelArts"]), "SDK", "must be a string, got a list"),
    # code_dir
    (config(code_dir="/train/"), "code_dir", "remove the leading '/'"),
    (config(code_dir="../other/"), "code_dir", "'..' is not allowed"),
    (config(code_dir="train/../../x/"), "code_dir", "'..' is not allowed"),
    (config(code_dir="train\\train_dir"), "code_dir", "not '\\'"),
    (config(code_dir="train//x/"), "code_dir", "empty segments"),
    (config(code_dir="./train/"), "code_dir", "'.' segments"),
    (config(code_dir="."), "code_dir", 'use "" for the repository root'),
    (config(code_dir="/"), "code_dir", 'use "" for the repository root'),
    (config(code_dir="train dir/"), "code_dir", "only letters, digits and _ . / -"),
    (config(code_dir="~/train/"), "code_dir", "only letters, digits"),
    (config(code_dir="a/" * 26), "code_dir", "at most 50 characters"),
    # boot_file
    (config(boot_file=None), "boot_file", "required"),
    (config(boot_file=""), "boot_file", "must not be empty"),
    (config(boot_file="train.sh"), "boot_file", "ending in .py"),
    (config(boot_file="sub/.py"), "boot_file", "not a hidden file"),
    (config(boot_file="sub/"), "boot_file", "ending in .py"),
    (config(boot_file="../train.py"), "boot_file", "'..' is not allowed"),
    (config(boot_file="/etc/x.py"), "boot_file", "remove the leading '/'"),
    (config(boot_file="a" * 48 + ".py"), "boot_file", "at most 50 characters"),
    # outputs
    (config(outputs=[{"output_dir": "", "name": "out"}]), "outputs[0].output_dir",
     "must not be empty"),
    (config(outputs=[{"output_dir": "../out/", "name": "out"}]), "outputs[0].output_dir",
     "'..' is not allowed"),
    (config(outputs=[{"output_dir": "./", "name": "out"}]), "outputs[0].output_dir",
     "inside the repository"),
    (config(outputs=[{"output_dir": "o" * 101, "name": "out"}]), "outputs[0].output_dir",
     "at most 100 characters"),
    (config(outputs=[{"name": "out"}]), "outputs[0].output_dir", "required"),
    (config(outputs=[{"output_dir": "out/", "name": "output-url"}]), "outputs[0].name",
     "letters, digits or _"),
    (config(outputs=[{"output_dir": f"o{i}/", "name": f"o{i}"} for i in range(11)]),
     "outputs", "at most 10 entries allowed, got 11"),
    (config(outputs={"output_dir": "out/"}), "outputs", "must be a list"),
    # hyperparameters
    (config(hypeparameters=hyper(name="1epochs")), "hypeparameters[0].name", "not starting"),
    (config(hypeparameters=hyper(name="e" * 21)), "hypeparameters[0].name", "1-20 letters"),
    (config(hypeparameters=hyper(name="")), "hypeparameters[0].name", "1-20 letters"),
    (config(hypeparameters=hyper(name="help")), "hypeparameters[0].name", "'help'"),
    (config(hypeparameters=hyper(value="v" * 41)), "hypeparameters[0].value",
     "at most 40 characters"),
    (config(hypeparameters=hyper(value="")), "hypeparameters[0].value", "must not be empty"),
    (config(hypeparameters=hyper(value=None)), "hypeparameters[0].value",
     "string or a number, got null"),
    (config(hypeparameters=hyper(value=[1])), "hypeparameters[0].value",
     "string or a number, got a list"),
    (config(hypeparameters=hyper(value=float("nan"))), "hypeparameters[0].value", "finite"),
    (config(hypeparameters=hyper(value="a\nb")), "hypeparameters[0].value", "control"),
    (config(hypeparameters=[{"name": f"h{i}", "value": "1"} for i in range(21)]),
     "hypeparameters", "at most 20 entries allowed, got 21"),
    (config(hypeparameters=[{"name": "epochs"}]), "hypeparameters[0].value", "required"),
    # names are unique across hyperparameters, inputs and outputs
    (config(hypeparameters=hyper(name="data_url")), "inputs[1].name",
     "already used by hypeparameters[0].name"),
    (config(outputs=[{"output_dir": "out/", "name": "pretrain_url"}]), "outputs[0].name",
     "already used by inputs[0].name"),
    (config(hypeparameters=[*hyper(), *hyper(value="1")]), "hypeparameters[1].name",
     "unique"),
    # frameworks and train_instance_type
    (config(frameworks={"framework_type": "PyTorch", "framework_version": "1.8"}),
     "frameworks.framework_type", "known: MindSpore, MPI, Ascend-Powered-Engine"),
    (config(frameworks={"framework_type": "MPI", "framework_version": "tensorflow_2.1"}),
     "frameworks.framework_version", MINDSPORE_CPU.name),
    (config(frameworks={"framework_type": "MPI", "framework_version": "mindspore_"}),
     "frameworks.framework_version", "unknown framework_version"),
    (config(frameworks={"framework_type": "MPI"}), "frameworks.framework_version", "required"),
    (config(frameworks={"framework_type": "", "framework_version": "x"}),
     "frameworks.framework_type", "must not be empty"),
    (config(frameworks="mindspore"), "frameworks", "must be an object"),
    (config(train_instance_type="modelarts.vm.gpu.p100"), "train_instance_type",
     "known: cpu.standard, modelarts.p3.large.public, modelarts.kat1.xlarge.public"),
    # log_url
    (config(log_url="/var/log/"), "log_url", "remove the leading '/'"),
    (config(log_url="train/../../log"), "log_url", "'..' is not allowed"),
    # env_variables
    (config(env_variables={"PATH": "/tmp"}), "env_variables.PATH", "set by the platform"),
    (config(env_variables={"TRAINYARD_DATA_DIR": "/"}), "env_variables.TRAINYARD_DATA_DIR",
     "TRAINYARD_*"),
    (config(env_variables={"1ABC": "x"}), 'env_variables["1ABC"]', "not starting with a digit"),
    (config(env_variables={"MY-VAR": "x"}), 'env_variables["MY-VAR"]', "letters, digits or _"),
    (config(env_variables={"E" * 65: "x"}), f"env_variables.{'E' * 65}", "1-64"),
    (config(env_variables={"GLOG_v": "v" * 257}), "env_variables.GLOG_v",
     "at most 256 characters"),
    (config(env_variables={"GLOG_v": "a\x00"}), "env_variables.GLOG_v", "control characters"),
    (config(env_variables={"GLOG_v": None}), "env_variables.GLOG_v", "string or a number"),
    (config(env_variables={f"E{i}": "1" for i in range(21)}), "env_variables",
     "at most 20 entries allowed, got 21"),
    (config(env_variables=[]), "env_variables", "must be an object {...}, got a list"),
    # inputs
    (config(inputs=[{"input_url": "obs://bucket/cifar10/", "name": "data_url"}]),
     "inputs[0].input_url", "datasets/<owner>/<name>[/<path>] or models/"),
    (config(inputs=[{"input_url": "datasets/owner", "name": "data_url"}]),
     "inputs[0].input_url", "must look like"),
    (config(inputs=[{"input_url": "datasets/own er/x/", "name": "data_url"}]),
     "inputs[0].input_url", "dataset owner 'own er'"),
    (config(inputs=[{"input_url": "models/o/../x", "name": "data_url"}]),
     "inputs[0].input_url", "model name '..'"),
    (config(inputs=[{"input_url": "datasets/o/n/a/../../x", "name": "data_url"}]),
     "inputs[0].input_url", "'..' is not allowed"),
    (config(inputs=[{"input_url": "datasets/o/n/a//b", "name": "data_url"}]),
     "inputs[0].input_url", "empty segments"),
    (config(inputs=[{"input_url": "datasets/o/n/./b", "name": "data_url"}]),
     "inputs[0].input_url", "'.' segments"),
    (config(inputs=[{"input_url": "datasets/o/n/a\\b", "name": "data_url"}]),
     "inputs[0].input_url", "'\\'"),
    (config(inputs=[{"input_url": "datasets/o/n/" + "p" * 250, "name": "data_url"}]),
     "inputs[0].input_url", "at most 255 characters"),
    (config(inputs=[{"input_url": "datasets/o/n/", "name": "data url"}]), "inputs[0].name",
     "letters, digits or _"),
    (config(inputs=[{"input_url": f"datasets/o/n{i}/", "name": f"i{i}"} for i in range(11)]),
     "inputs", "at most 10 entries allowed, got 11"),
    (config(inputs=["datasets/o/n/"]), "inputs[0]", "must be an object {...}, got a string"),
]


@pytest.mark.parametrize(("data", "field", "fragment"), RULES,
                         ids=[f"{i}-{r[1]}" for i, r in enumerate(RULES)])
def test_rule_names_the_field(data: dict[str, Any], field: str, fragment: str) -> None:
    found = problems(data)
    assert field in found, found
    assert fragment in found[field], found[field]


def test_every_problem_is_reported_at_once() -> None:
    data = config(job_name="x", code_dir="../x/", log_url="/abs/",
                  hypeparameters=hyper(value="v" * 41), env_variables={"HOME": "/"},
                  inputs=[{"input_url": "datasets/o/n/", "name": "epochs"},
                          {"input_url": "nope", "name": "data_url"}],
                  train_instance_type="gpu.huge")
    with pytest.raises(Invalid) as info:
        validate_config(data)
    fields = [f["field"] for f in info.value.fields or []]
    assert fields == [  # in the order of the document
        "code_dir", "hypeparameters[0].value", "train_instance_type", "log_url",
        "env_variables.HOME", "inputs[0].name", "inputs[1].input_url", "job_name"]
    assert info.value.detail.startswith("training config has 8 problems: code_dir: ")
    for f in info.value.fields or []:
        assert f"{f['field']}: {f['message']}" in info.value.detail


def test_single_problem_detail_reads_naturally() -> None:
    with pytest.raises(Invalid) as info:
        validate_config(config(job_name="abc"))
    assert info.value.detail.startswith("training config has 1 problem: job_name: must be 5-50")


@pytest.mark.parametrize("data", [[VALID], "config", 3, None])
def test_config_must_be_an_object(data: Any) -> None:
    assert "must be a JSON object" in problems(data)["config"]


@pytest.mark.parametrize("name", sorted(RESERVED_ENV_NAMES))
def test_every_reserved_env_name_is_refused(name: str) -> None:
    assert "set by the platform" in problems(config(env_variables={name: "x"}))[
        f"env_variables.{name}"]


def test_reserved_prefixes_are_exported() -> None:
    assert "TRAINYARD_" in RESERVED_ENV_PREFIXES
    assert {"PATH", "HOME", "PYTHONPATH", "PYTHONUNBUFFERED"} <= RESERVED_ENV_NAMES


# --- accepted forms and normalisation ---------------------------------------------------

@pytest.mark.parametrize("name", ["abcde", "a" * 50, "Test_1-run", "12345"])
def test_job_name_bounds_accepted(name: str) -> None:
    assert validate_config(config(job_name=name)).job_name == name


def test_limits_themselves_are_accepted() -> None:
    cfg = validate_config(config(
        hypeparameters=[{"name": f"h{i}", "value": "v" * 40} for i in range(20)],
        inputs=[{"input_url": f"models/o/m{i}", "name": f"i{i}"} for i in range(10)],
        outputs=[{"output_dir": f"out/{i}", "name": f"o{i}"} for i in range(10)],
        env_variables={f"E{i}": "x" * 256 for i in range(20)},
        job_description="描" * 100, code_dir="c" * 49 + "/", boot_file="b" * 47 + ".py"))
    assert len(cfg.hypeparameters) == 20 and cfg.outputs[3].output_dir == "out/3/"


def test_paths_are_normalised() -> None:
    cfg = validate_config(config(code_dir="train/train_dir", boot_file="train/train_dir/x.py",
                                 log_url="train/log", outputs=[{"output_dir": "train/out",
                                                                "name": "output_url"}]))
    assert (cfg.code_dir, cfg.boot_file, cfg.boot_path) == (
        "train/train_dir/", "x.py", "train/train_dir/x.py")
    assert cfg.log_url == "train/log/" and cfg.outputs[0].output_dir == "train/out/"
    root = validate_config(config(code_dir="", boot_file="scripts/train.py"))
    assert (root.code_dir, root.boot_path) == ("", "scripts/train.py")
    nested = validate_config(config(code_dir="train", boot_file="sub/train.py"))
    assert nested.boot_path == "train/sub/train.py"


def test_values_given_as_json_numbers_become_text() -> None:
    cfg = validate_config(config(
        hypeparameters=[{"name": "epochs", "value": 30}, {"name": "lr", "value": 0.001},
                        {"name": "amp", "value": True}, {"name": "tiny", "value": 1e-5}],
        env_variables={"OMP_NUM_THREADS": 2, "GLOG_v": ""}))
    assert [h.value for h in cfg.hypeparameters] == ["30", "0.001", "true", "1e-05"]
    assert cfg.env_variables == {"OMP_NUM_THREADS": "2", "GLOG_v": ""}
    assert cfg.to_json()["hypeparameters"][0] == {"name": "epochs", "value": "30"}


def test_optional_fields_have_defaults_and_null_means_empty() -> None:
    minimal = validate_config({"job_name": "tiny1", "boot_file": "train.py"})
    assert minimal.SDK == "ModelArts" and minimal.code_dir == "" and minimal.inputs == []
    assert minimal.runtime is MINDSPORE_CPU and minimal.flavor is CPU_STANDARD
    assert minimal.to_json()["frameworks"] == {"framework_type": "MindSpore",
                                               "framework_version": MINDSPORE_CPU.name}
    nulls = validate_config(config(env_variables=None, outputs=None) | {
        "env_variables": None, "outputs": None, "log_url": None, "job_description": None})
    assert nulls.env_variables == {} and nulls.outputs == [] and nulls.log_url == ""
    assert validate_config(minimal.to_json()) == minimal


def test_other_sdk_is_recorded() -> None:
    assert validate_config(config(SDK="MindSpore")).to_json()["SDK"] == "MindSpore"


# --- hyperparameters alias and unknown keys ---------------------------------------------

def test_hyperparameters_spelling_is_accepted_and_stored_as_xihe_spells_it() -> None:
    data = config(hypeparameters=None, hyperparameters=hyper("lr", 0.1))
    cfg = validate_config(data)
    assert cfg.hypeparameters[0].value == "0.1"
    stored = cfg.to_json()
    assert "hyperparameters" not in stored and stored["hypeparameters"][0]["name"] == "lr"


def test_errors_inside_the_alias_use_the_users_spelling() -> None:
    found = problems(config(hypeparameters=None,
                            hyperparameters=[*hyper("data_url"), {"name": "x", "value": ""}]))
    assert "hyperparameters[1].value" in found
    assert "already used by hyperparameters[0].name" in found["inputs[1].name"]


def test_both_spellings_at_once_is_an_error() -> None:
    found = problems(config(hyperparameters=hyper("lr")))
    assert found == {"hyperparameters": "'hypeparameters' and 'hyperparameters' are the same "
                                        "field (Xihe spells it 'hypeparameters'); give only one"}


@pytest.mark.parametrize(("key", "message"), [
    ("hyper_parameters", "unknown field 'hyper_parameters'; did you mean 'hypeparameters'?"),
    ("hypeparameter", "unknown field 'hypeparameter'; did you mean 'hypeparameters'?"),
    ("jobname", "unknown field 'jobname'; did you mean 'job_name'?"),
    ("sdk", "unknown field 'sdk'; did you mean 'SDK'?"),
    ("env_vars", "unknown field 'env_vars'; did you mean 'env_variables'?"),
    ("priority", "unknown field 'priority'; known fields: SDK, code_dir, boot_file"),
])
def test_unknown_top_level_key_gets_a_hint(key: str, message: str) -> None:
    assert problems(config(**{key: 1}))[key].startswith(message)


def test_unknown_nested_key_gets_a_hint() -> None:
    found = problems(config(inputs=[{"input_url": "datasets/o/n/", "name": "data_url",
                                     "inputurl": "x"}],
                            frameworks={**VALID["frameworks"], "framework_name": "x"}))
    assert found["inputs[0].inputurl"] == "unknown field 'inputurl'; did you mean 'input_url'?"
    assert "did you mean 'framework_type'?" in found["frameworks.framework_name"]


# --- runtimes and flavors -----------------------------------------------------------------

@pytest.mark.parametrize(("framework_type", "framework_version"), [
    ("MPI", "mindspore_1.3.0-cuda_10.1-py_3.7-ubuntu_1804-x86_64"),
    ("Ascend-Powered-Engine", "mindspore_1.7.0-cann_5.1.0-py_3.7-euler_2.8.3"),
    ("mpi", "MindSpore_2.2.0"),
    ("MindSpore", MINDSPORE_CPU.name),
    ("MindSpore", MINDSPORE_CPU.version),
    ("MindSpore", "mindspore-cpu"),
])
def test_legacy_and_own_runtime_names_resolve(framework_type: str,
                                              framework_version: str) -> None:
    assert resolve_runtime(framework_type, framework_version) is MINDSPORE_CPU


def test_unknown_runtime_lists_the_known_ones() -> None:
    with pytest.raises(Invalid) as info:
        resolve_runtime("PyTorch", "2.1")
    assert info.value.fields == [{"field": "frameworks.framework_type", "message":
                                  "unknown framework_type 'PyTorch'; known: MindSpore, MPI, "
                                  "Ascend-Powered-Engine"}]
    with pytest.raises(Invalid) as info:
        resolve_runtime("MPI", "tensorflow_1.15")
    assert info.value.fields is not None
    assert info.value.fields[0]["field"] == "frameworks.framework_version"
    assert MINDSPORE_CPU.name in info.value.detail
    assert "mindspore_<any version>" in info.value.detail


@pytest.mark.parametrize("name", ["cpu.standard", "modelarts.p3.large.public",
                                  "modelarts.kat1.xlarge.public", "ModelArts.P3.Large.Public"])
def test_flavors_resolve(name: str) -> None:
    assert resolve_flavor(name) is CPU_STANDARD


def test_unknown_flavor_lists_the_known_ones() -> None:
    with pytest.raises(Invalid) as info:
        resolve_flavor("modelarts.vm.gpu.v100")
    assert info.value.fields is not None
    assert info.value.fields[0]["field"] == "train_instance_type"
    assert "cpu.standard, modelarts.p3.large.public" in info.value.fields[0]["message"]


def test_lists_and_stored_runtime_names() -> None:
    assert list_runtimes() == [MINDSPORE_CPU] and list_flavors() == [CPU_STANDARD]
    assert MINDSPORE_CPU.framework_type == "MindSpore" and CPU_STANDARD.queue == "trainings.cpu"
    assert get_runtime(MINDSPORE_CPU.name) is MINDSPORE_CPU
    assert get_runtime("mindspore-1.9-cpu") is MINDSPORE_CPU  # queued before an upgrade
    with pytest.raises(Invalid, match=r"unknown runtime 'pytorch-2\.1-cpu'"):
        get_runtime("pytorch-2.1-cpu")


# --- input references ---------------------------------------------------------------------

@pytest.mark.parametrize(("url", "ref"), [
    ("datasets/drizzlezyk/cifar10/", InputRef("datasets", "drizzlezyk", "cifar10", "")),
    ("datasets/drizzlezyk/cifar10", InputRef("datasets", "drizzlezyk", "cifar10", "")),
    ("models/alice/ResNet50_model/ckpt/best.ckpt",
     InputRef("models", "alice", "ResNet50_model", "ckpt/best.ckpt")),
    ("datasets/a.b/c-d_e/train/", InputRef("datasets", "a.b", "c-d_e", "train")),
])
def test_input_urls_split_into_refs(url: str, ref: InputRef) -> None:
    assert parse_input_url(url) == ref
    assert parse_input_url(ref.url) == ref


def test_malformed_input_url_is_invalid() -> None:
    with pytest.raises(Invalid) as info:
        parse_input_url("datasets/../etc/passwd")
    assert info.value.fields is not None and info.value.fields[0]["field"] == "input_url"


# --- JSON Schema --------------------------------------------------------------------------

def schema_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    schema = config_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_is_valid_and_accepts_both_spellings() -> None:
    schema = config_json_schema()
    assert schema["$schema"].endswith("/2020-12/schema") and schema["type"] == "object"
    assert {"hypeparameters", "hyperparameters", "job_name", "inputs"} <= set(schema["properties"])
    assert schema["required"] == ["boot_file", "job_name"]
    json.dumps(schema)
    validator = schema_validator()
    assert not list(validator.iter_errors(parse_config_text(SEED_CONFIG)))
    assert validator.is_valid(config(hypeparameters=None, hyperparameters=hyper()))
    assert not validator.is_valid(config(hyperparameters=hyper()))
    assert not validator.is_valid(config(hyper_parameters=[]))


AGREEMENT: list[dict[str, Any]] = [
    *(config(code_dir=v) for v in [
        "", "train/", "train", "a/b/c/", "/x/", "../x", "a/../b", "a//b", "./a", ".", "a/.",
        "a b", ".hidden/", "a..b/", "a\\b"]),
    *(config(boot_file=v) for v in [
        "train.py", "a/b.py", "x.pyc", ".py", "a/.py", "../t.py", "/t.py", "a//t.py", "t.py/",
        "..py", ".x.py", "a/..py", "a..py", "a/b/c-d.e.py"]),
    *(config(inputs=[{"input_url": v, "name": "d"}]) for v in [
        "datasets/o/n", "datasets/o/n/", "models/o/n/a/b.ckpt", "models/o/n/a b/c", "dataset/o/n",
        "datasets/o", "datasets/../n", "datasets/o/n/..", "datasets/o/n/a//b", "datasets/o/n//",
        "datasets/o/n/./x", "datasets/o/n/a\\b", "datasets/o\tx/n"]),
    *(config(hypeparameters=hyper(name=v)) for v in [
        "lr", "_x", "x1", "1x", "a-b", "help", "", "n" * 20, "n" * 21]),
    *(config(env_variables={v: "1"}) for v in [
        "GLOG_v", "PATH", "TRAINYARD_X", "1A", "A-B", "PYTHONHOME", "E" * 64, "E" * 65]),
]


@pytest.mark.parametrize("data", AGREEMENT)
def test_schema_and_validator_agree(data: dict[str, Any]) -> None:
    try:
        validate_config(data)
        accepted = True
    except Invalid:
        accepted = False
    assert schema_validator().is_valid(data) == accepted, data


def test_schema_validates_to_json_output() -> None:
    cfg = validate_config(config(hypeparameters=hyper(value=3)))
    assert schema_validator().is_valid(cfg.to_json())


def test_training_config_model_alone_enforces_the_rules() -> None:
    with pytest.raises(ValueError, match="already used"):
        TrainingConfig.model_validate(config(hypeparameters=hyper(name="data_url")))
