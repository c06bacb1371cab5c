"""VOSI availability: its own module, so that a health check imports nothing heavy."""

from __future__ import annotations

from ...web.replies import Reply


def availability() -> Reply:
    return Reply.xml(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<vosi:availability xmlns:vosi="http://www.ivoa.net/xml/VOSIAvailability/v1.0">'
        "<vosi:available>true</vosi:available>"
        "<vosi:note>The service is accepting queries</vosi:note></vosi:availability>")
