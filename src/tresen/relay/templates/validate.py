"""Template validation, as the Cloud API validates a ``message_templates`` create.

Pure functions: they normalise a :class:`TemplateCreate` (component and button types in upper
case) or raise ``invalid_template`` naming the field to fix.

- name: lower-case letters, digits and underscores, at most 512 characters;
  language: ``en``, ``en_US``, ``pt_BR`` ...
- components: exactly one BODY, at most one HEADER, FOOTER and BUTTONS, in any order.
- parameters: ``{{1}}``, ``{{2}}`` ... numbered from 1 without gaps (POSITIONAL) or
  ``{{lower_snake}}`` names (NAMED), never both; a parameter may not open or close the body;
  every parameter needs an example (``example.body_text`` / ``body_text_named_params``, and the
  same for a TEXT header).
- limits: body 1,024 characters, header text 60 (at most one parameter), footer 60 (none),
  1 to 10 buttons with labels of at most 25 characters, at most 2 URL buttons and 1 phone
  number button; AUTHENTICATION templates carry exactly one OTP button and no header.
"""

from __future__ import annotations

import re

import msgspec

from tresen.errors import InvalidRequest
from tresen.protocol.codes import Code
from tresen.relay.templates.models import Button, Component, Example, TemplateCreate

NAME = re.compile(r"^[a-z0-9_]{1,512}$")
LANGUAGE = re.compile(r"^[a-z]{2,3}(_[A-Z]{2}|_[A-Z][a-z]{3})?$")
PARAM = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
NAMED = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
HEADER_FORMATS = ("TEXT", "IMAGE", "VIDEO", "DOCUMENT", "LOCATION")
BUTTON_TYPES = ("QUICK_REPLY", "URL", "PHONE_NUMBER", "COPY_CODE", "OTP", "FLOW")
OTP_TYPES = ("COPY_CODE", "ONE_TAP", "ZERO_TAP")
MAX_BODY, MAX_HEADER, MAX_FOOTER, MAX_BUTTON_TEXT = 1024, 60, 60, 25


def _bad(message: str) -> InvalidRequest:
    return InvalidRequest(message, code=Code.INVALID_TEMPLATE)


def parameters(text: str, fmt: str, where: str) -> list[str]:
    """The parameters of ``text`` in order of first use, checked against ``fmt``."""
    found: list[str] = []
    for raw in PARAM.findall(text):
        if fmt == "POSITIONAL":
            if not raw.isdigit():
                raise _bad(f"{where}: {{{{{raw}}}}} is not a positional parameter like {{{{1}}}}")
        elif not NAMED.match(raw):
            raise _bad(f"{where}: {{{{{raw}}}}} is not a named parameter like {{{{first_name}}}}")
        if raw not in found:
            found.append(raw)
    if "{{" in PARAM.sub("", text) or "}}" in PARAM.sub("", text):
        raise _bad(f"{where}: unbalanced braces around a parameter")
    if fmt == "POSITIONAL" and sorted(int(p) for p in found) != list(range(1, len(found) + 1)):
        raise _bad(f"{where}: positional parameters run {{{{1}}}}, {{{{2}}}} ... without gaps")
    return found


def _examples(
    found: list[str], fmt: str, where: str, positional: list[str] | None, named: list[str] | None
) -> None:
    if not found:
        if positional or named:
            raise _bad(f"{where}: examples given but the text has no parameters")
        return
    if fmt == "POSITIONAL":
        if positional is None or len(positional) != len(found):
            raise _bad(f"{where}: give one example per parameter ({len(found)})")
    elif named is None or sorted(named) != sorted(found):
        raise _bad(f"{where}: give one named example per parameter ({', '.join(found)})")


def _body(component: Component, fmt: str, category: str) -> None:
    text = component.text or ""
    if not text:
        if category == "AUTHENTICATION":
            return  # the relay's clients render the fixed authentication body
        raise _bad("BODY: text is required")
    if len(text) > MAX_BODY:
        raise _bad(f"BODY: text is longer than {MAX_BODY} characters")
    found = parameters(text, fmt, "BODY")
    stripped = text.strip()
    if found and (stripped.startswith("{{") or stripped.endswith("}}")):
        raise _bad("BODY: a parameter may not open or close the text")
    example = component.example or Example()
    positional = example.body_text[0] if example.body_text else None
    named = [e.param_name for e in example.body_text_named_params or []] or None
    _examples(found, fmt, "BODY", positional, named)


def _header(component: Component, fmt: str) -> None:
    kind = (component.format or "").upper()
    if kind not in HEADER_FORMATS:
        raise _bad(f"HEADER: format must be one of {', '.join(HEADER_FORMATS)}")
    component.format = kind
    example = component.example or Example()
    if kind != "TEXT":
        if component.text:
            raise _bad(f"HEADER: a {kind} header has no text")
        if kind != "LOCATION" and not example.header_handle:
            raise _bad(f"HEADER: give an example media handle (example.header_handle) for {kind}")
        return
    text = component.text or ""
    if not text or len(text) > MAX_HEADER:
        raise _bad(f"HEADER: text of 1 to {MAX_HEADER} characters is required")
    found = parameters(text, fmt, "HEADER")
    if len(found) > 1:
        raise _bad("HEADER: at most one parameter")
    named = [e.param_name for e in example.header_text_named_params or []] or None
    _examples(found, fmt, "HEADER", example.header_text, named)


def _footer(component: Component) -> None:
    text = component.text or ""
    if not text or len(text) > MAX_FOOTER:
        raise _bad(f"FOOTER: text of 1 to {MAX_FOOTER} characters is required")
    if PARAM.search(text):
        raise _bad("FOOTER: no parameters")


def _button(button: Button, index: int, category: str) -> None:
    kind = button.type.upper()
    where = f"BUTTONS[{index}]"
    if kind not in BUTTON_TYPES:
        raise _bad(f"{where}: type must be one of {', '.join(BUTTON_TYPES)}")
    button.type = kind
    if kind != "OTP" and not 0 < len(button.text) <= MAX_BUTTON_TEXT:
        raise _bad(f"{where}: text of 1 to {MAX_BUTTON_TEXT} characters is required")
    if kind == "URL":
        url = button.url or ""
        if not url.startswith(("https://", "http://")):
            raise _bad(f"{where}: url must start with https://")
        found = PARAM.findall(url)
        if len(found) > 1 or (found and not url.endswith("}}")):
            raise _bad(f"{where}: a URL has at most one parameter, at its end")
        if found and not button.example:
            raise _bad(f"{where}: give an example URL for the parameter")
    elif kind == "PHONE_NUMBER":
        if not button.phone_number or not re.fullmatch(r"\+?[0-9]{5,20}", button.phone_number):
            raise _bad(f"{where}: phone_number in international form is required")
    elif kind == "OTP":
        if category != "AUTHENTICATION":
            raise _bad(f"{where}: OTP buttons belong to AUTHENTICATION templates")
        if (button.otp_type or "").upper() not in OTP_TYPES:
            raise _bad(f"{where}: otp_type must be one of {', '.join(OTP_TYPES)}")
        button.otp_type = (button.otp_type or "").upper()
    elif kind == "FLOW" and not button.flow_id:
        raise _bad(f"{where}: flow_id is required")


def _buttons(component: Component, category: str) -> None:
    buttons = component.buttons or []
    if not 1 <= len(buttons) <= 10:
        raise _bad("BUTTONS: 1 to 10 buttons")
    for index, button in enumerate(buttons):
        _button(button, index, category)
    kinds = [b.type for b in buttons]
    if kinds.count("URL") > 2 or kinds.count("PHONE_NUMBER") > 1:
        raise _bad("BUTTONS: at most 2 URL buttons and 1 PHONE_NUMBER button")
    if category == "AUTHENTICATION" and kinds.count("OTP") != 1:
        raise _bad("BUTTONS: an AUTHENTICATION template has exactly one OTP button")


def check_components(components: list[Component], category: str, fmt: str) -> list[Component]:
    """Validate and normalise (upper-case types) a template's components."""
    components = [msgspec.structs.replace(c, type=c.type.upper()) for c in components]
    kinds = [c.type for c in components]
    for kind in kinds:
        if kind not in ("HEADER", "BODY", "FOOTER", "BUTTONS"):
            raise _bad(f"component type {kind!r}: use HEADER, BODY, FOOTER or BUTTONS")
        if kinds.count(kind) > 1:
            raise _bad(f"at most one {kind} component")
    if "BODY" not in kinds:
        raise _bad("a template has one BODY component")
    if category == "AUTHENTICATION":
        if "HEADER" in kinds:
            raise _bad("an AUTHENTICATION template has no HEADER")
        if "BUTTONS" not in kinds:
            raise _bad("an AUTHENTICATION template has a BUTTONS component with an OTP button")
    for component in components:
        match component.type:
            case "BODY":
                _body(component, fmt, category)
            case "HEADER":
                _header(component, fmt)
            case "FOOTER":
                _footer(component)
            case _:
                _buttons(component, category)
    order = {"HEADER": 0, "BODY": 1, "FOOTER": 2, "BUTTONS": 3}
    return sorted(components, key=lambda c: order[c.type])


def check_template(data: TemplateCreate) -> TemplateCreate:
    if not NAME.match(data.name):
        raise _bad("name: lower-case letters, digits and underscores only (e.g. order_update)")
    if not LANGUAGE.match(data.language):
        raise _bad("language: a code like en, en_US or pt_BR")
    components = check_components(data.components, data.category, data.parameter_format)
    return msgspec.structs.replace(data, components=components)


__all__ = ["check_components", "check_template", "parameters"]
