"""JUnit XML reports, the format CI systems read test results from (Jenkins, GitLab, GitHub
actions' test reporters): one ``<testsuite>`` of ``<testcase>`` elements, each passed, failed
(``<failure message= type=>``) or skipped (``<skipped message=>``).

Pure: :func:`junit_xml` returns the document's bytes; the caller writes the file.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass


@dataclass(frozen=True)
class TestCase:
    """One ``<testcase>``.

    Attributes:
        name: the case's name.
        classname: the group it belongs to (CI tools show ``classname.name``).
        seconds: how long it took.
        failure: ``(type, message)`` when it failed.
        skipped: why it did not run, when it did not.
        output: what to put in ``<system-out>`` ("" for nothing).
    """

    __test__ = False  # not a pytest test class, despite the name

    name: str
    classname: str
    seconds: float = 0.0
    failure: tuple[str, str] | None = None
    skipped: str | None = None
    output: str = ""


def junit_xml(suite: str, cases: list[TestCase], *, timestamp: str | None = None) -> bytes:
    """A JUnit XML document with one test suite named ``suite``.

    Args:
        timestamp: when the suite ran (ISO 8601), or None to leave it out.
    """
    failures = sum(case.failure is not None for case in cases)
    skipped = sum(case.skipped is not None for case in cases)
    total = sum(case.seconds for case in cases)
    attributes = {
        "name": suite,
        "tests": str(len(cases)),
        "failures": str(failures),
        "errors": "0",
        "skipped": str(skipped),
        "time": f"{total:.6f}",
    }
    if timestamp is not None:
        attributes["timestamp"] = timestamp
    root = ET.Element("testsuites", {k: attributes[k] for k in ("tests", "failures", "errors")})
    element = ET.SubElement(root, "testsuite", attributes)
    for case in cases:
        item = ET.SubElement(
            element,
            "testcase",
            {"name": case.name, "classname": case.classname, "time": f"{case.seconds:.6f}"},
        )
        if case.failure is not None:
            kind, message = case.failure
            ET.SubElement(item, "failure", {"type": kind, "message": message}).text = message
        elif case.skipped is not None:
            ET.SubElement(item, "skipped", {"message": case.skipped})
        if case.output:
            ET.SubElement(item, "system-out").text = case.output
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"
