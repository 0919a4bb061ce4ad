"""Process environment defaults for Ray, DeepSpeed and Prefect (stack notes: loopback only, no telemetry)."""

from __future__ import annotations

import os

LOCAL_DEFAULTS = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # single-node Ray binds 127.0.0.1
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "DS_ACCELERATOR": "cpu",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


def apply_local_defaults(use_gpu: bool = False) -> None:
    """Set the loopback/no-telemetry defaults unless the user set them; ``use_gpu`` leaves DS_ACCELERATOR alone."""
    for key, value in LOCAL_DEFAULTS.items():
        if key == "DS_ACCELERATOR" and use_gpu:
            continue
        os.environ.setdefault(key, value)
