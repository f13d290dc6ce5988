"""deploy/cloudformation.yaml as tests use it: loaded (CloudFormation's short tags included),
its intrinsic functions resolved against given names, and its resources made on a moto server
from their own definitions, so the template and the code cannot drift apart."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from tests.conftest import ROOT

TEMPLATE = ROOT / "deploy" / "cloudformation.yaml"


class _Loader(yaml.SafeLoader):
    """YAML with CloudFormation's tags: `!Ref X` -> {"Ref": X}, `!Sub s` -> {"Fn::Sub": s} …"""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_Loader.add_multi_constructor("!", _tag)


def load_template() -> dict[str, Any]:
    """The template as plain data."""
    data: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=_Loader)
    return data


def resolve(value: Any, names: Mapping[str, Any]) -> Any:
    """`value` with Ref, Fn::Sub, Fn::GetAtt, Fn::Join and Fn::Select replaced, where `names`
    gives each referenced parameter, resource (`Name`) or attribute (`Name.Attr`) its value."""
    if isinstance(value, list):
        return [resolve(v, names) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Ref":
            return names[arg]
        if fn == "Fn::GetAtt":
            return names[".".join(arg)]
        if fn == "Fn::Sub":
            text, local = (arg, {}) if isinstance(arg, str) else (arg[0], resolve(arg[1], names))
            both = {**names, **local}
            return re.sub(r"\$\{([^}!]+)\}", lambda m: str(both[m.group(1)]), text)
        if fn == "Fn::Join":
            return str(arg[0]).join(str(v) for v in resolve(arg[1], names))
        if fn == "Fn::Select":
            return resolve(arg[1], names)[int(arg[0])]
    return {k: resolve(v, names) for k, v in value.items()}


def resource(name: str) -> dict[str, Any]:
    """One resource of the template: {"Type": …, "Properties": …}."""
    found: dict[str, Any] = load_template()["Resources"][name]
    return found


def create_table_from_template(table_name: str) -> str:
    """Create the JobLogTable resource as DynamoDB table `table_name`; returns the name."""
    import boto3

    props = resource("JobLogTable")["Properties"]
    dynamodb = boto3.client("dynamodb")
    args: dict[str, Any] = {key: props[key] for key in
                            ("AttributeDefinitions", "KeySchema", "BillingMode",
                             "GlobalSecondaryIndexes") if key in props}
    dynamodb.create_table(TableName=table_name, **args)
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        dynamodb.update_time_to_live(TableName=table_name, TimeToLiveSpecification=ttl)
    if props.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled"):
        dynamodb.update_continuous_backups(
            TableName=table_name,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    return table_name
