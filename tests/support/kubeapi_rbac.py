"""RBAC for the Kubernetes API test server: the shipped manifests, evaluated like the apiserver.

Loads Role/ClusterRole/RoleBinding/ClusterRoleBinding documents from a directory tree and answers
"may this user do this?" with the rule that allowed it, following
`plugin/pkg/auth/authorizer/rbac` (cluster role bindings first, then role bindings of the request's
namespace; `*` wildcards; `*/subresource`; resourceNames; nonResourceURLs). Knowing which rule
allowed each request lets a test prove the shipped RBAC is minimal: every rule gets used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

RBAC_KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
IGNORED_FILES = ("kustomization.yaml", "kustomization.yml")


@dataclass(frozen=True)
class RequestAttributes:
    """What the authorizer sees of a request (authorizer.Attributes)."""

    user: str
    groups: tuple[str, ...]
    verb: str
    path: str
    resource_request: bool
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


@dataclass(frozen=True)
class LoadedRule:
    """One rule of one role: `role` is `ClusterRole/NAME` or `Role/NAMESPACE/NAME`."""

    role: str
    index: int
    rule: dict[str, Any]
    source: str


@dataclass
class _Binding:
    kind: str
    namespace: str  # "" for ClusterRoleBinding
    name: str
    role_kind: str
    role_name: str
    subjects: list[dict[str, Any]] = field(default_factory=list)


def _role_id(kind: str, namespace: str, name: str) -> str:
    return f"Role/{namespace}/{name}" if kind == "Role" else f"ClusterRole/{name}"


def _documents(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for document in yaml.safe_load_all(path.read_text()):
        if not isinstance(document, dict):
            continue
        if document.get("kind") == "List":  # `kubectl get -o yaml` output
            out.extend(item for item in document.get("items") or [] if isinstance(item, dict))
        else:
            out.append(document)
    return out


def _kustomize_namespace(path: Path, root: Path) -> str:
    """The `namespace:` of the nearest kustomization at or above `path` (within `root`)."""
    directory = path.parent
    while True:
        for name in IGNORED_FILES:
            candidate = directory / name
            if candidate.is_file():
                document = yaml.safe_load(candidate.read_text()) or {}
                namespace = document.get("namespace") if isinstance(document, dict) else None
                if namespace:
                    return str(namespace)
        if directory == root or directory.parent == directory:
            return ""
        directory = directory.parent


class RbacPolicy:
    """Roles and bindings from `rbac_dir`; `authorize` decides and names the granting rule."""

    def __init__(self, rbac_dir: str | Path) -> None:
        self._rules: dict[str, list[LoadedRule]] = {}
        self._bindings: list[_Binding] = []
        root = Path(rbac_dir)
        files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        for path in files:
            if path.name in IGNORED_FILES:
                continue
            namespace = _kustomize_namespace(path, root)
            for document in _documents(path):
                if namespace and document.get("kind") in ("Role", "RoleBinding"):
                    # `kubectl apply -k` sets the kustomization's namespace on every object.
                    document.setdefault("metadata", {})["namespace"] = namespace
                self._load(document, str(path))
        logger.debug(
            "loaded %d roles and %d bindings from %s", len(self._rules), len(self._bindings), root
        )

    def _load(self, document: dict[str, Any], source: str) -> None:
        kind = document.get("kind")
        if kind not in RBAC_KINDS:
            return
        meta = document.get("metadata") or {}
        name, namespace = meta.get("name", ""), meta.get("namespace") or ""
        if kind in ("Role", "ClusterRole"):
            if kind == "Role" and not namespace:
                # Applied with `kubectl apply -n`, a namespace-less Role lands in the default one.
                namespace = "default"
            role = _role_id(kind, namespace, name)
            self._rules[role] = [
                LoadedRule(role, index, dict(rule), source)
                for index, rule in enumerate(document.get("rules") or [])
            ]
            return
        ref = document.get("roleRef") or {}
        if kind == "RoleBinding" and not namespace:
            namespace = "default"
        self._bindings.append(
            _Binding(
                kind=kind,
                namespace=namespace if kind == "RoleBinding" else "",
                name=name,
                role_kind=ref.get("kind", ""),
                role_name=ref.get("name", ""),
                subjects=[s for s in document.get("subjects") or [] if isinstance(s, dict)],
            )
        )

    def rules(self) -> list[LoadedRule]:
        return [rule for rules in self._rules.values() for rule in rules]

    @staticmethod
    def _subject_matches(
        subject: dict[str, Any], binding: _Binding, attrs: RequestAttributes
    ) -> bool:
        kind, name = subject.get("kind"), subject.get("name")
        if kind == "ServiceAccount":
            namespace = subject.get("namespace") or binding.namespace
            return attrs.user == f"system:serviceaccount:{namespace}:{name}"
        if kind == "User":
            return attrs.user == name
        if kind == "Group":
            return name in attrs.groups
        return False

    @staticmethod
    def _rule_allows(rule: dict[str, Any], attrs: RequestAttributes) -> bool:
        verbs = rule.get("verbs") or []
        if "*" not in verbs and attrs.verb not in verbs:
            return False
        if not attrs.resource_request:
            return any(
                url == "*"
                or url == attrs.path
                or (url.endswith("*") and attrs.path.startswith(url[:-1]))
                for url in rule.get("nonResourceURLs") or []
            )
        groups = rule.get("apiGroups") or []
        if "*" not in groups and attrs.api_group not in groups:
            return False
        combined = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
        resource_ok = False
        for resource in rule.get("resources") or []:
            if resource in ("*", combined) or (
                attrs.subresource and resource == f"*/{attrs.subresource}"
            ):
                resource_ok = True
                break
        if not resource_ok:
            return False
        names = rule.get("resourceNames") or []
        return not names or attrs.name in names

    def authorize(self, attrs: RequestAttributes) -> tuple[LoadedRule | None, str]:
        """The first rule allowing the request (None if denied) and the RBAC reason text."""
        problems: list[str] = []
        ordered = [b for b in self._bindings if b.kind == "ClusterRoleBinding"] + [
            b
            for b in self._bindings
            if b.kind == "RoleBinding" and attrs.namespace and b.namespace == attrs.namespace
        ]
        for binding in ordered:
            if not any(self._subject_matches(s, binding, attrs) for s in binding.subjects):
                continue
            if binding.role_kind == "Role":
                role = _role_id("Role", binding.namespace, binding.role_name)
            else:
                role = _role_id("ClusterRole", "", binding.role_name)
            rules = self._rules.get(role)
            if rules is None:
                resource = "role" if binding.role_kind == "Role" else "clusterrole"
                problems.append(
                    f'{resource}.rbac.authorization.k8s.io "{binding.role_name}" not found'
                )
                continue
            for rule in rules:
                # Only ClusterRoleBindings grant cluster-scoped and non-resource access.
                if binding.kind == "RoleBinding" and (
                    not attrs.resource_request or not attrs.namespace
                ):
                    continue
                if self._rule_allows(rule.rule, attrs):
                    return rule, ""
        reason = ""
        if problems:
            reason = "RBAC: " + (
                problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]"
            )
        return None, reason


def forbidden_message(attrs: RequestAttributes) -> str:
    """authorizer's forbiddenMessage, the text after `... is forbidden: `."""
    if not attrs.resource_request:
        return f'User "{attrs.user}" cannot {attrs.verb} path "{attrs.path}"'
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    where = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    return (
        f'User "{attrs.user}" cannot {attrs.verb} resource "{resource}" in API group '
        f'"{attrs.api_group}" {where}'
    )
