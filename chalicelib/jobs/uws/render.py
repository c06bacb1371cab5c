"""UWS 1.1 XML documents (job, job list, results, parameters), elements in schema order."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape as _escape
from xml.sax.saxutils import quoteattr as _quoteattr

from .model import Job, format_time

UWS_NS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK_NS = "http://www.w3.org/1999/xlink"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
HEADER = '<?xml version="1.0" encoding="UTF-8"?>\n'
NAMESPACES = f'xmlns:uws="{UWS_NS}" xmlns:xlink="{XLINK_NS}" xmlns:xsi="{XSI_NS}"'
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def escape(text: str) -> str:
    """Escaped text; characters XML 1.0 cannot carry at all become U+FFFD."""
    return _escape(_NOT_XML.sub("\ufffd", text))


def quoteattr(text: str) -> str:
    return _quoteattr(_NOT_XML.sub("\ufffd", text))

# result dict -> the href the document shows (default: the job's /results/<id> redirect)
ResultHref = Callable[[Job, dict[str, Any]], str]


def _text(tag: str, value: str | None, nillable: bool = True) -> str:
    if value is None:
        return f'<uws:{tag} xsi:nil="true"/>' if nillable else ""
    return f"<uws:{tag}>{escape(value)}</uws:{tag}>"


def _time(tag: str, value: datetime | None) -> str:
    return _text(tag, format_time(value))


def parameters_xml(job: Job, root: bool = False) -> str:
    attrs = f" {NAMESPACES}" if root else ""
    items = [
        f"<uws:parameter id={quoteattr(job.param_names.get(name, name))}>"
        f"{escape(value)}</uws:parameter>"
        for name, values in job.parameters.items() for value in values
    ]
    return f"<uws:parameters{attrs}>" + "".join(items) + "</uws:parameters>"


def _result(job: Job, result: dict[str, Any], href: ResultHref) -> str:
    attrs = [f"id={quoteattr(result['id'])}", 'xlink:type="simple"',
             f"xlink:href={quoteattr(href(job, result))}"]
    if result.get("size") is not None:
        attrs.append(f'size="{int(result["size"])}"')
    if result.get("mime_type"):
        attrs.append(f"mime-type={quoteattr(result['mime_type'])}")
    return "<uws:result " + " ".join(attrs) + "/>"


def results_xml(job: Job, href: ResultHref, root: bool = False) -> str:
    attrs = f" {NAMESPACES}" if root else ""
    return (f"<uws:results{attrs}>" + "".join(_result(job, r, href) for r in job.results)
            + "</uws:results>")


def _error_xml(job: Job) -> str:
    err = job.error_summary
    if not err:
        return ""
    detail = "true" if err.get("has_detail") else "false"
    return (f"<uws:errorSummary type={quoteattr(err.get('type', 'fatal'))} hasDetail=\"{detail}\">"
            f"<uws:message>{escape(err.get('message', ''))}</uws:message></uws:errorSummary>")


def _info_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _job_info_xml(info: dict[str, Any]) -> str:
    """jobInfo children in no namespace (xs:any lax); values that are not text as JSON."""
    items = [f"<{key}>{escape(_info_value(value))}</{key}>"
             for key, value in info.items() if _XML_NAME.match(key) and value is not None]
    return "<uws:jobInfo>" + "".join(items) + "</uws:jobInfo>" if items else ""


def job_xml(job: Job, href: ResultHref) -> bytes:
    parts = [
        f'{HEADER}<uws:job {NAMESPACES} version="1.1">',
        _text("jobId", job.job_id),
        _text("runId", job.run_id, nillable=False),
        _text("ownerId", job.owner_id),
        _text("phase", job.phase),
        _time("quote", job.quote),
        _time("creationTime", job.creation_time),
        _time("startTime", job.start_time),
        _time("endTime", job.end_time),
        _text("executionDuration", str(int(job.execution_duration))),
        _time("destruction", job.destruction),
        parameters_xml(job),
        results_xml(job, href),
        _error_xml(job),
        _job_info_xml(job.job_info),
        "</uws:job>\n",
    ]
    return "\n".join(p for p in parts if p).encode()


def _jobref(job: Job, list_url: str) -> str:
    return "".join([
        f"<uws:jobref id={quoteattr(job.job_id)} xlink:type=\"simple\""
        f" xlink:href={quoteattr(f'{list_url}/{job.job_id}')}>",
        _text("phase", job.phase),
        _text("runId", job.run_id, nillable=False),
        _text("ownerId", job.owner_id),
        _time("creationTime", job.creation_time),
        "</uws:jobref>",
    ])


def jobs_xml(jobs: Iterable[Job], list_url: str) -> bytes:
    refs = "\n".join(_jobref(job, list_url) for job in jobs)
    return f'{HEADER}<uws:jobs {NAMESPACES} version="1.1">\n{refs}\n</uws:jobs>\n'.encode()


def results_document(job: Job, href: ResultHref) -> bytes:
    return (HEADER + results_xml(job, href, root=True) + "\n").encode()


def parameters_document(job: Job) -> bytes:
    return (HEADER + parameters_xml(job, root=True) + "\n").encode()
