#!/usr/bin/env python3
"""Regenerate sdk_operations.json: every S3 and RDS operation, as the Rust SDK names its methods.

The aws-sdk-* crates are generated from the same Smithy models as botocore, and
smithy-rs names a client method after the operation in snake case
(ListObjectsV2 -> list_objects_v2, CopyDBSnapshot -> copy_db_snapshot), which
is what botocore's xform_name computes. check_policies.py uses the list to tell an
SDK call it has no IAM mapping for (and so must fail on) from any other method.

Run with the checkov virtual environment, which has botocore:
    .venv-tf/bin/python terraform/tests/gen_sdk_operations.py
"""
import json
from pathlib import Path

import botocore
import botocore.session
from botocore import xform_name

session = botocore.session.get_session()
out = {"_source": f"botocore {botocore.__version__} service models"}
for service in ("s3", "rds"):
    model = session.get_service_model(service)
    out[service] = sorted(xform_name(name) for name in model.operation_names)
    out[f"_{service}_api_version"] = model.api_version

path = Path(__file__).with_name("sdk_operations.json")
path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
print(f"wrote {path}: {len(out['s3'])} S3 and {len(out['rds'])} RDS operations")
