"""infra/: the template lints, deploys into moto, and its state machines run our handlers.

moto's CloudFormation creates the resources it knows (alarms and EventInvokeConfig are
skipped with a warning; Lambda PackageType/ImageConfig, S3 lifecycle/notification and
DynamoDB TTL are not stored), so those properties are checked on the template itself.
The Step Functions tests execute the deployed definitions in moto with every Lambda
invocation routed in-process to the handler its ImageConfig.Command names.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.api import ManualArgs, lint_file
from cfnlint.decode import cfn_yaml
from moto import mock_aws
from moto.awslambda.models import LambdaFunction
from moto.stepfunctions.models import stepfunctions_backends

from chalicelib.jobs import runtime as jobs
from chalicelib.jobs import uws
from chalicelib.lambdas import handlers
from chalicelib.services.registry import JOBS
from tests.support import REPO_ROOT
from tests.support.moto_dynamodb import atomic_requests

ROOT = REPO_ROOT
INFRA = ROOT / "infra"
TEMPLATE = INFRA / "template.yaml"
ASL_FILES = sorted((INFRA / "statemachines").glob("*.asl.json"))
REGION, ACCOUNT = "us-east-1", "123456789012"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/spherex-archive:test"
PARAMS = {"Project": "spherex", "Stage": "test", "ImageUri": IMAGE, "RetentionKeepLast": "4"}
# moto's CloudFormation skips alarms and EventInvokeConfig with this warning.
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse AWS:UserWarning")
BINARY_TYPES = {"application/fits", "application/gzip", "application/vnd.apache.parquet",
                "image/png", "application/octet-stream", "multipart/form-data"}


def load_template() -> dict[str, Any]:
    return cfn_yaml.load(str(TEMPLATE))


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def sub_name(value: Any) -> str:
    """A `!Sub "${Project}-${Stage}-x"` name with the test parameters filled in."""
    text = value["Fn::Sub"] if isinstance(value, dict) else value
    return re.sub(r"\$\{(\w+)\}", lambda m: PARAMS[m.group(1)], text)


# ---- static checks ------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(INFRA.glob("*.yaml")), ids=lambda p: p.name)
def test_templates_lint_clean(path: Path) -> None:
    matches = lint_file(path, config=ManualArgs(regions=[REGION]))
    assert not matches, "\n".join(str(m) for m in matches)


def test_template_carries_the_current_state_machine_files() -> None:
    sync = _load_module(INFRA / "sync_asl.py")
    text = TEMPLATE.read_text()
    assert sync.render(text) == text, "run python infra/sync_asl.py"
    inlined = [json.loads(r["Properties"]["DefinitionString"]["Fn::Sub"][0])
               for r in resources(load_template(), "AWS::StepFunctions::StateMachine").values()]
    assert len(inlined) == len(ASL_FILES) == 3
    for path in ASL_FILES:
        assert json.loads(path.read_text()) in inlined, path.name


def _load_module(path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TERMINAL = {"Succeed", "Fail"}
TYPES = {"Task", "Pass", "Choice", "Wait", "Succeed", "Fail", "Parallel", "Map"}


def check_machine(machine: dict[str, Any], where: str) -> list[str]:
    """States Language structure: StartAt, Type, Next/End, Catch/Choice targets, nesting,
    reachability and a terminal state. Returns problems (empty = valid)."""
    states, problems = machine.get("States") or {}, []
    if machine.get("StartAt") not in states:
        problems.append(f"{where}: StartAt {machine.get('StartAt')!r} is not a state")
    edges: dict[str, set[str]] = {}
    for name, state in states.items():
        at, kind = f"{where}.{name}", state.get("Type")
        if kind not in TYPES:
            problems.append(f"{at}: unknown Type {kind!r}")
        targets = {state["Next"]} if "Next" in state else set()
        targets |= {c["Next"] for c in state.get("Catch", [])}
        targets |= {c["Next"] for c in state.get("Choices", [])}
        targets |= {state["Default"]} if "Default" in state else set()
        problems += [f"{at}: target {t!r} does not exist" for t in targets - set(states)]
        if kind not in TERMINAL | {"Choice"} and ("Next" in state) == bool(state.get("End")):
            problems.append(f"{at}: needs exactly one of Next and End")
        for i, rule in enumerate(state.get("Retry", []) + state.get("Catch", [])):
            errors = rule.get("ErrorEquals") or []
            if not errors or ("States.ALL" in errors and errors != ["States.ALL"]):
                problems.append(f"{at}: Retry/Catch {i} has a bad ErrorEquals {errors}")
        if kind == "Map":
            problems += check_machine(state.get("ItemProcessor") or state.get("Iterator"), at)
        for b, branch in enumerate(state.get("Branches", [])):
            problems += check_machine(branch, f"{at}[{b}]")
        edges[name] = targets
    seen, todo = set(), [machine.get("StartAt")]
    while todo:
        name = todo.pop()
        if name in states and name not in seen:
            seen.add(name)
            todo += edges[name]
    problems += [f"{where}.{n}: unreachable" for n in set(states) - seen]
    if not any(s.get("End") or s.get("Type") in TERMINAL for s in states.values()):
        problems.append(f"{where}: no terminal state")
    return problems


@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_state_machine_files_are_valid_states_language(path: Path) -> None:
    assert check_machine(json.loads(path.read_text()), path.name) == []


def test_structure_check_catches_mistakes() -> None:
    bad = {"StartAt": "A", "States": {"A": {"Type": "Task", "Next": "Nope"},
                                      "B": {"Type": "Pass", "End": True}}}
    problems = check_machine(bad, "m")
    assert any("'Nope' does not exist" in p for p in problems)
    assert any("m.B: unreachable" in p for p in problems)


def _walk_tasks(machine: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for state in machine["States"].values():
        if state["Type"] == "Task":
            yield state
        if state["Type"] == "Map":
            yield from _walk_tasks(state.get("ItemProcessor") or state["Iterator"])


def test_every_lambda_in_a_state_machine_is_a_template_function() -> None:
    template = load_template()
    functions = resources(template, "AWS::Lambda::Function")
    for machine in resources(template, "AWS::StepFunctions::StateMachine").values():
        text, variables = machine["Properties"]["DefinitionString"]["Fn::Sub"]
        for task in _walk_tasks(json.loads(text)):
            assert task["Resource"] == "arn:aws:states:::lambda:invoke"
            placeholder = re.fullmatch(r"\$\{(\w+)\}", task["Parameters"]["FunctionName"])
            logical = variables[placeholder.group(1)]["Fn::GetAtt"]
            assert logical[1] == "Arn" and logical[0] in functions, task
            handler = functions[logical[0]]["Properties"]["ImageConfig"]["Command"][0]
            assert task["Comment"].startswith(handler), (task["Comment"], handler)


def test_every_function_runs_a_real_handler_from_one_image() -> None:
    functions = resources(load_template(), "AWS::Lambda::Function")
    assert len(functions) == 8
    for name, fn in functions.items():
        props = fn["Properties"]
        assert props["PackageType"] == "Image"
        assert props["Code"] == {"ImageUri": {"Ref": "ImageUri"}}
        module, attr = props["ImageConfig"]["Command"][0].rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), attr)), name
        assert props["LoggingConfig"]["LogGroup"]["Ref"] in template_log_groups()


def template_log_groups() -> dict[str, Any]:
    groups = resources(load_template(), "AWS::Logs::LogGroup")
    assert all(g["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
               for g in groups.values())
    return groups


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    """Every statement, a conditional one (Fn::If) as if its condition held."""
    out = [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]
    return [s["Fn::If"][1] if "Fn::If" in s else s for s in out]


def test_the_spark_stack_is_wired_in_when_its_application_is_given() -> None:
    """infra/spark.yaml names its state machine; the main stack hands TAP jobs to it (run
    job: StartExecution, EMR_APPLICATION_ID) and ABORT stops its executions (API), only
    with SparkApplicationId set."""
    template = load_template()
    spark = cfn_yaml.load(str(INFRA / "spark.yaml"))
    name = spark["Resources"]["SparkStateMachine"]["Properties"]["StateMachineName"]["Fn::Sub"]
    assert name == "${Project}-${Stage}-spark-job"
    machine = ("arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:stateMachine:"
               + name)
    assert template["Conditions"]["HasSpark"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "SparkApplicationId"}, ""]}]}
    roles = resources(template, "AWS::IAM::Role")
    hand = [s for s in _statements(roles["RunJobRole"]) if s.get("Sid") == "HandToSpark"]
    assert hand == [{"Sid": "HandToSpark", "Effect": "Allow", "Action": "states:StartExecution",
                     "Resource": {"Fn::Sub": machine}}]
    abort = next(s for s in _statements(roles["ApiRole"]) if s.get("Sid") == "AbortJobs")
    assert {"Fn::If": ["HasSpark", {"Fn::Sub": machine.replace(":stateMachine:", ":execution:")
                                    + ":*"}, {"Ref": "AWS::NoValue"}]} in abort["Resource"]
    fns = resources(template, "AWS::Lambda::Function")
    for fn in ("ApiFunction", "RunJobFunction"):
        env = fns[fn]["Properties"]["Environment"]["Variables"]
        assert env["SPARK_STATE_MACHINE_ARN"] == {"Fn::If": ["HasSpark", {"Fn::Sub": machine},
                                                             ""]}
    run_env = fns["RunJobFunction"]["Properties"]["Environment"]["Variables"]
    assert run_env["EMR_APPLICATION_ID"] == {"Ref": "SparkApplicationId"}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_roles_are_least_privilege() -> None:
    roles = resources(load_template(), "AWS::IAM::Role")
    assert len(roles) == 11  # one per function, one per state machine
    for name, role in roles.items():
        for st in _statements(role):
            actions = _as_list(st["Action"])
            assert st["Effect"] == "Allow", name
            assert not any(a == "*" or a.endswith(":*") for a in actions), (name, actions)
            assert "*" not in _as_list(st["Resource"]), (name, st)
    actions = {name: {a for st in _statements(r) for a in _as_list(st["Action"])}
               for name, r in roles.items()}
    assert not any(a.startswith("s3:") for a in actions["FailJobRole"])
    assert "s3:DeleteObject" not in actions["IngestRole"]  # ingest only ever adds
    # the vacuum deletes, and only where retention removes things: never a FITS file (data/)
    deletes = [st for st in _statements(roles["VacuumRole"]) if "s3:DeleteObject" in
               _as_list(st["Action"])]
    assert [sorted(r["Fn::Sub"] for r in st["Resource"]) for st in deletes] == [sorted(
        "${ArchiveBucket.Arn}/" + p + "/*" for p in ("tables", "moc", "hats", "staging"))]
    assert "dynamodb:Scan" not in set().union(*actions.values())
    status_write = [st for st in _statements(roles["IngestRole"]) if st["Sid"] == "WriteStatus"]
    assert status_write[0]["Resource"]["Fn::Sub"].endswith("/*_status.json")


def test_vacuum_runs_on_a_schedule_only_when_retention_is_set() -> None:
    template = load_template()
    rule = resources(template, "AWS::Events::Rule")["VacuumScheduleRule"]
    perm = resources(template, "AWS::Lambda::Permission")["VacuumInvokePermission"]
    fn = resources(template, "AWS::Lambda::Function")["VacuumFunction"]["Properties"]
    assert rule["Condition"] == perm["Condition"] == "HasRetention"
    assert template["Conditions"]["HasRetention"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "RetentionKeepLast"}, 0]}]}
    assert rule["Properties"]["ScheduleExpression"] == {"Ref": "VacuumSchedule"}
    assert rule["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": ["VacuumFunction", "Arn"]}
    assert perm["Properties"]["Principal"] == "events.amazonaws.com"
    assert perm["Properties"]["SourceArn"] == {"Fn::GetAtt": ["VacuumScheduleRule", "Arn"]}
    assert fn["ImageConfig"]["Command"] == ["chalicelib.lambdas.handlers.vacuum_releases"]
    assert fn["ReservedConcurrentExecutions"] == 1
    env = fn["Environment"]["Variables"]
    assert {env[k]["Ref"] for k in ("RETENTION_KEEP_LAST", "RETENTION_PINNED",
                                    "RETENTION_GRACE_SECONDS")} == {
        "RetentionKeepLast", "RetentionPinned", "RetentionGraceSeconds"}


def test_api_gateway_binary_types_cover_the_app() -> None:
    from chalice import Chalice

    from app import app

    api = resources(load_template(), "AWS::ApiGateway::RestApi")["RestApi"]["Properties"]
    declared = set(api["BinaryMediaTypes"])
    added_by_app = set(app.api.binary_types) - set(Chalice("probe").api.binary_types)
    assert BINARY_TYPES <= declared and added_by_app <= declared
    assert "*/*" in declared  # clients that send Accept: */* still get raw bytes


def test_buckets_table_and_notification_in_the_template() -> None:
    template = load_template()
    props = {n: r["Properties"] for n, r in template["Resources"].items()}
    assert props["JobsTable"]["TimeToLiveSpecification"] == {"AttributeName": "ttl",
                                                             "Enabled": True}
    rules = {r["Id"]: r for r in props["ArchiveBucket"]["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-job-results"]["Prefix"] == "results/"  # only job results expire
    assert rules["expire-job-results"]["ExpirationInDays"] == {"Ref": "ResultsExpiryDays"}
    assert template["Resources"]["ArchiveBucket"]["DeletionPolicy"] == "Retain"
    notification = props["InboxBucket"]["NotificationConfiguration"]["LambdaConfigurations"][0]
    assert notification["Filter"]["S3Key"]["Rules"] == [{"Name": "suffix",
                                                         "Value": "manifest.json"}]
    assert template["Resources"]["InboxBucket"]["DependsOn"] == "IngestInvokePermission"
    inbox = sub_name(props["InboxBucket"]["BucketName"])
    assert sub_name(props["IngestInvokePermission"]["SourceArn"]) == \
        "arn:${AWS::Partition}:s3:::" + inbox


# ---- deployment into moto -------------------------------------------------------------------

def _invoke_in_process(routes: dict[str, str]) -> Callable[..., tuple[str, bool, str]]:
    """LambdaFunction._invoke_lambda replacement: run the handler named by the function's
    ImageConfig.Command here, answering like the Lambda runtime (errors as errorType JSON)."""

    def invoke(self: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
        module, name = routes[self.function_name].rsplit(".", 1)
        payload = json.loads(event) if isinstance(event, str) else event
        try:
            out = getattr(importlib.import_module(module), name)(payload, None)
        except Exception as exc:
            return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}), \
                True, ""
        return json.dumps(out), False, ""

    return invoke


def cfn_sub(text: str, variables: dict[str, str]) -> str:
    """Fn::Sub as CloudFormation does it: only ${Name} is replaced ($$ stays $$)."""
    return re.sub(r"\$\{(\w+)\}", lambda m: variables[m.group(1)], text)


def _recreate_for_execution(cf: Any) -> None:
    """Copy the deployed state machines into moto's executing backend. Their definitions
    are substituted here: moto's Fn::Sub uses string.Template, which turns the '$$' of
    '$$.Map.Item.Value' into '$' (CloudFormation leaves it alone)."""
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in
                cf.list_stack_resources(StackName="spherex-test")["StackResourceSummaries"]}
    lam = boto3.client("lambda", region_name=REGION)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machines = {m.name: m for m in stepfunctions_backends[ACCOUNT][REGION].state_machines}
    for name, res in resources(load_template(), "AWS::StepFunctions::StateMachine").items():
        text, variables = res["Properties"]["DefinitionString"]["Fn::Sub"]
        arns = {key: lam.get_function(FunctionName=physical[value["Fn::GetAtt"][0]])
                ["Configuration"]["FunctionArn"] for key, value in variables.items()}
        deployed = machines[physical[name].rsplit(":", 1)[1]]
        sfn.create_state_machine(name=deployed.name, definition=cfn_sub(text, arns),
                                 roleArn=deployed.roleArn)


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, str]]:
    """The template deployed into moto; yields its outputs. State machines are re-created
    in moto's executing backend (its CloudFormation registers them in the plain one)."""
    routes = {sub_name(f["Properties"]["FunctionName"]): f["Properties"]["ImageConfig"]
              ["Command"][0] for f in resources(load_template(), "AWS::Lambda::Function").values()}
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}
    # Executions run in moto's threads while the tests poll the job table: DynamoDB's
    # atomic UpdateItem is what makes a polled phase ERROR come with its errorSummary.
    with pytest.MonkeyPatch.context() as mp, atomic_requests(), \
            mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        for key, value in env.items():
            mp.setenv(key, value)
        for key in ("S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(key, raising=False)
        mp.setattr(LambdaFunction, "_invoke_lambda", _invoke_in_process(routes))
        cf = boto3.client("cloudformation", region_name=REGION)
        cf.create_stack(StackName="spherex-test", TemplateBody=TEMPLATE.read_text(),
                        Parameters=[{"ParameterKey": k, "ParameterValue": v}
                                    for k, v in PARAMS.items()],
                        Capabilities=["CAPABILITY_IAM"])
        _recreate_for_execution(cf)
        described = cf.describe_stacks(StackName="spherex-test")["Stacks"][0]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
        mp.setenv("JOBS_TABLE", outputs["JobsTableName"])
        mp.setenv("ARCHIVE_URL", f"s3://{outputs['ArchiveBucketName']}")
        handlers.reset()
        yield {**outputs, "StackStatus": described["StackStatus"]}
        handlers.reset()


def test_stack_creates_the_resources(stack: dict[str, str]) -> None:
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    s3 = boto3.client("s3", region_name=REGION)
    buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    suffix = f"{ACCOUNT}-{REGION}"
    assert {f"spherex-test-{k}-{suffix}" for k in ("archive", "inbox")} <= buckets
    assert stack["InboxBucketName"] == f"spherex-test-inbox-{suffix}"
    # RetentionKeepLast > 0: the weekly vacuum is scheduled, aimed at the vacuum function
    events = boto3.client("events", region_name=REGION)
    rules = [r for r in events.list_rules()["Rules"] if r.get("ScheduleExpression")]
    assert [r["ScheduleExpression"] for r in rules] == ["rate(7 days)"]
    target = events.list_targets_by_rule(Rule=rules[0]["Name"])["Targets"][0]["Arn"]
    assert target.endswith(":function:spherex-test-vacuum")
    ddb = boto3.client("dynamodb", region_name=REGION)
    uws.create_table(ddb, "reference-jobs")  # what DynamoJobStore expects
    table, want = (ddb.describe_table(TableName=name)["Table"]
                   for name in (stack["JobsTableName"], "reference-jobs"))
    for key in ("KeySchema", "BillingModeSummary"):
        assert table[key] == want[key]
    assert sorted(table["AttributeDefinitions"], key=str) == \
        sorted(want["AttributeDefinitions"], key=str)
    assert [(i["IndexName"], i["KeySchema"], i["Projection"]) for i in
            table["GlobalSecondaryIndexes"]] == [(i["IndexName"], i["KeySchema"],
                                                  i["Projection"]) for i in
                                                 want["GlobalSecondaryIndexes"]]
    assert stack["ApiUrl"].endswith(".amazonaws.com/api")


def test_functions_roles_and_state_machines_are_wired(stack: dict[str, str]) -> None:
    lam = boto3.client("lambda", region_name=REGION)
    iam = boto3.client("iam", region_name=REGION)
    functions = {f["FunctionName"]: f for f in lam.list_functions()["Functions"]}
    assert len([n for n in functions if n.startswith("spherex-test-")]) == 8
    api = functions["spherex-test-api"]
    env = api["Environment"]["Variables"]
    assert env["JOBS_TABLE"] == stack["JobsTableName"]
    # chalicelib.jobs picks the executor of service X from X_STATE_MACHINE_ARN
    assert env["TAP_STATE_MACHINE_ARN"] == env["SODA_STATE_MACHINE_ARN"] == \
        stack["UwsJobStateMachineArn"]
    assert env["SPECTROPHOTOMETRY_STATE_MACHINE_ARN"] == \
        stack["SpectrophotometryStateMachineArn"]
    worker = functions["spherex-test-run-job"]["Environment"]["Variables"]
    assert worker["PUBLIC_URL"] == stack["ApiUrl"]
    assert env["ARCHIVE_URL"] == f"s3://{stack['ArchiveBucketName']}"
    assert lam.get_function(FunctionName="spherex-test-ingest")["Code"]["ImageUri"] == IMAGE
    assert functions["spherex-test-ingest"]["Timeout"] == 900
    roles = {r["RoleName"]: r["Arn"] for r in iam.list_roles()["Roles"]
             if r["RoleName"].startswith("spherex-test-")}
    assert len(roles) == 11 and all(f["Role"] in roles.values() for n, f in functions.items()
                                   if n.startswith("spherex-test-"))
    assert len({f["Role"] for f in functions.values()}) == 8  # no role is shared
    role = api["Role"].rsplit("/", 1)[1]
    policy = iam.get_role_policy(RoleName=role, PolicyName="api")["PolicyDocument"]
    text = json.dumps(policy)
    assert stack["UwsJobStateMachineArn"] in text and stack["ArchiveBucketName"] in text
    sfn = boto3.client("stepfunctions", region_name=REGION)
    deployed = json.loads(sfn.describe_state_machine(
        stateMachineArn=stack["UwsJobStateMachineArn"])["definition"])
    expected = (INFRA / "statemachines/uws-job.asl.json").read_text()
    for key in ("RunJobFunctionArn", "FailJobFunctionArn"):
        name = "spherex-test-" + {"RunJobFunctionArn": "run-job"}.get(key, "fail-job")
        expected = expected.replace("${" + key + "}", functions[name]["FunctionArn"])
    assert deployed == json.loads(expected)
    # the ingest function names its state machine by a built ARN (no dependency cycle)
    ingest_env = functions["spherex-test-ingest"]["Environment"]["Variables"]
    machines = {m["name"]: m["stateMachineArn"] for m in sfn.list_state_machines()
                ["stateMachines"]}
    assert ingest_env["INGEST_STATE_MACHINE_ARN"] == machines["spherex-test-ingest"]


# ---- the state machines, executed -------------------------------------------------------------

def _wait(store: Any, job_id: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get(job_id)
        if job.phase not in uws.ACTIVE_PHASES:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job.phase}")


def _execution(sfn: Any, job: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        execution = sfn.describe_execution(executionArn=job.execution_arn)
        if execution["status"] != "RUNNING":
            return execution
        time.sleep(0.05)
    raise AssertionError("execution still running")


def _service(stack: dict[str, str], name: str, machine: str) -> tuple[Any, Any, Any]:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    store = uws.DynamoJobStore(stack["JobsTableName"],
                               boto3.client("dynamodb", region_name=REGION))
    return uws.UWSService(store, uws.StepFunctionsExecutor(stack[machine], sfn),
                          service_name=name), store, sfn


def _fake_module(monkeypatch: pytest.MonkeyPatch, name: str, **attrs: Any) -> None:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)


def test_uws_job_machine_completes_fails_and_catches(
        stack: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    def good(job: Any, ctx: Any) -> None:
        ctx.set_progress(0.5, "half way")
        ctx.add_result("result", b"<VOTABLE/>", "application/x-votable+xml")

    def bad(job: Any, ctx: Any) -> None:
        raise uws.UWSUsageError("no such column: foo")  # a caller mistake: said as is

    def sink(job: Any, result_id: str, content: bytes, mime_type: str) -> str:
        # chalicelib.jobs.result_sink writes through s3fs, which moto's in-process mock
        # cannot intercept: same key and href, written with boto3.
        key = f"results/{job.service}/{job.job_id}/{result_id}"
        boto3.client("s3", region_name=REGION).put_object(
            Bucket=stack["ArchiveBucketName"], Key=key, Body=content, ContentType=mime_type)
        return jobs.RESULT_PREFIX + key

    monkeypatch.setattr(jobs, "result_sink", sink)
    _fake_module(monkeypatch, "fake_runners", good=good, bad=bad)
    monkeypatch.setitem(JOBS, "tap", replace(JOBS["tap"], runner=sys.modules["fake_runners"].good))
    monkeypatch.setitem(JOBS, "soda", replace(JOBS["soda"], runner=sys.modules["fake_runners"].bad))
    service, store, sfn = _service(stack, "tap", "UwsJobStateMachineArn")

    job = _wait(store, service.create_job({"QUERY": "SELECT 1", "PHASE": "RUN"}).job_id)
    assert job.phase == "COMPLETED" and job.job_info["message"] == "half way"
    assert _execution(sfn, job)["status"] == "SUCCEEDED"
    assert job.results[0]["href"] == f"archive:results/tap/{job.job_id}/result"
    body = boto3.client("s3", region_name=REGION).get_object(
        Bucket=stack["ArchiveBucketName"], Key=f"results/tap/{job.job_id}/result")["Body"]
    assert body.read() == b"<VOTABLE/>"

    service.service_name = "soda"  # the runner raises: ERROR, but the execution succeeded
    job = _wait(store, service.create_job({"ID": "x", "PHASE": "RUN"}).job_id)
    assert job.phase == "ERROR" and "no such column" in job.error_summary["message"]
    assert _execution(sfn, job)["status"] == "SUCCEEDED"

    service.service_name = "nosuch"  # the worker itself fails: Catch -> fail_job -> FAILED
    job = _wait(store, service.create_job({"PHASE": "RUN"}).job_id)
    assert job.phase == "ERROR"
    assert job.error_summary["message"].startswith("LookupError: no UWS runner")
    assert _execution(sfn, job)["status"] == "FAILED"


def test_spectrophotometry_machine_flags_a_bad_batch(
        stack: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    assembled: list[dict[str, Any]] = []

    def plan(event: dict[str, Any]) -> dict[str, Any]:
        if event["parameters"].get("fail"):
            raise RuntimeError("no images cover the sources")
        return {"batches": [["a.fits", "b.fits"], ["broken.fits"], ["c.fits"]], "sources": 2}

    def measure(event: dict[str, Any]) -> dict[str, Any]:
        if "broken.fits" in event["batch"]:
            raise OSError("broken.fits: truncated FITS file")
        return {"index": event["index"], "measured": len(event["batch"])}

    def assemble(event: dict[str, Any]) -> dict[str, Any]:
        assembled.append(event)
        uws.complete_job(handlers.job_store(), event["job_id"])
        return {"job_id": event["job_id"], "phase": "COMPLETED"}

    _fake_module(monkeypatch, "chalicelib.photometry.steps", plan=plan, measure=measure,
                 assemble=assemble)
    _fake_module(monkeypatch, "chalicelib.photometry",
                 steps=sys.modules["chalicelib.photometry.steps"])
    service, store, sfn = _service(stack, "spectrophotometry",
                                   "SpectrophotometryStateMachineArn")
    job = _wait(store, service.create_job({"POS": "CIRCLE 10 20 0.1", "PHASE": "RUN"}).job_id)
    assert job.phase == "COMPLETED" and _execution(sfn, job)["status"] == "SUCCEEDED"
    measurements = assembled[0]["measurements"]
    assert [m.get("measured") for m in measurements] == [2, None, 1]
    flagged = measurements[1]
    assert flagged["failed"] is True and flagged["batch"] == ["broken.fits"]
    assert "truncated FITS" in flagged["error"]["Cause"]
    assert assembled[0]["plan"]["sources"] == 2

    job = _wait(store, service.create_job({"FAIL": "yes", "PHASE": "RUN"}).job_id)
    assert job.phase == "ERROR" and "no images cover" in job.error_summary["message"]
    assert _execution(sfn, job)["status"] == "FAILED"


# ---- packaging and the deploy script ---------------------------------------------------------

def test_deploy_dry_run_prints_the_operator_commands() -> None:
    env = {**os.environ, "SKIP_LINT": "1", "AWS_ACCOUNT_ID": ACCOUNT}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        env.pop(key, None)  # a dry run must not need (or touch) AWS
    out = subprocess.run(
        ["bash", str(INFRA / "deploy.sh"), "--dry-run", "--stage", "prod", "--region",
         "eu-west-1", "--tag", "v1", "--alarm-email", "ops@example.org"],
        capture_output=True, text=True, env=env, timeout=60, check=True).stdout
    commands = [line[2:] for line in out.splitlines() if line.startswith("+ ")]
    image = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/spherex-archive:v1"
    assert any(c.startswith("aws ecr create-repository") or "create-repository" in c
               for c in commands)
    assert any(c.startswith("docker buildx build") and "-f infra/Dockerfile" in c
               and image in c for c in commands)
    assert f"docker push {image}" in commands
    deploy = next(c for c in commands if c.startswith("aws cloudformation deploy"))
    for piece in ("--stack-name spherex-prod", "Stage=prod", f"ImageUri={image}",
                  "--template-file infra/template.yaml", "AlarmEmail=ops@example.org"):
        assert piece in deploy
    assert "--s3-bucket spherex-prod-templates-" in deploy  # the template is > 51,200 B
    assert "nothing was built, pushed or deployed" in out


def test_dockerfile_builds_one_lambda_image_without_test_packages() -> None:
    docker = (INFRA / "Dockerfile").read_text()
    assert "FROM public.ecr.aws/lambda/python:3.12" in docker
    assert "COPY app.py" in docker and "COPY chalicelib/" in docker
    assert "runtime-requirements.sh" in docker and "HOME=/tmp" in docker
    runtime = subprocess.run(["sh", str(INFRA / "runtime-requirements.sh"),
                              str(ROOT / "requirements.txt")], capture_output=True, text=True,
                             check=True).stdout.split()
    names = {re.split(r"[\[=<>~! ]", line)[0].lower() for line in runtime}
    assert not names & {"moto", "pytest", "pytest-xdist", "hypothesis", "cfn-lint", "ruff",
                        "pyvo", "lsdb"}
    assert {"hats", "hats-import"} <= names  # the merge step writes the HATS copy
    assert {"chalice", "duckdb", "deltalake", "pyarrow", "astropy", "boto3"} <= names


def test_only_the_api_function_keeps_pandas_out() -> None:
    """WITHOUT_PANDAS=1 saves the API's cold starts ~170 ms; the functions that ingest and
    merge (HATS needs pandas) must not have it."""
    fns = resources(load_template(), "AWS::Lambda::Function")
    lean = {name for name, fn in fns.items()
            if fn["Properties"].get("Environment", {}).get("Variables", {})
            .get("WITHOUT_PANDAS") == "1"}
    assert lean == {"ApiFunction"}
