"""DynamoDB job store: same semantics as LocalJobStore.

Table: partition key job_id (S); global secondary index `by_service` (service S,
creation_time S) for the job list; TTL attribute `ttl` = destruction epoch seconds
(DynamoDB deletes late, up to days, so reads filter expired items themselves).
Scalars are native attributes; nested fields are JSON strings (floats in jobInfo
would otherwise need Decimal). Phase changes are single UpdateItem calls with a
ConditionExpression on phase (and version), so concurrent PHASE=RUN start one execution.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from .model import TIME_FIELDS, Job, format_time, parse_time, utcnow
from .store import ANY, OwnerFilter, PhaseSpec, check_changes, phase_set, select_jobs

JSON_FIELDS = ("parameters", "param_names", "results", "error_summary", "job_info")
INDEX = "by_service"


def create_table(client: Any, table_name: str) -> None:
    """Create the jobs table (on-demand) with its index and TTL; for tests and set-up scripts."""
    client.create_table(
        TableName=table_name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "job_id", "AttributeType": "S"},
            {"AttributeName": "service", "AttributeType": "S"},
            {"AttributeName": "creation_time", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[{
            "IndexName": INDEX,
            "KeySchema": [{"AttributeName": "service", "KeyType": "HASH"},
                          {"AttributeName": "creation_time", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "ALL"},
        }],
    )
    client.get_waiter("table_exists").wait(TableName=table_name)
    client.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})


def _encode(name: str, value: Any) -> dict[str, Any]:
    if name in JSON_FIELDS:
        return {"S": json.dumps(value)}
    if name in TIME_FIELDS:
        return {"S": format_time(value)}
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return {"S": str(value)}
    return {"N": str(value)}


def _decode(name: str, attr: dict[str, Any]) -> Any:
    if "N" in attr:
        return int(attr["N"])
    text = attr["S"]
    if name in JSON_FIELDS:
        return json.loads(text)
    if name in TIME_FIELDS:
        return parse_time(text)
    return text


def to_item(job: Job) -> dict[str, Any]:
    item = {name: _encode(name, value) for name, value in vars(job).items() if value is not None}
    if job.destruction is not None:
        item["ttl"] = {"N": str(int(job.destruction.timestamp()))}
    return item


def from_item(item: dict[str, Any]) -> Job:
    values = {name: _decode(name, attr) for name, attr in item.items() if name != "ttl"}
    return Job(**values)


class _Update:
    """Builds SET/REMOVE and condition expressions with placeholder names."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def name(self, attr: str) -> str:
        key = f"#n{len(self.names)}"
        self.names[key] = attr
        return key

    def value(self, attr: dict[str, Any]) -> str:
        key = f":v{len(self.values)}"
        self.values[key] = attr
        return key

    def update_expression(self, changes: dict[str, Any]) -> str:
        sets = [f"{self.name('version')} = {self.name('version')} + {self.value({'N': '1'})}"]
        removes = []
        if "destruction" in changes:
            changes = {**changes, "ttl": changes["destruction"]}
        for attr, value in changes.items():
            if value is None:
                removes.append(self.name(attr))
            elif attr == "ttl":
                sets.append(f"{self.name(attr)} = {self.value({'N': str(int(value.timestamp()))})}")
            else:
                sets.append(f"{self.name(attr)} = {self.value(_encode(attr, value))}")
        return "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")

    def condition(self, phases: frozenset[str] | None, version: int | None) -> str:
        ttl = self.name("ttl")
        now = self.value({"N": str(int(utcnow().timestamp()))})
        terms = [f"attribute_exists({self.name('job_id')})",
                 f"(attribute_not_exists({ttl}) OR {ttl} > {now})"]
        if phases:
            options = ", ".join(self.value({"S": phase}) for phase in sorted(phases))
            terms.append(f"{self.name('phase')} IN ({options})")
        if version is not None:
            terms.append(f"{self.name('version')} = {self.value({'N': str(version)})}")
        return " AND ".join(terms)


class DynamoJobStore:
    """Jobs in a DynamoDB table (see create_table); `client` is a boto3 dynamodb client."""

    def __init__(self, table_name: str, client: Any) -> None:
        self.table = table_name
        self.client = client

    def create(self, job: Job) -> None:
        self.client.put_item(TableName=self.table, Item=to_item(job),
                             ConditionExpression="attribute_not_exists(job_id)")

    def get(self, job_id: str) -> Job | None:
        item = self.client.get_item(TableName=self.table, Key={"job_id": {"S": job_id}},
                                    ConsistentRead=True).get("Item")
        if not item:
            return None
        job = from_item(item)
        return None if job.expired() else job

    def _items(self, service: str | None, after: datetime | None) -> Iterator[dict[str, Any]]:
        if service is None:
            pages = self.client.get_paginator("scan").paginate(TableName=self.table)
        else:
            cond, values = "service = :s", {":s": {"S": service}}
            if after is not None:
                cond, values[":a"] = cond + " AND creation_time > :a", {"S": format_time(after)}
            pages = self.client.get_paginator("query").paginate(
                TableName=self.table, IndexName=INDEX, KeyConditionExpression=cond,
                ExpressionAttributeValues=values, ScanIndexForward=False)
        for page in pages:
            yield from page.get("Items", [])

    def list(self, service: str | None = None, owner: OwnerFilter = ANY,
             phases: Iterable[str] | None = None, after: datetime | None = None,
             last: int | None = None) -> list[Job]:
        jobs = (from_item(item) for item in self._items(service, after))
        return select_jobs(jobs, owner, phases, after, last)

    def update_if(self, job_id: str, expected_phase: PhaseSpec = None, *,
                  expected_version: int | None = None, **changes: Any) -> bool:
        check_changes(changes)
        if expected_phase is not None and not phase_set(expected_phase):
            return False
        expr = _Update()
        update = expr.update_expression(changes)
        condition = expr.condition(phase_set(expected_phase), expected_version)
        try:
            self.client.update_item(
                TableName=self.table, Key={"job_id": {"S": job_id}},
                UpdateExpression=update, ConditionExpression=condition,
                ExpressionAttributeNames=expr.names, ExpressionAttributeValues=expr.values)
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def delete(self, job_id: str) -> bool:
        response = self.client.delete_item(TableName=self.table, Key={"job_id": {"S": job_id}},
                                           ReturnValues="ALL_OLD")
        return "Attributes" in response
