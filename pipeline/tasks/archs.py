"""A `model:` recipe section that is one of several architectures, picked by its `arch` key (hw3p2: ctc_rnn or
dilated_conv; hw4p2: las or transformer). Torch-free, like every recipe schema.

    ModelSection = arch_section({"las": LASConfig, "transformer": TransformerConfig}, default="las",
                                profile_keys=("input_dim", ...), facts="feature dim, vocabulary")

The section refuses the keys the train stage fills from the competition profile (a recipe value would be silently
replaced), defaults `arch` when a recipe leaves it out, and reports errors as the user wrote them: `model.x`, with a
did-you-mean among the chosen architecture's keys (pydantic would say `model.las.x`).
"""
from __future__ import annotations

import difflib
from typing import Annotated, Union

from pydantic import BaseModel, Field, RootModel, ValidationError
from pydantic_core import PydanticCustomError


def arch_section(archs: dict[str, type[BaseModel]], default: str, profile_keys: tuple[str, ...],
                 facts: str) -> type[RootModel]:
    union = Annotated[Union[tuple(archs.values())], Field(discriminator="arch")]

    class ModelSection(RootModel[union]):
        @classmethod
        def model_validate(cls, obj, *args, **kwargs):
            given = [key for key in profile_keys if isinstance(obj, dict) and key in obj]
            if given:
                raise _error("{key} is set from the competition profile ({facts}); remove model.{key} from the "
                             "recipe", {"key": given[0], "facts": facts}, (given[0],), obj[given[0]])
            if isinstance(obj, dict) and "arch" not in obj:
                obj = {**obj, "arch": default}
            try:
                return super().model_validate(obj, *args, **kwargs)
            except ValidationError as exc:
                raise _without_arch_tag(exc, obj, archs) from None

        def model_dump(self, **kwargs) -> dict:
            """The section as a recipe holds it: without the profile's keys, so a resolved recipe validates again."""
            return {k: v for k, v in super().model_dump(**kwargs).items() if k not in profile_keys}

    ModelSection.__doc__ = f"`model:` is one of {', '.join(archs)} by its `arch` key (default {default})."
    return ModelSection


def _error(template: str, context: dict, loc: tuple, given) -> ValidationError:
    custom = PydanticCustomError("value_error", template, context)
    return ValidationError.from_exception_data("model", [{"type": custom, "loc": loc, "input": given}])


def _without_arch_tag(exc: ValidationError, obj, archs: dict[str, type[BaseModel]]) -> ValidationError:
    error = exc.errors()[0]
    loc = error["loc"]
    arch = obj.get("arch") if isinstance(obj, dict) else None
    if loc and loc[0] in archs:
        loc = loc[1:]
    if not loc and error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return _error("arch must be one of: {known}", {"known": ", ".join(archs)}, ("arch",), arch)
    if error["type"] == "extra_forbidden" and arch in archs:
        fields = list(archs[arch].model_fields)
        close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
        hint = f"did you mean model.{close[0]}?" if close else f"valid for {arch}: {', '.join(fields)}"
        return _error("unknown key for arch {arch} ({hint})", {"arch": arch, "hint": hint}, loc, error["input"])
    return ValidationError.from_exception_data(
        "model", [{"type": error["type"], "loc": loc, "input": error["input"],
                   **({"ctx": error["ctx"]} if "ctx" in error else {})}])
