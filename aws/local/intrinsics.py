"""CloudFormation's intrinsic functions, resolved the way a deploy would, for the offline emulator.

Only what the translated template uses: Ref (parameters, pseudo parameters, resources),
Fn::Sub, Fn::GetAtt, and Fn::If / Fn::Equals / Fn::Not / Condition for Conditions. Anything
else raises, naming the function: a template change that needs more fails loudly here rather
than running with an unresolved value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

# Where the emulated stack lives: moto's default account, and the region the emulator's
# clients use.
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
STACK_NAME = "long-jobs"
PSEUDO_PARAMETERS = {
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT_ID,
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": STACK_NAME,
}


class NoValue:
    """AWS::NoValue: the property or list item it stands in is left out."""


NO_VALUE = NoValue()


class Resources(Protocol):
    """What a stack's resources answer to Ref and Fn::GetAtt."""

    def ref(self, logical_id: str) -> str: ...

    def get_att(self, logical_id: str, attribute: str) -> str: ...


class Intrinsics:
    """Resolves a template value against parameter values, conditions and resources."""

    def __init__(
        self, parameters: Mapping[str, Any], conditions: Mapping[str, Any], resources: Resources
    ) -> None:
        self.parameters, self.conditions, self.resources = parameters, conditions, resources

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in map(self.resolve, value) if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            [(key, argument)] = value.items()
            if (
                key == "Ref"
                or key.startswith("Fn::")
                or (key == "Condition" and isinstance(argument, str))
            ):
                return self._call(key, argument)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def ref(self, name: str) -> Any:
        if name in self.parameters:
            return self.parameters[name]
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in PSEUDO_PARAMETERS:
            return PSEUDO_PARAMETERS[name]
        return self.resources.ref(name)

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.conditions[name]))

    def _call(self, function: str, argument: Any) -> Any:
        if function == "Ref":
            return self.ref(argument)
        if function == "Condition":
            return self.condition(argument)
        if function == "Fn::GetAtt":
            logical_id, attribute = (
                argument.split(".", 1) if isinstance(argument, str) else argument
            )
            return self.resources.get_att(logical_id, attribute)
        if function == "Fn::Sub":
            return self._sub(argument)
        if function == "Fn::If":
            name, if_true, if_false = argument
            return self.resolve(if_true if self.condition(name) else if_false)
        if function == "Fn::Equals":
            left, right = self.resolve(argument)
            return str(left) == str(right)  # CloudFormation compares them as strings
        if function == "Fn::Not":
            [operand] = self.resolve(argument)
            return not operand
        raise ValueError(f"{function} is not resolved by the emulator (aws/local/intrinsics.py)")

    def _sub(self, argument: str | list[Any]) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        variables = self.resolve(variables)

        def value(match: re.Match[str]) -> str:
            name = match[1]
            if name.startswith("!"):  # ${!Literal} stays as written, less the "!"
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and name not in PSEUDO_PARAMETERS:
                logical_id, attribute = name.split(".", 1)
                return self.resources.get_att(logical_id, attribute)
            return str(self.ref(name))

        return re.sub(r"\$\{([^}]+)\}", value, text)
