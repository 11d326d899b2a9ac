"""Fuzzing the schedule operations finds no 5xx and no contradiction."""

from __future__ import annotations

from tests.integration.fuzzing import fuzz_shard


def test_fuzzing_the_schedule_operations_finds_no_server_error(
    fuzz_server, fuzz_credentials, tmp_path
):
    assert fuzz_shard("schedules", fuzz_server, fuzz_credentials, tmp_path) >= 5
