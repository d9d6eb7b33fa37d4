"""The Xihe `config.json` format: parse (JSON, then JSONC/JSON5), validate, JSON Schema.

`parse_config_text` turns text into data; `validate_config` turns data into a
`TrainingConfig` or raises one `Invalid` naming every offending field path.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Iterable
from typing import Annotated, Any

import json5
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from app.errors import Invalid, field_path, validation_fields
from app.procs.environ import RESERVED_ENV_NAMES, RESERVED_ENV_PREFIXES
from app.trainings.config_rules import (
    HYPERPARAMETER_KEYS,
    IDENTIFIER_PATTERN,
    INPUT_URL_SHAPE,
    MAX_CONFIG_BYTES,
    MAX_ENV_NAME,
    MAX_ENV_VARIABLES,
    MAX_HYPERPARAMETERS,
    MAX_INPUTS,
    MAX_OUTPUTS,
    ArgName,
    ArgValue,
    BootFile,
    CodeDir,
    Description,
    EnvName,
    EnvValue,
    InputRef,
    InputUrl,
    JobName,
    LogDir,
    OutputDir,
    ShortText,
    fail,
    json_type,
    parse_input_url,
)
from app.trainings.runtimes import (
    CPU_STANDARD,
    MINDSPORE_CPU,
    Flavor,
    Runtime,
    flavor_problem,
    resolve_flavor,
    resolve_runtime,
    runtime_problems,
)

_JSON5_ERROR = re.compile(r"^<string>:(\d+) (.*) at column (\d+)$", re.DOTALL)


# --- parsing ---------------------------------------------------------------------------

class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _config_error(message: str, **extra: Any) -> Invalid:
    return Invalid(message, fields=[{"field": "config", "message": message, **extra}])


def _syntax_error(text: str, source: str, strict: json.JSONDecodeError | None,
                  loose: ValueError) -> Invalid:
    match = _JSON5_ERROR.match(str(loose))
    if match is None:
        return _config_error(f"{source} is not valid JSON: {loose}")
    line, reason, column = int(match[1]), match[2], int(match[3])
    lines = text.splitlines()
    source_line = lines[line - 1] if 0 < line <= len(lines) else ""
    excerpt = " ".join(source_line.split())
    char = re.fullmatch(r'Unexpected "(.)"', reason, re.DOTALL)
    if strict is not None and (strict.lineno, strict.colno) == (line, column):
        reason = strict.msg  # the stdlib names the token it expected, which reads better
    elif char is not None:
        reason = f"unexpected {char[1]!r}"
        if char[1] == '"' and not source_line[:column - 1].strip():
            reason += "; is a comma missing at the end of the previous line?"
        elif char[1].isalpha():
            reason += "; text values need double quotes"
    message = f"{source} is not valid JSON: line {line}, column {column}: {reason}"
    if excerpt:
        message += f" (line {line} reads: {excerpt[:80]})"
    return _config_error(message, line=line, column=column)


def parse_config_text(text: str | bytes, *, source: str = "config.json") -> Any:
    """Parse a config file: strict JSON first, then JSONC/JSON5 (comments, trailing commas)."""
    if isinstance(text, bytes):
        if len(text) > MAX_CONFIG_BYTES:
            raise _config_error(f"{source} is {len(text)} bytes; at most {MAX_CONFIG_BYTES}")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _config_error(f"{source} is not UTF-8 text (bad byte at offset {exc.start})"
                                ) from None
    text = text.removeprefix("\ufeff")
    if len(text) > MAX_CONFIG_BYTES or len(text.encode("utf-8", "replace")) > MAX_CONFIG_BYTES:
        raise _config_error(f"{source} is larger than {MAX_CONFIG_BYTES} bytes")
    if not text.strip():
        raise _config_error(f"{source} is empty; it must hold one JSON object {{...}}")
    strict: json.JSONDecodeError | None = None
    try:
        try:
            return json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            strict = exc
        try:
            return json5.loads(text, object_pairs_hook=_unique_keys)
        except ValueError as exc:
            raise _syntax_error(text, source, strict, exc) from None
    except _DuplicateKey as exc:
        raise _config_error(f"{source} has the key {exc.key!r} twice in one object; "
                            "keep only one") from None
    except RecursionError:
        raise _config_error(f"{source} is nested too deeply") from None


# --- the model -------------------------------------------------------------------------

Loc = tuple[str | int, ...]


def _validation_error(title: str, problems: list[tuple[Loc, str]], kind: str
                      ) -> ValidationError:
    return ValidationError.from_exception_data(title, [
        InitErrorDetails(type=PydanticCustomError(kind, "{message}", {"message": m}),
                         loc=loc, input=None) for loc, m in problems])


def _duplicate_names(named: list[tuple[Loc, str]]) -> list[tuple[Loc, str]]:
    seen: dict[str, Loc] = {}
    problems: list[tuple[Loc, str]] = []
    for loc, name in named:
        if name in seen:
            used_by = field_path(seen[name], root="config")
            problems.append((loc, f"{name!r} is already used by {used_by}; "
                             "hyperparameter, input and output names must be unique since "
                             "each becomes a --NAME=VALUE argument"))
        else:
            seen[name] = loc
    return problems


def _none_to(default: Any) -> BeforeValidator:
    return BeforeValidator(lambda v: copy.deepcopy(default) if v is None else v)


_MODEL = ConfigDict(extra="forbid", frozen=True)


class Output(BaseModel):
    """A folder the training writes; the boot file gets `--NAME=<local folder>`."""

    model_config = _MODEL
    output_dir: OutputDir = Field(description="Where the outputs are kept, relative to the "
                                  "repository root (e.g. train/output/).")
    name: ArgName = Field(description="Argument name the boot file receives.")


class Hyperparameter(BaseModel):
    """One `--NAME=VALUE` argument of the boot file."""

    model_config = _MODEL
    name: ArgName = Field(description="Argument name, e.g. epochs.")
    value: ArgValue = Field(description="Argument value; numbers and booleans become text.")


class Input(BaseModel):
    """A platform dataset or model; the boot file gets `--NAME=<local path>`."""

    model_config = _MODEL
    input_url: InputUrl = Field(description=INPUT_URL_SHAPE)
    name: ArgName = Field(description="Argument name the boot file receives.")


class Frameworks(BaseModel):
    """The runtime: framework type and version (Xihe's legacy names are mapped)."""

    model_config = _MODEL
    framework_type: ShortText = Field(examples=[MINDSPORE_CPU.framework_type, "MPI"])
    framework_version: ShortText = Field(
        examples=[MINDSPORE_CPU.name, "mindspore_1.3.0-cuda_10.1-py_3.7-ubuntu_1804-x86_64"])

    @model_validator(mode="after")
    def _resolves(self) -> Frameworks:
        problems = runtime_problems(self.framework_type, self.framework_version)
        if problems:
            located = [(tuple[str | int, ...](f.split(".")[1:]), m) for f, m in problems]
            raise _validation_error("Frameworks", located, "config")
        return self


_ENV_NAME_SCHEMA: dict[str, Any] = {
    "pattern": IDENTIFIER_PATTERN, "maxLength": MAX_ENV_NAME,
    "not": {"anyOf": [{"enum": sorted(RESERVED_ENV_NAMES)},
                      *({"pattern": f"^{p}"} for p in RESERVED_ENV_PREFIXES)]}}
_DEFAULT_FRAMEWORKS = {"framework_type": MINDSPORE_CPU.framework_type,
                       "framework_version": MINDSPORE_CPU.name}


class TrainingConfig(BaseModel):
    """A validated training config in canonical form (Xihe's keys, `hypeparameters` sic)."""

    model_config = _MODEL

    SDK: Annotated[ShortText, _none_to("ModelArts")] = Field(
        "ModelArts", description="Training platform SDK; recorded, has no effect.")
    code_dir: Annotated[CodeDir, _none_to("")] = Field(
        "", description="Folder with the code, relative to the repository root; empty means "
        "the root. Normalised to end with '/'.")
    boot_file: BootFile = Field(description="The .py file to run, relative to code_dir (a path "
                                "that starts with code_dir is accepted too).")
    outputs: Annotated[list[Output], _none_to([])] = Field(default_factory=list,
                                                          max_length=MAX_OUTPUTS)
    hypeparameters: Annotated[list[Hyperparameter], _none_to([])] = Field(
        default_factory=list, max_length=MAX_HYPERPARAMETERS,
        validation_alias=AliasChoices(*HYPERPARAMETER_KEYS),
        description="Hyperparameters (Xihe's spelling; 'hyperparameters' is accepted too).")
    frameworks: Annotated[Frameworks, _none_to(_DEFAULT_FRAMEWORKS)] = Field(
        default_factory=lambda: Frameworks.model_validate(_DEFAULT_FRAMEWORKS),
        description="Runtime; defaults to the installed MindSpore.")
    train_instance_type: Annotated[ShortText, _none_to(CPU_STANDARD.name)] = Field(
        CPU_STANDARD.name, description="Instance type (flavor); Xihe's names are mapped.",
        examples=[CPU_STANDARD.name, *CPU_STANDARD.legacy_names])
    log_url: Annotated[LogDir, _none_to("")] = Field(
        "", description="Folder for the log, relative to the repository root.")
    env_variables: Annotated[dict[EnvName, EnvValue], _none_to({})] = Field(
        default_factory=dict, max_length=MAX_ENV_VARIABLES,
        description="Environment of the training process; platform-reserved names refused.",
        json_schema_extra={"propertyNames": _ENV_NAME_SCHEMA})
    job_description: Annotated[Description, _none_to("")] = ""
    inputs: Annotated[list[Input], _none_to([])] = Field(default_factory=list,
                                                        max_length=MAX_INPUTS)
    job_name: JobName = Field(description="Name of the training, unique in the repository.")

    @field_validator("boot_file")
    @classmethod
    def _relative_to_code_dir(cls, value: str, info: ValidationInfo) -> str:
        code_dir = info.data.get("code_dir")
        if code_dir and value.startswith(code_dir) and len(value) > len(code_dir):
            return value[len(code_dir):]
        return value

    @field_validator("train_instance_type")
    @classmethod
    def _known_flavor(cls, value: str) -> str:
        problem = flavor_problem(value)
        if problem is not None:
            raise fail(problem)
        return value

    @model_validator(mode="after")
    def _unique_argument_names(self) -> TrainingConfig:
        named: list[tuple[Loc, str]] = [
            (("hypeparameters", i, "name"), h.name) for i, h in enumerate(self.hypeparameters)]
        named += [(("inputs", i, "name"), x.name) for i, x in enumerate(self.inputs)]
        named += [(("outputs", i, "name"), o.name) for i, o in enumerate(self.outputs)]
        problems = _duplicate_names(named)
        if problems:
            raise _validation_error("TrainingConfig", problems, "duplicate_name")
        return self

    @property
    def boot_path(self) -> str:
        """The boot file relative to the repository root."""
        return self.code_dir + self.boot_file

    @property
    def runtime(self) -> Runtime:
        """The installed runtime `frameworks` maps to."""
        return resolve_runtime(self.frameworks.framework_type, self.frameworks.framework_version)

    @property
    def flavor(self) -> Flavor:
        """The instance type `train_instance_type` maps to."""
        return resolve_flavor(self.train_instance_type)

    def input_refs(self) -> list[tuple[str, InputRef]]:
        """Each input's argument name with the dataset or model it names."""
        return [(x.name, parse_input_url(x.input_url)) for x in self.inputs]

    def to_json(self) -> dict[str, Any]:
        """The canonical JSON (Xihe's keys) for storage; validates back to an equal config."""
        return self.model_dump(mode="json")


# --- errors ----------------------------------------------------------------------------

_MODELS: dict[str, type[BaseModel]] = {
    "outputs": Output, "inputs": Input, "frameworks": Frameworks,
    **dict.fromkeys(HYPERPARAMETER_KEYS, Hyperparameter),
}


def _unknown_key_message(loc: Loc, data: dict[str, Any]) -> str:
    key = str(loc[-1])
    parent = next((str(p) for p in loc[:-1] if isinstance(p, str)), "")
    if not parent and key in HYPERPARAMETER_KEYS and all(k in data for k in HYPERPARAMETER_KEYS):
        return ("'hypeparameters' and 'hyperparameters' are the same field (Xihe spells it "
                "'hypeparameters'); give only one")
    model = _MODELS.get(parent, TrainingConfig)
    known = list(model.model_fields)
    candidates = {k.casefold(): k for k in known}
    if model is TrainingConfig:
        candidates["hyperparameters"] = "hypeparameters"
    close = difflib.get_close_matches(key.casefold(), list(candidates), n=1, cutoff=0.6)
    if close:
        return f"unknown field {key!r}; did you mean {candidates[close[0]]!r}?"
    return f"unknown field {key!r}; known fields: {', '.join(known)}"


_TYPE_MESSAGES = {
    "string_type": "must be a string",
    "list_type": "must be a list [...]",
    "dict_type": "must be an object {...}",
    "model_type": "must be an object {...}",
    "model_attributes_type": "must be an object {...}",
}


def _message(err: Any, data: dict[str, Any]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "extra_forbidden":
        return _unknown_key_message(tuple(err["loc"]), data)
    if kind == "missing":
        return "required field is missing"
    if kind in _TYPE_MESSAGES:
        return f"{_TYPE_MESSAGES[kind]}, got {json_type(err['input'])}"
    if kind == "too_long" and "max_length" in ctx:
        actual = ctx.get("actual_length") or len(err["input"])
        return f"at most {ctx['max_length']} entries allowed, got {actual}; remove some"
    return str(err["msg"])


def _raw_names(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    named: list[tuple[Loc, str]] = []
    given = [k for k in HYPERPARAMETER_KEYS if k in data][:1]
    for key in (*given, "inputs", "outputs"):
        items = data.get(key)
        for i, item in enumerate(items if isinstance(items, list) else []):
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                named.append(((key, i, "name"), item["name"]))
    return named


def validate_config(data: Any) -> TrainingConfig:
    """Validate parsed config data; raise one `Invalid` listing every problem by field path."""
    if not isinstance(data, dict):
        message = f"must be a JSON object {{...}}, got {json_type(data)}"
        raise Invalid(f"config: {message}", fields=[{"field": "config", "message": message}])
    try:
        return TrainingConfig.model_validate(data)
    except ValidationError as exc:
        # Name clashes are recomputed from the raw data below, so they are reported even
        # when other fields fail, and under the key spelling the user wrote.
        located = [(tuple(e["loc"]), _message(e, data)) for e in exc.errors(include_url=False)
                   if e["type"] != "duplicate_name"]
    located += _duplicate_names(_raw_names(data))
    order = {key: i for i, key in enumerate(data)}
    located.sort(key=lambda p: (order.get(p[0][0], len(order)) if p[0] else -1,
                                p[0][1] if len(p[0]) > 1 and isinstance(p[0][1], int) else -1))
    raise config_invalid(validation_fields(({"loc": loc, "msg": m} for loc, m in located),
                                           root="config"))


def config_invalid(problems: list[dict[str, Any]]) -> Invalid:
    """One 422 for a config's problems, each naming its field."""
    count = f"{len(problems)} problems" if len(problems) > 1 else "1 problem"
    detail = f"training config has {count}: " + "; ".join(
        f"{p['field']}: {p['message']}" for p in problems)
    return Invalid(detail, fields=problems)


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the config format, accepting both spellings."""
    schema = TrainingConfig.model_json_schema(mode="validation")
    alias = copy.deepcopy(schema["properties"]["hypeparameters"])
    alias.update(title="Hyperparameters",
                 description="Same as 'hypeparameters'; give only one of the two.")
    schema["properties"]["hyperparameters"] = alias
    schema["not"] = {"required": list(HYPERPARAMETER_KEYS)}
    schema["title"] = "Trainyard training config (Xihe config.json)"
    schema["description"] = ("Defines a training instance. Files may use // comments and "
                             "trailing commas (JSONC/JSON5).")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}

