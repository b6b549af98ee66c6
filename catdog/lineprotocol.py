"""InfluxDB line protocol, written with its escaping rules (and tested against a parser we did
not write): ``measurement,tag=value field=1.5,count=3i,text="a \\"b\\"" 1700000000000000000``.

- measurement: commas and spaces escaped;
- tag keys and values, field keys: commas, equals signs and spaces escaped (a backslash is
  literal there, as the format says);
- string field values: in double quotes, with double quotes and backslashes escaped;
- integers carry an ``i``; booleans are ``true``/``false``; the timestamp is in nanoseconds.
"""

from __future__ import annotations

from collections.abc import Mapping

Value = bool | int | float | str


def _escape(text: str, chars: str) -> str:
    for char in chars:
        text = text.replace(char, f"\\{char}")
    return text.replace("\n", " ")  # one line per point


def _field(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, Value | None],
         time_ns: int) -> str:
    """One line (no newline). Empty tag values and None fields are left out, as the format needs."""
    if measurement.startswith("#"):
        raise ValueError(f"a measurement cannot start with '#' (a comment line): {measurement!r}")
    head = _escape(measurement, ", ") + "".join(
        f",{_escape(k, ',= ')}={_escape(v, ',= ')}" for k, v in sorted(tags.items()) if v)
    body = ",".join(f"{_escape(k, ',= ')}={_field(v)}" for k, v in fields.items()
                    if v is not None)
    if not body:
        raise ValueError(f"line protocol needs at least one field: {measurement}")
    return f"{head} {body} {int(time_ns)}"
