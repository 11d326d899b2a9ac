"""Fuzzing the workflow operations finds no 5xx and no contradiction."""

from __future__ import annotations

from tests.integration.fuzzing import fuzz_shard


def test_fuzzing_the_workflow_operations_finds_no_server_error(
    fuzz_server, fuzz_credentials, tmp_path
):
    assert fuzz_shard("workflows", fuzz_server, fuzz_credentials, tmp_path) >= 4
