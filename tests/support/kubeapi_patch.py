"""PATCH algorithms of the Kubernetes API test server: merge, strategic merge and JSON patch.

JSON merge patch follows RFC 7386 and JSON patch RFC 6902 (as `evanphx/json-patch`, which the
apiserver uses, including its error texts). Strategic merge patch is the subset the daemon can
need: merge patch semantics plus merging the well-known keyed lists (containers by name, ...).
"""

from __future__ import annotations

import copy
from typing import Any

from tests.support.kubeapi_errors import bad_request

Obj = dict[str, Any]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# Merge keys of the lists a strategic merge patch merges instead of replacing (from the Go types'
# `patchMergeKey` tags); any other list is replaced whole, as merge patch would.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "conditions": "type",
    "hostAliases": "ip",
}


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """The subset of strategic merge patch the daemon can need: merge patch plus keyed lists."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue  # directives such as $retainKeys / $setElementOrder only shape the merge
        if value is None:
            result.pop(key, None)
        elif (
            key in _MERGE_KEYS
            and isinstance(value, list)
            and isinstance(result.get(key), list)
            and all(isinstance(item, dict) for item in value)
        ):
            result[key] = _merge_keyed_list(result[key], value, _MERGE_KEYS[key])
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _merge_keyed_list(current: list[Any], patch: list[Obj], merge_key: str) -> list[Any]:
    merged = copy.deepcopy(current)
    for item in patch:
        key_value = item.get(merge_key)
        index = next(
            (
                i
                for i, old in enumerate(merged)
                if isinstance(old, dict) and old.get(merge_key) == key_value
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append({k: v for k, v in item.items() if not k.startswith("$")})
        else:
            merged[index] = strategic_merge_patch(merged[index], item)
    return merged


class JsonPatchError(Exception):
    """A JSON patch operation that does not apply (the apiserver answers 422)."""


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise JsonPatchError(f'JSON pointer must be empty or start with a "/": {path}')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], op: str, path: str) -> Any:
    current = doc
    for part in parts[:-1]:
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise JsonPatchError(f'{op} operation does not apply: doc is missing path: "{path}"')
    return current


def _get(doc: Any, path: str, op: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _parent(doc, parts, op, path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise JsonPatchError(f"{op} operation does not apply: doc is missing key: {path}")


def _remove(doc: Any, path: str, op: str) -> Any:
    parts = _pointer(path)
    parent = _parent(doc, parts, op, path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise JsonPatchError(f"Unable to remove nonexistent key: {last}: missing value")


def _add(doc: Any, path: str, value: Any, op: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    parent = _parent(doc, parts, op, path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        index = len(parent) if last == "-" else int(last) if last.isdigit() else -1
        if not 0 <= index <= len(parent):
            raise JsonPatchError(f"add operation does not apply: index out of bounds: {path}")
        parent.insert(index, copy.deepcopy(value))
    else:
        raise JsonPatchError(f'{op} operation does not apply: doc is missing path: "{path}"')
    return doc


def json_patch(document: Any, operations: Any) -> Any:
    """RFC 6902. A body that is not a list is a decode error (400), a failing op a 422."""
    if not isinstance(operations, list):
        kind = "object" if isinstance(operations, dict) else type(operations).__name__
        raise bad_request(f"json: cannot unmarshal {kind} into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(document)
    for operation in operations:
        if not isinstance(operation, dict):
            raise bad_request("json: cannot unmarshal into Go value of type jsonpatch.Operation")
        op, path = operation.get("op"), operation.get("path", "")
        if op == "add":
            doc = _add(doc, path, operation.get("value"), "add")
        elif op == "remove":
            _remove(doc, path, "remove")
        elif op == "replace":
            _get(doc, path, "replace")
            if _pointer(path):
                _remove(doc, path, "replace")
            doc = _add(doc, path, operation.get("value"), "replace")
        elif op == "test":
            if _get(doc, path, "test") != operation.get("value"):
                raise JsonPatchError(f"testing value {path} failed: test failed")
        elif op in ("move", "copy"):
            value = _get(doc, operation.get("from", ""), op)
            if op == "move":
                _remove(doc, operation.get("from", ""), op)
            doc = _add(doc, path, value, op)
        else:
            raise JsonPatchError(f"Unexpected kind: {op}")
    return doc
